//! Underlay UDP sockets: made with socket2, received through quinn-udp (batched
//! recvmmsg, UDP GRO trains, the outer DS byte); sent with our own sendmsg (`sys.rs`), which writes
//! the UDP_SEGMENT and IP_TOS/IPV6_TCLASS control messages itself.
//!
//! Per (local address, port), shared by the networks on it: one receive socket per queue, in an
//! SO_REUSEPORT group when there are several, so the kernel keeps each peer flow on one socket
//! and one thread. Sending goes through a small pool of sockets bound to ports of the
//! source-port range: a UDP socket's source port is its bound port, so the inner-flow hash picks
//! a pool member, giving one port per flow and spreading flows for ECMP (RFC 7348 §5) without
//! raw sockets.
//!
//! Every socket sets "don't fragment" (RFC 7348 §4.3: VTEPs must not fragment); a datagram over
//! the path MTU then fails with EMSGSIZE and is counted as `too_big`.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use anyhow::{anyhow, Context, Result};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use super::sys;
use crate::config::{FlowLabel, Ttl};
use crate::packet::flow::PortRange;

/// Socket buffer size asked for: a few milliseconds of line rate, so bursts are not dropped.
const BUFFER_BYTES: usize = 4 << 20;
/// Most datagrams in one GSO send: the kernel's UDP_MAX_SEGMENTS before Linux 6.9.
pub(super) const MAX_GSO_SEGMENTS: usize = 64;
/// Most UDP payload bytes in one GSO send: the 64 KiB IP datagram less the IPv4 and UDP
/// headers (the kernel refuses more with EMSGSIZE).
pub(super) const MAX_GSO_BYTES: usize = 65535 - 20 - 8;

/// How the underlay sockets of one (local address, port) are set up.
#[derive(Clone, Debug)]
pub(super) struct UnderlayOptions {
    pub src_ports: PortRange,
    /// Without it, datagrams go out with a zero UDP checksum (and GSO, which needs the
    /// checksum, is off).
    pub udp_csum: bool,
    /// Receive sockets, one per queue.
    pub queues: usize,
    /// Use UDP GSO and GRO when the kernel has them.
    pub offload: bool,
    /// Also open send sockets that let the kernel fragment (IP_PMTUDISC_DONT), on the same
    /// ports, for datagrams whose DF bit is clear (`--df unset` or `inherit`).
    pub fragmenting: bool,
    /// The outer header's TTL, flow label and multicast settings.
    pub outer: OuterOptions,
    /// Multicast groups to join (RFC 7348 §4.2), each with a receive socket of its own.
    pub groups: Vec<IpAddr>,
    /// Queue threads stay on their CPUs (see `worker::serve_queue`).
    pub cpu_pinning: bool,
}

/// What the send sockets put in the outer header beyond addresses and ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct OuterOptions {
    pub ttl: Ttl,
    pub flowlabel: FlowLabel,
    /// Interface index multicast is sent through and groups joined on (0: by route).
    pub multicast_if: u32,
    /// Some network of the socket sends to a group.
    pub multicast: bool,
}

/// A socket with the quinn-udp state that sends and receives on it.
pub(super) struct UdpIo {
    pub socket: UdpSocket,
    /// quinn-udp's state, for receiving (recvmmsg, GRO, the outer DS byte).
    state: UdpSocketState,
    /// Datagrams per GSO send this socket may make: quinn-udp's probe at start, 1 once the
    /// kernel refused a GSO send.
    max_gso: AtomicUsize,
    /// `sin6_flowinfo` of every send (a fixed IPv6 flow label), in network order; 0 for none.
    flowinfo: u32,
    /// UDP GRO is on: a received message may be a train of datagrams.
    gro: bool,
}

