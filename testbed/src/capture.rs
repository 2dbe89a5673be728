//! Raw frames on an interface of a namespace (AF_PACKET): a capture that records what crosses a
//! device (e.g. the tunnel datagrams on the underlay veth, to prove that nothing did), and a
//! sender that hands a hand-made frame to a device (e.g. an ARP request "from" the host behind
//! a TAP, which the TAP then gives to vxtap).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::run_in;
use crate::{lock, Netns};

const ETH_P_ALL: u16 = 0x0003;

/// An AF_PACKET socket bound to `dev` (all protocols, both directions).
fn packet_socket(dev: &str) -> Result<OwnedFd> {
    let name = CString::new(dev).context("device name")?;
    // SAFETY: if_nametoindex reads a NUL-terminated string and returns 0 on failure.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no device {dev}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_ALL.to_be())) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ALL.to_be();
    addr.sll_ifindex = index as i32;
    // SAFETY: addr is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("binding the AF_PACKET socket");
    }
    Ok(fd)
}

/// Frames seen on a device since the capture started, until it is dropped.
pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Starts capturing on `dev` in `ns`; returns once the socket is bound.
pub fn capture(ns: &Netns, dev: &str) -> Result<Capture> {
    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let (stop2, frames2, dev) = (stop.clone(), frames.clone(), dev.to_string());
    let thread = ns.spawn(move || {
        let fd = match packet_socket(&dev) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let timeout = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
        // SAFETY: setsockopt with a valid timeval of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let _ = tx.send(Ok(()));
        let mut buf = vec![0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                lock(&frames2).push(buf[..n as usize].to_vec());
            }
        }
    })?;
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(r) => r?,
        Err(_) => bail!("capture on {} did not start", ns.name()),
    }
    Ok(Capture { stop, frames, thread: Some(thread) })
}

impl Capture {
    /// [`capture`]: starts capturing on `dev` in `ns`; returns once the socket is bound, so
    /// nothing sent after this returns is missed.
    pub fn start(ns: &Netns, dev: &str) -> Result<Capture> {
        capture(ns, dev)
    }

    /// Waits until some captured frame satisfies `pred` and returns it; None after `timeout`.
    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(f) = lock(&self.frames).iter().find(|f| pred(f)) {
                return Some(f.clone());
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every frame seen so far.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        lock(&self.frames).clone()
    }

    /// Forgets what was seen so far.
    pub fn clear(&self) {
        lock(&self.frames).clear();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `frame` (a whole Ethernet frame) out of `dev` in `ns`: on a TAP, vxtap reads it as if
/// the host's stack had sent it.
pub fn send_frame(ns: &Netns, dev: &str, frame: &[u8]) -> Result<()> {
    let frame = frame.to_vec();
    let dev = dev.to_string();
    run_in(ns.name(), move || -> Result<()> {
        let fd = packet_socket(&dev)?;
        // SAFETY: frame is valid for reads of its length.
        let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("sending a raw frame");
        }
        if n as usize != frame.len() {
            return Err(anyhow!("short send: {n} of {} bytes", frame.len()));
        }
        Ok(())
    })?
}

/// The inner frame of a VXLAN datagram in a captured IPv4 Ethernet frame (UDP to `port`), if it
/// is one.
pub fn vxlan_inner(frame: &[u8], port: u16) -> Option<&[u8]> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if *ip.get(9)? != 17 {
        return None;
    }
    let udp = ip.get(ihl..)?;
    if u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]) != port {
        return None;
    }
    udp.get(8 + 8..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_inner_frame() {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend([0xc0, 0x00, 0x12, 0xb5, 0, 0, 0, 0]); // UDP to 4789
        f.extend([0x08, 0, 0, 0, 0, 0, 42, 0]); // VXLAN
        f.extend([0xff; 6]);
        assert_eq!(vxlan_inner(&f, 4789), Some(&[0xff; 6][..]));
        assert_eq!(vxlan_inner(&f, 6081), None);
        assert_eq!(vxlan_inner(&f[..20], 4789), None);
    }
}
