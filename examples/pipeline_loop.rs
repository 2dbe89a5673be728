//! The per-packet pipeline in a plain loop, for profilers: what `vxtap bench` times, with nothing
//! around it, so that callgrind's instruction counts per packet and `perf` samples are the
//! pipeline's alone.
//!
//! ```text
//! cargo build --release --example pipeline_loop
//! target/release/examples/pipeline_loop [encap|decap|both] [PACKETS] [BYTES] [vxlan|geneve] [mono|manual]
//! valgrind --tool=callgrind --toggle-collect='pipeline_loop::decap_loop' \
//!     target/release/examples/pipeline_loop decap 100000
//! ```
//! Defaults: both directions, 5 million packets, 64-byte TCP/IPv4 frames, VXLAN, the production
//! clock (`mono`). `manual` gives the FDB a clock that is an atomic load, which is what reading
//! the clock once per receive batch instead of once per datagram would cost per datagram.
//! Prints nanoseconds per packet; divide callgrind's total by PACKETS for instructions.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use vxtap::packet::pipeline::{Demux, Network, HEADROOM};
use vxtap::state::fdb::{Clock, Fdb, FdbConfig, ManualClock, MonotonicClock};
use vxtap::wire::build::{Ethernet, Ipv4, Tcp};
use vxtap::wire::{tcp, EncapHeader, Proto, RxPolicy};
use vxtap::MacAddr;

const LOCAL: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const REMOTE: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

/// A TCP/IPv4 frame of `size` bytes (at least 54), 198.19.0.1:40000 -> 198.19.0.2:5201, an ACK.
fn frame(size: usize, dst: MacAddr, src: MacAddr) -> Vec<u8> {
    Ethernet::new(dst, src)
        .ipv4(Ipv4::new([198, 19, 0, 1], [198, 19, 0, 2]))
        .tcp(Tcp::new(40000, 5201).seq(1).flags(tcp::ACK))
        .payload(&vec![0xab; size.max(54) - 54])
        .build()
}

#[inline(never)]
fn encap_loop(net: &Network, buf: &mut [u8], len: usize, n: u64) -> u64 {
    let mut acc = 0u64;
    for _ in 0..n {
        let e = net.encapsulate(black_box(&mut *buf), len).expect("a known destination");
        acc = acc.wrapping_add(u64::from(black_box(e.flow_hash)));
    }
    acc
}

#[inline(never)]
fn decap_loop(demux: &Demux, datagram: &[u8], from: IpAddr, n: u64) -> u64 {
    let mut acc = 0u64;
    for _ in 0..n {
        let (_, inner) = demux.decapsulate(black_box(datagram), from).expect("delivered");
        acc = acc.wrapping_add(black_box(inner.len()) as u64);
    }
    acc
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let what = arg(0, "both");
    let n: u64 = arg(1, "5000000").parse().expect("PACKETS");
    let size: usize = arg(2, "64").parse().expect("BYTES");
    let proto = if arg(3, "vxlan") == "geneve" { Proto::Geneve } else { Proto::Vxlan };
    let clock: Arc<dyn Clock> = if arg(4, "mono") == "manual" {
        Arc::new(ManualClock::new(1))
    } else {
        Arc::new(MonotonicClock::default())
    };

    let fdb = Fdb::new(42, Some(LOCAL), FdbConfig::default(), clock);
    fdb.add_static(REMOTE, SocketAddr::from(([198, 18, 0, 2], proto.default_port()))).expect("static entry");
    let header = EncapHeader::for_proto(proto, 42).expect("VNI");
    let net = Arc::new(Network::new(42, proto.default_port(), header, fdb));

    if what != "decap" {
        let f = frame(size, REMOTE, LOCAL);
        let mut buf = vec![0u8; HEADROOM + f.len()];
        buf[HEADROOM..].copy_from_slice(&f);
        let t = Instant::now();
        let r = encap_loop(&net, &mut buf, f.len(), n);
        println!("encap {:.1} ns/packet (checksum {r})", t.elapsed().as_nanos() as f64 / n as f64);
    }
    if what != "encap" {
        // From a remote host, so each datagram refreshes a learned entry.
        let f = frame(size, LOCAL, MacAddr([2, 0, 0, 0, 0, 3]));
        let mut buf = vec![0u8; HEADROOM + f.len()];
        buf[HEADROOM..].copy_from_slice(&f);
        let start = net.header().prepend(&mut buf, HEADROOM).expect("headroom");
        let datagram = buf[start..].to_vec();
        let demux = Demux::new(RxPolicy::for_proto(proto), vec![net.clone()]);
        let from: IpAddr = [198, 18, 0, 2].into();
        let t = Instant::now();
        let r = decap_loop(&demux, &datagram, from, n);
        println!("decap {:.1} ns/packet (checksum {r})", t.elapsed().as_nanos() as f64 / n as f64);
    }
}
