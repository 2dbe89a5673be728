//! The per-packet work of the dataplane, without I/O: what the workers run between a read and a
//! write, and what `vxtap bench` and the criterion benches measure.
//!
//! Buffers have [`HEADROOM`] bytes in front of the frame, so encapsulation writes the tunnel
//! header there and the datagram is one contiguous slice: the frame is never copied.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

mod policy;

use crate::packet::dsfield;
use crate::packet::flow;
use crate::packet::pmtu::{self, MssClamp, PathMtus};
use crate::packet::proxy;
use crate::state::allow::Allowlist;
use crate::state::fdb::{EntryKind, Fdb, LearnOutcome};
use crate::state::neigh::Neighbours;
use crate::state::ratelimit::TokenBucket;
use crate::state::stats::{Counters, DropReason};
use crate::wire::frame::Frame;
use crate::wire::mac::MacAddr;
use crate::wire::{self, EncapHeader, RxPolicy};
pub use policy::Policies;
use policy::PolicyCell;

/// Room reserved before each frame for the largest tunnel header.
pub const HEADROOM: usize = wire::MAX_HEADER_LEN;

/// One overlay network (one VNI, one TAP) as the packet path sees it.
pub struct Network {
    pub vni: u32,
    /// UDP port of remote VTEPs: learned entries point at the source address with this port,
    /// because peers (the kernel among them) send from per-flow source ports.
    pub peer_port: u16,
    pub fdb: Fdb,
    pub counters: Counters,
    header: EncapHeader,
    /// Path MTUs learned towards the VTEPs of the socket the network sends on (docs/design.md "Path MTU").
    pub path_mtus: Arc<PathMtus>,
    /// `--df`, `--mss-clamp` and `--tos`, which a reload may change while packets flow.
    policies: PolicyCell,
    /// ICMP "too big" replies to inner senders, so a flood of oversize frames yields few.
    pub too_big_replies: TokenBucket,
    /// ARP/ND suppression (`--proxy`): requests for neighbours known behind a remote VTEP are
    /// answered from [`Network::neigh`] instead of crossing the tunnel.
    pub proxy: bool,
    /// The overlay's IP -> MAC table (`vxtap neigh`, cluster members).
    pub neigh: Neighbours,
}

/// ICMP "too big" replies a network may write per second, and at once.
pub const TOO_BIG_REPLIES_PER_SEC: u64 = 100;
pub const TOO_BIG_REPLIES_BURST: u64 = 10;

/// Where an encapsulated datagram goes.
pub enum Destinations {
    One(SocketAddr),
    /// Head-end replication to every flood-list remote.
    Flood(arc_swap::Guard<Arc<Vec<SocketAddr>>>),
}

impl Destinations {
    pub fn as_slice(&self) -> &[SocketAddr] {
        match self {
            Destinations::One(a) => std::slice::from_ref(a),
            Destinations::Flood(list) => list.as_slice(),
        }
    }
}

/// What a frame read from the TAP gets, decided once from its headers ([`Network::decide`]):
/// by the single-frame path ([`Network::encapsulate`]) and by the super-frame path, which cuts
/// the frame with the same view.
pub struct Decision {
    /// The frame's headers, parsed once.
    pub view: Frame,
    pub to: Destinations,
    /// Hash of the inner flow, which picks the outer source port.
    pub flow_hash: u32,
    /// The underlay may fragment the datagram (its outer DF bit is clear): `--df`.
    pub fragment: bool,
    /// The outer DS byte: DSCP per `--tos`, ECN the inner packet's (RFC 6040).
    pub tos: u8,
    /// `--mss-clamp` and the frame is a TCP SYN: the largest inner IP packet its connection may
    /// send, the narrowest path towards `to` allows (None: leave it, or nothing known).
    pub mss_limit: Option<u32>,
}

/// A frame ready to send.
pub struct Encapsulated {
    /// The datagram's range in the buffer: header followed by the frame.
    pub datagram: Range<usize>,
    /// Hash of the inner flow, which picks the outer source port.
    pub flow_hash: u32,
    pub to: Destinations,
    /// The underlay may fragment the datagram (its outer DF bit is clear).
    pub fragment: bool,
    /// The outer DS byte.
    pub tos: u8,
}

impl Network {
    pub fn new(vni: u32, peer_port: u16, header: EncapHeader, fdb: Fdb) -> Network {
        Network {
            vni,
            peer_port,
            fdb,
            counters: Counters::default(),
            header,
            path_mtus: Arc::default(),
            policies: PolicyCell::new(Policies::default()),
            too_big_replies: TokenBucket::new(TOO_BIG_REPLIES_PER_SEC, TOO_BIG_REPLIES_BURST),
            proxy: false,
            neigh: Neighbours::default(),
        }
    }