/// What [`UdpIo::send_train`] did.
#[derive(Debug, Default)]
pub(super) struct Sent {
    /// Datagrams and their bytes the kernel took.
    pub datagrams: usize,
    pub bytes: usize,
    pub syscalls: usize,
    /// Datagrams that were not sent, and the error of the last send that failed.
    pub failed: usize,
    pub error: Option<io::Error>,
    /// Where in the train the kernel refused a send as over the path MTU (EMSGSIZE): the rest
    /// from there was not sent, nor counted as failed, and is for the caller to deal with.
    pub too_big_at: Option<usize>,
}

/// The underlay sockets of one (local address, port).
pub(super) struct Underlay {
    pub recv: Vec<UdpIo>,
    pub send: SendPool,
    /// The socket is IPv6 (possibly dual-stack): IPv4 peers are addressed as v4-mapped.
    v6: bool,
    /// Datagrams per GSO send; 1 when GSO is off or unavailable.
    gso_segments: usize,
    /// The bound address (maybe a wildcard).
    local: IpAddr,
    /// Queue sockets at the head of `recv`.
    queues: usize,
    cpu_pinning: bool,
}

impl Underlay {
    /// Binds the receive sockets at `bind` and the send pool on the same address.
    pub(super) fn bind(bind: SocketAddr, opts: UnderlayOptions) -> Result<Underlay> {
        let queues = opts.queues.max(1);
        if queues > 1 {
            // Every socket of a SO_REUSEPORT group must set it, so a busy port would not be
            // noticed by the group's own binds: probe it first with a plain socket.
            drop(udp_socket(bind, Reuse::default()).map_err(|e| bind_error(bind, &e))?);
        }
        let mut recv = Vec::with_capacity(queues + opts.groups.len());
        let reuse = Reuse { port: queues > 1, addr: !opts.groups.is_empty() };
        for _ in 0..queues {
            let s = udp_socket(bind, reuse).map_err(|e| bind_error(bind, &e))?;
            // A wildcard socket would otherwise get a copy of every group joined in this network
            // namespace (IP_MULTICAST_ALL): group traffic arrives on the group's own socket only.
            let _ = multicast_all(&socket2::SockRef::from(&s), bind, false);
            recv.push(UdpIo::new(s, bind, opts.offload).context("setting up the receive socket")?);
        }
        for &group in &opts.groups {
            let s = group_socket(SocketAddr::new(group, bind.port()), opts.outer.multicast_if)
                .map_err(|e| anyhow!("joining group {group} on port {}: {e}", bind.port()))?;
            recv.push(UdpIo::new(s, bind, opts.offload).context("setting up the group socket")?);
        }
        let v6 = bind.is_ipv6();
        let send = SendPool::bind(bind.ip(), opts.src_ports, bind.port(), &opts)?;
        // The kernel refuses GSO on a socket that sends zero checksums (udp_send_skb).
        let gso_segments = if opts.offload && opts.udp_csum {
            send.get(0).max_gso_segments().min(MAX_GSO_SEGMENTS)
        } else {
            1
        };
        Ok(Underlay { recv, send, v6, gso_segments, local: bind.ip(), queues, cpu_pinning: opts.cpu_pinning })
    }

