//! The TAP device, through the kernel's tun driver ioctls.
//!
//! A small module of our own rather than a crate: vxtap needs IFF_NO_PI now and IFF_VNET_HDR,
//! TUNSETOFFLOAD and IFF_MULTI_QUEUE for the offload work, plus MTU, MAC and addresses; the
//! ioctls are few and documented (Documentation/networking/tuntap.rst).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{anyhow, bail, Context, Result};

use crate::config::Cidr;
use crate::mac::MacAddr;

/// Longest interface name the kernel takes (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// TUNSETOFFLOAD bits (include/uapi/linux/if_tun.h).
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// How to open a TAP.
#[derive(Clone, Copy, Debug)]
pub struct TapOptions {
    /// Queues to open (IFF_MULTI_QUEUE when more than one), each read by its own thread.
    pub queues: usize,
    /// Ask for the virtio-net header and the checksum/TSO/USO offloads.
    pub offload: bool,
}

/// What the kernel agreed to, decided once when the TAP is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Every read and write carries a virtio-net header ([`crate::offload::vnet`]).
    pub vnet_hdr: bool,
    /// The kernel hands over partial checksums and TCP super-frames (TSO4/TSO6).
    pub tso: bool,
    /// ... and UDP super-frames (USO, Linux 6.2+).
    pub uso: bool,
}

impl Offloads {
    /// Bytes before each frame on reads and writes.
    pub fn header_len(&self) -> usize {
        if self.vnet_hdr {
            crate::offload::vnet::LEN
        } else {
            0
        }
    }
}

/// An open TAP device: one file per queue, frames in and out, without packet-info header.
pub struct Tap {
    queues: Vec<TapQueue>,
    name: String,
    created: bool,
    offloads: Offloads,
}

/// One queue of a TAP: the kernel spreads flows over queues by their hash, so a flow stays on
/// one queue (and one thread) and is never reordered.
pub struct TapQueue {
    file: File,
}