    /// The same network with these policies.
    pub fn with_policies(self, p: Policies) -> Network {
        self.policies.store(p);
        self
    }

    /// The same network with ARP/ND suppression on or off.
    pub fn with_proxy(mut self, proxy: bool) -> Network {
        self.proxy = proxy;
        self
    }

    /// `--proxy`: if `frame` (read from the TAP) is an ARP request or neighbour solicitation for
    /// an address of the neighbour table whose MAC the FDB places behind a remote VTEP, builds
    /// the reply into `out` ([`proxy::MAX_REPLY_LEN`] bytes) and returns it. Everything else
    /// (None) goes through the tunnel as usual.
    #[inline]
    pub fn proxy_reply(&self, frame: &[u8], out: &mut [u8]) -> Option<proxy::Answer> {
        if !proxy::is_candidate(frame) {
            return None;
        }
        let lookup = |ip| self.neigh.lookup(ip).filter(|mac| self.fdb.lookup(mac).is_some());
        proxy::answer(frame, lookup, out)
    }

    /// The same network, recording path MTUs in `table` (the one of the socket it sends on).
    pub fn with_path_mtus(mut self, table: Arc<PathMtus>) -> Network {
        self.path_mtus = table;
        self
    }

    /// The policies in force now: one relaxed load.
    #[inline]
    pub fn policies(&self) -> Policies {
        self.policies.load()
    }

    /// Changes the policies while packets flow (a reload); each packet sees the old or the new.
    pub fn set_policies(&self, p: Policies) {
        self.policies.store(p);
    }

    /// The largest inner IP packet that fits the path towards `dst` whose MTU is `path_mtu`,
    /// for a frame with `l2_len` bytes of Ethernet header.
    #[inline]
    pub fn inner_mtu(&self, dst: IpAddr, path_mtu: u32, l2_len: usize) -> u32 {
        pmtu::inner_mtu(path_mtu, !dst.to_canonical().is_ipv4(), self.header.len(), l2_len)
    }

    /// The largest inner IP packet that fits the narrowest path towards (or from) the VTEPs
    /// `vteps` under `clamp`, for a frame with `l2_len` bytes of Ethernet header; None when no
    /// path is known (`--mss-clamp=auto` and nothing learned).
    #[cold]
    fn mss_limit(&self, clamp: MssClamp, vteps: &[SocketAddr], l2_len: usize) -> Option<u32> {
        vteps
            .iter()
            .filter_map(|v| {
                let path = match clamp {
                    MssClamp::Auto => self.path_mtus.get(v.ip())?,
                    MssClamp::PathMtu(m) => u32::from(m),
                };
                Some(self.inner_mtu(v.ip(), path, l2_len))
            })
            .min()
    }

    /// `--mss-clamp` (`clamp`, from the policies the caller loaded): lowers the MSS of a TCP SYN
    /// in `frame` (its headers parsed into `view`) so that the connection fits the path towards
    /// (or from) the VTEPs `vteps`. For the receive path; the send path clamps per its
    /// [`Decision`].
    #[inline]
    pub fn clamp_mss(&self, clamp: MssClamp, frame: &mut [u8], view: &Frame, vteps: &[SocketAddr]) {
        if !pmtu::mss::is_syn(frame, view) {
            return;
        }
        if let Some(limit) = self.mss_limit(clamp, vteps, view.l2_len()) {
            pmtu::mss::clamp(frame, view, limit);
        }
    }

    /// The tunnel header this network prepends.
    pub fn header(&self) -> &EncapHeader {
        &self.header
    }

    /// Encapsulates the frame at `buf[HEADROOM..HEADROOM + frame_len]` in place, as
    /// [`Network::decide`] decides (its MSS clamped if it says so).
    #[inline]
    pub fn encapsulate(&self, buf: &mut [u8], frame_len: usize) -> Option<Encapsulated> {
        let end = HEADROOM + frame_len;
        let d = self.decide(&buf[HEADROOM..end])?;
        if let Some(limit) = d.mss_limit {
            // Only the TCP header changes: the view stays true.
            pmtu::mss::clamp(&mut buf[HEADROOM..end], &d.view, limit);
        }
        let start = self.header.prepend(buf, HEADROOM).ok()?;
        let Decision { to, flow_hash, fragment, tos, .. } = d;
        Some(Encapsulated { datagram: start..end, flow_hash, to, fragment, tos })
    }