    /// The path MTU the kernel knows towards `dst` now (the route's MTU, or the smaller value an
    /// ICMP error taught it), from a fresh socket connected there: a route lookup, nothing sent.
    /// None if the kernel cannot say (no route). Runs on cold paths only.
    pub(super) fn path_mtu(&self, dst: IpAddr) -> Option<u32> {
        let dst = dst.to_canonical();
        let local = match (self.local, dst) {
            (IpAddr::V6(l), IpAddr::V4(_)) if l.is_unspecified() => {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            }
            (l, _) => l.to_canonical(),
        };
        let probe =
            Socket::new(Domain::for_address(SocketAddr::new(dst, 0)), Type::DGRAM.cloexec(), None).ok()?;
        if local.is_ipv4() == dst.is_ipv4() {
            probe.bind(&SocketAddr::new(local, 0).into()).ok()?;
        }
        probe.connect(&SocketAddr::new(dst, 9).into()).ok()?;
        let (level, name) = if dst.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_MTU)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU)
        };
        sys::getsockopt_int(probe.as_raw_fd(), level, name).ok().and_then(|m| u32::try_from(m).ok())
    }

    /// Datagrams one send may carry (UDP GSO); 1 without GSO. A socket may lower it at run time
    /// ([`UdpIo::send_train`]).
    pub(super) fn gso_segments(&self) -> usize {
        self.gso_segments
    }

    /// Whether queue threads stay on their CPUs.
    pub(super) fn cpu_pinning(&self) -> bool {
        self.cpu_pinning
    }

    /// Receive sockets that serve queues (the group sockets come after them).
    pub(super) fn queues(&self) -> usize {
        self.queues
    }

    /// Datagrams the kernel dropped at the receive sockets ([`UdpIo::kernel_drops`]).
    pub(super) fn kernel_drops(&self) -> u64 {
        self.recv.iter().filter_map(UdpIo::kernel_drops).sum()
    }

    /// Whether the receive sockets coalesce trains of datagrams (UDP GRO).
    pub(super) fn gro(&self) -> bool {
        self.recv[0].gro
    }

    /// `addr` in the form this socket's family sends to.
    #[inline]
    pub(super) fn peer(&self, addr: SocketAddr) -> SocketAddr {
        match (self.v6, addr.ip()) {
            (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
            _ => addr,
        }
    }
}

/// Send sockets bound to ports spread over the source-port range, one port per slot: the
/// inner-flow hash picks a slot, so a flow keeps one outer source port. There are up to
/// [`MAX_SLOTS`] slots, so that flows get distinct ports about as often as the kernel's per-flow
/// ports would give them (32 flows over 1024 slots share a port with about 40 % chance for one
/// pair, over 16 sockets they shared in 15 ports); [`EAGER_SLOTS`] of them are bound at start and
/// the rest when a flow first needs one (a few system calls, once per slot; descriptors grow
/// with the flows seen, bounded by the slots). A slot that cannot be bound (port taken,
/// descriptors exhausted) falls back to the eager slot below it.
///
/// Each port has a socket that never fragments (IP_PMTUDISC_DO: a datagram over the known path
/// MTU is refused with EMSGSIZE) and, when some network lets the underlay fragment, a second one
/// on the same port (SO_REUSEPORT) that lets the kernel fragment (IP_PMTUDISC_DONT): Linux has
/// no per-datagram DF for IPv4, and a flow keeps its source port whichever it uses.
pub(super) struct SendPool {
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

/// Most slots (so distinct source ports) per pool.
pub(super) const MAX_SLOTS: usize = 1024;
/// Slots bound at start.
pub(super) const EAGER_SLOTS: usize = 16;

impl SendPool {
    fn bind(ip: IpAddr, range: PortRange, listen_port: u16, opts: &UnderlayOptions) -> Result<SendPool> {
        let span = u32::from(range.max() - range.min()) + 1;
        let n = MAX_SLOTS.min(span as usize);
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
    pub(super) fn index(&self, flow_hash: u32, fragment: bool) -> usize {
        let slot = ((u64::from(flow_hash) * self.slots.len() as u64) >> 32) as usize;
        slot * 2 + usize::from(fragment && self.setup.fragmenting)
    }

    /// The fragmenting socket on the same port as send socket `index` (itself if the pool has
    /// none, or if it is one).
    pub(super) fn fragmenting_twin(&self, index: usize) -> usize {
        index | usize::from(self.setup.fragmenting)
    }

    /// Whether [`SendPool::index`] can pick fragmenting sockets.
    pub(super) fn fragmenting(&self) -> bool {
        self.setup.fragmenting
    }

    #[cfg(test)]
    fn get_for(&self, flow_hash: u32) -> &UdpIo {
        self.get(self.index(flow_hash, false))
    }

    /// Send socket `index` (from [`SendPool::index`]), binding its slot the first time.
    #[inline]
    pub(super) fn get(&self, index: usize) -> &UdpIo {
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
    pub(super) fn ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter_map(|s| s.get().and_then(Option::as_ref))
            .filter_map(|s| s.never_fragments.socket.local_addr().ok())
            .map(|a| a.port())
            .collect()
    }
}

impl UdpIo {
    /// Wraps a bound socket. quinn-udp turns on GRO and its own "don't fragment" flavour
    /// (PMTUDISC_PROBE); vxtap keeps PMTUDISC_DO, so a learned path MTU is honoured, and turns
    /// GRO back off without `gro`, and receive timestamps off (unused, a cost per datagram).
    fn new(socket: UdpSocket, addr: SocketAddr, gro: bool) -> io::Result<UdpIo> {
        UdpIo::with_pmtu_mode(socket, addr, gro, false)
    }

