//! Socket-level traffic without external tools, each socket on a thread inside a namespace: UDP
//! echo servers, round trips and sends, and a hash-verified TCP bulk transfer.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::{lock, Netns};

fn unspecified_for(to: &SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// A UDP echo server on a thread inside a namespace. It records every datagram it receives (so
/// tests can count floods) and stops on drop.
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Starts an echo server bound to `bind` in `ns`; returns once the socket is bound. Bind to the
/// wildcard address to also receive broadcasts.
pub fn udp_echo_server(ns: &Netns, bind: SocketAddr) -> Result<EchoServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let (stop2, seen2) = (stop.clone(), seen.clone());
    let thread = ns.spawn(move || {
        let sock = match UdpSocket::bind(bind).and_then(|s| {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(anyhow!("binding echo server to {bind}: {e}")));
                return;
            }
        };
        let _ = tx.send(sock.local_addr().map_err(anyhow::Error::from));
        let mut buf = vec![0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    lock(&seen2).push(buf[..n].to_vec());
                    let _ = sock.send_to(&buf[..n], from);
                }
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return, // the socket broke; tests see missing echoes
            }
        }
    })?;
    let addr = match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(r) => r?,
        Err(_) => match thread.join() {
            Ok(Err(e)) => return Err(e),
            _ => bail!("echo server in {} did not start", ns.name()),
        },
    };
    Ok(EchoServer { addr, stop, seen, thread: Some(thread) })
}

impl EchoServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of datagrams received so far.
    pub fn count(&self) -> usize {
        lock(&self.seen).len()
    }

    /// Number of received datagrams equal to `payload`.
    pub fn count_of(&self, payload: &[u8]) -> usize {
        lock(&self.seen).iter().filter(|d| d.as_slice() == payload).count()
    }

    /// Waits until at least `n` datagrams equal to `payload` arrived; false on timeout.
    pub fn wait_for(&self, payload: &[u8], n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count_of(payload) < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `payload` to `to` from `ns` and waits for the same bytes back, retrying up to `tries`
/// times with `timeout` each: the first datagrams wait for ARP and FDB learning.
pub fn udp_roundtrip(
    ns: &Netns,
    to: SocketAddr,
    payload: &[u8],
    tries: u32,
    timeout: Duration,
) -> Result<()> {
    ns.run(|| -> Result<()> {
        let sock = UdpSocket::bind(unspecified_for(&to))?;
        let mut buf = vec![0u8; 65536];
        for _ in 0..tries {
            sock.send_to(payload, to).with_context(|| format!("sending to {to}"))?;
            let deadline = Instant::now() + timeout;
            while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                sock.set_read_timeout(Some(left))?;
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) if &buf[..n] == payload => return Ok(()),
                    Ok(_) => continue, // a late echo of an earlier try is identical, so this is noise
                    Err(_) => break,
                }
            }
        }
        bail!("no echo from {to} within {tries} tries of {timeout:?} (from {})", ns.name())
    })?
}

/// Sends each datagram once from an ephemeral port in `ns` (broadcast allowed).
pub fn udp_send(ns: &Netns, to: SocketAddr, datagrams: &[&[u8]]) -> Result<()> {
    ns.run(|| -> Result<()> {
        let sock = UdpSocket::bind(unspecified_for(&to))?;
        sock.set_broadcast(true)?;
        for d in datagrams {
            sock.send_to(d, to).with_context(|| format!("sending to {to} from {}", ns.name()))?;
        }
        Ok(())
    })?
}

/// How an IPv4 sender sets the DF bit (`IP_MTU_DISCOVER`, ip(7)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Df {
    /// Never set: packets over the path MTU are fragmented (IP_PMTUDISC_DONT).
    Clear,
    /// Always set, whatever the sender learned about the path (IP_PMTUDISC_PROBE): every
    /// datagram up to the interface MTU leaves whole, so too-big handling further on sees them.
    Always,
}

/// Sends `payload` `count` times from an IPv4 socket in `ns` whose DF bit is as `df` says;
/// send errors (the local stack refusing a datagram) are ignored.
pub fn udp_send_df(ns: &Netns, to: SocketAddr, payload: &[u8], count: usize, df: Df) -> Result<()> {
    ns.run(|| -> Result<()> {
        let sock = UdpSocket::bind(unspecified_for(&to))?;
        let mode = match df {
            Df::Clear => libc::IP_PMTUDISC_DONT,
            Df::Always => libc::IP_PMTUDISC_PROBE,
        };
        // SAFETY: an int option living for the call, its size passed.
        let r = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&mode as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).context("IP_MTU_DISCOVER");
        }
        for _ in 0..count {
            let _ = sock.send_to(payload, to);
        }
        Ok(())
    })?
}

// ---------------------------------------------------------------------------------------------
// TCP bulk transfer
// ---------------------------------------------------------------------------------------------

/// Outcome of [`tcp_transfer`]; the data was verified before this is returned.
#[derive(Clone, Debug)]
pub struct TransferReport {
    pub bytes: u64,
    pub duration: Duration,
    pub mbit_per_s: f64,
    /// FNV-1a 64 of the data, as computed by both ends.
    pub hash: u64,
}

