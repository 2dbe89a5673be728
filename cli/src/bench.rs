//! `vxtap bench`: the encapsulation and decapsulation pipeline as the workers run it (FDB lookup,
//! flow hash, header emit; parse, receive policy, demux, learn-refresh), in process, on one core,
//! with no devices. It measures the CPU cost vxtap adds per packet, not the system calls.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use vxtap::packet::pipeline::{Demux, Network, HEADROOM};
use vxtap::state::fdb::{Fdb, FdbConfig, MonotonicClock};
use vxtap::wire::build::{Ethernet, Ipv4, Tcp};
use vxtap::wire::mac::MacAddr;
use vxtap::wire::{ethernet, geneve, ipv4, tcp, EncapHeader, Proto, RxPolicy};

/// Frame sizes measured unless `--size` picks one.
pub const DEFAULT_SIZES: [usize; 3] = [64, 512, 1450];

const LOCAL: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const REMOTE: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const OPT_A: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];
const OPT_B: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub case: String,
    pub direction: &'static str,
    pub frame_bytes: usize,
    pub mpps: f64,
    pub gbits: f64,
    pub ns_per_packet: f64,
}

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    proto: Proto,
    options: bool,
}

const CASES: [Case; 3] = [
    Case { name: "vxlan", proto: Proto::Vxlan, options: false },
    Case { name: "geneve", proto: Proto::Geneve, options: false },
    Case { name: "geneve+2opts", proto: Proto::Geneve, options: true },
];

