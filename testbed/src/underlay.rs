//! Underlay topologies: node namespaces joined by veth pairs or a Linux bridge, and the kernel's
//! own VXLAN device as a reference peer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

use anyhow::{bail, Result};

use crate::{run_checked, Netns};

/// Name of the underlay veth in every node namespace.
pub const UNDERLAY_DEV: &str = "ul0";

/// Underlay address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Address of node `i`: 198.18.0.(i+1) or 2001:db8::(i+1).
    fn host(self, i: usize) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(198, 18, 0, i as u8 + 1)),
            Family::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16 + 1)),
        }
    }

    fn prefix_len(self) -> u8 {
        match self {
            Family::V4 => 24,
            Family::V6 => 64,
        }
    }
}

/// Node namespaces whose `ul0` devices share one underlay link, either directly (a veth pair)
/// or through a Linux bridge in an extra switch namespace.
#[derive(Debug)]
pub struct Underlay {
    family: Family,
    nodes: Vec<Netns>,
    addrs: Vec<IpAddr>,
    // Kept after `nodes` so the hosts go first on drop; order does not matter for correctness.
    _switch: Option<Netns>,
}

impl Underlay {
    /// Two namespaces joined by a veth pair: `ul0` = 198.18.0.1/24 and .2 (or 2001:db8::1/64, ::2).
    pub fn pair(family: Family) -> Result<Underlay> {
        let a = Netns::new("a")?;
        let b = Netns::new("b")?;
        veth(&a, UNDERLAY_DEV, &b, UNDERLAY_DEV)?;
        let mut ul = Underlay { family, nodes: vec![a, b], addrs: Vec::new(), _switch: None };
        ul.configure_hosts()?;
        Ok(ul)
    }

    /// `n` IPv4 hosts (`ul0` = 198.18.0.(i+1)/24) on one Linux bridge, so floods reach several peers.
    pub fn star(n: usize) -> Result<Underlay> {
        Underlay::star_with(Family::V4, n)
    }

    /// [`Underlay::star`] for either family.
    pub fn star_with(family: Family, n: usize) -> Result<Underlay> {
        if !(1..=250).contains(&n) {
            bail!("star of {n} hosts: need 1..=250");
        }
        let sw = Netns::new("sw")?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let host = Netns::new(&format!("h{i}"))?;
            let port = format!("p{i}");
            veth(&host, UNDERLAY_DEV, &sw, &port)?;
            sw.ip(&["link", "set", &port, "master", "br0"])?;
            sw.ip(&["link", "set", &port, "up"])?;
            nodes.push(host);
        }
        let mut ul = Underlay { family, nodes, addrs: Vec::new(), _switch: Some(sw) };
        ul.configure_hosts()?;
        Ok(ul)
    }

    /// Two hosts in different subnets with a router between them, the link from the router to
    /// host 1 only `narrow_mtu` bytes wide: A `ul0` --(1500)-- `ra` R `rb` --(narrow)-- `ul0` B.
    /// IPv4: A 198.18.1.1/24, R 198.18.1.254 and 198.18.2.254, B 198.18.2.2/24; IPv6: A
    /// 2001:db8:1::1/64, R 2001:db8:1::fe and 2001:db8:2::fe, B 2001:db8:2::2/64. The router
    /// forwards and sends the ICMP "too big" errors path MTU discovery relies on.
    pub fn routed(family: Family, narrow_mtu: u32) -> Result<Underlay> {
        let a = Netns::new("a")?;
        let r = Netns::new("r")?;
        let b = Netns::new("b")?;
        veth(&a, UNDERLAY_DEV, &r, "ra")?;
        veth(&r, "rb", &b, UNDERLAY_DEV)?;
        let mtu = narrow_mtu.to_string();
        r.ip(&["link", "set", "rb", "mtu", &mtu])?;
        b.ip(&["link", "set", UNDERLAY_DEV, "mtu", &mtu])?;
        let (a_addr, b_addr): (IpAddr, IpAddr) = match family {
            Family::V4 => (Ipv4Addr::new(198, 18, 1, 1).into(), Ipv4Addr::new(198, 18, 2, 2).into()),
            Family::V6 => (
                Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1).into(),
                Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2).into(),
            ),
        };
        let (ra, rb, nets, plen) = match family {
            Family::V4 => ("198.18.1.254", "198.18.2.254", ["198.18.1.0/24", "198.18.2.0/24"], 24),
            Family::V6 => ("2001:db8:1::fe", "2001:db8:2::fe", ["2001:db8:1::/64", "2001:db8:2::/64"], 64),
        };
        for (ns, dev, addr) in [
            (&a, UNDERLAY_DEV, a_addr.to_string()),
            (&r, "ra", ra.into()),
            (&r, "rb", rb.into()),
            (&b, UNDERLAY_DEV, b_addr.to_string()),
        ] {
            add_address(ns, dev, &format!("{addr}/{plen}"), family)?;
        }
        match family {
            Family::V4 => r.sysctl("net/ipv4/ip_forward", "1")?,
            Family::V6 => r.sysctl("net/ipv6/conf/all/forwarding", "1")?,
        }
        a.ip(&["route", "add", nets[1], "via", ra])?;
        b.ip(&["route", "add", nets[0], "via", rb])?;
        Ok(Underlay { family, nodes: vec![a, b], addrs: vec![a_addr, b_addr], _switch: Some(r) })
    }

    /// The router of a [`Underlay::routed`] topology (the switch of a star), if there is one.
    pub fn middle(&self) -> Option<&Netns> {
        self._switch.as_ref()
    }

    fn configure_hosts(&mut self) -> Result<()> {
        for (i, ns) in self.nodes.iter().enumerate() {
            let addr = self.family.host(i);
            // IPv6 only on the underlay veth; `nodad` makes the address usable at once.
            add_address(ns, UNDERLAY_DEV, &format!("{addr}/{}", self.family.prefix_len()), self.family)?;
            self.addrs.push(addr);
        }
        Ok(())
    }

    /// The address family of the underlay.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Number of host nodes (the switch namespace is not counted).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a topology has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Host namespace `i`.
    ///
    /// # Panics
    /// If `i >= len()`, as slice indexing does.
    pub fn node(&self, i: usize) -> &Netns {
        &self.nodes[i]
    }

    /// Underlay address of host `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn addr(&self, i: usize) -> IpAddr {
        self.addrs[i]
    }
}

