//! Per-operation cost of the packet path without devices: header emit/prepend, parse + receive
//! policy, the flow hash that picks the source port, the whole pipeline step the workers run, and
//! the IP/UDP headers of a datagram sent inside WireGuard.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vxtap::packet::flow;
use vxtap::packet::pipeline::{Demux, Network, HEADROOM};
use vxtap::state::fdb::{Fdb, FdbConfig, MonotonicClock};
use vxtap::wire::build::{Ethernet, Ipv4, Tcp};
use vxtap::wire::{self, geneve, wg, EncapHeader, Proto, RxPolicy};
use vxtap::MacAddr;

const LOCAL: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const REMOTE: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const OPT_A: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];
const OPT_B: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

/// A TCP/IPv4 frame of `len` bytes (at least 54) from 02:..:01 (`src`) to 02:..:02 (`dst`).
fn tcp_frame(len: usize, dst: MacAddr, src: MacAddr) -> Vec<u8> {
    Ethernet::new(dst, src)
        .ipv4(Ipv4::new([198, 19, 0, 1], [198, 19, 0, 2]))
        .tcp(Tcp::new(40000, 5201).seq(1))
        .payload(&vec![0xab; len - 54])
        .build()
}

fn headers() -> Vec<(&'static str, EncapHeader)> {
    let opts = [
        geneve::GeneveOption { class: 0x0102, kind: 0x01, data: &OPT_A },
        geneve::GeneveOption { class: 0xffff, kind: 0x02, data: &OPT_B },
    ];
    vec![
        ("vxlan", EncapHeader::vxlan(42).unwrap()),
        ("geneve", EncapHeader::for_proto(Proto::Geneve, 42).unwrap()),
        ("geneve_2opts", EncapHeader::geneve(&geneve::Repr::ethernet(42, &opts)).unwrap()),
    ]
}

fn bench_wire(c: &mut Criterion) {
    let frame = tcp_frame(1450, REMOTE, LOCAL);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    for (name, header) in headers() {
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(&frame);
        g.bench_function(format!("{name}/encap"), |b| {
            b.iter(|| black_box(header.prepend(black_box(&mut buf), HEADROOM).unwrap()))
        });
        let start = header.prepend(&mut buf, HEADROOM).unwrap();
        let datagram = buf[start..].to_vec();
        let mut policy = match name {
            "vxlan" => RxPolicy::for_proto(Proto::Vxlan),
            _ => RxPolicy::for_proto(Proto::Geneve),
        };
        if let RxPolicy::Geneve(p) = &mut policy {
            p.known_options.insert(0x0102, 0x01);
        }
        g.bench_function(format!("{name}/decap"), |b| {
            b.iter(|| black_box(wire::decapsulate(black_box(&datagram), &policy).unwrap().vni))
        });
    }
    // What the worker computes per frame (in Network::route); the send pool turns it into
    // a socket index with one multiply-shift.
    g.bench_function("flow_hash", |b| b.iter(|| black_box(flow::flow_hash(black_box(&frame)))));
    g.finish();
}

fn bench_pipeline(c: &mut Criterion) {
    let frame = tcp_frame(1450, REMOTE, LOCAL);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    for proto in [Proto::Vxlan, Proto::Geneve] {
        let fdb = Fdb::new(42, Some(LOCAL), FdbConfig::default(), Arc::new(MonotonicClock::default()));
        fdb.add_static(REMOTE, SocketAddr::from(([198, 18, 0, 2], proto.default_port()))).unwrap();
        let net =
            Arc::new(Network::new(42, proto.default_port(), EncapHeader::for_proto(proto, 42).unwrap(), fdb));
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(&frame);
        let to = net.encapsulate(&mut buf, frame.len()).map(|e| e.to.as_slice().to_vec());
        assert_eq!(to, Some(vec![SocketAddr::from(([198, 18, 0, 2], proto.default_port()))]), "unicast path");
        g.bench_function(format!("{proto}/encapsulate"), |b| {
            b.iter(|| black_box(net.encapsulate(black_box(&mut buf), frame.len()).map(|e| e.flow_hash)))
        });
        // Receive: a frame from a remote host, whose source is learned (a refresh after the first).
        let reply = tcp_frame(1450, LOCAL, MacAddr([2, 0, 0, 0, 0, 3]));
        let mut rbuf = vec![0u8; HEADROOM + reply.len()];
        rbuf[HEADROOM..].copy_from_slice(&reply);
        let start = EncapHeader::for_proto(proto, 42).unwrap().prepend(&mut rbuf, HEADROOM).unwrap();
        let datagram = rbuf[start..].to_vec();
        let demux = Demux::new(RxPolicy::for_proto(proto), vec![net.clone()]);
        let from: IpAddr = [198, 18, 0, 2].into();
        assert!(demux.decapsulate(&datagram, from).is_some(), "delivery path");
        g.bench_function(format!("{proto}/decapsulate_learn"), |b| {
            b.iter(|| black_box(demux.decapsulate(black_box(&datagram), from).map(|(i, f)| i + f.len())))
        });
    }
    g.finish();
}

/// The IP and UDP headers of a datagram that travels inside WireGuard (`wire::wg`): written in
/// front of a full-size VXLAN datagram (the UDP checksum sums all of it), and checked on receipt.
fn bench_wg(c: &mut Criterion) {
    let frame = tcp_frame(1390, REMOTE, LOCAL);
    let mut g = c.benchmark_group("wg");
    g.throughput(Throughput::Elements(1));
    let tunnels: [(&str, IpAddr, IpAddr); 2] = [
        ("ipv4", [10, 77, 0, 1].into(), [10, 77, 0, 2].into()),
        ("ipv6", "fd77::1".parse().unwrap(), "fd77::2".parse().unwrap()),
    ];
    for (name, local, peer) in tunnels {
        let at = wg::MAX_HEADER_LEN + HEADROOM;
        let mut buf = vec![0u8; at + frame.len()];
        buf[at..].copy_from_slice(&frame);
        let start = EncapHeader::vxlan(42).unwrap().prepend(&mut buf, at).unwrap();
        let headers = wg::Headers::new(local, peer, 4789).unwrap();
        let d = wg::PerDatagram { src_port: 51234, ..wg::PerDatagram::default() };
        let end = buf.len();
        g.bench_function(format!("{name}/wrap"), |b| {
            b.iter(|| black_box(headers.prepend(black_box(&mut buf), start..end, &d).unwrap()))
        });
        let ip = headers.prepend(&mut buf, start..end, &d).unwrap();
        let packet = buf[ip..].to_vec();
        let allowed = [local];
        let policy = wg::RxPolicy { local: peer, allowed: &allowed, ports: &[4789] };
        assert_eq!(wg::check(&packet, &policy).map(|r| r.payload.len()), Ok(end - start));
        g.bench_function(format!("{name}/check"), |b| {
            b.iter(|| black_box(wg::check(black_box(&packet), &policy).unwrap().payload.len()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_wire, bench_pipeline, bench_wg);
criterion_main!(benches);
