//! Interface configuration through the kernel's SIOC* ioctls (MAC, MTU, flags, addresses) and
//! the device counters in /proc: what `ip link` and `ip addr` do, for any interface by name.
//!
//! Each ioctl has its own typed request, so a request can never be paired with the wrong
//! argument structure.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{anyhow, Context, Result};

use crate::config::ifname;
use crate::wire::cidr::Cidr;
use crate::wire::mac::MacAddr;

/// The interface index of `name` in this network namespace, if it exists.
pub(crate) fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The MAC address of `dev`.
pub(crate) fn mac(dev: &str) -> Result<MacAddr> {
    let mut req = ifreq(dev);
    ifreq_ioctl(IfreqOp::GetHwAddr, &mut req).context("reading the MAC address")?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(MacAddr(std::array::from_fn(|i| data[i] as u8)))
}

pub(crate) fn set_mac(dev: &str, mac: MacAddr) -> Result<()> {
    let mut req = ifreq(dev);
    let mut hwaddr: libc::sockaddr = plain_zeroed_sockaddr();
    hwaddr.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in hwaddr.sa_data.iter_mut().zip(mac.0) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_hwaddr = hwaddr;
    ifreq_ioctl(IfreqOp::SetHwAddr, &mut req).with_context(|| format!("setting MAC {mac}"))
}

pub(crate) fn set_mtu(dev: &str, mtu: u32) -> Result<()> {
    let mut req = ifreq(dev);
    req.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).context("MTU out of range")?;
    ifreq_ioctl(IfreqOp::SetMtu, &mut req).with_context(|| format!("setting MTU {mtu}"))
}

/// Sets the device administratively up.
pub(crate) fn set_up(dev: &str) -> Result<()> {
    let mut req = ifreq(dev);
    ifreq_ioctl(IfreqOp::GetFlags, &mut req).context("reading interface flags")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ifreq_ioctl(IfreqOp::SetFlags, &mut req).context("setting the interface up")
}

/// Assigns an address: IPv4 through SIOCSIFADDR and SIOCSIFNETMASK, IPv6 through in6_ifreq.
pub(crate) fn add_address(dev: &str, cidr: &Cidr) -> Result<()> {
    match cidr.addr {
        IpAddr::V4(ip) => {
            let mut req = ifreq(dev);
            req.ifr_ifru.ifru_addr = sockaddr_v4(ip);
            ifreq_ioctl(IfreqOp::SetAddr, &mut req).with_context(|| format!("assigning {cidr}"))?;
            let mut req = ifreq(dev);
            req.ifr_ifru.ifru_netmask = sockaddr_v4(cidr.v4_netmask().unwrap_or(Ipv4Addr::BROADCAST));
            ifreq_ioctl(IfreqOp::SetNetmask, &mut req)
                .with_context(|| format!("setting the netmask of {cidr}"))
        }
        IpAddr::V6(ip) => {
            let index = if_index(dev).ok_or_else(|| anyhow!("interface {dev} vanished"))?;
            let mut req = libc::in6_ifreq {
                ifr6_addr: libc::in6_addr { s6_addr: ip.octets() },
                ifr6_prefixlen: u32::from(cidr.prefix),
                ifr6_ifindex: index as libc::c_int,
            };
            set_addr_v6(&mut req).with_context(|| format!("assigning {cidr} (is IPv6 disabled on {dev}?)"))
        }
    }
}

/// Frames the kernel dropped on their way out of `dev` (for a TAP: towards vxtap, because its
/// queue was full): the device's TX drop count, from `/proc/self/net/dev`, which shows vxtap's
/// own network namespace. None if the device is not listed.
pub(crate) fn tx_dropped(dev: &str) -> Option<u64> {
    tx_dropped_in(&std::fs::read_to_string("/proc/self/net/dev").ok()?, dev)
}

/// The "TX drop" column of `name` in a `/proc/net/dev` table: after the name, 8 receive
/// columns, then bytes, packets, errs, drop.
fn tx_dropped_in(table: &str, name: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let (dev, counters) = line.split_once(':')?;
        (dev.trim() == name).then(|| counters.split_whitespace().nth(11)?.parse().ok())?
    })
}