/// Gives `dev` in `ns` the address `cidr` and sets it up (IPv6 enabled on it, without DAD).
fn add_address(ns: &Netns, dev: &str, cidr: &str, family: Family) -> Result<()> {
    if family == Family::V6 {
        ns.sysctl(&format!("net/ipv6/conf/{dev}/disable_ipv6"), "0")?;
        ns.sysctl(&format!("net/ipv6/conf/{dev}/accept_dad"), "0")?;
        ns.ip(&["addr", "add", cidr, "dev", dev, "nodad"])?;
    } else {
        ns.ip(&["addr", "add", cidr, "dev", dev])?;
    }
    ns.ip(&["link", "set", dev, "up"])
}

/// Creates a veth pair directly between two namespaces, so no name is ever taken in the root one.
fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<()> {
    run_checked(Command::new("ip").args([
        "link",
        "add",
        a_dev,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ]))
    .map(drop)
}

/// A kernel VXLAN device: the reference peer for interop tests and for validating the test bed.
#[derive(Clone, Debug)]
pub struct KernelVxlan {
    pub dev: String,
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    /// Flood destination, installed as the all-zeros FDB entry.
    pub remote: IpAddr,
    /// Overlay address, e.g. `198.19.0.2/24`.
    pub address: String,
}

impl KernelVxlan {
    /// Creates, addresses and brings up the device on `ul0` in `ns`, with learning left on.
    ///
    /// Also turns off transmit checksum offload on `ul0`. The kernel leaves the *inner* UDP/TCP
    /// checksum of a VXLAN packet for the NIC to fill in; a veth never does, and a userspace
    /// peer reading the datagram from a socket would pass the unfinished checksum on to its TAP,
    /// where the kernel drops the frame. A real NIC completes it, so this only makes the wire
    /// look like a real one. Needs `ethtool`.
    pub fn create(&self, ns: &Netns) -> Result<()> {
        let out = ns.exec(&["ethtool", "-K", UNDERLAY_DEV, "tx", "off"])?;
        if !out.status.success() {
            bail!(
                "ethtool -K {UNDERLAY_DEV} tx off in {}: {}",
                ns.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let (vni, port, local) = (self.vni.to_string(), self.port.to_string(), self.local.to_string());
        ns.ip(&[
            "link",
            "add",
            &self.dev,
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            &port,
            "local",
            &local,
            "dev",
            UNDERLAY_DEV,
        ])?;
        let remote = self.remote.to_string();
        ns.bridge_out(&["fdb", "append", "00:00:00:00:00:00", "dev", &self.dev, "dst", &remote])?;
        ns.ip(&["addr", "add", &self.address, "dev", &self.dev])?;
        ns.ip(&["link", "set", &self.dev, "up"])
    }
}
