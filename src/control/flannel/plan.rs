//! The other leases turned into the peers this host routes to, and the steps from what is
//! applied to what should be: for each peer flanneld's vxlan backend sets a route
//! `<subnet> via <subnet .0> dev flannel.<VNI> onlink`, a permanent neighbour entry `<subnet .0>
//! -> VtepMAC` and an FDB entry `VtepMAC -> PublicIP` (or, with DirectRouting and the peer on
//! the same link, a route `<subnet> via <PublicIP>` instead).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::key::parse_lease_key;
use super::lease::Lease;
use super::subnet::{Subnet, SubnetKey};
use crate::wire::mac::MacAddr;

/// Another host of the vxlan backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub public_ip: Ipv4Addr,
    pub vtep_mac: MacAddr,
}

/// How a peer's subnet is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through the tunnel: route via `subnet .0` onlink, neighbour entry, FDB entry.
    Vxlan(Peer),
    /// DirectRouting, the peer on the same link: a route via its PublicIP on the underlay.
    Direct(Peer),
}

impl Route {
    pub fn peer(&self) -> Peer {
        match self {
            Route::Vxlan(p) | Route::Direct(p) => *p,
        }
    }
}

/// Why a lease was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A key or value that does not parse: counted as bad.
    Bad(String),
    /// A lease of another backend (host-gw, udp, ...): nothing vxtap can route to.
    OtherBackend(String),
    /// A lease that names this host's address under another subnet (a stale lease of its own).
    OwnAddress,
}

/// What happened to this host's own lease in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    Present,
    /// Deleted (or absent from a listing): it must be put again.
    Missing,
}

/// The leases as last read from etcd.
#[derive(Debug)]
pub struct Reconciler {
    prefix: String,
    own: SubnetKey,
    own_ip: Ipv4Addr,
    /// Every readable key and what it gave.
    leases: BTreeMap<SubnetKey, Result<Peer, Skip>>,
}

/// One batch's skipped leases (to log and count) and the state of this host's own lease.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub skipped: Vec<(String, Skip)>,
    pub own: Option<Own>,
}

impl Reconciler {
    pub fn new(prefix: &str, own: SubnetKey, own_ip: Ipv4Addr) -> Reconciler {
        Reconciler { prefix: prefix.to_string(), own, own_ip, leases: BTreeMap::new() }
    }

    /// A whole listing of `<prefix>/subnets/`: replaces what was known.
    pub fn list<'a>(&mut self, kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Batch {
        self.leases.clear();
        let mut batch = Batch { own: Some(Own::Missing), ..Batch::default() };
        for (k, v) in kvs {
            self.put_one(k, v, &mut batch);
        }
        batch
    }

    /// A watch event: a put (`Some(value)`) or a delete.
    pub fn event(&mut self, key: &[u8], value: Option<&[u8]>, batch: &mut Batch) {
        match value {
            Some(v) => self.put_one(key, v, batch),
            None => match parse_lease_key(&self.prefix, key) {
                Ok(k) if k == self.own => batch.own = Some(Own::Missing),
                Ok(k) => {
                    self.leases.remove(&k);
                }
                Err(_) => {}
            },
        }
    }

    fn put_one(&mut self, key: &[u8], value: &[u8], batch: &mut Batch) {
        let name = String::from_utf8_lossy(key).into_owned();
        let k = match parse_lease_key(&self.prefix, key) {
            Ok(k) => k,
            Err(e) => {
                batch.skipped.push((name, Skip::Bad(e)));
                return;
            }
        };
        if k == self.own {
            batch.own = Some(Own::Present);
            return;
        }
        let entry = match Lease::parse(value) {
            Err(e) => Err(Skip::Bad(e)),
            Ok(l) if l.public_ip == self.own_ip => Err(Skip::OwnAddress),
            Ok(l) => match l.vxlan {
                Some(d) => Ok(Peer { public_ip: l.public_ip, vtep_mac: d.vtep_mac }),
                None => Err(Skip::OtherBackend(l.backend)),
            },
        };
        if let Err(s) = &entry {
            batch.skipped.push((name, s.clone()));
        }
        self.leases.insert(k, entry);
    }

    /// The peers to route to, by subnet.
    pub fn peers(&self) -> BTreeMap<Subnet, Peer> {
        self.leases.iter().filter_map(|(k, e)| e.as_ref().ok().map(|p| (k.v4, *p))).collect()
    }
}

/// A change to the host's routes, neighbours and FDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Remove(Subnet, Route),
    Add(Subnet, Route),
}

