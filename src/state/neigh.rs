//! The neighbour table of one VNI: overlay IP address -> MAC address, what ARP and Neighbor
//! Discovery would find out, known in advance so that `--proxy` can answer them locally
//! ([`crate::packet::proxy`]).
//!
//! Entries come from several sources, kept apart so that one never removes another's: the
//! operator (`vxtap neigh add`, [`NeighSource::Static`]) and the cluster control plane (the
//! members' TAP addresses, [`NeighSource::Etcd`]). Where both name an address, the operator's
//! entry is the one used.
//!
//! Readers (the TAP reader threads, for ARP requests and neighbour solicitations only) load the
//! merged table without a lock; writers (the control thread) take a mutex, rebuild the merged
//! table and publish it in one swap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::wire::mac::MacAddr;

/// Where a neighbour entry came from (`neigh show --json`'s `source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighSource {
    /// `vxtap neigh add`.
    Static,
    /// A cluster member's TAP address, from etcd.
    Etcd,
    /// Learned from traffic. Named by the command-line contract; vxtap does not snoop yet, so
    /// no entry has this source today.
    Snooped,
}

impl NeighSource {
    pub fn as_str(self) -> &'static str {
        match self {
            NeighSource::Static => "static",
            NeighSource::Etcd => "etcd",
            NeighSource::Snooped => "snooped",
        }
    }
}

/// One entry, for `neigh show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: MacAddr,
    pub source: NeighSource,
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NeighError {
    #[error("{0} is not a unicast host address: only those are resolved with ARP or ND")]
    NotUnicastIp(IpAddr),
    #[error("{0} is a multicast, broadcast or all-zero MAC: a neighbour has a unicast MAC")]
    NotUnicastMac(MacAddr),
}

/// Whether `ip` is an address ARP or ND resolves: not unspecified, loopback, multicast or the
/// IPv4 broadcast address.
pub fn is_host_address(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let v4_broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || v4_broadcast)
}

#[derive(Default)]
struct Sources {
    statics: HashMap<IpAddr, MacAddr>,
    etcd: HashMap<IpAddr, MacAddr>,
}

/// The neighbour table of one VNI. `Send + Sync`.
#[derive(Default)]
pub struct Neighbours {
    sources: Mutex<Sources>,
    table: ArcSwap<HashMap<IpAddr, (MacAddr, NeighSource)>>,
}

impl std::fmt::Debug for Neighbours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Neighbours").field("entries", &self.len()).finish()
    }
}

impl Neighbours {
    /// The MAC of `ip`, if known. No lock and no allocation: for the packet path.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<MacAddr> {
        self.table.load().get(&ip.to_canonical()).map(|(mac, _)| *mac)
    }

    /// Adds or replaces the operator's entry for `ip`.
    pub fn add_static(&self, ip: IpAddr, mac: MacAddr) -> Result<(), NeighError> {
        let ip = ip.to_canonical();
        if !is_host_address(ip) {
            return Err(NeighError::NotUnicastIp(ip));
        }
        if !mac.is_learnable() {
            return Err(NeighError::NotUnicastMac(mac));
        }
        self.change(|s| {
            s.statics.insert(ip, mac);
        });
        Ok(())
    }

    /// Removes the operator's entry for `ip`; false if there was none (an entry of the control
    /// plane is not the operator's to remove: it goes with its member).
    pub fn remove_static(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.change(|s| s.statics.remove(&ip).is_some())
    }

    /// Replaces every entry of the control plane with `entries`; entries that are not unicast
    /// hosts and MACs are skipped (the control plane checks its input before this).
    pub fn set_etcd(&self, entries: impl IntoIterator<Item = (IpAddr, MacAddr)>) {
        let etcd: HashMap<IpAddr, MacAddr> = entries
            .into_iter()
            .map(|(ip, mac)| (ip.to_canonical(), mac))
            .filter(|(ip, mac)| is_host_address(*ip) && mac.is_learnable())
            .collect();
        self.change(|s| s.etcd = etcd);
    }

    /// Every entry in use, sorted by address.
    pub fn snapshot(&self) -> Vec<Neighbour> {
        let mut out: Vec<Neighbour> = self
            .table
            .load()
            .iter()
            .map(|(ip, (mac, source))| Neighbour { ip: *ip, mac: *mac, source: *source })
            .collect();
        out.sort_by_key(|n| n.ip);
        out
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.table.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes the sources and publishes the merged table, under the lock so that two writers
    /// cannot publish out of order.
    fn change<R>(&self, f: impl FnOnce(&mut Sources) -> R) -> R {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut s);
        let mut table = HashMap::with_capacity(s.statics.len() + s.etcd.len());
        table.extend(s.etcd.iter().map(|(ip, mac)| (*ip, (*mac, NeighSource::Etcd))));
        table.extend(s.statics.iter().map(|(ip, mac)| (*ip, (*mac, NeighSource::Static))));
        self.table.store(Arc::new(table));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);

    #[test]
    fn sources_are_kept_apart_and_the_operator_wins() {
        let n = Neighbours::default();
        assert_eq!(n.lookup(ip("198.19.0.2")), None);
        n.set_etcd([(ip("198.19.0.2"), A), (ip("2001:db8:1::2"), A), (ip("198.19.0.3"), B)]);
        assert_eq!(n.lookup(ip("198.19.0.2")), Some(A));
        assert_eq!(n.lookup(ip("::ffff:198.19.0.3")), Some(B), "v4-mapped addresses are canonical");
        n.add_static(ip("198.19.0.2"), B).unwrap();
        assert_eq!(n.lookup(ip("198.19.0.2")), Some(B), "static over etcd");
        n.set_etcd([(ip("198.19.0.2"), A)]);
        assert_eq!(n.lookup(ip("198.19.0.2")), Some(B), "a resync does not remove the operator's entry");
        assert_eq!(n.lookup(ip("198.19.0.3")), None, "replaced wholesale");
        assert!(n.remove_static(ip("198.19.0.2")));
        assert_eq!(n.lookup(ip("198.19.0.2")), Some(A), "the member's entry shows again");
        assert!(!n.remove_static(ip("198.19.0.2")), "not the operator's to remove");
        let rows = n.snapshot();
        assert_eq!(rows, vec![Neighbour { ip: ip("198.19.0.2"), mac: A, source: NeighSource::Etcd }]);
    }

    #[test]
    fn only_unicast_hosts_and_macs() {
        let n = Neighbours::default();
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "::", "::1", "ff02::1"] {
            assert_eq!(n.add_static(ip(bad), A), Err(NeighError::NotUnicastIp(ip(bad))), "{bad}");
        }
        assert!(n.add_static(ip("198.19.0.9"), MacAddr::BROADCAST).is_err());
        assert!(n.add_static(ip("198.19.0.9"), MacAddr::ZERO).is_err());
        n.set_etcd([(ip("224.0.0.1"), A), (ip("198.19.0.9"), MacAddr([1, 0, 0, 0, 0, 1]))]);
        assert!(n.is_empty(), "skipped");
        assert!(n.add_static(ip("fe80::1"), A).is_ok(), "link-local is resolved by ND too");
        assert_eq!(NeighSource::Snooped.as_str(), "snooped");
    }
}