/// Runs every case for `duration` per direction and frame size; `progress` shows a bar on stderr.
pub fn run(sizes: &[usize], duration: Duration, progress: bool) -> anyhow::Result<Vec<BenchResult>> {
    if let Some(s) = sizes.iter().find(|&&s| !(60..=65535 - HEADROOM).contains(&s)) {
        anyhow::bail!("frame size {s} is outside 60..={}", 65535 - HEADROOM);
    }
    let steps = (CASES.len() * sizes.len() * 2) as u64;
    let bar = if progress { ProgressBar::new(steps) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or(ProgressStyle::default_bar()),
    );
    let mut out = Vec::new();
    for case in CASES {
        for &size in sizes {
            bar.set_message(format!("{} {size} B encap", case.name));
            out.push(measure_encap(case, size, duration)?);
            bar.inc(1);
            bar.set_message(format!("{} {size} B decap", case.name));
            out.push(measure_decap(case, size, duration)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(out)
}

fn network(case: Case) -> anyhow::Result<Arc<Network>> {
    let opts = [
        geneve::GeneveOption { class: 0x0102, kind: 0x01, data: &OPT_A },
        geneve::GeneveOption { class: 0xffff, kind: 0x02, data: &OPT_B },
    ];
    let header = if case.options {
        EncapHeader::geneve(&geneve::Repr::ethernet(42, &opts))?
    } else {
        EncapHeader::for_proto(case.proto, 42)?
    };
    let fdb = Fdb::new(42, Some(LOCAL), FdbConfig::default(), Arc::new(MonotonicClock::default()));
    fdb.add_static(REMOTE, SocketAddr::from(([198, 18, 0, 2], case.proto.default_port())))?;
    Ok(Arc::new(Network::new(42, case.proto.default_port(), header, fdb)))
}

/// A TCP/IPv4 frame of `size` bytes (at least 54) from `src` to `dst`, 198.19.0.1:40000 ->
/// 198.19.0.2:5201, sequence 1, no flags, with valid lengths and checksums.
fn frame(size: usize, dst: MacAddr, src: MacAddr) -> anyhow::Result<Vec<u8>> {
    const HEADERS: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp::HEADER_LEN;
    anyhow::ensure!(size >= HEADERS, "frame size {size} cannot hold TCP/IPv4");
    Ok(Ethernet::new(dst, src)
        .ipv4(Ipv4::new([198, 19, 0, 1], [198, 19, 0, 2]))
        .tcp(Tcp::new(40000, 5201).seq(1))
        .payload(&vec![0xab; size - HEADERS])
        .build())
}

/// Calls `step` in batches until `duration` has passed; returns packets per second.
fn timed(duration: Duration, mut step: impl FnMut() -> bool) -> anyhow::Result<f64> {
    const BATCH: u64 = 4096;
    let start = Instant::now();
    let mut packets = 0u64;
    loop {
        for _ in 0..BATCH {
            if !step() {
                anyhow::bail!("the pipeline dropped a benchmark packet");
            }
        }
        packets += BATCH;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return Ok(packets as f64 / elapsed.as_secs_f64());
        }
    }
}

fn result(case: Case, direction: &'static str, size: usize, pps: f64) -> BenchResult {
    BenchResult {
        case: case.name.to_string(),
        direction,
        frame_bytes: size,
        mpps: pps / 1e6,
        gbits: pps * size as f64 * 8.0 / 1e9,
        ns_per_packet: 1e9 / pps,
    }
}

fn measure_encap(case: Case, size: usize, duration: Duration) -> anyhow::Result<BenchResult> {
    let net = network(case)?;
    let f = frame(size, REMOTE, LOCAL)?;
    let mut buf = vec![0u8; HEADROOM + size];
    buf[HEADROOM..].copy_from_slice(&f);
    let pps = timed(duration, || {
        std::hint::black_box(net.encapsulate(std::hint::black_box(&mut buf), size).map(|e| e.flow_hash))
            .is_some()
    })?;
    Ok(result(case, "encap", size, pps))
}

fn measure_decap(case: Case, size: usize, duration: Duration) -> anyhow::Result<BenchResult> {
    let net = network(case)?;
    let f = frame(size, LOCAL, MacAddr([2, 0, 0, 0, 0, 3]))?;
    let mut buf = vec![0u8; HEADROOM + size];
    buf[HEADROOM..].copy_from_slice(&f);
    let start = net.header().prepend(&mut buf, HEADROOM)?;
    let datagram = buf[start..].to_vec();
    let mut policy = RxPolicy::for_proto(case.proto);
    if let RxPolicy::Geneve(p) = &mut policy {
        p.known_options.insert(0x0102, 0x01);
    }
    let demux = Demux::new(policy, vec![net]);
    let from: IpAddr = [198, 18, 0, 2].into();
    // As the receive threads do: one clock read per batch of datagrams (a full recvmmsg batch
    // holds 32 messages), not one per datagram.
    let (mut now, mut n) = (demux.now_ms(), 0u32);
    let pps = timed(duration, || {
        n += 1;
        if n % 32 == 0 {
            now = demux.now_ms();
        }
        std::hint::black_box(demux.decapsulate_at(std::hint::black_box(&datagram), from, now)).is_some()
    })?;
    Ok(result(case, "decap", size, pps))
}

/// The table `vxtap bench` prints.
pub fn table(results: &[BenchResult]) -> String {
    let mut s = format!(
        "{:<14} {:<6} {:>7} {:>9} {:>10} {:>9}\n",
        "case", "dir", "bytes", "Mpps", "Gbit/s", "ns/pkt"
    );
    for r in results {
        s += &format!(
            "{:<14} {:<6} {:>7} {:>9.2} {:>10.1} {:>9.1}\n",
            r.case, r.direction, r.frame_bytes, r.mpps, r.gbits, r.ns_per_packet
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_moves_packets_and_reports_consistent_units() {
        let r = run(&[64, 1450], Duration::from_millis(5), false).unwrap();
        assert_eq!(r.len(), CASES.len() * 2 * 2);
        for x in &r {
            assert!(x.mpps > 0.0, "{x:?}");
            let gbits = x.mpps * 1e6 * x.frame_bytes as f64 * 8.0 / 1e9;
            assert!((x.gbits - gbits).abs() < 1e-6 * gbits.max(1.0));
            assert!((x.ns_per_packet * x.mpps - 1e3).abs() < 1e-3);
        }
        assert!(table(&r).lines().count() == r.len() + 1);
    }

    #[test]
    fn benchmark_frames_are_the_sizes_asked_for() {
        // The bytes (lengths, checksums, etherparse's frame byte for byte) are wire::build's
        // tests'; here, that every size comes out as asked.
        for size in [54, 64, 512, 1450] {
            let f = frame(size, REMOTE, LOCAL).unwrap();
            assert_eq!(f.len(), size);
            assert_eq!((&f[..6], &f[6..12]), (&REMOTE.0[..], &LOCAL.0[..]));
            let ip = &f[ethernet::HEADER_LEN..];
            assert_eq!(usize::from(ipv4::total_len(ip)), size - ethernet::HEADER_LEN);
            assert_eq!(tcp::ports(&ip[ipv4::HEADER_LEN..]), (40000, 5201));
        }
        assert!(frame(53, REMOTE, LOCAL).is_err());
    }

    #[test]
    fn rejects_impossible_sizes() {
        assert!(run(&[10], Duration::from_millis(1), false).is_err());
    }
}