/// The steps from `applied` to `desired`: removals first (a changed peer is removed, then
/// added), so that a MAC or address that moved never meets its old entry.
pub fn diff(applied: &BTreeMap<Subnet, Route>, desired: &BTreeMap<Subnet, Route>) -> Vec<Step> {
    let mut steps = Vec::new();
    for (s, r) in applied {
        if desired.get(s) != Some(r) {
            steps.push(Step::Remove(*s, *r));
        }
    }
    for (s, r) in desired {
        if applied.get(s) != Some(r) {
            steps.push(Step::Add(*s, *r));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/coreos.com/network";
    fn key(s: &str) -> Vec<u8> {
        format!("{P}/subnets/{s}").into_bytes()
    }
    fn vxlan(ip: &str, mac: &str) -> Vec<u8> {
        format!(r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#)
            .into_bytes()
    }
    fn recon() -> Reconciler {
        Reconciler::new(P, "198.19.1.0-24".parse().unwrap(), Ipv4Addr::new(198, 18, 0, 1))
    }
    fn sub(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn a_listing_gives_the_peers_and_skips_the_rest() {
        let mut r = recon();
        let kvs = [
            (key("198.19.1.0-24"), vxlan("198.18.0.1", "02:00:00:00:00:01")),
            (key("198.19.2.0-24"), vxlan("198.18.0.2", "02:00:00:00:00:02")),
            (key("198.19.3.0-24"), br#"{"PublicIP":"198.18.0.3","BackendType":"host-gw"}"#.to_vec()),
            (key("198.19.4.0-24"), b"garbage".to_vec()),
            (key("198.19.5.0"), vxlan("198.18.0.5", "02:00:00:00:00:05")),
            (key("198.19.6.0-24"), vxlan("198.18.0.1", "02:00:00:00:00:06")),
            (key("198.19.7.0-24&fc00::-64"), vxlan("198.18.0.7", "02:00:00:00:00:07")),
        ];
        let b = r.list(kvs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(b.own, Some(Own::Present));
        let kinds: Vec<_> = b.skipped.iter().map(|(_, s)| std::mem::discriminant(s)).collect();
        assert_eq!(b.skipped.len(), 4, "{:?}", b.skipped);
        assert!(matches!(b.skipped[0].1, Skip::OtherBackend(ref t) if t == "host-gw"));
        assert!(matches!(b.skipped[1].1, Skip::Bad(_)) && matches!(b.skipped[2].1, Skip::Bad(_)));
        assert_eq!(b.skipped[3].1, Skip::OwnAddress);
        assert_eq!(kinds.len(), 4);
        let peers = r.peers();
        assert_eq!(peers.keys().copied().collect::<Vec<_>>(), [sub("198.19.2.0/24"), sub("198.19.7.0/24")]);
        assert_eq!(peers[&sub("198.19.2.0/24")].public_ip, Ipv4Addr::new(198, 18, 0, 2));
        // A listing without this host's lease says so.
        let b = r.list(std::iter::empty());
        assert_eq!(b.own, Some(Own::Missing));
        assert!(r.peers().is_empty(), "a listing replaces everything");
    }

    #[test]
    fn events_change_the_peers() {
        let mut r = recon();
        let mut b = Batch::default();
        r.event(&key("198.19.2.0-24"), Some(&vxlan("198.18.0.2", "02:00:00:00:00:02")), &mut b);
        assert_eq!(r.peers().len(), 1);
        r.event(&key("198.19.2.0-24"), Some(b"{bad"), &mut b);
        assert!(r.peers().is_empty(), "a lease turned bad is no longer routed to");
        assert_eq!(b.skipped.len(), 1);
        r.event(&key("198.19.2.0-24"), Some(&vxlan("198.18.0.2", "02:00:00:00:00:02")), &mut b);
        r.event(&key("198.19.2.0-24"), None, &mut b);
        assert!(r.peers().is_empty());
        assert_eq!(b.own, None);
        r.event(&key("198.19.1.0-24"), None, &mut b);
        assert_eq!(b.own, Some(Own::Missing));
        r.event(&key("nonsense"), None, &mut b);
    }

    #[test]
    fn diffs_remove_then_add() {
        let p =
            |n: u8| Peer { public_ip: Ipv4Addr::new(198, 18, 0, n), vtep_mac: MacAddr([2, 0, 0, 0, 0, n]) };
        let applied: BTreeMap<_, _> =
            [(sub("198.19.2.0/24"), Route::Vxlan(p(2))), (sub("198.19.3.0/24"), Route::Vxlan(p(3)))].into();
        let desired: BTreeMap<_, _> =
            [(sub("198.19.2.0/24"), Route::Vxlan(p(9))), (sub("198.19.4.0/24"), Route::Direct(p(4)))].into();
        assert_eq!(
            diff(&applied, &desired),
            [
                Step::Remove(sub("198.19.2.0/24"), Route::Vxlan(p(2))),
                Step::Remove(sub("198.19.3.0/24"), Route::Vxlan(p(3))),
                Step::Add(sub("198.19.2.0/24"), Route::Vxlan(p(9))),
                Step::Add(sub("198.19.4.0/24"), Route::Direct(p(4))),
            ]
        );
        assert!(diff(&desired, &desired).is_empty());
    }
}