    /// As [`UdpIo::new`]; with `fragmenting`, the kernel may fragment what this socket sends.
    fn with_pmtu_mode(
        socket: UdpSocket,
        addr: SocketAddr,
        gro: bool,
        fragmenting: bool,
    ) -> io::Result<UdpIo> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let s = socket2::SockRef::from(&socket);
        pmtu_mode(&s, addr, !fragmenting)?;
        let _ = setsockopt(&s, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0);
        if !gro {
            let _ = setsockopt(&s, libc::SOL_UDP, libc::UDP_GRO, 0);
        }
        let gro = gro && state.gro_segments() > 1;
        let max_gso = AtomicUsize::new(state.max_gso_segments());
        Ok(UdpIo { socket, state, max_gso, flowinfo: 0, gro })
    }

    /// Datagrams one send on this socket may carry.
    pub(super) fn max_gso_segments(&self) -> usize {
        self.max_gso.load(Relaxed)
    }

    /// Sends `contents` to `to` with the outer DS byte `tos`: one datagram, or with
    /// `segment_size` a GSO train of datagrams of that size (the last may be shorter). vxtap's
    /// own sendmsg rather than quinn-udp's, whose `Transmit` carries only the ECN bits (and
    /// always sends an IP_TOS control message, which would override a socket's TOS): the outer
    /// DSCP comes per packet from `--tos inherit`. When the kernel refuses GSO (EIO from a device
    /// without it, EINVAL on a socket sending zero checksums), GSO is turned off on this socket.
    #[inline]
    pub(super) fn send(
        &self,
        to: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
        tos: u8,
    ) -> io::Result<()> {
        let segment = segment_size.filter(|s| *s < contents.len()).map(|s| s as u16);
        let tclass = to.is_ipv6() && !matches!(to.ip(), IpAddr::V6(a) if a.to_ipv4_mapped().is_some());
        let dst = match to {
            SocketAddr::V6(v6) if self.flowinfo != 0 => socket2::SockAddr::from(SocketAddrV6::new(
                *v6.ip(),
                v6.port(),
                self.flowinfo, // std copies it into sin6_flowinfo as is: network order
                0,
            )),
            _ => to.into(),
        };
        let r = sys::send_udp(self.socket.as_raw_fd(), &dst, contents, segment, tos, tclass);
        if let Err(e) = &r {
            if segment.is_some() && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) {
                self.max_gso.store(1, Relaxed);
            }
        }
        r
    }

