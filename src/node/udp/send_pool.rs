//! The send sockets of an underlay: one port per inner flow.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};

use super::io::UdpIo;
use super::sockopt::{bind_error, outer_header, udp_socket, zero_checksums, Reuse};
use super::{OuterOptions, UnderlayOptions};
use crate::packet::flow::PortRange;

/// Send sockets bound to ports spread over the source-port range, one port per slot: the
/// inner-flow hash picks a slot, so a flow keeps one outer source port. There are up to
/// `max_src_ports` slots (1024 by default, so that flows get distinct ports about as often as
/// the kernel's per-flow ports would give them: 32 flows over 1024 slots share a port with about
/// 40 % chance for one pair, over 16 sockets they shared in 15 ports); [`EAGER_SLOTS`] of them
/// are bound at start and
/// the rest when a flow first needs one (a few system calls, once per slot; descriptors grow
/// with the flows seen, bounded by the slots). A slot that cannot be bound (port taken,
/// descriptors exhausted) falls back to the eager slot below it.
///
/// Each port has a socket that never fragments (IP_PMTUDISC_DO: a datagram over the known path
/// MTU is refused with EMSGSIZE) and, when some network lets the underlay fragment, a second one
/// on the same port (SO_REUSEPORT) that lets the kernel fragment (IP_PMTUDISC_DONT): Linux has
/// no per-datagram DF for IPv4, and a flow keeps its source port whichever it uses.
pub(in crate::node) struct SendPool {
    slots: Box<[OnceLock<Option<Slot>>]>,
    /// Every `eager_step`-th slot is bound at start.
    eager_step: usize,
    /// Ports per slot: a slot binds the first free port of its share of the range.
    share: u32,
    setup: SlotSetup,
}

/// The sockets of one port.
struct Slot {
    never_fragments: UdpIo,
    fragments: Option<UdpIo>,
}

/// How slots are bound.
struct SlotSetup {
    ip: IpAddr,
    range: PortRange,
    listen_port: u16,
    fragmenting: bool,
    udp_csum: bool,
    outer: OuterOptions,
}

/// Slots bound at start.
pub(in crate::node) const EAGER_SLOTS: usize = 16;

impl SendPool {
    pub(super) fn bind(
        ip: IpAddr,
        range: PortRange,
        listen_port: u16,
        opts: &UnderlayOptions,
    ) -> Result<SendPool> {
        let span = u32::from(range.max() - range.min()) + 1;
        let n = opts.max_src_ports.clamp(1, span as usize);
        let setup = SlotSetup {
            ip,
            range,
            listen_port,
            fragmenting: opts.fragmenting,
            udp_csum: opts.udp_csum,
            outer: opts.outer,
        };
        let pool = SendPool {
            slots: (0..n).map(|_| OnceLock::new()).collect(),
            eager_step: n.div_ceil(EAGER_SLOTS),
            share: span / n as u32,
            setup,
        };
        let mut bound = 0;
        for i in (0..n).step_by(pool.eager_step) {
            match pool.open(i) {
                Ok(Some(slot)) => {
                    bound += 1;
                    let _ = pool.slots[i].set(Some(slot));
                }
                Ok(None) => {
                    let _ = pool.slots[i].set(None);
                }
                Err(e) => return Err(e),
            }
        }
        if bound == 0 {
            return Err(anyhow!(
                "no free UDP source port on {ip} in {}-{} (--src-ports)",
                range.min(),
                range.max()
            ));
        }
        Ok(pool)
    }