/// The interface ioctls vxtap uses, all of which take a `struct ifreq`.
#[derive(Clone, Copy, Debug)]
enum IfreqOp {
    GetHwAddr,
    SetHwAddr,
    SetMtu,
    GetFlags,
    SetFlags,
    SetAddr,
    SetNetmask,
}

impl IfreqOp {
    fn request(self) -> libc::c_ulong {
        match self {
            IfreqOp::GetHwAddr => libc::SIOCGIFHWADDR,
            IfreqOp::SetHwAddr => libc::SIOCSIFHWADDR,
            IfreqOp::SetMtu => libc::SIOCSIFMTU,
            IfreqOp::GetFlags => libc::SIOCGIFFLAGS,
            IfreqOp::SetFlags => libc::SIOCSIFFLAGS,
            IfreqOp::SetAddr => libc::SIOCSIFADDR,
            IfreqOp::SetNetmask => libc::SIOCSIFNETMASK,
        }
    }
}

/// Runs one of the ifreq ioctls on a throw-away IPv4 datagram socket.
fn ifreq_ioctl(op: IfreqOp, req: &mut libc::ifreq) -> io::Result<()> {
    let sock = control_socket(libc::AF_INET)?;
    // SAFETY: every IfreqOp request reads or fills a `struct ifreq`, and `req` is one, valid
    // and exclusively borrowed for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), op.request() as _, req as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SIOCSIFADDR on an IPv6 socket, which takes a `struct in6_ifreq`.
fn set_addr_v6(req: &mut libc::in6_ifreq) -> io::Result<()> {
    let sock = control_socket(libc::AF_INET6)?;
    // SAFETY: on an AF_INET6 socket SIOCSIFADDR reads a `struct in6_ifreq`, which `req` is,
    // valid for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFADDR as _, req as *mut libc::in6_ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A datagram socket of `family`, only to carry interface ioctls.
fn control_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An ifreq naming `name` (at most [`ifname::MAX_LEN`] bytes, NUL-terminated), all else zero.
pub(crate) fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes().take(ifname::MAX_LEN)) {
        *d = s as libc::c_char;
    }
    req
}

fn plain_zeroed_sockaddr() -> libc::sockaddr {
    // SAFETY: sockaddr is plain old data; all-zero is a valid value.
    unsafe { mem::zeroed() }
}

fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(addr).to_be();
    // SAFETY: sockaddr_in and sockaddr have the same size and are both plain data.
    unsafe { mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_dropped_is_read_from_the_device_line() {
        let table = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  vxt0: 2073 24 0 0 0 0 0 0 163768857 1544993 0 60682 0 0 0 0
 vxt01: 1 1 0 0 0 0 0 0 1 1 0 7 0 0 0 0
";
        assert_eq!(tx_dropped_in(table, "vxt0"), Some(60682));
        assert_eq!(tx_dropped_in(table, "vxt01"), Some(7), "a name that extends another is its own line");
        assert_eq!(tx_dropped_in(table, "lo"), Some(0));
        assert_eq!(tx_dropped_in(table, "eth9"), None);
        assert_eq!(tx_dropped_in("  vxt0: 1 2 3\n", "vxt0"), None, "a short line is no figure");
    }

    #[test]
    fn ifreq_holds_the_name_nul_terminated() {
        let r = ifreq("vxt0");
        assert_eq!(r.ifr_name[..5].iter().map(|&c| c as u8).collect::<Vec<_>>(), b"vxt0\0");
        let long = ifreq("a234567890123456789");
        assert_eq!(long.ifr_name[ifname::MAX_LEN], 0, "truncated, still terminated");
    }

    #[test]
    fn netmask_sockaddr_is_network_order() {
        let sa = sockaddr_v4(Ipv4Addr::new(255, 255, 255, 0));
        // SAFETY: reinterpreting back the sockaddr_in built above.
        let sin = unsafe { mem::transmute::<libc::sockaddr, libc::sockaddr_in>(sa) };
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [255, 255, 255, 0]);
        assert_eq!(sin.sin_family, libc::AF_INET as libc::sa_family_t);
    }
}
