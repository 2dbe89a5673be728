//! Who may send to a tunnel socket.
//!
//! The kernel's vxlan device accepts any source and learns from it, which suits a trusted
//! datacenter underlay. vxtap is also run VPN-style across networks nobody vouches for, so by
//! default it accepts only the VTEPs it was told about (flood-list remotes and static entries)
//! plus the networks given with `--allow-from`; `--allow-from any` restores the open behaviour.
//! The check runs before parsing, so a spoofed VNI from an unlisted host never reaches a TAP.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::wire::cidr::Cidr;

/// The sources one socket accepts. The host list changes at runtime (`fdb add`/`del`); readers
/// on the packet path load it without a lock.
pub struct Allowlist {
    any: bool,
    networks: Vec<Cidr>,
    hosts: ArcSwap<Vec<IpAddr>>,
}

impl Allowlist {
    /// Everyone: the kernel's behaviour.
    pub fn any() -> Allowlist {
        Allowlist { any: true, networks: Vec::new(), hosts: ArcSwap::from_pointee(Vec::new()) }
    }

    /// The given networks plus the known VTEPs in `hosts`.
    pub fn new(networks: Vec<Cidr>, hosts: Vec<IpAddr>) -> Allowlist {
        let list = Allowlist { any: false, networks, hosts: ArcSwap::from_pointee(Vec::new()) };
        list.set_hosts(hosts);
        list
    }

    /// Replaces the known VTEPs (deduplicated, in canonical form).
    pub fn set_hosts(&self, hosts: Vec<IpAddr>) {
        let mut hosts: Vec<IpAddr> = hosts.into_iter().map(|ip| ip.to_canonical()).collect();
        hosts.sort();
        hosts.dedup();
        self.hosts.store(Arc::new(hosts));
    }

    pub fn is_open(&self) -> bool {
        self.any
    }

    /// Whether `source` (already in canonical form) may send to this socket.
    #[inline]
    pub fn allows(&self, source: IpAddr) -> bool {
        // The host list is sorted: a cluster of hundreds of members costs a binary search.
        self.any
            || self.hosts.load().binary_search(&source).is_ok()
            || self.networks.iter().any(|n| n.contains(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn known_hosts_and_networks_only() {
        let a = Allowlist::new(vec!["198.18.0.128/25".parse().unwrap()], vec![ip("198.18.0.2")]);
        assert!(a.allows(ip("198.18.0.2")));
        assert!(a.allows(ip("198.18.0.200")));
        assert!(!a.allows(ip("198.18.0.3")));
        assert!(!a.allows(ip("2001:db8::2")));
        a.set_hosts(vec![ip("::ffff:198.18.0.3")]);
        assert!(a.allows(ip("198.18.0.3")), "v4-mapped hosts are stored canonical");
        assert!(!a.allows(ip("198.18.0.2")), "replaced, not appended");
        assert!(Allowlist::any().allows(ip("198.18.0.99")));
    }
}
