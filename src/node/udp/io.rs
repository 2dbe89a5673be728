//! One underlay socket's sends and receives.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState};

use super::sockopt::{pmtu_mode, setsockopt};
use super::MAX_GSO_BYTES;
use crate::node::sys;

/// A socket with the quinn-udp state that sends and receives on it.
pub(in crate::node) struct UdpIo {
    pub socket: UdpSocket,
    /// quinn-udp's state, for receiving (recvmmsg, GRO, the outer DS byte).
    state: UdpSocketState,
    /// Datagrams per GSO send this socket may make: quinn-udp's probe at start, 1 once the
    /// kernel refused a GSO send.
    max_gso: AtomicUsize,
    /// `sin6_flowinfo` of every send (a fixed IPv6 flow label), in network order; 0 for none.
    pub(super) flowinfo: u32,
    /// UDP GRO is on: a received message may be a train of datagrams.
    pub(super) gro: bool,
}

/// What [`UdpIo::send_train`] did.
#[derive(Debug, Default)]
pub(in crate::node) struct Sent {
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

impl UdpIo {
    /// Wraps a bound socket. quinn-udp turns on GRO and its own "don't fragment" flavour
    /// (PMTUDISC_PROBE); vxtap keeps PMTUDISC_DO, so a learned path MTU is honoured, and turns
    /// GRO back off without `gro`, and receive timestamps off (unused, a cost per datagram).
    pub(super) fn new(socket: UdpSocket, addr: SocketAddr, gro: bool) -> io::Result<UdpIo> {
        UdpIo::with_pmtu_mode(socket, addr, gro, false)
    }

    /// As [`UdpIo::new`]; with `fragmenting`, the kernel may fragment what this socket sends.
    pub(super) fn with_pmtu_mode(
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
    pub(in crate::node) fn max_gso_segments(&self) -> usize {
        self.max_gso.load(Relaxed)
    }

    /// Sends `contents` to `to` with the outer DS byte `tos`: one datagram, or with
    /// `segment_size` a GSO train of datagrams of that size (the last may be shorter). vxtap's
    /// own sendmsg rather than quinn-udp's, whose `Transmit` carries only the ECN bits (and
    /// always sends an IP_TOS control message, which would override a socket's TOS): the outer
    /// DSCP comes per packet from `--tos inherit`. When the kernel refuses GSO (EIO from a device
    /// without it, EINVAL on a socket sending zero checksums), GSO is turned off on this socket.
    #[inline]
    pub(in crate::node) fn send(
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
    pub(in crate::node) fn send_train(
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
    pub(in crate::node) fn recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        self.state.recv(UdpSockRef::from(&self.socket), bufs, meta)
    }

    /// Datagrams the kernel dropped at this socket (receive buffer full, or a bad checksum):
    /// the socket's drop count (SO_MEMINFO). None if the kernel does not say.
    pub(in crate::node) fn kernel_drops(&self) -> Option<u64> {
        sys::socket_drops(self.socket.as_raw_fd())
    }

    /// Blocks until the socket has something to read (or an error to report).
    #[cfg(test)]
    pub(super) fn wait_readable(&self) -> io::Result<()> {
        sys::wait_readable(self.socket.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::sockopt::zero_checksums;
    use super::super::tests::{opts, receive, receive_checked};
    use super::super::{Underlay, MAX_GSO_SEGMENTS};
    use crate::packet::flow::PortRange;

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
