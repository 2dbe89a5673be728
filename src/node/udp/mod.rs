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
//!
//! - this file: [`Underlay`], the sockets of one (local address, port), and their options;
//! - `send_pool`: the send sockets, one port per inner flow ([`SendPool`]);
//! - `io`: one socket's sends and receives ([`UdpIo`]);
//! - `sockopt`: how sockets are made and set up (bind, DF, buffers, checksums, the outer header).

mod io;
mod send_pool;
mod sockopt;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use anyhow::{anyhow, Context, Result};
use socket2::{Domain, Socket, Type};

use super::sys;
use crate::config::{FlowLabel, Ttl};
use crate::packet::flow::PortRange;
pub(super) use io::{Sent, UdpIo};
pub(super) use send_pool::SendPool;
use sockopt::{bind_error, group_socket, multicast_all};
pub(super) use sockopt::{pmtu_mode, udp_socket, Reuse};
/// Most datagrams in one GSO send: the kernel's UDP_MAX_SEGMENTS before Linux 6.9.
pub(super) const MAX_GSO_SEGMENTS: usize = 64;
/// Most UDP payload bytes in one GSO send: the 64 KiB IP datagram less the IPv4 and UDP
/// headers (the kernel refuses more with EMSGSIZE).
pub(super) const MAX_GSO_BYTES: usize = 65535 - 20 - 8;

/// How the underlay sockets of one (local address, port) are set up.
#[derive(Clone, Debug)]
pub(super) struct UnderlayOptions {
    pub src_ports: PortRange,
    /// Most source ports (slots) the send pool binds.
    pub max_src_ports: usize,
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

#[cfg(test)]
mod tests {
    //! The helpers the tests of this folder share, and the tests of [`Underlay`].
    use std::io::{self, IoSliceMut};
    use std::net::Ipv6Addr;

    use quinn_udp::RecvMeta;

    use super::*;

    pub(super) fn opts(range: PortRange, udp_csum: bool, queues: usize) -> UnderlayOptions {
        UnderlayOptions {
            src_ports: range,
            max_src_ports: crate::config::DEFAULT_MAX_SRC_PORTS,
            udp_csum,
            queues,
            offload: true,
            fragmenting: false,
            outer: OuterOptions::default(),
            groups: Vec::new(),
            cpu_pinning: false,
        }
    }

    /// Receives on `io` until `bytes` have arrived, checking each message's metadata.
    pub(super) fn receive_checked(io: &UdpIo, bytes: usize, check: impl Fn(&RecvMeta)) -> Vec<u8> {
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

    pub(super) fn receive(io: &UdpIo, bytes: usize) -> Vec<u8> {
        receive_checked(io, bytes, |_| {})
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
}