    /// Sends `train`, datagrams of `stride` bytes back to back (the last may be shorter), with
    /// the outer DS byte `tos`, in as few GSO sends as `limit` datagrams per send and the socket
    /// allow. When the kernel refuses GSO at run time, the refused datagrams go out again one
    /// per send, so the switch loses none.
    pub(super) fn send_train(
        &self,
        to: SocketAddr,
        train: &[u8],
        stride: usize,
        limit: usize,
        tos: u8,
    ) -> Sent {
        let stride = stride.max(1);
        let mut sent = Sent::default();
        let mut rest = train;
        while !rest.is_empty() {
            let per_send = self.max_gso_segments().min(limit).min(MAX_GSO_BYTES / stride).max(1);
            let (chunk, tail) = rest.split_at(rest.len().min(per_send * stride));
            let count = chunk.len().div_ceil(stride);
            sent.syscalls += 1;
            match self.send(to, chunk, (count > 1).then_some(stride), tos) {
                Ok(()) => {
                    sent.datagrams += count;
                    sent.bytes += chunk.len();
                }
                // GSO was just turned off: this chunk goes again, one datagram per send.
                Err(_) if count > 1 && self.max_gso_segments() == 1 => continue,
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    sent.too_big_at = Some(train.len() - rest.len());
                    break;
                }
                Err(e) => {
                    sent.failed += count;
                    sent.error = Some(e);
                }
            }
            rest = tail;
        }
        sent
    }

    /// Receives up to `bufs.len()` messages without blocking (WouldBlock when there is none);
    /// with GRO a message may hold a train of datagrams, `meta.stride` bytes apart.
    #[inline]
    pub(super) fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.state.recv(UdpSockRef::from(&self.socket), bufs, meta)
    }

    /// Datagrams the kernel dropped at this socket (receive buffer full, or a bad checksum):
    /// the socket's drop count (SO_MEMINFO). None if the kernel does not say.
    pub(super) fn kernel_drops(&self) -> Option<u64> {
        sys::socket_drops(self.socket.as_raw_fd())
    }

    /// Blocks until the socket has something to read (or an error to report).
    #[cfg(test)]
    fn wait_readable(&self) -> io::Result<()> {
        sys::wait_readable(self.socket.as_raw_fd())
    }
}

/// Forbids fragmentation (`dont`: IP_PMTUDISC_DO, DF set, EMSGSIZE over the known path MTU) or
/// allows it (IP_PMTUDISC_DONT: DF clear, fragmented by the kernel when over it): IPv6 and, on
/// IPv4 or dual-stack sockets, IPv4.
fn pmtu_mode(socket: &Socket, addr: SocketAddr, dont: bool) -> io::Result<()> {
    if addr.is_ipv6() {
        let mode = if dont { libc::IPV6_PMTUDISC_DO } else { libc::IPV6_PMTUDISC_DONT };
        setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, mode)?;
    }
    if addr.is_ipv4() || addr.ip().is_unspecified() {
        let mode = if dont { libc::IP_PMTUDISC_DO } else { libc::IP_PMTUDISC_DONT };
        setsockopt(socket, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, mode)?;
    }
    Ok(())
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

/// Sets the outer header options of a send socket bound at `addr`: the TTL (unicast and, in
/// group mode, multicast: 1 unless given, as the kernel does), the multicast interface with
/// loopback off, the IPv6 flow label. Returns the `sin6_flowinfo` its sends must carry.
fn outer_header(s: &Socket, addr: SocketAddr, o: &OuterOptions) -> io::Result<u32> {
    let fd = s.as_raw_fd();
    let (v4, v6) = (addr.is_ipv4() || addr.ip().is_unspecified(), addr.is_ipv6());
    if let Ttl::Hops(n) = o.ttl {
        if v4 {
            setsockopt(s, libc::IPPROTO_IP, libc::IP_TTL, n.into())?;
        }
        if v6 {
            setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, n.into())?;
        }
    }
    if o.multicast {
        let hops = match o.ttl {
            Ttl::Hops(n) => n.into(),
            Ttl::Auto => 1,
        };
        if v4 {
            setsockopt(s, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, hops)?;
            setsockopt(s, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, 0)?;
            if o.multicast_if != 0 {
                sys::multicast_if_v4(fd, o.multicast_if)?;
            }
        }
        if v6 {
            setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, hops)?;
            setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, 0)?;
            if o.multicast_if != 0 {
                setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, o.multicast_if as libc::c_int)?;
            }
        }
    }
    if !v6 {
        return Ok(0);
    }
    match o.flowlabel {
        FlowLabel::Inherit => {
            let _ = setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_AUTOFLOWLABEL, 1);
            Ok(0)
        }
        FlowLabel::Fixed(0) => {
            setsockopt(s, libc::IPPROTO_IPV6, libc::IPV6_AUTOFLOWLABEL, 0)?;
            Ok(0)
        }
        FlowLabel::Fixed(label) => {
            sys::use_flowlabel(fd, label)?;
            Ok(label.to_be())
        }
    }
}

