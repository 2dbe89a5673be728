//! How underlay sockets are made and set up: bind with reuse, large buffers, fragmentation
//! allowed or not, zero checksums, the outer header's TTL and flow label, multicast groups, and
//! the bind errors users meet as one clear line.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use anyhow::anyhow;
use socket2::{Domain, Protocol, Socket, Type};

use super::OuterOptions;
use crate::config::{FlowLabel, Ttl};
use crate::node::sys;

/// Socket buffer size asked for: a few milliseconds of line rate, so bursts are not dropped.
const BUFFER_BYTES: usize = 4 << 20;

/// Forbids fragmentation (`dont`: IP_PMTUDISC_DO, DF set, EMSGSIZE over the known path MTU) or
/// allows it (IP_PMTUDISC_DONT: DF clear, fragmented by the kernel when over it): IPv6 and, on
/// IPv4 or dual-stack sockets, IPv4.
pub(in crate::node) fn pmtu_mode(socket: &Socket, addr: SocketAddr, dont: bool) -> io::Result<()> {
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

/// Sets the outer header options of a send socket bound at `addr`: the TTL (unicast and, in
/// group mode, multicast: 1 unless given, as the kernel does), the multicast interface with
/// loopback off, the IPv6 flow label. Returns the `sin6_flowinfo` its sends must carry.
pub(super) fn outer_header(s: &Socket, addr: SocketAddr, o: &OuterOptions) -> io::Result<u32> {
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
pub(super) fn multicast_all(s: &Socket, addr: SocketAddr, on: bool) -> io::Result<()> {
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
pub(super) fn group_socket(group: SocketAddr, ifindex: u32) -> io::Result<UdpSocket> {
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
pub(in crate::node) struct Reuse {
    pub(in crate::node) port: bool,
    pub(in crate::node) addr: bool,
}

/// A UDP socket bound at `addr`, with large buffers and fragmentation forbidden, in a
/// SO_REUSEPORT group if `reuse_port`. An IPv6 wildcard socket is dual-stack, so one socket
/// serves IPv4 and IPv6 peers.
pub(in crate::node) fn udp_socket(addr: SocketAddr, reuse: Reuse) -> io::Result<UdpSocket> {
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
pub(super) fn zero_checksums(socket: &UdpSocket, bind: SocketAddr) -> io::Result<()> {
    let s = socket2::SockRef::from(socket);
    if bind.is_ipv4() || bind.ip().is_unspecified() {
        setsockopt(&s, libc::SOL_SOCKET, SO_NO_CHECK, 1)?;
    }
    if bind.is_ipv6() {
        setsockopt(&s, libc::IPPROTO_UDP, libc::UDP_NO_CHECK6_TX, 1)?;
    }
    Ok(())
}

pub(super) fn setsockopt(
    s: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    sys::setsockopt_int(s.as_raw_fd(), level, name, value)
}

/// One clear line for the bind errors users meet.
pub(super) fn bind_error(addr: SocketAddr, e: &io::Error) -> anyhow::Error {
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

pub(super) fn family(addr: SocketAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}