/// 64-bit FNV-1a: tiny, dependency-free and order-sensitive, enough to catch reordering,
/// duplication or corruption of a stream.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so the data is incompressible and a
/// misplaced segment changes the hash.
struct PatternGen(u64);

impl PatternGen {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const TCP_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `bytes` of pseudo-random data from `client_ns` to a server listening at `server_addr` in
/// `server_ns`. Both sides hash independently; the server reports its count and hash back over
/// the same connection, and any mismatch is an error. Duration runs from connect to that report.
pub fn tcp_transfer(
    server_ns: &Netns,
    server_addr: SocketAddr,
    client_ns: &Netns,
    bytes: usize,
) -> Result<TransferReport> {
    let (tx, rx) = mpsc::channel();
    let server = server_ns.spawn(move || -> Result<(u64, u64)> {
        let listener = match TcpListener::bind(server_addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(anyhow!("binding {server_addr}: {e}")));
                return Err(e.into());
            }
        };
        let _ = tx.send(Ok(()));
        tcp_serve_once(listener)
    })?;
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(r) => r?,
        Err(_) => bail!("TCP server in {} did not start", server_ns.name()),
    }
    let client = client_ns.run(|| tcp_send_pattern(server_addr, bytes))?;
    let served = server.join().map_err(|_| anyhow!("TCP server thread panicked"))?;
    let (duration, hash, reported) = match (client, served) {
        (Ok(c), Ok(_)) => c,
        (Err(e), Ok(_)) => return Err(e.context("TCP client")),
        (Ok(_), Err(e)) => return Err(e.context("TCP server")),
        (Err(ce), Err(se)) => bail!("TCP client: {ce:#}; server: {se:#}"),
    };
    if reported != (bytes as u64, hash) {
        bail!("server got {} bytes hash {:#x}, sent {bytes} bytes hash {hash:#x}", reported.0, reported.1);
    }
    let secs = duration.as_secs_f64().max(1e-9);
    Ok(TransferReport { bytes: bytes as u64, duration, mbit_per_s: bytes as f64 * 8.0 / secs / 1e6, hash })
}

/// Accepts one connection (within the I/O timeout), hashes it to EOF and writes back
/// `count || hash` (big-endian u64s).
fn tcp_serve_once(listener: TcpListener) -> Result<(u64, u64)> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + TCP_IO_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TCP_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(TCP_IO_TIMEOUT))?;
    let (mut count, mut fnv) = (0u64, Fnv1a::default());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stream.read(&mut buf).context("server read")?;
        if n == 0 {
            break;
        }
        fnv.update(&buf[..n]);
        count += n as u64;
    }
    let mut summary = [0u8; 16];
    summary[..8].copy_from_slice(&count.to_be_bytes());
    summary[8..].copy_from_slice(&fnv.finish().to_be_bytes());
    stream.write_all(&summary).context("server reply")?;
    Ok((count, fnv.finish()))
}

/// Client side: connect (retrying while ARP and learning settle), stream the pattern, half-close,
/// read the server's summary. Returns (duration, own hash, (server count, server hash)).
fn tcp_send_pattern(to: SocketAddr, bytes: usize) -> Result<(Duration, u64, (u64, u64))> {
    let mut last_err = None;
    let mut stream = None;
    for _ in 0..10 {
        match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => {
                last_err = Some(e);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let mut stream = stream.ok_or_else(|| anyhow!("connecting to {to}: {last_err:?}"))?;
    let start = Instant::now();
    stream.set_read_timeout(Some(TCP_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(TCP_IO_TIMEOUT))?;
    let (mut gen, mut fnv) = (PatternGen(0x9e37_79b9_7f4a_7c15), Fnv1a::default());
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        gen.fill(&mut buf[..n]);
        fnv.update(&buf[..n]);
        stream.write_all(&buf[..n]).with_context(|| format!("client write, {} bytes sent", bytes - left))?;
        left -= n;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut summary = [0u8; 16];
    stream.read_exact(&mut summary).context("reading server summary")?;
    let duration = start.elapsed();
    let count = u64::from_be_bytes(summary[..8].try_into().expect("8 bytes"));
    let hash = u64::from_be_bytes(summary[8..].try_into().expect("8 bytes"));
    Ok((duration, fnv.finish(), (count, hash)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vector() {
        // Published FNV-1a 64 test vectors.
        let mut h = Fnv1a::default();
        h.update(b"");
        assert_eq!(h.finish(), 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv1a::default();
        h.update(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn pattern_is_deterministic_across_chunkings() {
        let mut one = vec![0u8; 64];
        PatternGen(7).fill(&mut one);
        let mut two = vec![0u8; 64];
        let mut g = PatternGen(7);
        g.fill(&mut two[..32]);
        g.fill(&mut two[32..]);
        assert_eq!(one, two);
        assert_ne!(one[..8], one[8..16]);
    }
}