    /// Binds slot `i` on the first free port of its share; None if every one is taken.
    fn open(&self, i: usize) -> Result<Option<Slot>> {
        let s = &self.setup;
        for j in 0..self.share.max(1) {
            let port = s.range.min() as u32 + i as u32 * self.share + j;
            let Ok(port) = u16::try_from(port) else { break };
            if port == s.listen_port || port > s.range.max() {
                continue;
            }
            let addr = SocketAddr::new(s.ip, port);
            let pair = send_socket(addr, s.fragmenting, false, &s.outer).and_then(|df| {
                let frag = s.fragmenting.then(|| send_socket(addr, true, true, &s.outer)).transpose()?;
                Ok(Slot { never_fragments: df, fragments: frag })
            });
            match pair {
                Ok(slot) => {
                    if !s.udp_csum {
                        for io in std::iter::once(&slot.never_fragments).chain(&slot.fragments) {
                            zero_checksums(&io.socket, addr)
                                .context("turning off outer UDP checksums (--no-udp-csum)")?;
                        }
                    }
                    return Ok(Some(slot));
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(bind_error(addr, &e)),
            }
        }
        Ok(None)
    }

    /// The send socket for a flow: the same hash always picks the same port. With `fragment`,
    /// that port's fragmenting socket, if the pool has them.
    #[inline]
    pub(in crate::node) fn index(&self, flow_hash: u32, fragment: bool) -> usize {
        let slot = ((u64::from(flow_hash) * self.slots.len() as u64) >> 32) as usize;
        slot * 2 + usize::from(fragment && self.setup.fragmenting)
    }

    /// The fragmenting socket on the same port as send socket `index` (itself if the pool has
    /// none, or if it is one).
    pub(in crate::node) fn fragmenting_twin(&self, index: usize) -> usize {
        index | usize::from(self.setup.fragmenting)
    }

    /// Whether [`SendPool::index`] can pick fragmenting sockets.
    pub(in crate::node) fn fragmenting(&self) -> bool {
        self.setup.fragmenting
    }

    #[cfg(test)]
    pub(super) fn get_for(&self, flow_hash: u32) -> &UdpIo {
        self.get(self.index(flow_hash, false))
    }

    /// Send socket `index` (from [`SendPool::index`]), binding its slot the first time.
    #[inline]
    pub(in crate::node) fn get(&self, index: usize) -> &UdpIo {
        let slot = self.slot(index / 2);
        match (&slot.fragments, index % 2) {
            (Some(f), 1) => f,
            _ => &slot.never_fragments,
        }
    }

    fn slot(&self, i: usize) -> &Slot {
        // A failed bind leaves None: the eager slot at or below takes its flows.
        let opened = self.slots[i].get_or_init(|| self.open(i).ok().flatten());
        match opened {
            Some(s) => s,
            None => {
                let eager = i / self.eager_step * self.eager_step;
                (0..=eager)
                    .rev()
                    .step_by(self.eager_step)
                    .find_map(|e| self.slots[e].get().and_then(Option::as_ref))
                    .or_else(|| self.slots.iter().find_map(|s| s.get().and_then(Option::as_ref)))
                    .expect("bind() left at least one slot bound")
            }
        }
    }

    /// Ports of the slots bound so far.
    /// Sockets the pool holds now, and the most it will: each bound slot is one socket, two
    /// with fragmenting sockets. What `vxtap stats` reports as `send_sockets`/`send_sockets_max`.
    pub(in crate::node) fn sockets(&self) -> (usize, usize) {
        let per_slot = 1 + usize::from(self.setup.fragmenting);
        let bound = self.slots.iter().filter(|s| s.get().is_some_and(Option::is_some)).count();
        (bound * per_slot, self.slots.len() * per_slot)
    }

    pub(in crate::node) fn ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter_map(|s| s.get().and_then(Option::as_ref))
            .filter_map(|s| s.never_fragments.socket.local_addr().ok())
            .map(|a| a.port())
            .collect()
    }
}