/// `IPV6_MULTICAST_ALL` (linux/in6.h), which libc does not define.
const IPV6_MULTICAST_ALL: libc::c_int = 29;

/// Whether a socket bound at `addr` receives every group joined in its network namespace.
fn multicast_all(s: &Socket, addr: SocketAddr, on: bool) -> io::Result<()> {
    if addr.is_ipv4() || addr.ip().is_unspecified() {
        setsockopt(s, libc::IPPROTO_IP, libc::IP_MULTICAST_ALL, on.into())?;
    }
    if addr.is_ipv6() {
        setsockopt(s, libc::IPPROTO_IPV6, IPV6_MULTICAST_ALL, on.into())?;
    }
    Ok(())
}

/// The receive socket of a multicast group: bound to the group's address and the tunnel port
/// (beside the wildcard or unicast receive sockets, hence SO_REUSEADDR), joined on interface
/// `ifindex`. It receives each group datagram once, whatever the number of queue sockets.
fn group_socket(group: SocketAddr, ifindex: u32) -> io::Result<UdpSocket> {
    let s = udp_socket(group, Reuse { port: false, addr: true })?;
    let fd = s.as_raw_fd();
    match group.ip() {
        IpAddr::V4(g) => sys::join_group_v4(fd, g, ifindex)?,
        IpAddr::V6(g) => sys::join_group_v6(fd, g, ifindex)?,
    }
    multicast_all(&socket2::SockRef::from(&s), group, false)?;
    Ok(s)
}

/// Address reuse for a socket's bind: SO_REUSEPORT (a group of queue sockets, or a send socket
/// and its fragmenting twin) and SO_REUSEADDR (group sockets beside the unicast ones).
#[derive(Clone, Copy, Debug, Default)]
struct Reuse {
    port: bool,
    addr: bool,
}

/// A UDP socket bound at `addr`, with large buffers and fragmentation forbidden, in a
/// SO_REUSEPORT group if `reuse_port`. An IPv6 wildcard socket is dual-stack, so one socket
/// serves IPv4 and IPv6 peers.
fn udp_socket(addr: SocketAddr, reuse: Reuse) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!addr.ip().is_unspecified())?;
        // Accept zero UDP checksums from peers that send them over IPv6 (RFC 6935); best effort.
        let _ = setsockopt(&socket, libc::IPPROTO_UDP, libc::UDP_NO_CHECK6_RX, 1);
    }
    pmtu_mode(&socket, addr, true)?;
    if reuse.port {
        socket.set_reuse_port(true)?;
    }
    if reuse.addr {
        socket.set_reuse_address(true)?;
    }
    // Root may exceed net.core.[rw]mem_max; otherwise take what the limit allows.
    if setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, BUFFER_BYTES as libc::c_int).is_err() {
        let _ = socket.set_recv_buffer_size(BUFFER_BYTES);
    }
    if setsockopt(&socket, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, BUFFER_BYTES as libc::c_int).is_err() {
        let _ = socket.set_send_buffer_size(BUFFER_BYTES);
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// `SO_NO_CHECK` from asm-generic/socket.h (x86_64, arm64 and most others); the libc crate
/// exports it only for other targets.
const SO_NO_CHECK: libc::c_int = 11;

/// Makes `socket` send a zero UDP checksum: allowed for VXLAN and Geneve over IPv4 (RFC 7348 §5,
/// RFC 8926 §3.3) and, for tunnels, over IPv6 (RFC 6935). A dual-stack socket needs both options.
fn zero_checksums(socket: &UdpSocket, bind: SocketAddr) -> io::Result<()> {
    let s = socket2::SockRef::from(socket);
    if bind.is_ipv4() || bind.ip().is_unspecified() {
        setsockopt(&s, libc::SOL_SOCKET, SO_NO_CHECK, 1)?;
    }
    if bind.is_ipv6() {
        setsockopt(&s, libc::IPPROTO_UDP, libc::UDP_NO_CHECK6_TX, 1)?;
    }
    Ok(())
}

fn setsockopt(s: &Socket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    sys::setsockopt_int(s.as_raw_fd(), level, name, value)
}

/// One clear line for the bind errors users meet.
fn bind_error(addr: SocketAddr, e: &io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => anyhow!(
            "UDP port {} on {} is already in use (another vxtap, or a kernel vxlan/geneve device with that port?)",
            addr.port(),
            addr.ip()
        ),
        Some(libc::EADDRNOTAVAIL) => anyhow!("address {} is not on this host (--local)", addr.ip()),
        Some(libc::EACCES) => anyhow!("binding UDP port {} needs privileges", addr.port()),
        Some(libc::EAFNOSUPPORT) => anyhow!("{} sockets are not supported here (IPv6 disabled?)", family(addr)),
        _ => anyhow!("binding UDP {addr}: {e}"),
    }
}

