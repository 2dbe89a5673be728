//! Hot-path runtime shoot-out: dedicated thread with blocking I/O versus tokio readiness.
//!
//! Simulates vxtap's relay loop over loopback UDP (127.0.0.1 only). A generator thread floods a
//! relay socket with 64-byte or 1400-byte datagrams for a fixed time; the relay receives each one
//! into a buffer with headroom, writes an 8-byte VXLAN-like header in front and forwards it to a
//! sink thread that counts what arrives. The relay loop runs in one of three ways:
//!
//! * `blocking`  – a std::thread doing blocking `recv_from` / `send_to`;
//! * `tokio-udp` – a current_thread runtime, `tokio::net::UdpSocket::recv_from().await` / `send_to().await`;
//! * `asyncfd`   – a current_thread runtime, `AsyncFd` over a nonblocking std socket, draining with
//!   `try_io` until `WouldBlock` before awaiting readiness again.
//!
//! Reported per variant and size: offered and delivered packets/s, loss, and CPU seconds burnt by the
//! relay thread per million forwarded packets (`CLOCK_THREAD_CPUTIME_ID`, read inside the relay
//! thread). A ping-pong test (generator -> relay -> echo -> generator, one datagram in flight)
//! reports median and p99 round-trip time.
//!
//! Run: `cargo run --release --example hotpath_runtime [-- SECONDS [ROUND_TRIPS]]` (defaults 3, 20000).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

const HEADROOM: usize = 8;
const BUF: usize = 2048;
/// A 1-byte datagram tells the relay to stop (never produced by the workload).
const STOP: [u8; 1] = [0];

#[derive(Clone, Copy)]
enum Variant {
    Blocking,
    TokioUdp,
    AsyncFd,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Blocking, Variant::TokioUdp, Variant::AsyncFd];
    fn name(self) -> &'static str {
        match self {
            Variant::Blocking => "blocking",
            Variant::TokioUdp => "tokio-udp",
            Variant::AsyncFd => "asyncfd",
        }
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant supported by Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A UDP socket on 127.0.0.1 with an ephemeral port and large buffers.
fn bind_loopback() -> (UdpSocket, SocketAddr) {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind 127.0.0.1");
    let s: UdpSocket = s.into();
    let addr = s.local_addr().expect("local_addr");
    (s, addr)
}

/// The "per-packet work": prepend an 8-byte header (VXLAN flags + VNI 42) into the headroom.
#[inline]
fn encap(buf: &mut [u8], n: usize) -> usize {
    buf[..HEADROOM].copy_from_slice(&[0x08, 0, 0, 0, 0, 0, 42, 0]);
    n + HEADROOM
}

struct RelayOut {
    forwarded: u64,
    cpu: Duration,
}

/// Runs the relay loop on the calling thread until it receives `STOP`.
fn run_relay(v: Variant, sock: UdpSocket, dst: SocketAddr) -> RelayOut {
    let rt = match v {
        Variant::Blocking => None,
        _ => Some(tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt")),
    };
    let cpu0 = thread_cpu();
    let forwarded = match (v, rt) {
        (Variant::TokioUdp, Some(rt)) => rt.block_on(relay_tokio(sock, dst)),
        (Variant::AsyncFd, Some(rt)) => rt.block_on(relay_asyncfd(sock, dst)),
        _ => relay_blocking(&sock, dst),
    };
    RelayOut { forwarded, cpu: thread_cpu() - cpu0 }
}

fn relay_blocking(sock: &UdpSocket, dst: SocketAddr) -> u64 {
    let mut buf = [0u8; BUF];
    let mut fwd = 0;
    loop {
        let Ok((n, _)) = sock.recv_from(&mut buf[HEADROOM..]) else { continue };
        if n == STOP.len() {
            return fwd;
        }
        let len = encap(&mut buf, n);
        fwd += u64::from(sock.send_to(&buf[..len], dst).is_ok());
    }
}

async fn relay_tokio(sock: UdpSocket, dst: SocketAddr) -> u64 {
    sock.set_nonblocking(true).expect("nonblocking");
    let sock = tokio::net::UdpSocket::from_std(sock).expect("from_std");
    let mut buf = [0u8; BUF];
    let mut fwd = 0;
    loop {
        let Ok((n, _)) = sock.recv_from(&mut buf[HEADROOM..]).await else { continue };
        if n == STOP.len() {
            return fwd;
        }
        let len = encap(&mut buf, n);
        fwd += u64::from(sock.send_to(&buf[..len], dst).await.is_ok());
    }
}

async fn relay_asyncfd(sock: UdpSocket, dst: SocketAddr) -> u64 {
    sock.set_nonblocking(true).expect("nonblocking");
    // SAFETY: the std UdpSocket owns its fd, which stays open and unchanged until `afd` is dropped.
    let afd = unsafe { AsyncFd::register(sock) }.expect("AsyncFd");
    let mut buf = [0u8; BUF];
    let mut fwd = 0;
    loop {
        let mut guard = afd.readable().await.expect("readable");
        // Drain everything queued; `try_io` clears readiness only when recv says WouldBlock.
        while let Ok(res) = guard.try_io(|s| s.get_ref().recv_from(&mut buf[HEADROOM..])) {
            let Ok((n, _)) = res else { continue };
            if n == STOP.len() {
                return fwd;
            }
            let len = encap(&mut buf, n);
            let sent = match afd.get_ref().send_to(&buf[..len], dst) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    afd.async_io(Interest::WRITABLE, |s| s.send_to(&buf[..len], dst)).await
                }
                r => r,
            };
            fwd += u64::from(sent.is_ok());
        }
    }
}

