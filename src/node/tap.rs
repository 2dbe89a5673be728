//! The TAP device, through the kernel's tun driver ioctls.
//!
//! A small module of our own rather than a crate: vxtap needs IFF_NO_PI now and IFF_VNET_HDR,
//! TUNSETOFFLOAD and IFF_MULTI_QUEUE for the offload work, plus MTU, MAC and addresses; the
//! ioctls are few and documented (Documentation/networking/tuntap.rst).

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{anyhow, Context, Result};

use super::netdev::{self, ifreq};
use super::sys;
use crate::config::ifname;
use crate::wire::cidr::Cidr;
use crate::wire::mac::MacAddr;

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
    /// Every read and write carries a virtio-net header ([`crate::packet::offload::vnet`]).
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
            crate::packet::offload::vnet::LEN
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
        ifname::check("TAP", name).map_err(|e| anyhow!(e))?;
        let existed = netdev::if_index(name).is_some();
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

    /// Steers each frame the stack sends to the queue of the CPU it is sent on (a tiny eBPF
    /// program, TUNSETSTEERINGEBPF), instead of by flow hash: with a thread kept on each CPU,
    /// the frame is read where it was written, without a wake-up across CPUs.
    pub fn steer_by_cpu(&self) -> io::Result<()> {
        const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0; // _IOR('T', 224, int)
        let prog = sys::load_cpu_steering()?;
        let fd: libc::c_int = prog.as_raw_fd();
        // SAFETY: TUNSETSTEERINGEBPF reads an int (the program's descriptor), which lives for the
        // call; the device keeps its own reference to the program.
        if unsafe { libc::ioctl(self.queues[0].file.as_raw_fd(), TUNSETSTEERINGEBPF, &fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Frames the kernel dropped on their way to this TAP because its queue was full (vxtap did
    /// not read them in time): the device's TX drop count. None if the device is not listed.
    pub fn kernel_drops(&self) -> Option<u64> {
        netdev::tx_dropped(&self.name)
    }

    /// The queue a thread numbered `i` uses.
    pub fn queue(&self, i: usize) -> &TapQueue {
        &self.queues[i % self.queues.len()]
    }

    pub fn mac(&self) -> Result<MacAddr> {
        netdev::mac(&self.name)
    }

    pub fn set_mac(&self, mac: MacAddr) -> Result<()> {
        netdev::set_mac(&self.name, mac)
    }

    pub fn set_mtu(&self, mtu: u32) -> Result<()> {
        netdev::set_mtu(&self.name, mtu)
    }

    /// Sets the device administratively up.
    pub fn set_up(&self) -> Result<()> {
        netdev::set_up(&self.name).context("setting the TAP up")
    }

    /// Assigns an address to the TAP.
    pub fn add_address(&self, cidr: &Cidr) -> Result<()> {
        netdev::add_address(&self.name, cidr)
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

impl TapQueue {
    /// Makes reads return WouldBlock instead of waiting, so a reader can tell when the queue
    /// is drained (and send what it batched) and then wait with [`TapQueue::wait_readable`].
    pub fn set_nonblocking(&self) -> io::Result<()> {
        sys::set_nonblocking(self.file.as_raw_fd())
    }

    /// Reads one frame (after its virtio-net header when offloads are on); blocks until there is one.
    #[inline]
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for buf.len() bytes of writes.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        sys::byte_count(n)
    }

    /// Writes one frame, or with offloads on a virtio-net header and its frame, contiguous.
    #[inline]
    pub fn write(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: frame is valid for frame.len() bytes of reads.
        let n = unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        sys::byte_count(n)
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
        sys::byte_count(n)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        let opts = TapOptions { queues: 1, offload: false };
        for bad in ["", "a234567890123456", "a/b"] {
            let e = Tap::open(bad, opts).err().expect("refused").to_string();
            assert!(e.starts_with("TAP name"), "{bad:?}: {e}");
        }
    }
}