    /// Everything about a frame read from the TAP, from one parse of its headers and one load
    /// of the policies: where it goes (a known unicast MAC to its VTEP only, everything else to
    /// the flood list), the hash of its inner flow, which picks the outer source port, the
    /// outer DF bit and DS byte, and whether its MSS is to be clamped. Drops (counted here) a
    /// runt frame or one with nowhere to go.
    #[inline]
    pub fn decide(&self, frame: &[u8]) -> Option<Decision> {
        let Some(view) = Frame::parse(frame) else {
            self.counters.drop(DropReason::ShortFrame);
            return None;
        };
        let dst = MacAddr::from_slice(frame)?;
        let known = if dst.is_multicast() { None } else { self.fdb.lookup(&dst) };
        let to = match known {
            Some(vtep) => Destinations::One(vtep),
            None => {
                let list = self.fdb.flood_list();
                if list.is_empty() {
                    self.counters.drop(DropReason::NoDestination);
                    return None;
                }
                Destinations::Flood(list)
            }
        };
        let p = self.policies();
        let mss_limit = match p.mss_clamp {
            Some(clamp) if pmtu::mss::is_syn(frame, &view) => {
                self.mss_limit(clamp, to.as_slice(), view.l2_len())
            }
            _ => None,
        };
        Some(Decision {
            flow_hash: flow::hash(frame, &view),
            fragment: p.df.may_fragment(&view),
            tos: dsfield::encap(p.tos, &view),
            mss_limit,
            view,
            to,
        })
    }

    /// Learns the inner source MAC of a decapsulated frame against the VTEP it came from.
    /// `false` (counted) when the frame must be dropped: it carries this TAP's own MAC (a loop),
    /// or a MAC that a static entry places behind another VTEP.
    #[inline]
    pub fn learn(&self, frame: &[u8], from: IpAddr) -> bool {
        self.learn_at(frame, from, self.fdb.now_ms())
    }

    /// [`Network::learn`] at time `now` (the FDB clock's milliseconds, read once per batch).
    #[inline]
    pub fn learn_at(&self, frame: &[u8], from: IpAddr, now: u64) -> bool {
        let Some(src) = MacAddr::from_slice(&frame[6..]) else {
            return true;
        };
        match self.fdb.learn_at(src, SocketAddr::new(from, self.peer_port), now) {
            LearnOutcome::LocalMacLoop => {
                self.counters.drop(DropReason::LocalMacLoop);
                false
            }
            // A static MAC arriving from another VTEP is spoofed or misconfigured: the kernel
            // drops it rather than let it through, and so do we.
            LearnOutcome::StaticKept if self.fdb.lookup(&src).is_some_and(|d| d.ip() != from) => {
                self.counters.drop(DropReason::StaticMismatch);
                false
            }
            _ => true,
        }
    }
}

/// The networks that share one UDP socket, told apart by VNI.
pub struct Demux {
    policy: RxPolicy,
    /// Few networks per socket: a linear scan beats hashing.
    networks: Vec<Arc<Network>>,
    allow: Allowlist,
    /// Drops that happen before a datagram belongs to a network; shared by the demultiplexers
    /// that replace one another on a socket when its networks change ([`Demux::with_counters`]).
    pub counters: SocketCounters,
}

/// A socket's counters, shared by the demultiplexers that replace one another on it. A newtype
/// rather than an `Arc`, whose own `drop` method would shadow [`Counters::drop`].
#[derive(Clone, Default)]
pub struct SocketCounters(Arc<Counters>);

impl std::ops::Deref for SocketCounters {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        &self.0
    }
}

impl Demux {
    /// A demultiplexer that accepts datagrams from any source (the kernel's behaviour).
    pub fn new(policy: RxPolicy, networks: Vec<Arc<Network>>) -> Demux {
        Demux::with_allowlist(policy, networks, Allowlist::any())
    }

    /// A demultiplexer that accepts only the sources `allow` lists; its known VTEPs are taken
    /// from the networks' flood lists and static entries now and on every [`refresh_allowlist`].
    ///
    /// [`refresh_allowlist`]: Demux::refresh_allowlist
    pub fn with_allowlist(policy: RxPolicy, networks: Vec<Arc<Network>>, allow: Allowlist) -> Demux {
        Demux::with_counters(policy, networks, allow, SocketCounters::default())
    }

    /// [`Demux::with_allowlist`], counting on `counters` (those of the demultiplexer it replaces).
    pub fn with_counters(
        policy: RxPolicy,
        networks: Vec<Arc<Network>>,
        allow: Allowlist,
        counters: SocketCounters,
    ) -> Demux {
        let demux = Demux { policy, networks, allow, counters };
        demux.refresh_allowlist();
        demux
    }

