//! From what etcd holds to what the tables should hold: the records read (a full listing, or
//! the events of a watch) are checked, and the set of valid members of each network is
//! compared with what was applied last, giving the changes to make. Pure: the I/O task feeds it
//! and applies the [`Change`]s; the tests feed it by hand.
//!
//! Rules, the same on every VTEP so that the cluster agrees:
//! - a record that fails its checks ([`Member::parse`]) is refused and counted; if its node had
//!   a valid record before, that member leaves (a bad value never keeps stale state alive);
//! - two members claiming one MAC: the one registered first (lowest create revision, then
//!   node name) keeps it, the other is refused (counted once, while the clash lasts), so a
//!   record written later cannot take over a member's MAC;
//! - this process's own record is not a member; when it is deleted, or replaced by another
//!   process's ([`Own`]), the I/O task registers again or reports the clash.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use super::key::{self, MemberKey, NetKey, Parsed};
use super::member::{instance_of, Invalid, Member, View};
use crate::wire::mac::MacAddr;

/// A network this process runs, as the cluster sees it.
#[derive(Debug, Clone)]
pub struct NetSpec {
    pub net: NetKey,
    pub view: View,
}

/// The changes to make to one network's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Index of the network in the list given to [`Reconciler::new`].
    pub net: usize,
    pub joined: Vec<Member>,
    pub left: Vec<Member>,
    /// Members whose record changed: (before, after).
    pub updated: Vec<(Member, Member)>,
    /// Every member after the change, the first registered first (lowest create revision, then
    /// node name): flood order, and who keeps an overlay address two members claim.
    pub members: Vec<Member>,
}

impl Change {
    /// Overlay address -> MAC of every member, each address once (the member registered first
    /// keeps an address two claim, as for MACs).
    pub fn neighbours(&self) -> Vec<(IpAddr, MacAddr)> {
        let mut seen = HashSet::new();
        self.members
            .iter()
            .flat_map(|m| m.overlay.iter().map(move |ip| (*ip, m.mac)))
            .filter(|(ip, _)| seen.insert(*ip))
            .collect()
    }

    /// Whether a member (after the change) has its VTEP at `ip`: the MACs learned behind that
    /// address stay when one of several members there leaves.
    pub fn vtep_in_use(&self, ip: IpAddr) -> bool {
        self.members.iter().any(|m| m.vtep.ip() == ip)
    }
}

/// Something happened to this process's own record of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Own {
    /// It is gone (deleted, expired, or missing from a listing): register again.
    Missing { net: usize },
    /// Another process (this instance id, if the record has one) holds this node name.
    Foreign { net: usize, instance: Option<String> },
}

/// What one listing or batch of events gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub changes: Vec<Change>,
    /// Records refused, with their key.
    pub bad: Vec<(String, Invalid)>,
    pub own: Vec<Own>,
}

/// One record as etcd has it: key, value, and the revision that created the key.
pub type Kv<'a> = (&'a [u8], &'a [u8], i64);

/// One event of a watch.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    Put(Kv<'a>),
    Delete { key: &'a [u8] },
}

struct NetState {
    spec: NetSpec,
    /// The valid records as last read, by node, with their create revision.
    desired: BTreeMap<String, (i64, Member)>,
    /// Nodes refused for a MAC clash, already counted.
    clashing: BTreeSet<String>,
    /// What the tables were last told.
    applied: BTreeMap<String, Member>,
}

/// The reconciler of one process: its networks, its identity, and what it applied.
pub struct Reconciler {
    prefix: String,
    instance: String,
    nets: Vec<NetState>,
}

impl Reconciler {
    /// A reconciler for `nets`, under `prefix`, for the process with instance id `instance`.
    pub fn new(prefix: &str, instance: &str, nets: Vec<NetSpec>) -> Reconciler {
        let nets = nets
            .into_iter()
            .map(|spec| NetState {
                spec,
                desired: BTreeMap::new(),
                clashing: BTreeSet::new(),
                applied: BTreeMap::new(),
            })
            .collect();
        Reconciler { prefix: prefix.to_string(), instance: instance.to_string(), nets }
    }