fn family(addr: SocketAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn opts(range: PortRange, udp_csum: bool, queues: usize) -> UnderlayOptions {
        UnderlayOptions {
            src_ports: range,
            udp_csum,
            queues,
            offload: true,
            fragmenting: false,
            outer: OuterOptions::default(),
            groups: Vec::new(),
            cpu_pinning: false,
        }
    }

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
    fn busy_port_is_one_clear_line() {
        let range = PortRange::new(40200, 40210).unwrap();
        let first = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40199)), opts(range, true, 2)).unwrap();
        assert_eq!(first.recv.len(), 2, "one receive socket per queue");
        for queues in [1, 2] {
            let err = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40199)), opts(range, true, queues))
                .err()
                .unwrap();
            assert!(err.to_string().contains("already in use"), "{queues} queues: {err}");
        }
        drop(first);
        let err =
            Underlay::bind(SocketAddr::from(([198, 18, 0, 250], 40199)), opts(range, true, 1)).err().unwrap();
        assert!(err.to_string().contains("not on this host"), "{err}");
    }

    #[test]
    fn ipv4_peers_are_mapped_on_ipv6_sockets() {
        let u = Underlay::bind(
            SocketAddr::from((Ipv6Addr::LOCALHOST, 40299)),
            opts(PortRange::new(40300, 40301).unwrap(), false, 1), // zero checksums: UDP_NO_CHECK6_TX
        );
        let Ok(u) = u else { return }; // IPv6 may be disabled on the test host
        let p = u.peer(SocketAddr::from(([198, 18, 0, 2], 4789)));
        assert_eq!(p.to_string(), "[::ffff:198.18.0.2]:4789");
        assert_eq!(u.gso_segments(), 1, "no GSO without UDP checksums");
    }

    /// Receives on `io` until `bytes` have arrived, checking each message's metadata.
    fn receive_checked(io: &UdpIo, bytes: usize, check: impl Fn(&RecvMeta)) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < bytes {
            let mut meta = [RecvMeta::default()];
            let n = loop {
                match io.recv(&mut [IoSliceMut::new(&mut buf)], &mut meta) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.wait_readable().unwrap(),
                    r => break r.unwrap(),
                }
            };
            assert_eq!(n, 1);
            check(&meta[0]);
            got.extend_from_slice(&buf[..meta[0].len]);
        }
        got
    }

    fn receive(io: &UdpIo, bytes: usize) -> Vec<u8> {
        receive_checked(io, bytes, |_| {})
    }

    /// A socket whose GSO sends the kernel refuses at run time: here, one that sends zero
    /// checksums (udp_send_skb answers EINVAL, as a driver without GSO answers EIO). The train
    /// still arrives whole, GSO is off on that socket afterwards, and later trains go out one
    /// datagram per send.
    #[test]
    fn a_train_the_kernel_refuses_as_gso_goes_out_datagram_by_datagram() {
        let range = PortRange::new(40500, 40515).unwrap();
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40499)), opts(range, true, 1)).unwrap();
        if u.gso_segments() == 1 {
            eprintln!("skipped: this kernel has no UDP GSO");
            return;
        }
        let socket = u.send.get_for(7);
        zero_checksums(&socket.socket, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], 40499));
        let (stride, count) = (700, 6);
        let train: Vec<u8> = (0..stride * count - 100).map(|i| (i / stride * 31 + i % 7) as u8).collect();

        let sent = socket.send_train(to, &train, stride, MAX_GSO_SEGMENTS, 0);
        assert!(sent.error.is_none(), "{:?}", sent.error);
        assert_eq!((sent.datagrams, sent.bytes, sent.failed), (count, train.len(), 0));
        assert_eq!(sent.syscalls, 1 + count, "the refused GSO send, then one send per datagram");
        assert_eq!(socket.max_gso_segments(), 1, "GSO is off on this socket now");
        assert_eq!(receive(&u.recv[0], train.len()), train);

        let again = socket.send_train(to, &train, stride, MAX_GSO_SEGMENTS, 0);
        assert_eq!((again.datagrams, again.syscalls, again.failed), (count, count, 0));
        assert_eq!(receive(&u.recv[0], train.len()), train);
    }

    /// A send over the path MTU is not a failure: the train stops there and says where, for the
    /// caller's too-big handling. Other sockets of the pool are unaffected.
    #[test]
    fn emsgsize_stops_the_train_where_it_happened() {
        let range = PortRange::new(40700, 40715).unwrap();
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40699)), opts(range, true, 1)).unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], 40699));
        let small = vec![7u8; 100];
        let sent = u.send.get_for(3).send_train(to, &small, 100, 1, 0);
        assert_eq!((sent.datagrams, sent.too_big_at), (1, None));
        let huge = vec![7u8; 65_600]; // over the 64 KiB an IPv4 datagram can hold
        let sent = u.send.get_for(3).send_train(to, &huge, huge.len(), 1, 0);
        assert_eq!((sent.datagrams, sent.failed, sent.too_big_at), (0, 0, Some(0)));
        assert!(sent.error.is_none());
        assert_eq!(receive(&u.recv[0], 100), small);
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

    /// Trains longer than the limit are cut into several GSO sends, all arriving in order.
    #[test]
    fn send_train_respects_the_segment_limit() {
        let range = PortRange::new(40600, 40615).unwrap();
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40599)), opts(range, true, 1)).unwrap();
        let to = SocketAddr::from(([127, 0, 0, 1], 40599));
        let (stride, count) = (1000, 10);
        let train: Vec<u8> = (0..stride * count).map(|i| (i / stride) as u8).collect();
        let sent = u.send.get_for(1).send_train(to, &train, stride, 4, 0);
        assert_eq!((sent.datagrams, sent.failed), (count, 0));
        let expect = if u.gso_segments() > 1 { 3 } else { count };
        assert_eq!(sent.syscalls, expect, "sends of 4, 4 and 2 datagrams");
        assert_eq!(receive(&u.recv[0], train.len()), train);
    }

    /// One GSO send on loopback arrives as the same datagrams, whether the receive socket gets
    /// them as one GRO train or one by one.
    #[test]
    fn gso_train_arrives_as_its_datagrams() {
        let range = PortRange::new(40400, 40415).unwrap();
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40399)), opts(range, true, 1)).unwrap();
        let gso = u.gso_segments();
        let (seg, count) = (1000, gso.min(5));
        let mut train: Vec<u8> = (0..seg * count - 300).map(|i| (i / seg) as u8 + 1).collect();
        train[0] = 0xee;
        u.send.get_for(7).send(SocketAddr::from(([127, 0, 0, 1], 40399)), &train, Some(seg), 0b10).unwrap();
        let got = receive_checked(&u.recv[0], train.len(), |meta| {
            assert_eq!(meta.stride, seg.min(meta.len), "datagram boundaries at the segment size");
            assert_eq!(meta.ecn, Some(quinn_udp::EcnCodepoint::Ect0), "the DS byte's ECN bits went out");
        });
        assert_eq!(got, train);
    }
}