    /// Re-reads the known VTEPs (flood-list remotes, static entries and cluster members' entries)
    /// after the FDB changed.
    pub fn refresh_allowlist(&self) {
        if self.allow.is_open() {
            return;
        }
        let mut hosts = Vec::new();
        for n in &self.networks {
            hosts.extend(n.fdb.flood_list().iter().map(|a| a.ip()));
            hosts
                .extend(n.fdb.snapshot().iter().filter(|e| e.kind != EntryKind::Learned).map(|e| e.dst.ip()));
        }
        self.allow.set_hosts(hosts);
    }

    pub fn networks(&self) -> &[Arc<Network>] {
        &self.networks
    }

    /// Checks a received datagram, finds its network by VNI and learns its source. Returns the
    /// network's index and the inner frame (a sub-slice of `datagram`); drops are counted here.
    #[inline]
    pub fn decapsulate<'a>(&self, datagram: &'a [u8], from: IpAddr) -> Option<(usize, &'a [u8])> {
        self.decapsulate_at(datagram, from, self.now_ms())
    }

    /// The clock of the networks' FDBs, in milliseconds (0 without networks): the receive path
    /// reads it once per batch and hands it to [`Demux::decapsulate_at`].
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.networks.first().map_or(0, |n| n.fdb.now_ms())
    }

    /// [`Demux::decapsulate`], learning with the time `now` rather than reading the clock for
    /// every datagram (a clock read costs about as much as the rest of decapsulation).
    #[inline]
    pub fn decapsulate_at<'a>(
        &self,
        datagram: &'a [u8],
        from: IpAddr,
        now: u64,
    ) -> Option<(usize, &'a [u8])> {
        let from = from.to_canonical();
        if !self.allow.allows(from) {
            self.counters.drop(DropReason::NotAllowed);
            return None;
        }
        let d = match wire::decapsulate(datagram, &self.policy) {
            Ok(d) => d,
            Err(e) => {
                self.counters.drop(DropReason::from_wire(&e));
                return None;
            }
        };
        let Some(index) = self.networks.iter().position(|n| n.vni == d.vni) else {
            self.counters.drop(DropReason::UnknownVni);
            return None;
        };
        if !self.networks[index].learn_at(d.frame, from, now) {
            return None;
        }
        Some((index, d.frame))
    }
}

