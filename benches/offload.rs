//! Per-byte cost of the offload work vxtap does in user space on the TCP path: the Internet
//! checksum, segmenting a 64 KB TAP super-frame into tunnel datagrams, and coalescing a train
//! of received segments back into one super-frame. Throughput is in bytes of inner frame.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vxtap::packet::offload::checksum::{self, Sum};
use vxtap::packet::offload::gro::{Coalescer, Offer};
use vxtap::packet::offload::tso;
use vxtap::packet::offload::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
use vxtap::wire::build::{Ethernet, Ipv4, Tcp};
use vxtap::wire::EncapHeader;
use vxtap::MacAddr;

/// Inner MSS over a 1450-byte overlay MTU (20 bytes IPv4, 20 TCP, 12 of timestamps).
const MSS: usize = 1398;
/// Payload of one super-frame: 46 full segments and a short one.
const SUPER_PAYLOAD: usize = 46 * MSS + 500;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// An Ethernet/IPv4/TCP frame with `data` as payload, TCP timestamps, sequence `seq`.
fn tcp_frame(seq: u32, data: &[u8]) -> Vec<u8> {
    Ethernet::new(MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 1]))
        .ipv4(Ipv4::new([198, 19, 0, 1], [198, 19, 0, 2]))
        .tcp(Tcp::new(40000, 5201).seq(seq).ack(1).timestamps(1, 2))
        .payload(data)
        .build()
}

fn bench_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [64usize, 1398, 65536] {
        let data = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("add_bytes/{len}"), |b| {
            b.iter(|| black_box(Sum::ZERO.add_bytes(black_box(&data)).fold()))
        });
        // Each implementation of the lane loop, on the whole blocks (add_bytes uses one).
        let blocks = &data[..len / 64 * 64];
        for (name, f) in checksum::block_variants() {
            g.bench_function(format!("{name}/{len}"), |b| b.iter(|| black_box(f(black_box(blocks)).fold())));
        }
    }
    g.finish();
}

fn bench_segment(c: &mut Criterion) {
    let frame = tcp_frame(1000, &payload(SUPER_PAYLOAD));
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 66,
        gso_size: MSS as u16,
        csum_start: 34,
        csum_offset: 16,
    };
    let prefix = EncapHeader::vxlan(42).expect("vni");
    let mut out = vec![0u8; 512 << 10];
    let mut g = c.benchmark_group("tso");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("segment_64k_vxlan", |b| {
        b.iter(|| black_box(tso::segment(&frame, &hdr, prefix.as_bytes(), &mut out).expect("segments")))
    });
    g.finish();
}

fn bench_coalesce(c: &mut Criterion) {
    let segments: Vec<Vec<u8>> = (0..44).map(|i| tcp_frame(1000 + (i * MSS) as u32, &payload(MSS))).collect();
    let bytes: usize = segments.iter().map(Vec::len).sum();
    let mut gro = Coalescer::new();
    // What is timed must be the merge of all 44, not a flush on the first.
    for s in &segments {
        assert!(matches!(gro.offer(s), Offer::Merged | Offer::Held));
    }
    assert_eq!(gro.segments(), segments.len());
    gro.take().expect("one super-frame");
    let mut g = c.benchmark_group("gro");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("coalesce_44x1398", |b| {
        b.iter(|| {
            for s in &segments {
                black_box(gro.offer(s));
            }
            black_box(gro.take().map(<[u8]>::len))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_checksum, bench_segment, bench_coalesce);
criterion_main!(benches);