    /// Follows a reload: the networks become `nets`, in that order (the indices of later
    /// [`Change`]s). A network kept (same [`NetKey`], not `fresh`) keeps what was applied to it;
    /// a new or `fresh` one (its tables are new) starts empty, so the next listing applies every
    /// member to it; one that is gone is forgotten.
    pub fn set_networks(&mut self, nets: Vec<(NetSpec, bool)>) {
        let mut old = std::mem::take(&mut self.nets);
        self.nets = nets
            .into_iter()
            .map(|(spec, fresh)| {
                let kept = old.iter().position(|n| n.spec.net == spec.net).map(|i| old.swap_remove(i));
                match kept {
                    Some(n) if !fresh => NetState { spec, ..n },
                    _ => NetState {
                        spec,
                        desired: BTreeMap::new(),
                        clashing: BTreeSet::new(),
                        applied: BTreeMap::new(),
                    },
                }
            })
            .collect();
    }

    /// The network at index `net`.
    pub fn net(&self, net: usize) -> NetKey {
        self.nets[net].spec.net
    }

    /// The members applied to network `net`, by node name.
    pub fn members(&self, net: usize) -> impl Iterator<Item = &Member> {
        self.nets[net].applied.values()
    }

    /// A full listing of the prefix replaces everything read before: members missing from it
    /// have left (what a missed delete event would otherwise hide).
    pub fn list<'a>(&mut self, kvs: impl IntoIterator<Item = Kv<'a>>) -> Batch {
        let mut batch = Batch::default();
        let mut own_seen = vec![false; self.nets.len()];
        for n in &mut self.nets {
            n.desired.clear();
        }
        for kv in kvs {
            if let Some(net) = self.put(kv, &mut batch) {
                own_seen[net] = true;
            }
        }
        for (net, seen) in own_seen.into_iter().enumerate() {
            if !seen {
                batch.own.push(Own::Missing { net });
            }
        }
        self.finish(batch)
    }

    /// Events of a watch, in order.
    pub fn events<'a>(&mut self, events: impl IntoIterator<Item = Event<'a>>) -> Batch {
        let mut batch = Batch::default();
        for e in events {
            match e {
                Event::Put(kv) => {
                    self.put(kv, &mut batch);
                }
                Event::Delete { key } => self.delete(key, &mut batch),
            }
        }
        self.finish(batch)
    }

    /// The network and node a key names, if it is a member key of one of ours; a bad member key
    /// is reported.
    fn locate(&self, key: &[u8], batch: &mut Batch) -> Option<(usize, String)> {
        match key::parse(&self.prefix, key) {
            Parsed::Other => None,
            Parsed::Invalid(why) => {
                batch.bad.push((String::from_utf8_lossy(key).into_owned(), Invalid::Key(why)));
                None
            }
            Parsed::Member(MemberKey { net, node }) => {
                let i = self.nets.iter().position(|n| n.spec.net == net)?;
                Some((i, node))
            }
        }
    }

    /// Reads one record; returns the network when it was this process's own.
    fn put(&mut self, (key, value, created): Kv<'_>, batch: &mut Batch) -> Option<usize> {
        let (i, node) = self.locate(key, batch)?;
        let n = &mut self.nets[i];
        if node == n.spec.view.node {
            let instance = instance_of(value);
            if instance.as_deref() != Some(self.instance.as_str()) {
                batch.own.push(Own::Foreign { net: i, instance });
            }
            return Some(i);
        }
        match Member::parse(&node, value, &n.spec.view) {
            Ok(m) => {
                n.desired.insert(node, (created, m));
            }
            Err(e) => {
                n.desired.remove(&node);
                batch.bad.push((String::from_utf8_lossy(key).into_owned(), e));
            }
        }
        None
    }

    fn delete(&mut self, key: &[u8], batch: &mut Batch) {
        let Some((i, node)) = self.locate(key, batch) else { return };
        let n = &mut self.nets[i];
        if node == n.spec.view.node {
            batch.own.push(Own::Missing { net: i });
        } else {
            n.desired.remove(&node);
        }
    }

    /// Compares each network's valid members with what was applied.
    fn finish(&mut self, mut batch: Batch) -> Batch {
        for (i, n) in self.nets.iter_mut().enumerate() {
            // MAC clashes: the first registered (then the first by name) keeps the MAC.
            let mut by_age: Vec<(&i64, &String, &Member)> =
                n.desired.iter().map(|(k, (c, m))| (c, k, m)).collect();
            by_age.sort();
            let mut owners: BTreeMap<MacAddr, &str> = BTreeMap::new();
            let mut effective = BTreeMap::new();
            let mut clashing = BTreeSet::new();
            let mut by_age_valid = Vec::new();
            for (_, node, m) in by_age {
                match owners.get(&m.mac) {
                    Some(first) => {
                        if !n.clashing.contains(node) {
                            let key = key::member_key(&self.prefix, n.spec.net, node);
                            batch
                                .bad
                                .push((key, Invalid::DuplicateMac { mac: m.mac, with: first.to_string() }));
                        }
                        clashing.insert(node.clone());
                    }
                    None => {
                        owners.insert(m.mac, node);
                        effective.insert(node.clone(), m.clone());
                        by_age_valid.push(m.clone());
                    }
                }
            }
            n.clashing = clashing;
            let mut change = Change { net: i, ..Change::default() };
            for (node, old) in &n.applied {
                match effective.get(node) {
                    None => change.left.push(old.clone()),
                    Some(new) if new != old => change.updated.push((old.clone(), new.clone())),
                    Some(_) => {}
                }
            }
            change.joined = effective
                .iter()
                .filter(|(k, _)| !n.applied.contains_key(*k))
                .map(|(_, m)| m.clone())
                .collect();
            if change.joined.is_empty() && change.left.is_empty() && change.updated.is_empty() {
                continue;
            }
            change.members = by_age_valid;
            n.applied = effective;
            batch.changes.push(change);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Proto;

    const P: &str = "/vxtap/v1";
    const NET: NetKey = NetKey { proto: Proto::Vxlan, vni: 42 };
    const OTHER: NetKey = NetKey { proto: Proto::Geneve, vni: 42 };

    fn reconciler() -> Reconciler {
        let view = View { node: "me".into(), v6: false, mac: Some(MacAddr([2, 0, 0, 0, 0, 0xee])) };
        let specs = vec![NetSpec { net: NET, view: view.clone() }, NetSpec { net: OTHER, view }];
        Reconciler::new(P, "mine", specs)
    }

    fn member(node: &str, last: u8) -> Member {
        Member {
            node: node.into(),
            vtep: format!("198.18.0.{last}:4789").parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, last]),
            overlay: vec![format!("198.19.0.{last}").parse().unwrap()],
            instance: format!("i{last}"),
        }
    }

    fn kv(net: NetKey, m: &Member) -> (Vec<u8>, Vec<u8>, i64) {
        kv_at(net, m, 1)
    }

    fn kv_at(net: NetKey, m: &Member, created: i64) -> (Vec<u8>, Vec<u8>, i64) {
        (key::member_key(P, net, &m.node).into_bytes(), m.to_json().into_bytes(), created)
    }

    fn own(instance: &str) -> (Vec<u8>, Vec<u8>, i64) {
        let mut m = member("me", 99);
        m.instance = instance.into();
        kv(NET, &m)
    }

    fn list(r: &mut Reconciler, kvs: &[(Vec<u8>, Vec<u8>, i64)]) -> Batch {
        r.list(kvs.iter().map(|(k, v, c)| (k.as_slice(), v.as_slice(), *c)))
    }

    fn put(r: &mut Reconciler, (k, v, c): &(Vec<u8>, Vec<u8>, i64)) -> Batch {
        r.events([Event::Put((k, v, *c))])
    }

    #[test]
    fn a_listing_gives_joins_and_a_relisting_gives_the_difference() {
        let mut r = reconciler();
        let (a, b, c) = (member("a", 2), member("b", 3), member("c", 4));
        let batch = list(&mut r, &[kv(NET, &a), kv(NET, &b), own("mine")]);
        assert_eq!(batch.changes.len(), 1);
        let ch = &batch.changes[0];
        assert_eq!((ch.net, &ch.joined, ch.left.len()), (0, &vec![a.clone(), b.clone()], 0));
        assert_eq!(ch.members, vec![a.clone(), b.clone()]);
        assert_eq!(batch.own, vec![Own::Missing { net: 1 }], "our own record is there for net 0, not net 1");
        assert!(batch.bad.is_empty());
        // A resync after missed events: b left, c joined, a changed its VTEP.
        let mut a2 = a.clone();
        a2.vtep = "198.18.0.20:4789".parse().unwrap();
        let batch = list(&mut r, &[kv(NET, &a2), kv(NET, &c), own("mine"), kv(OTHER, &b)]);
        let ch0 = &batch.changes[0];
        assert_eq!(
            (&ch0.joined, &ch0.left, &ch0.updated),
            (&vec![c.clone()], &vec![b.clone()], &vec![(a, a2.clone())])
        );
        assert_eq!(
            batch.changes[1].joined,
            vec![b.clone()],
            "the same node in another network is another member"
        );
        assert!(
            list(&mut r, &[kv(NET, &a2), kv(NET, &c), own("mine"), kv(OTHER, &b)]).changes.is_empty(),
            "nothing new"
        );
        assert_eq!(r.members(0).map(|m| m.node.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn a_reload_keeps_what_was_applied_to_kept_networks_and_starts_fresh_ones_empty() {
        let mut r = reconciler();
        let (a, b) = (member("a", 2), member("b", 3));
        let all = [kv(NET, &a), kv(OTHER, &b), own("mine")];
        list(&mut r, &all);
        let view = r.nets[0].spec.view.clone();
        let spec = |net| NetSpec { net, view: view.clone() };
        let third = NetKey { proto: Proto::Vxlan, vni: 7 };
        // OTHER restarted (fresh), a third network added, NET kept but moved to the end.
        r.set_networks(vec![(spec(OTHER), true), (spec(third), true), (spec(NET), false)]);
        assert_eq!((r.net(0), r.net(1), r.net(2)), (OTHER, third, NET));
        let c = member("c", 4);
        let batch = list(&mut r, &[kv(NET, &a), kv(OTHER, &b), kv(third, &c), own("mine")]);
        let joined: Vec<(NetKey, Vec<Member>)> =
            batch.changes.iter().map(|ch| (r.net(ch.net), ch.joined.clone())).collect();
        assert_eq!(joined, vec![(OTHER, vec![b]), (third, vec![c])], "NET had a already: no change");
        // NET removed: its members are forgotten, a listing no longer reports them.
        r.set_networks(vec![(spec(OTHER), false)]);
        assert_eq!(r.members(0).count(), 1);
        assert!(list(&mut r, &all).changes.is_empty());
    }

    #[test]
    fn watch_events_join_update_and_leave() {
        let mut r = reconciler();
        let a = member("a", 2);
        let b = put(&mut r, &kv(NET, &a));
        assert_eq!(b.changes[0].joined, vec![a.clone()]);
        assert!(put(&mut r, &kv(NET, &a)).changes.is_empty(), "the same record again changes nothing");
        let mut a2 = a.clone();
        a2.overlay.push("2001:db8:1::2".parse().unwrap());
        let b = put(&mut r, &kv(NET, &a2));
        assert_eq!(b.changes[0].updated, vec![(a.clone(), a2.clone())]);
        assert_eq!(b.changes[0].neighbours().len(), 2);
        let key = key::member_key(P, NET, "a");
        let b = r.events([Event::Delete { key: key.as_bytes() }]);
        assert_eq!((b.changes[0].left.clone(), b.changes[0].members.len()), (vec![a2], 0));
        let b = r.events([Event::Delete { key: key.as_bytes() }]);
        assert!(b.changes.is_empty(), "deleting an unknown member changes nothing");
        let unrelated = r.events([Event::Put((b"/vxtap/v1/filler", b"x", 1))]);
        assert_eq!(unrelated, Batch::default(), "keys outside the layout are ignored, not counted");
        let other_vni = kv(NetKey { proto: Proto::Vxlan, vni: 7 }, &member("z", 9));
        assert_eq!(put(&mut r, &other_vni), Batch::default(), "networks this process does not run");
    }

    #[test]
    fn bad_records_are_counted_and_never_kept() {
        let mut r = reconciler();
        let a = member("a", 2);
        put(&mut r, &kv(NET, &a));
        let key = key::member_key(P, NET, "a").into_bytes();
        let b = r.events([Event::Put((&key, b"{garbage", 1))]);
        assert_eq!(b.bad.len(), 1);
        assert_eq!(b.changes[0].left, vec![a.clone()], "a member whose record turns bad leaves");
        let bad_key = b"/vxtap/v1/vxlan/42/members/bad name".to_vec();
        let b = r.events([Event::Put((&bad_key, a.to_json().as_bytes(), 1))]);
        assert!(matches!(b.bad[..], [(_, Invalid::Key(_))]));
        let mut thief = member("t", 5);
        thief.mac = MacAddr([2, 0, 0, 0, 0, 0xee]);
        let b = put(&mut r, &kv(NET, &thief));
        assert_eq!(b.bad[0].1, Invalid::OwnMac(thief.mac));
        assert!(b.changes.is_empty());
    }

    #[test]
    fn a_mac_two_members_claim_stays_with_the_first_registered() {
        let mut r = reconciler();
        let b = member("b", 2);
        put(&mut r, &kv_at(NET, &b, 10));
        let mut a = member("a", 3);
        a.mac = b.mac;
        let batch = put(&mut r, &kv_at(NET, &a, 20));
        assert!(batch.changes.is_empty(), "a later record cannot take a member's MAC, whatever its name");
        assert!(
            matches!(&batch.bad[..], [(k, Invalid::DuplicateMac { with, .. })] if k.ends_with("/a") && with == "b")
        );
        let c = member("c", 4);
        let batch = put(&mut r, &kv_at(NET, &c, 30));
        assert!(batch.bad.is_empty(), "a clash is counted once, not on every change");
        assert_eq!(batch.changes[0].joined, vec![c]);
        let b_key = key::member_key(P, NET, "b");
        let batch = r.events([Event::Delete { key: b_key.as_bytes() }]);
        assert_eq!(batch.changes[0].left, vec![b.clone()]);
        assert_eq!(batch.changes[0].joined, vec![a.clone()], "the clash over, the other member joins");
        let mut d = member("d", 5);
        d.mac = a.mac;
        let batch = list(&mut r, &[kv_at(NET, &d, 20), kv_at(NET, &a, 20)]);
        assert!(matches!(&batch.bad[..], [(k, _)] if k.ends_with("/d")), "same revision (one txn): by name");
        let mut e = member("e", 6);
        e.overlay = a.overlay.clone();
        let batch = list(&mut r, &[kv_at(NET, &e, 10), kv_at(NET, &a, 20)]);
        let ch = &batch.changes[0];
        assert_eq!(ch.members, vec![e.clone(), a.clone()], "the first registered first");
        assert_eq!(ch.neighbours(), vec![(e.overlay[0], e.mac)], "and it keeps a contested address");
    }

    #[test]
    fn own_record_events() {
        let mut r = reconciler();
        assert!(put(&mut r, &own("mine")).own.is_empty(), "our own record echoed back");
        let b = put(&mut r, &own("theirs"));
        assert_eq!(b.own, vec![Own::Foreign { net: 0, instance: Some("theirs".into()) }]);
        assert!(b.changes.is_empty(), "never a member of itself");
        let key = key::member_key(P, NET, "me");
        assert_eq!(r.events([Event::Delete { key: key.as_bytes() }]).own, vec![Own::Missing { net: 0 }]);
    }

    #[test]
    fn neighbours_and_vteps_of_a_change() {
        let (a, mut b) = (member("a", 2), member("b", 3));
        b.overlay = vec![a.overlay[0], "198.19.0.3".parse().unwrap()];
        b.vtep = a.vtep;
        let ch = Change { members: vec![a.clone(), b.clone()], ..Change::default() };
        assert_eq!(ch.neighbours(), vec![(a.overlay[0], a.mac), ("198.19.0.3".parse().unwrap(), b.mac)]);
        assert!(ch.vtep_in_use(a.vtep.ip()));
        assert!(!ch.vtep_in_use("198.18.0.9".parse().unwrap()));
    }
}