impl Tap {
    /// Attaches to the TAP `name`, creating it if absent, with `opts.queues` queues (fewer when an
    /// existing device is single-queue) and the offloads the kernel accepts. Offloads left on a
    /// reused persistent device by an earlier process are replaced: they are device-wide, and a
    /// stale TSO setting would hand a reader without virtio-net headers super-frames it cannot
    /// parse (bulk TCP breaks while ping still works).
    pub fn open(name: &str, opts: TapOptions) -> Result<Tap> {
        check_name(name)?;
        let existed = if_index(name).is_some();
        let want = opts.queues.max(1);
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if opts.offload {
            flags |= libc::IFF_VNET_HDR;
        }
        let first = match attach(name, flags | if want > 1 { libc::IFF_MULTI_QUEUE } else { 0 }) {
            // An existing single-queue device cannot take IFF_MULTI_QUEUE: use its one queue.
            Err(e) if want > 1 && existed && e.raw_os_error() == Some(libc::EINVAL) => attach(name, flags),
            r => r,
        }
        .map_err(|e| attach_error(name, existed, &e))?;
        let mut queues = vec![TapQueue { file: first }];
        if tun_flags(&queues[0].file).is_some_and(|f| f & libc::IFF_MULTI_QUEUE != 0) {
            while queues.len() < want {
                let file = attach(name, flags | libc::IFF_MULTI_QUEUE)
                    .map_err(|e| anyhow!("opening queue {} of TAP {name}: {e}", queues.len()))?;
                queues.push(TapQueue { file });
            }
        }
        let offloads = negotiate_offloads(&queues[0].file, opts.offload)
            .with_context(|| format!("setting offloads on TAP {name}"))?;
        Ok(Tap { queues, name: name.to_string(), created: !existed, offloads })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when this process created the device; it disappears when the process exits.
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    pub fn queues(&self) -> &[TapQueue] {
        &self.queues
    }

    /// Frames the kernel dropped on their way to this TAP because its queue was full (vxtap did
    /// not read them in time): the device's TX drop count, from `/proc/self/net/dev`, which
    /// shows vxtap's own network namespace. None if the device is not listed.
    pub fn kernel_drops(&self) -> Option<u64> {
        tx_dropped(&std::fs::read_to_string("/proc/self/net/dev").ok()?, &self.name)
    }

    /// The queue a thread numbered `i` uses.
    pub fn queue(&self, i: usize) -> &TapQueue {
        &self.queues[i % self.queues.len()]
    }

    pub fn mac(&self) -> Result<MacAddr> {
        let mut req = ifreq(&self.name);
        ctl_ioctl(libc::AF_INET, libc::SIOCGIFHWADDR, &mut req).context("reading the TAP's MAC")?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        Ok(MacAddr(std::array::from_fn(|i| data[i] as u8)))
    }

    pub fn set_mac(&self, mac: MacAddr) -> Result<()> {
        let mut req = ifreq(&self.name);
        // SAFETY: writing plain data into the union member SIOCSIFHWADDR reads.
        unsafe {
            req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (d, s) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac.0) {
                *d = s as libc::c_char;
            }
        }
        ctl_ioctl(libc::AF_INET, libc::SIOCSIFHWADDR, &mut req).with_context(|| format!("setting MAC {mac}"))
    }

    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        let mut req = ifreq(&self.name);
        req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        ctl_ioctl(libc::AF_INET, libc::SIOCSIFMTU, &mut req).with_context(|| format!("setting MTU {mtu}"))
    }

    /// Sets the device administratively up.
    pub fn set_up(&self) -> Result<()> {
        let mut req = ifreq(&self.name);
        ctl_ioctl(libc::AF_INET, libc::SIOCGIFFLAGS, &mut req).context("reading interface flags")?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        ctl_ioctl(libc::AF_INET, libc::SIOCSIFFLAGS, &mut req).context("setting the TAP up")
    }

    /// Assigns an address: IPv4 through SIOCSIFADDR and SIOCSIFNETMASK, IPv6 through in6_ifreq.
    pub fn add_address(&self, cidr: &Cidr) -> Result<()> {
        match cidr.addr {
            IpAddr::V4(ip) => {
                let mut req = ifreq(&self.name);
                req.ifr_ifru.ifru_addr = sockaddr_v4(u32::from(ip));
                ctl_ioctl(libc::AF_INET, libc::SIOCSIFADDR, &mut req)
                    .with_context(|| format!("assigning {cidr}"))?;
                let mask = u32::MAX.checked_shl(32 - u32::from(cidr.prefix)).unwrap_or(0);
                let mut req = ifreq(&self.name);
                req.ifr_ifru.ifru_netmask = sockaddr_v4(mask);
                ctl_ioctl(libc::AF_INET, libc::SIOCSIFNETMASK, &mut req)
                    .with_context(|| format!("setting the netmask of {cidr}"))
            }
            IpAddr::V6(ip) => {
                let index = if_index(&self.name).ok_or_else(|| anyhow!("TAP {} vanished", self.name))?;
                let mut req = libc::in6_ifreq {
                    ifr6_addr: libc::in6_addr { s6_addr: ip.octets() },
                    ifr6_prefixlen: u32::from(cidr.prefix),
                    ifr6_ifindex: index as libc::c_int,
                };
                ctl_ioctl(libc::AF_INET6, libc::SIOCSIFADDR, &mut req)
                    .with_context(|| format!("assigning {cidr} (is IPv6 disabled on {}?)", self.name))
            }
        }
    }
}

impl TapQueue {
    /// Makes reads return WouldBlock instead of waiting, so a reader can tell when the queue
    /// is drained (and send what it batched) and then wait with [`TapQueue::wait_readable`].
    pub fn set_nonblocking(&self) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL on an fd this queue owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Blocks until a frame is waiting.
    pub fn wait_readable(&self) -> io::Result<()> {
        super::wait_readable(self.file.as_raw_fd())
    }

    /// Reads one frame (after its virtio-net header when offloads are on); blocks until there is one.
    #[inline]
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes of writes.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        byte_count(n)
    }

    /// Writes one frame, or with offloads on a virtio-net header and its frame, contiguous.
    #[inline]
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: frame is valid for frame.len() bytes of reads.
        let n = unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        byte_count(n)
    }

    /// Writes `head` then `frame` as one frame (a virtio-net header before a frame that lies
    /// elsewhere), without copying them together.
    #[inline]
    pub fn write2(&self, head: &[u8], frame: &[u8]) -> io::Result<usize> {
        let iov = [
            libc::iovec { iov_base: head.as_ptr() as *mut libc::c_void, iov_len: head.len() },
            libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() },
        ];
        // SAFETY: both iovecs point at live slices of their lengths; writev only reads them.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), 2) };
        byte_count(n)
    }
}