/// Keeps poking the relay with `STOP` until it reports it has exited.
fn stop_relay(gen: &UdpSocket, relay: SocketAddr, done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        let _ = gen.send_to(&STOP, relay);
        thread::sleep(Duration::from_millis(5));
    }
}

struct Row {
    sent_pps: f64,
    deliv_pps: f64,
    loss: f64,
    cpu_s: f64,
    cpu_per_mpkt: f64,
}

fn throughput(v: Variant, payload: usize, dur: Duration) -> Row {
    let (relay, relay_addr) = bind_loopback();
    let (sink, sink_addr) = bind_loopback();
    let (gen, _) = bind_loopback();
    let done = Arc::new(AtomicBool::new(false));

    let d = done.clone();
    let sink_h = thread::spawn(move || {
        sink.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let mut buf = [0u8; BUF];
        let (mut count, mut first, mut last) = (0u64, None, Instant::now());
        loop {
            match sink.recv(&mut buf) {
                Ok(_) => {
                    last = Instant::now();
                    first.get_or_insert(last);
                    count += 1;
                }
                Err(_) if d.load(Ordering::Acquire) => break,
                Err(_) => {}
            }
        }
        (count, first.map_or(Duration::ZERO, |f| last - f))
    });
    let d = done.clone();
    let relay_h = thread::spawn(move || {
        let out = run_relay(v, relay, sink_addr);
        d.store(true, Ordering::Release);
        out
    });
    let gen_h = thread::spawn(move || {
        let pkt = vec![0xabu8; payload];
        let (t0, mut sent) = (Instant::now(), 0u64);
        while t0.elapsed() < dur {
            for _ in 0..64 {
                sent += u64::from(gen.send_to(&pkt, relay_addr).is_ok());
            }
        }
        let elapsed = t0.elapsed();
        stop_relay(&gen, relay_addr, &done);
        (sent, elapsed)
    });

    let (sent, gen_time) = gen_h.join().expect("generator");
    let out = relay_h.join().expect("relay");
    let (delivered, sink_time) = sink_h.join().expect("sink");
    let cpu_s = out.cpu.as_secs_f64();
    Row {
        sent_pps: sent as f64 / gen_time.as_secs_f64(),
        deliv_pps: delivered as f64 / sink_time.as_secs_f64().max(1e-9),
        loss: 100.0 * (1.0 - delivered as f64 / sent.max(1) as f64),
        cpu_s,
        cpu_per_mpkt: cpu_s / (out.forwarded.max(1) as f64 / 1e6),
    }
}

/// Returns (median µs, p99 µs, lost round trips).
fn latency(v: Variant, rounds: usize) -> (f64, f64, usize) {
    let (relay, relay_addr) = bind_loopback();
    let (echo, echo_addr) = bind_loopback();
    let (gen, gen_addr) = bind_loopback();
    let done = Arc::new(AtomicBool::new(false));

    let d = done.clone();
    let echo_h = thread::spawn(move || {
        echo.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let mut buf = [0u8; BUF];
        loop {
            match echo.recv(&mut buf) {
                Ok(n) => {
                    let _ = echo.send_to(&buf[..n], gen_addr);
                }
                Err(_) if d.load(Ordering::Acquire) => break,
                Err(_) => {}
            }
        }
    });
    let d = done.clone();
    let relay_h = thread::spawn(move || {
        run_relay(v, relay, echo_addr);
        d.store(true, Ordering::Release);
    });

    gen.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let warmup = rounds / 10;
    let (mut pkt, mut buf) = ([0u8; 64], [0u8; BUF]);
    let mut rtts = Vec::with_capacity(rounds);
    let mut lost = 0;
    for seq in 0..(warmup + rounds) as u64 {
        pkt[..8].copy_from_slice(&seq.to_le_bytes());
        let t = Instant::now();
        let _ = gen.send_to(&pkt, relay_addr);
        // Skip stale replies (different sequence number) from earlier timed-out rounds.
        let ok = loop {
            match gen.recv(&mut buf) {
                Ok(n) if n == 64 + HEADROOM && buf[HEADROOM..HEADROOM + 8] == seq.to_le_bytes() => {
                    break true
                }
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        match (ok, seq >= warmup as u64) {
            (true, true) => rtts.push(t.elapsed().as_secs_f64() * 1e6),
            (false, true) => lost += 1,
            _ => {}
        }
    }
    stop_relay(&gen, relay_addr, &done);
    relay_h.join().expect("relay");
    echo_h.join().expect("echo");
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)));
    (pct(0.5).copied().unwrap_or(f64::NAN), pct(0.99).copied().unwrap_or(f64::NAN), lost)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let dur = Duration::from_secs_f64(secs);
    println!(
        "throughput: {secs} s per cell, loopback UDP, {} CPUs",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<10} {:>5} {:>11} {:>11} {:>6} {:>9} {:>11}",
        "variant", "bytes", "offered/s", "deliv/s", "loss%", "relay-cpu", "cpu-s/Mpkt"
    );
    for v in Variant::ALL {
        for size in [64, 1400] {
            let r = throughput(v, size, dur);
            println!(
                "{:<10} {:>5} {:>11.0} {:>11.0} {:>6.1} {:>8.2}s {:>11.3}",
                v.name(),
                size,
                r.sent_pps,
                r.deliv_pps,
                r.loss,
                r.cpu_s,
                r.cpu_per_mpkt
            );
        }
    }
    println!("\nlatency: {rounds} ping-pongs of 64 B (+10% warm-up), one in flight");
    println!("{:<10} {:>9} {:>9} {:>5}", "variant", "p50 us", "p99 us", "lost");
    for v in Variant::ALL {
        let (p50, p99, lost) = latency(v, rounds);
        println!("{:<10} {:>9.1} {:>9.1} {:>5}", v.name(), p50, p99, lost);
    }
}