/// A send socket of the pool at `addr` (in a SO_REUSEPORT pair with the fragmenting socket of
/// its port when `shared`), blocking: when its buffer is full a send waits (back-pressure, not
/// drops).
fn send_socket(addr: SocketAddr, shared: bool, fragmenting: bool, outer: &OuterOptions) -> io::Result<UdpIo> {
    let mut s = UdpIo::with_pmtu_mode(
        udp_socket(addr, Reuse { port: shared, addr: false })?,
        addr,
        false,
        fragmenting,
    )?;
    s.socket.set_nonblocking(false)?;
    s.flowinfo = outer_header(&socket2::SockRef::from(&s.socket), addr, outer)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::tests::{opts, receive};
    use super::super::Underlay;
    use super::*;

    #[test]
    fn pool_binds_distinct_ports_in_range_and_picks_stably() {
        let range = PortRange::new(40100, 40163).unwrap();
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40099)), opts(range, true, 1)).unwrap();
        let ports = u.send.ports();
        assert_eq!(ports.len(), EAGER_SLOTS, "bound at start");
        assert!(ports.iter().all(|p| (40100..=40163).contains(p)));
        let mut dedup = ports.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), ports.len());
        let a = u.send.get_for(12345).socket.local_addr().unwrap();
        assert_eq!(a, u.send.get_for(12345).socket.local_addr().unwrap());
        assert_ne!(
            u.send.get_for(0).socket.local_addr().unwrap(),
            u.send.get_for(u32::MAX).socket.local_addr().unwrap()
        );
    }

    /// A TCP/IPv4 frame of flow `i` (source port 40000 + i).
    fn flow_frame(i: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 19, 0, 1, 198, 19, 0, 2]);
        f.extend((40000 + i).to_be_bytes());
        f.extend([0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        f
    }

    /// Source-port entropy like the kernel's: 32 inner flows leave from at least 28 ports of the
    /// default range, each flow always from the same one; slots bind when first used.
    #[test]
    fn thirty_two_flows_get_nearly_as_many_ports() {
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 41999)), opts(PortRange::DYNAMIC, true, 1))
            .unwrap();
        let port = |h: u32| u.send.get_for(h).socket.local_addr().unwrap().port();
        let hashes: Vec<u32> = (0..32).map(|i| crate::packet::flow::flow_hash(&flow_frame(i))).collect();
        let mut ports: Vec<u16> = hashes.iter().map(|&h| port(h)).collect();
        assert!(ports.iter().all(|p| (49152..=65535).contains(p)));
        assert_eq!(ports, hashes.iter().map(|&h| port(h)).collect::<Vec<_>>(), "stable per flow");
        ports.sort();
        ports.dedup();
        assert!(ports.len() >= 28, "{} distinct ports for 32 flows", ports.len());
        assert!(u.send.ports().len() > EAGER_SLOTS, "slots were bound on first use");
    }

    #[test]
    fn fragmenting_sockets_share_the_ports_of_the_pool() {
        let range = PortRange::new(40800, 40815).unwrap();
        let mut o = opts(range, true, 1);
        o.fragmenting = true;
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40799)), o).unwrap();
        assert!(u.send.fragmenting());
        for h in [0u32, 1 << 31, u32::MAX] {
            let (df, frag) = (u.send.index(h, false), u.send.index(h, true));
            assert_ne!(df, frag);
            assert_eq!(u.send.fragmenting_twin(df), frag);
            let port = |i: usize| u.send.get(i).socket.local_addr().unwrap().port();
            assert_eq!(port(df), port(frag), "one source port per flow, whatever the DF bit");
        }
        let to = SocketAddr::from(([127, 0, 0, 1], 40799));
        let d = vec![9u8; 1000];
        assert_eq!(u.send.get(u.send.index(5, true)).send_train(to, &d, 1000, 1, 0).datagrams, 1);
        assert_eq!(receive(&u.recv[0], 1000), d);
        let plain = Underlay::bind(
            SocketAddr::from(([127, 0, 0, 1], 40899)),
            opts(PortRange::new(40900, 40915).unwrap(), true, 1),
        )
        .unwrap();
        assert!(!plain.send.fragmenting());
        assert_eq!(plain.send.index(5, true), plain.send.index(5, false));
        assert!(plain.path_mtu("127.0.0.1".parse().unwrap()).is_some_and(|m| m >= 1500), "loopback's MTU");
    }

    /// `max_src_ports` caps the pool: however many flows come, no more ports (and sockets) than
    /// that, which `sockets()` (`vxtap stats`: send_sockets, send_sockets_max) reports.
    #[test]
    fn the_cap_bounds_ports_and_sockets() {
        let mut o = opts(PortRange::new(41100, 41163).unwrap(), true, 1);
        o.max_src_ports = 4;
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 41099)), o).unwrap();
        for h in 0..2000u32 {
            u.send.get_for(h.wrapping_mul(2_654_435_761));
        }
        assert_eq!(u.send.ports().len(), 4);
        assert_eq!(u.send.sockets(), (4, 4));
        let mut o = opts(PortRange::new(41200, 41263).unwrap(), true, 1);
        (o.max_src_ports, o.fragmenting) = (40, true);
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 41199)), o).unwrap();
        let (bound, max) = u.send.sockets();
        assert_eq!((bound, max), (2 * u.send.ports().len(), 80), "two sockets per port");
        assert!(bound < max, "slots past the eager ones wait for their flows");
    }
}