/// The byte count a read or write system call returned, or its error.
fn byte_count(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Opens /dev/net/tun and attaches it to `name` with `flags` (TUNSETIFF).
fn attach(name: &str, flags: libc::c_int) -> io::Result<File> {
    let file =
        OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open("/dev/net/tun")?;
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq, which lives for the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// The flags of the device `file` is attached to (TUNGETIFF).
fn tun_flags(file: &File) -> Option<libc::c_int> {
    let mut req = ifreq("");
    // SAFETY: TUNGETIFF fills an ifreq, which lives for the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNGETIFF, &mut req) } < 0 {
        return None;
    }
    // SAFETY: TUNGETIFF filled the flags member.
    Some(libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags }))
}

/// Asks for checksum, TSO and USO offloads, then without USO (kernels before 6.2), then none.
/// Without `want`, or when the kernel refuses, every offload is turned off.
fn negotiate_offloads(file: &File, want: bool) -> Result<Offloads> {
    let set = |bits: libc::c_uint| {
        // SAFETY: TUNSETOFFLOAD takes an unsigned int by value.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETOFFLOAD, bits) };
        r == 0
    };
    if want {
        let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        if set(tso | TUN_F_USO4 | TUN_F_USO6) {
            return Ok(Offloads { vnet_hdr: true, tso: true, uso: true });
        }
        if set(tso) {
            return Ok(Offloads { vnet_hdr: true, tso: true, uso: false });
        }
    }
    if !set(0) {
        return Err(io::Error::last_os_error().into());
    }
    Ok(Offloads { vnet_hdr: want, tso: false, uso: false })
}

fn attach_error(name: &str, existed: bool, e: &io::Error) -> anyhow::Error {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) => {
            anyhow!("/dev/net/tun is missing: load the tun module (modprobe tun)")
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            anyhow!("creating TAP {name} needs root or CAP_NET_ADMIN ({e})")
        }
        Some(libc::EBUSY) => anyhow!("TAP {name} is already in use by another process"),
        Some(libc::EINVAL) if existed => {
            anyhow!("{name} exists and is not a TAP device (or has other flags)")
        }
        _ => anyhow!("creating TAP {name}: {e}"),
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        bail!("TAP name {name:?} must be 1 to {MAX_NAME_LEN} bytes long");
    }
    if name.bytes().any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':')
        || name == "."
        || name == ".."
    {
        bail!("TAP name {name:?} is not a valid interface name");
    }
    Ok(())
}

/// The interface index of `name` in this network namespace, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes().take(MAX_NAME_LEN)) {
        *d = s as libc::c_char;
    }
    req
}

fn sockaddr_v4(addr: u32) -> libc::sockaddr {
    // SAFETY: sockaddr_in and sockaddr have the same size; all-zero is valid for both.
    let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = addr.to_be();
    // SAFETY: same size, plain data.
    unsafe { mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Runs an interface ioctl on a throw-away datagram socket of `family`.
fn ctl_ioctl<T>(family: libc::c_int, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: arg points at the structure this request expects, valid for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, arg as *mut T) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The "TX drop" column of `name` in a `/proc/net/dev` table: after the name, 8 receive
/// columns, then bytes, packets, errs, drop.
fn tx_dropped(table: &str, name: &str) -> Option<u64> {
    table.lines().find_map(|line| {
        let (dev, counters) = line.split_once(':')?;
        (dev.trim() == name).then(|| counters.split_whitespace().nth(11)?.parse().ok())?
    })
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
        assert_eq!(tx_dropped(table, "vxt0"), Some(60682));
        assert_eq!(tx_dropped(table, "vxt01"), Some(7), "a name that extends another is its own line");
        assert_eq!(tx_dropped(table, "lo"), Some(0));
        assert_eq!(tx_dropped(table, "eth9"), None);
        assert_eq!(tx_dropped("  vxt0: 1 2 3\n", "vxt0"), None, "a short line is no figure");
    }

    #[test]
    fn names_are_checked_before_any_syscall() {
        assert!(check_name("vxt0").is_ok());
        assert!(check_name("a23456789012345").is_ok());
        let long = check_name("a234567890123456").unwrap_err().to_string();
        assert!(long.contains("1 to 15 bytes"), "{long}");
        for bad in ["", "a/b", "a b", ".", "..", "a:b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ifreq_holds_the_name_nul_terminated() {
        let r = ifreq("vxt0");
        assert_eq!(r.ifr_name[..5].iter().map(|&c| c as u8).collect::<Vec<_>>(), b"vxt0\0");
    }
}