#[cfg(test)]
mod decision_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fdb::{FdbConfig, ManualClock};
    use crate::wire::Proto;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb]);
    const LOCAL: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn network(vni: u32, proto: Proto) -> Arc<Network> {
        let fdb = Fdb::new(vni, Some(LOCAL), FdbConfig::default(), Arc::new(ManualClock::new(0)));
        Arc::new(Network::new(vni, proto.default_port(), EncapHeader::for_proto(proto, vni).unwrap(), fdb))
    }

    fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst.0);
        f[6..12].copy_from_slice(&src.0);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    fn in_buffer(f: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; HEADROOM + f.len()];
        buf[HEADROOM..].copy_from_slice(f);
        buf
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, last], 4789))
    }

    #[test]
    fn unicast_to_known_vtep_broadcast_and_unknown_flood() {
        let n = network(42, Proto::Vxlan);
        n.fdb.set_flood_list(vec![addr(2), addr(3)]);
        n.fdb.add_static(B, addr(2)).unwrap();
        let f = frame(B, LOCAL);
        let mut buf = in_buffer(&f);
        let e = n.encapsulate(&mut buf, f.len()).unwrap();
        assert_eq!(e.to.as_slice(), &[addr(2)]);
        assert_eq!(e.datagram, HEADROOM - 8..HEADROOM + f.len());
        assert_eq!(&buf[e.datagram.start..HEADROOM], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
        assert_eq!(&buf[HEADROOM..], &f[..], "frame untouched");
        for dst in [MacAddr::BROADCAST, MacAddr([0x01, 0, 0x5e, 0, 0, 1]), A] {
            let f = frame(dst, LOCAL);
            let e = n.encapsulate(&mut in_buffer(&f), f.len()).unwrap();
            assert_eq!(e.to.as_slice(), &[addr(2), addr(3)], "{dst} floods");
        }
    }

    #[test]
    fn empty_flood_list_and_runt_frames_are_counted_drops() {
        let n = network(42, Proto::Vxlan);
        let f = frame(MacAddr::BROADCAST, LOCAL);
        assert!(n.encapsulate(&mut in_buffer(&f), f.len()).is_none());
        assert!(n.encapsulate(&mut in_buffer(&f[..13]), 13).is_none());
        let s = n.counters.snapshot();
        assert_eq!((s.dropped(DropReason::NoDestination), s.dropped(DropReason::ShortFrame)), (1, 1));
    }

    fn datagram(n: &Network, f: &[u8]) -> Vec<u8> {
        let mut buf = in_buffer(f);
        let start = n.header.prepend(&mut buf, HEADROOM).unwrap();
        buf[start..].to_vec()
    }

    #[test]
    fn demux_by_vni_learns_and_counts_unknown_vni() {
        let (n42, n43) = (network(42, Proto::Geneve), network(43, Proto::Geneve));
        let d = Demux::new(RxPolicy::for_proto(Proto::Geneve), vec![n42.clone(), n43.clone()]);
        let f = frame(LOCAL, A);
        let from: IpAddr = "::ffff:198.18.0.2".parse().unwrap();
        let dg = datagram(&n43, &f);
        let (i, inner) = d.decapsulate(&dg, from).unwrap();
        assert_eq!((i, inner), (1, &f[..]));
        assert_eq!(
            n43.fdb.lookup(&A),
            Some(SocketAddr::from(([198, 18, 0, 2], 6081))),
            "v4-mapped canonical"
        );
        assert_eq!(n42.fdb.lookup(&A), None, "learning stays in its VNI");
        let stray = network(99, Proto::Geneve);
        assert!(d.decapsulate(&datagram(&stray, &f), from).is_none());
        assert!(d.decapsulate(&[0u8; 3], from).is_none());
        let s = d.counters.snapshot();
        assert_eq!((s.dropped(DropReason::UnknownVni), s.dropped(DropReason::Truncated)), (1, 1));
    }

    #[test]
    fn static_mac_from_another_vtep_is_dropped_from_its_own_delivered() {
        let n = network(42, Proto::Vxlan);
        n.fdb.add_static(A, addr(2)).unwrap();
        let d = Demux::new(RxPolicy::for_proto(Proto::Vxlan), vec![n.clone()]);
        let dg = datagram(&n, &frame(LOCAL, A));
        assert!(d.decapsulate(&dg, "198.18.0.3".parse().unwrap()).is_none());
        assert_eq!(n.counters.snapshot().dropped(DropReason::StaticMismatch), 1);
        assert!(d.decapsulate(&dg, "198.18.0.2".parse().unwrap()).is_some());
        assert_eq!(n.fdb.lookup(&A), Some(addr(2)), "static entry unchanged");
    }

    #[test]
    fn unlisted_sources_are_dropped_before_parsing_known_vteps_pass() {
        let n = network(42, Proto::Vxlan);
        n.fdb.set_flood_list(vec![addr(2)]);
        n.fdb.add_static(B, addr(4)).unwrap();
        let allow = Allowlist::new(vec!["198.18.0.128/25".parse().unwrap()], Vec::new());
        let d = Demux::with_allowlist(RxPolicy::for_proto(Proto::Vxlan), vec![n.clone()], allow);
        let dg = datagram(&n, &frame(LOCAL, A));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(d.decapsulate(&dg, ip("198.18.0.3")).is_none(), "unlisted host");
        assert!(d.decapsulate(&[0u8; 2], ip("198.18.0.3")).is_none(), "checked before parsing");
        let s = d.counters.snapshot();
        assert_eq!((s.dropped(DropReason::NotAllowed), s.dropped(DropReason::Truncated)), (2, 0));
        assert_eq!(n.fdb.lookup(&A), None, "nothing learned from an unlisted host");
        for ok in ["198.18.0.2", "::ffff:198.18.0.2", "198.18.0.4", "198.18.0.200"] {
            assert!(
                d.decapsulate(&dg, ip(ok)).is_some(),
                "{ok} is a remote, a static VTEP or in --allow-from"
            );
        }
        n.fdb.add_flood(addr(3));
        assert!(d.decapsulate(&dg, ip("198.18.0.3")).is_none(), "not until refreshed");
        d.refresh_allowlist();
        assert!(d.decapsulate(&dg, ip("198.18.0.3")).is_some(), "a remote added at runtime is allowed");
    }

    #[test]
    fn frame_with_local_source_mac_is_a_dropped_loop() {
        let n = network(42, Proto::Vxlan);
        let d = Demux::new(RxPolicy::for_proto(Proto::Vxlan), vec![n.clone()]);
        let f = frame(MacAddr::BROADCAST, LOCAL);
        assert!(d.decapsulate(&datagram(&n, &f), "198.18.0.2".parse().unwrap()).is_none());
        assert_eq!(n.counters.snapshot().dropped(DropReason::LocalMacLoop), 1);
    }
}
