//! Underlay UDP sockets, made with socket2.
//!
//! One receive socket per (local address, port), shared by the networks on it. Sending goes
//! through a small pool of sockets bound to ports of the source-port range: a UDP socket's source
//! port is its bound port, so the inner-flow hash picks a pool member, giving one port per flow
//! and spreading flows for ECMP (RFC 7348 §5) without raw sockets.
//!
//! Every socket sets "don't fragment" (RFC 7348 §4.3: VTEPs must not fragment); a datagram over
//! the path MTU then fails with EMSGSIZE and is counted as `too_big`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use anyhow::{anyhow, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::flow::PortRange;

/// Socket buffer size asked for: a few milliseconds of line rate, so bursts are not dropped.
const BUFFER_BYTES: usize = 4 << 20;
/// Number of send sockets, so of distinct outer source ports, per socket group.
pub const SEND_POOL_SIZE: usize = 16;

/// The underlay socket of one (local address, port).
pub struct Underlay {
    pub recv: UdpSocket,
    pub send: SendPool,
    /// The socket is IPv6 (possibly dual-stack): IPv4 peers are addressed as v4-mapped.
    v6: bool,
}

impl Underlay {
    /// Binds the receive socket at `bind` and the send pool on the same address. Without
    /// `udp_csum`, datagrams go out with a zero UDP checksum.
    pub fn bind(bind: SocketAddr, src_ports: PortRange, udp_csum: bool) -> Result<Underlay> {
        let recv = udp_socket(bind).map_err(|e| bind_error(bind, &e))?;
        let v6 = bind.is_ipv6();
        let send = SendPool::bind(bind.ip(), src_ports, bind.port())?;
        if !udp_csum {
            for s in &send.sockets {
                zero_checksums(s, bind).context("turning off outer UDP checksums (--no-udp-csum)")?;
            }
        }
        Ok(Underlay { recv, send, v6 })
    }

    /// `addr` in the form this socket's family sends to.
    #[inline]
    pub fn peer(&self, addr: SocketAddr) -> SocketAddr {
        match (self.v6, addr.ip()) {
            (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port()),
            _ => addr,
        }
    }
}

/// Sockets bound to distinct ports of the source-port range.
pub struct SendPool {
    sockets: Vec<UdpSocket>,
}

impl SendPool {
    fn bind(ip: IpAddr, range: PortRange, listen_port: u16) -> Result<SendPool> {
        let span = u32::from(range.max() - range.min()) + 1;
        let want = SEND_POOL_SIZE.min(span as usize);
        let mut sockets = Vec::with_capacity(want);
        // Spread the pool over the range; step past ports that are taken.
        let mut tried = 0u32;
        let mut slot = 0u32;
        while sockets.len() < want && tried < span {
            let base = (u64::from(slot) * u64::from(span) / want as u64) as u32;
            let port = range.min() + ((base + tried) % span) as u16;
            if port != listen_port {
                match udp_socket(SocketAddr::new(ip, port)) {
                    Ok(s) => {
                        sockets.push(s);
                        slot += 1;
                        tried = 0;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
                    Err(e) => return Err(bind_error(SocketAddr::new(ip, port), &e)),
                }
            }
            tried += 1;
        }
        if sockets.is_empty() {
            return Err(anyhow!(
                "no free UDP source port on {ip} in {}-{} (--src-ports)",
                range.min(),
                range.max()
            ));
        }
        Ok(SendPool { sockets })
    }

    /// The socket for a flow: the same hash always picks the same socket, so the same port.
    #[inline]
    pub fn pick(&self, flow_hash: u32) -> &UdpSocket {
        let i = (u64::from(flow_hash) * self.sockets.len() as u64) >> 32;
        &self.sockets[i as usize]
    }

    pub fn ports(&self) -> Vec<u16> {
        self.sockets.iter().filter_map(|s| s.local_addr().ok()).map(|a| a.port()).collect()
    }
}

/// A UDP socket bound at `addr`, with large buffers and fragmentation forbidden. An IPv6
/// wildcard socket is dual-stack, so one socket serves IPv4 and IPv6 peers.
fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!addr.ip().is_unspecified())?;
        // Accept zero UDP checksums from peers that send them over IPv6 (RFC 6935); best effort.
        let _ = setsockopt(&socket, libc::IPPROTO_UDP, libc::UDP_NO_CHECK6_RX, 1);
        setsockopt(&socket, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DO)?;
    }
    if addr.is_ipv4() || addr.ip().is_unspecified() {
        // On a dual-stack socket this covers IPv4 peers too.
        setsockopt(&socket, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO)?;
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
    // SAFETY: value is a c_int living for the call, and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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

/// The wildcard of `v6`'s family.
pub fn wildcard(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_binds_distinct_ports_in_range_and_picks_stably() {
        let range = PortRange::new(40100, 40163).unwrap();
        let u = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40099)), range, true).unwrap();
        let ports = u.send.ports();
        assert_eq!(ports.len(), SEND_POOL_SIZE);
        assert!(ports.iter().all(|p| (40100..=40163).contains(p)));
        let mut dedup = ports.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), ports.len());
        let a = u.send.pick(12345).local_addr().unwrap();
        assert_eq!(a, u.send.pick(12345).local_addr().unwrap());
        assert_ne!(u.send.pick(0).local_addr().unwrap(), u.send.pick(u32::MAX).local_addr().unwrap());
    }

    #[test]
    fn busy_port_is_one_clear_line() {
        let range = PortRange::new(40200, 40210).unwrap();
        let first = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40199)), range, true).unwrap();
        let err = Underlay::bind(SocketAddr::from(([127, 0, 0, 1], 40199)), range, true).err().unwrap();
        assert!(err.to_string().contains("already in use"), "{err}");
        drop(first);
        let err = Underlay::bind(SocketAddr::from(([198, 18, 0, 250], 40199)), range, true).err().unwrap();
        assert!(err.to_string().contains("not on this host"), "{err}");
    }

    #[test]
    fn ipv4_peers_are_mapped_on_ipv6_sockets() {
        let u = Underlay::bind(
            SocketAddr::from((Ipv6Addr::LOCALHOST, 40299)),
            PortRange::new(40300, 40301).unwrap(),
            false, // and zero checksums: exercises UDP_NO_CHECK6_TX
        );
        let Ok(u) = u else { return }; // IPv6 may be disabled on the test host
        let p = u.peer(SocketAddr::from(([198, 18, 0, 2], 4789)));
        assert_eq!(p.to_string(), "[::ffff:198.18.0.2]:4789");
    }
}
