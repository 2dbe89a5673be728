use super::*;
use crate::packet::offload::checksum::complete;
use crate::wire::build::{Arp, Ethernet, Ipv4, Ipv6, Tcp, Udp};
use crate::wire::mac::MacAddr;
use crate::wire::{ipv4, tcp};
use etherparse::{NetSlice, SlicedPacket, TcpHeader, TransportSlice};
use proptest::prelude::*;
use Offer::{Flush, Held, Merged, Pass};

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
const SRC4: [u8; 4] = [10, 1, 0, 1];
const DST4: [u8; 4] = [10, 1, 0, 2];
const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const ACK_NO: u32 = 0x1234_5678;

fn tcp_header(seq: u32) -> Tcp {
    Tcp::new(40000, 5201).seq(seq).ack(ACK_NO).window(512)
}

/// An IPv4 segment A -> B (correct lengths and checksums), after `edit`.
fn v4(seq: u32, payload: &[u8], edit: impl FnOnce(&mut Ipv4, &mut Tcp)) -> Vec<u8> {
    // The ID varies per segment, as real senders set it.
    let mut ip = Ipv4::new(SRC4, DST4).ident(seq as u16);
    let mut tcp = tcp_header(seq);
    edit(&mut ip, &mut tcp);
    Ethernet::new(MAC_B, MAC_A).ipv4(ip).tcp(tcp).payload(payload).build()
}

/// An IPv6 segment A -> B (traffic class 0x20, a flow label), after `edit`.
fn v6(seq: u32, payload: &[u8], edit: impl FnOnce(&mut Ipv6, &mut Tcp)) -> Vec<u8> {
    let mut ip = Ipv6::new(SRC6, DST6).traffic_class(0x20).flow_label(0x5_4321);
    let mut tcp = tcp_header(seq);
    edit(&mut ip, &mut tcp);
    Ethernet::new(MAC_B, MAC_A).ipv6(ip).tcp(tcp).payload(payload).build()
}

fn plain4(seq: u32, payload: &[u8]) -> Vec<u8> {
    v4(seq, payload, |_, _| {})
}

fn data(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

/// Consecutive IPv4 segments of the given payload sizes from `seq` on, and their payload.
fn train4(seq: u32, sizes: &[usize]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let all = data(sizes.iter().sum(), 7);
    let (mut frames, mut off) = (Vec::new(), 0);
    for &n in sizes {
        let at = seq.wrapping_add(off as u32);
        frames.push(plain4(at, &all[off..off + n]));
        off += n;
    }
    (frames, all)
}

/// The frame of a taken output with its partial checksum completed as the kernel would (the
/// header must say so, with the checksum field at `csum_offset`), or checked to carry the
/// single-segment header; with its virtio-net header, IP offset and whether it is GSO.
fn completed(out: &[u8], csum_offset: u16) -> (VnetHdr, Vec<u8>, usize, bool) {
    let h = VnetHdr::parse(out).expect("vnet header");
    let mut frame = out[vnet::LEN..].to_vec();
    let (l3, _) = l3_offset(&frame).expect("IP");
    let gso = h.gso_type != vnet::GSO_NONE;
    if gso {
        assert_eq!(h.flags, vnet::F_NEEDS_CSUM);
        assert_eq!(h.csum_offset, csum_offset);
        assert!(complete(&mut frame, usize::from(h.csum_start), usize::from(csum_offset)));
    } else {
        assert_eq!(h, VnetHdr { flags: vnet::F_DATA_VALID, ..VnetHdr::default() });
    }
    (h, frame, l3, gso)
}

/// Checks a taken frame independently (etherparse, after completing a partial checksum as
/// the kernel would) and returns its virtio-net header, TCP header and payload.
fn check(out: &[u8]) -> (VnetHdr, TcpHeader, Vec<u8>) {
    let (h, frame, l3, gso) = completed(out, 16);
    let pkt = SlicedPacket::from_ethernet(&frame).expect("parses");
    let Some(TransportSlice::Tcp(tcp)) = &pkt.transport else { panic!("no TCP") };
    let expect = match pkt.net.as_ref().expect("net") {
        NetSlice::Ipv4(ip) => {
            let ih = ip.header();
            assert_eq!(usize::from(ih.total_len()), frame.len() - l3, "IPv4 total length");
            assert_eq!(ih.header_checksum(), ih.to_header().calc_header_checksum());
            if gso {
                assert_eq!(h.gso_type, vnet::GSO_TCPV4);
            }
            tcp.calc_checksum_ipv4(ih.source(), ih.destination()).unwrap()
        }
        NetSlice::Ipv6(ip) => {
            let ih = ip.header();
            assert_eq!(usize::from(ih.payload_length()), frame.len() - l3 - 40, "IPv6 length");
            if gso {
                assert_eq!(h.gso_type, vnet::GSO_TCPV6);
            }
            tcp.calc_checksum_ipv6(ih.source(), ih.destination()).unwrap()
        }
        NetSlice::Arp(_) => panic!("ARP"),
    };
    assert_eq!(tcp.checksum(), expect, "TCP checksum");
    let payload = tcp.payload().to_vec();
    if gso {
        let l4 = frame.len() - tcp.slice().len();
        assert_eq!(usize::from(h.csum_start), l4);
        assert_eq!(usize::from(h.hdr_len), l4 + tcp.header_slice().len());
        assert!(payload.len() > usize::from(h.gso_size), "a GSO frame has several segments");
    }
    (h, tcp.to_header(), payload)
}

/// Offers every frame, expecting the given outcomes.
fn offer_all(c: &mut Coalescer, frames: &[Vec<u8>], expect: &[Offer]) {
    let got: Vec<Offer> = frames.iter().map(|f| c.offer(f)).collect();
    assert_eq!(got, expect);
}

#[test]
fn four_ipv4_segments_become_one_super_frame() {
    let (frames, payload) = train4(1000, &[1460; 4]);
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Merged]);
    assert_eq!(c.segments(), 4);
    assert!(!c.is_empty());
    let out = c.take().unwrap().to_vec();
    let (h, tcp, got) = check(&out);
    assert_eq!(got, payload);
    assert_eq!((h.gso_size, h.hdr_len, h.csum_start), (1460, 54, 34));
    assert_eq!(out.len(), vnet::LEN + 54 + 4 * 1460);
    assert_eq!(tcp.sequence_number, 1000);
    assert!(!tcp.psh && !tcp.fin && tcp.ack);
    assert!(c.is_empty());
    assert_eq!(c.segments(), 0);
    assert!(c.take().is_none());
}

#[test]
fn take_on_empty_is_none() {
    let mut c = Coalescer::default();
    assert!(c.is_empty());
    assert!(c.take().is_none());
}

#[test]
fn a_single_segment_comes_back_as_received() {
    let f = plain4(5, &data(100, 1));
    let mut c = Coalescer::new();
    assert_eq!(c.offer(&f), Held);
    assert_eq!(c.segments(), 1);
    let out = c.take().unwrap();
    let want = VnetHdr { flags: vnet::F_DATA_VALID, gso_type: vnet::GSO_NONE, ..VnetHdr::default() };
    assert_eq!(&out[..vnet::LEN], &want.to_bytes());
    assert_eq!(&out[vnet::LEN..], &f[..]);
}

#[test]
fn a_short_segment_closes_the_super_frame() {
    let (frames, payload) = train4(0, &[1460, 1460, 1000, 1460]);
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Flush]);
    let (h, _, got) = check(c.take().unwrap());
    assert_eq!(h.gso_size, 1460);
    assert_eq!(got, payload[..3920]);
    assert_eq!(c.offer(&frames[3]), Held);
}

#[test]
fn a_segment_longer_than_the_first_flushes() {
    let (frames, _) = train4(0, &[1000, 1460]);
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Flush]);
}

#[test]
fn psh_is_merged_last_and_kept() {
    let p = data(1460, 3);
    let frames = [plain4(0, &p), v4(1460, &p, |_, t| t.flags |= tcp::PSH), plain4(2920, &p)];
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Flush]);
    let (_, tcp, got) = check(c.take().unwrap());
    assert!(tcp.psh && !tcp.fin);
    assert_eq!(got.len(), 2920);
    // PSH on the first segment closes too.
    offer_all(&mut c, &frames[1..], &[Held, Flush]);
}

#[test]
fn fin_is_merged_last_and_kept() {
    let p = data(1460, 3);
    let frames =
        [plain4(0, &p), plain4(1460, &p), v4(2920, &p[..10], |_, t| t.flags |= tcp::FIN), plain4(2930, &p)];
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Flush]);
    let (_, tcp, got) = check(c.take().unwrap());
    assert!(tcp.fin && !tcp.psh);
    assert_eq!(got.len(), 2930);
}

#[test]
fn out_of_sequence_flushes() {
    let p = data(1000, 0);
    let mut c = Coalescer::new();
    assert_eq!(c.offer(&plain4(0, &p)), Held);
    assert_eq!(c.offer(&plain4(1001, &p)), Flush, "gap");
    assert_eq!(c.offer(&plain4(999, &p)), Flush, "overlap");
    assert_eq!(c.offer(&plain4(0, &p)), Flush, "retransmission");
    assert_eq!(c.segments(), 1);
    assert_eq!(c.offer(&plain4(1000, &p)), Merged);
}

#[test]
fn sequence_numbers_wrap() {
    let (frames, payload) = train4(u32::MAX - 1000, &[1460; 3]);
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Merged]);
    assert_eq!(check(c.take().unwrap()).2, payload);
}

#[test]
fn another_flow_or_header_flushes() {
    let p = data(500, 9);
    type Edit = fn(&mut Ipv4, &mut Tcp);
    let nops = [1u8; 4];
    let edits: [(&str, Edit); 12] = [
        ("source port", |_, t| t.src_port += 1),
        ("destination port", |_, t| t.dst_port += 1),
        ("source address", |i, _| i.src[3] = 9),
        ("destination address", |i, _| i.dst[3] = 9),
        ("ack number", |_, t| t.ack += 1),
        ("TTL", |i, _| i.ttl = 63),
        ("TOS", |i, _| i.tos |= 0b11), // CE
        ("DF", |i, _| i.flags_frag &= !ipv4::FLAG_DF),
        ("ECE", |_, t| t.flags |= tcp::ECE),
        ("NS bit", |_, t| t.ns = true),
        ("header length", |_, t| t.options.clear()),
        ("option bytes", |_, t| t.options = vec![2, 4, 0x05, 0xb4]), // MSS 1460
    ];
    for (what, edit) in edits {
        let mut c = Coalescer::new();
        assert_eq!(c.offer(&v4(0, &p, |_, t| t.options = nops.to_vec())), Held);
        let same = v4(500, &p, |_, t| t.options = nops.to_vec());
        let f = v4(500, &p, |i, t| {
            t.options = nops.to_vec();
            edit(i, t)
        });
        assert_ne!(f, same, "{what}");
        assert_eq!(c.offer(&f), Flush, "{what}");
        assert_eq!(c.segments(), 1, "{what}");
        assert_eq!(c.offer(&same), Merged, "{what}");
    }
    // Another MAC.
    let mut c = Coalescer::new();
    assert_eq!(c.offer(&plain4(0, &p)), Held);
    let mut f = plain4(500, &p);
    f[0] ^= 0x10;
    assert_eq!(c.offer(&f), Flush, "MAC");
    // Another IP version.
    let six = v6(500, &p, |_, _| {});
    assert_eq!(c.offer(&six), Flush, "IPv6 after IPv4");
}

#[test]
fn ip_id_and_window_may_differ_and_the_latest_window_is_kept() {
    let p = data(1000, 2);
    let frames = [
        v4(0, &p, |i, t| {
            i.ident = 7;
            t.window = 100
        }),
        v4(1000, &p, |i, t| {
            i.ident = 9000;
            t.window = 300
        }),
        v4(2000, &p, |i, t| {
            i.ident = 8;
            t.window = 200
        }),
    ];
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Merged]);
    let (_, tcp, _) = check(c.take().unwrap());
    assert_eq!(tcp.window_size, 200);
}

#[test]
fn ece_alone_merges() {
    let p = data(800, 4);
    let frames = [v4(0, &p, |_, t| t.flags |= tcp::ECE), v4(800, &p, |_, t| t.flags |= tcp::ECE)];
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged]);
    let (h, tcp, _) = check(c.take().unwrap());
    assert!(tcp.ece);
    assert_eq!(h.gso_type, vnet::GSO_TCPV4, "no ECN bit: CWR is never merged");
}

#[test]
fn non_candidates_pass_and_leave_the_pending_frame_alone() {
    let p = data(300, 5);
    let base = plain4(0, &p);
    let next = |edit: fn(&mut Ipv4, &mut Tcp)| v4(300, &p, edit);
    let udp = Ethernet::new(MAC_B, MAC_A).ipv4(Ipv4::new(SRC4, DST4)).udp(Udp::new(1, 2)).payload(&p).build();
    let arp = Ethernet::new(MAC_B, MAC_A).arp(Arp::request(MAC_A, SRC4, DST4)).build();
    let mut bad_tcp = next(|_, _| {});
    bad_tcp[34 + 16] ^= 1;
    let mut bad_ip = next(|_, _| {});
    bad_ip[14 + 10] ^= 1;
    let mut truncated = next(|_, _| {});
    truncated.pop();
    let ipv6_ext = v6(0, &p, |i, _| *i = i.clone().extension(protocol::IPV6_HOP_BY_HOP, &[1, 4, 0, 0, 0, 0]));
    // Only the byte under test disqualifies these: the IPv4 header checksum is resealed, and
    // the TCP checksum stays valid for protocol 6.
    let reseal = |changes: &[(usize, u8)]| {
        let mut f = next(|_, _| {});
        for &(at, value) in changes {
            f[at] = value;
        }
        f[24..26].fill(0);
        let c = !Sum::ZERO.add_bytes(&f[14..34]).fold();
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    let v6_changed = |changes: &[(usize, u8)]| {
        let mut f = v6(0, &p, |_, _| {});
        for &(at, value) in changes {
            f[at] = value;
        }
        f
    };
    let mut short_tcp_header = next(|_, _| {});
    short_tcp_header[34 + 12] = 0x40;
    short_tcp_header[34 + 16..34 + 18].fill(0);
    let tcp_sum = pseudo_v4(&SRC4, &DST4, protocol::TCP, 320).add_bytes(&short_tcp_header[34..]);
    short_tcp_header[34 + 16..34 + 18].copy_from_slice(&tcp_sum.finish());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("IPv4 header with version 6", reseal(&[(14, 0x65)])),
        ("IPv4 protocol other than TCP", reseal(&[(14 + 9, 253)])),
        ("IPv4 reserved flag", reseal(&[(14 + 6, 0xc0)])),
        ("IPv4 total length shorter than the headers", reseal(&[(14 + 2, 0), (14 + 3, 30)])),
        ("IPv6 next header other than TCP", v6_changed(&[(14 + 6, 253)])),
        ("IPv6 header with version 4", v6_changed(&[(14, 0x40)])),
        ("IPv6 payload shorter than a TCP header", v6_changed(&[(14 + 4, 0), (14 + 5, 10)])),
        ("IPv6 packet over 64 KB", v6(0, &data(65535 - 20, 1), |_, _| {})),
        ("TCP data offset under 5", short_tcp_header),
        ("SYN", next(|_, t| t.flags |= tcp::SYN)),
        ("RST", next(|_, t| t.flags |= tcp::RST)),
        ("URG", next(|_, t| t.flags |= tcp::URG)),
        ("CWR", next(|_, t| t.flags |= tcp::CWR)),
        ("no ACK", next(|_, t| t.flags &= !tcp::ACK)),
        ("pure ACK", v4(300, &[], |_, _| {})),
        ("UDP", udp),
        ("ARP", arp),
        ("IPv4 options", next(|i, _| i.options = vec![1, 1, 1, 1])),
        ("fragment (MF)", next(|i, _| i.flags_frag |= ipv4::FLAG_MF)),
        ("fragment (offset)", next(|i, _| i.flags_frag |= 100)),
        ("bad TCP checksum", bad_tcp),
        ("bad IPv4 header checksum", bad_ip),
        ("total length past the frame", truncated),
        ("IPv6 extension header", ipv6_ext),
        ("empty", Vec::new()),
        ("Ethernet only", base[..14].to_vec()),
        ("IPv4 header only", base[..34].to_vec()),
    ];
    for (what, f) in cases {
        let mut c = Coalescer::new();
        assert_eq!(c.offer(&f), Pass, "{what} when empty");
        assert!(c.is_empty());
        assert_eq!(c.offer(&base), Held);
        assert_eq!(c.offer(&f), Pass, "{what}");
        assert_eq!(c.segments(), 1, "{what}");
        assert_eq!(&c.take().unwrap()[vnet::LEN..], &base[..], "{what}");
    }
    // What made them pass is the byte changed: unchanged, they are held or merged.
    let mut c = Coalescer::new();
    assert_eq!(c.offer(&v6(0, &p, |_, _| {})), Held);
    let mut c = Coalescer::new();
    assert_eq!(c.offer(&base), Held);
    assert_eq!(c.offer(&reseal(&[(14 + 8, 64)])), Merged);
}

#[test]
fn ipv6_segments_merge() {
    let all = data(4000, 6);
    let frames: Vec<Vec<u8>> = [0, 1200, 2400, 3600]
        .iter()
        .map(|&o| v6(o as u32, &all[o..(o + 1200).min(4000)], |_, _| {}))
        .collect();
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Merged]);
    let out = c.take().unwrap().to_vec();
    let (h, _, got) = check(&out);
    assert_eq!(got, all);
    assert_eq!((h.gso_size, h.hdr_len, h.csum_start), (1200, 74, 54));
    assert_eq!(u16::from_be_bytes([out[vnet::LEN + 18], out[vnet::LEN + 19]]), 20 + 4000);
}

#[test]
fn ipv6_header_fields_must_match() {
    let p = data(600, 8);
    type Edit = fn(&mut Ipv6, &mut Tcp);
    let edits: [(&str, Edit); 4] = [
        ("flow label", |i, _| i.flow_label = 1),
        ("traffic class", |i, _| i.traffic_class = 0),
        ("hop limit", |i, _| i.hop_limit = 1),
        ("source", |i, _| i.src[0] = 0xfe),
    ];
    for (what, edit) in edits {
        let mut c = Coalescer::new();
        assert_eq!(c.offer(&v6(0, &p, |_, _| {})), Held);
        assert_eq!(c.offer(&v6(600, &p, edit)), Flush, "{what}");
    }
}

#[test]
fn timestamps_must_be_identical() {
    let p = data(1000, 1);
    let ts = |a: u32| move |_: &mut Ipv4, t: &mut Tcp| *t = t.clone().timestamps(a, 99);
    let frames = [v4(0, &p, ts(5)), v4(1000, &p, ts(5)), v4(2000, &p, ts(6))];
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Flush]);
    let (h, tcp, got) = check(c.take().unwrap());
    assert_eq!(h.hdr_len, 14 + 20 + 32);
    assert_eq!(tcp.options.as_slice(), &[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 99]);
    assert_eq!(got, [p.clone(), p].concat());
}

#[test]
fn the_ip_length_stays_within_64k() {
    // 5 × 13099 + 40 header bytes is exactly 65535.
    let (frames, payload) = train4(0, &[13099; 6]);
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Merged, Merged, Flush]);
    let out = c.take().unwrap().to_vec();
    assert_eq!(check(&out).2, payload[..5 * 13099]);
    assert_eq!(&out[vnet::LEN + 16..vnet::LEN + 18], &65535u16.to_be_bytes());

    // With 1460-byte segments: 44 fit (64280 + 40), the 45th does not.
    let (frames, _) = train4(0, &[1460; 45]);
    for f in &frames[..44] {
        assert_ne!(c.offer(f), Flush);
    }
    assert_eq!(c.offer(&frames[44]), Flush);
    assert_eq!(c.segments(), 44);

    // IPv6: the IP packet, fixed header included, fits 64 KB (5 × 13095 + 60 = 65535).
    let all = data(6 * 13095, 3);
    let frames: Vec<Vec<u8>> =
        all.chunks(13095).enumerate().map(|(i, s)| v6((i * 13095) as u32, s, |_, _| {})).collect();
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Merged, Merged, Flush]);
    assert_eq!(check(c.take().unwrap()).2, all[..5 * 13095]);
}

#[test]
fn at_most_64_segments() {
    let (frames, payload) = train4(0, &[100; 65]);
    let mut c = Coalescer::new();
    for f in &frames[..64] {
        assert_ne!(c.offer(f), Flush);
    }
    assert_eq!(c.segments(), 64);
    assert_eq!(c.offer(&frames[64]), Flush);
    assert_eq!(check(c.take().unwrap()).2, payload[..6400]);
}

#[test]
fn ethernet_padding_is_not_payload() {
    // 14 + 20 + 20 + 6 = 60 bytes, the Ethernet minimum; the 2-byte segment is padded to it.
    let first = plain4(0, b"abcdef");
    assert_eq!(first.len(), 60);
    let mut short = plain4(6, b"gh");
    let unpadded = short.clone();
    short.resize(60, 0xee);
    let mut c = Coalescer::new();
    assert_eq!(c.offer(&first), Held);
    assert_eq!(c.offer(&short), Merged);
    let out = c.take().unwrap().to_vec();
    assert_eq!(check(&out).2, b"abcdefgh");
    assert_eq!(out.len(), vnet::LEN + 54 + 8);
    // Held alone, it comes back without its padding.
    assert_eq!(c.offer(&short), Held);
    assert_eq!(&c.take().unwrap()[vnet::LEN..], &unpadded[..]);
}

#[test]
fn vlan_tagged_segments_merge() {
    let tag = |mut f: Vec<u8>| {
        f.splice(12..12, [0x81, 0x00, 0x00, 0x2a]);
        f
    };
    let (frames, payload) = train4(0, &[1000; 3]);
    let frames: Vec<Vec<u8>> = frames.into_iter().map(tag).collect();
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Held, Merged, Merged]);
    let out = c.take().unwrap().to_vec();
    let (h, _, got) = check(&out);
    assert_eq!(got, payload);
    assert_eq!((h.csum_start, h.hdr_len), (38, 58));
    // Another VLAN is another flow.
    let mut other = tag(plain4(3000, &payload[..1000]));
    other[15] = 0x2b;
    assert_eq!(c.offer(&frames[0]), Held);
    assert_eq!(c.offer(&other), Flush);
}

/// Offers a stream, taking on Flush and at the end; returns the taken frames.
fn run(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    run_in(Coalescer::new(), frames)
}

fn run_in(mut c: Coalescer, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in frames {
        match c.offer(f) {
            Flush => {
                out.push(c.take().unwrap().to_vec());
                assert_eq!(c.offer(f), Held);
            }
            Pass => {
                if let Some(t) = c.take() {
                    out.push(t.to_vec());
                }
            }
            Held | Merged => {}
        }
    }
    out.extend(c.take().map(<[u8]>::to_vec));
    out
}

// UDP (USO) coalescing.

const SPORT: u16 = 40000;
const DPORT: u16 = 5201;

fn udp_coalescer() -> Coalescer {
    let mut c = Coalescer::new();
    c.set_udp(true);
    c
}

/// An IPv4 UDP datagram A -> B (correct lengths and checksums), after `edit`.
fn udp4_with(ports: (u16, u16), payload: &[u8], edit: impl FnOnce(&mut Ipv4)) -> Vec<u8> {
    // Varies between datagrams, as senders set it: the ID is not compared.
    let ident = payload.len() as u16 ^ u16::from(payload.first().copied().unwrap_or(0));
    let mut ip = Ipv4::new(SRC4, DST4).ident(ident);
    edit(&mut ip);
    Ethernet::new(MAC_B, MAC_A).ipv4(ip).udp(Udp::new(ports.0, ports.1)).payload(payload).build()
}

fn udp4(payload: &[u8]) -> Vec<u8> {
    udp4_with((SPORT, DPORT), payload, |_| {})
}

/// An IPv6 UDP datagram A -> B (traffic class 0x20, a flow label), after `edit`.
fn udp6_with(ports: (u16, u16), payload: &[u8], edit: impl FnOnce(&mut Ipv6)) -> Vec<u8> {
    let mut ip = Ipv6::new(SRC6, DST6).traffic_class(0x20).flow_label(0x5_4321);
    edit(&mut ip);
    Ethernet::new(MAC_B, MAC_A).ipv6(ip).udp(Udp::new(ports.0, ports.1)).payload(payload).build()
}

fn udp6(payload: &[u8]) -> Vec<u8> {
    udp6_with((SPORT, DPORT), payload, |_| {})
}

/// Checks a taken UDP frame independently (etherparse, after completing a partial checksum
/// as the kernel would) and returns its virtio-net header and payload.
fn check_udp(out: &[u8]) -> (VnetHdr, Vec<u8>) {
    let (h, frame, l3, gso) = completed(out, 6);
    if gso {
        assert_eq!(h.gso_type, vnet::GSO_UDP_L4);
    }
    let pkt = SlicedPacket::from_ethernet(&frame).expect("parses");
    let Some(TransportSlice::Udp(udp)) = &pkt.transport else { panic!("no UDP") };
    let payload = udp.payload().to_vec();
    let l4 = frame.len() - udp.slice().len();
    assert_eq!(usize::from(udp.length()), frame.len() - l4, "UDP length");
    let expect = match pkt.net.as_ref().expect("net") {
        NetSlice::Ipv4(ip) => {
            let ih = ip.header();
            assert_eq!(usize::from(ih.total_len()), frame.len() - l3, "IPv4 total length");
            assert_eq!(ih.header_checksum(), ih.to_header().calc_header_checksum());
            udp.to_header().calc_checksum_ipv4_raw(ih.source(), ih.destination(), &payload).unwrap()
        }
        NetSlice::Ipv6(ip) => {
            let ih = ip.header();
            assert_eq!(usize::from(ih.payload_length()), frame.len() - l3 - 40, "IPv6 length");
            udp.to_header().calc_checksum_ipv6_raw(ih.source(), ih.destination(), &payload).unwrap()
        }
        NetSlice::Arp(_) => panic!("ARP"),
    };
    assert_eq!(udp.checksum(), expect, "UDP checksum");
    if gso {
        assert_eq!(usize::from(h.csum_start), l4);
        assert_eq!(usize::from(h.hdr_len), l4 + 8);
        let gso_size = usize::from(h.gso_size);
        assert!(payload.len() > gso_size, "a GSO frame has several datagrams");
        assert!(payload.len() <= MAX_SEGS * gso_size, "UDP_MAX_SEGMENTS");
    }
    (h, payload)
}

#[test]
fn udp_passes_unless_enabled() {
    let frames = [udp4(&data(100, 1)), udp4(&data(100, 2))];
    let mut c = Coalescer::new();
    offer_all(&mut c, &frames, &[Pass, Pass]);
    c.set_udp(true);
    offer_all(&mut c, &frames, &[Held, Merged]);
    c.take();
    c.set_udp(false);
    offer_all(&mut c, &frames, &[Pass, Pass]);
    assert!(c.is_empty());
}

#[test]
fn five_ipv4_datagrams_become_one_uso_frame() {
    let all = data(5 * 200, 3);
    let frames: Vec<Vec<u8>> = all.chunks(200).map(udp4).collect();
    let mut c = udp_coalescer();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Merged, Merged]);
    assert_eq!(c.segments(), 5);
    let out = c.take().unwrap().to_vec();
    assert!(c.is_empty());
    let (h, got) = check_udp(&out);
    assert_eq!(got, all);
    let want = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_UDP_L4,
        hdr_len: 14 + 20 + 8,
        gso_size: 200,
        csum_start: 34,
        csum_offset: 6,
    };
    assert_eq!(h, want);
    assert_eq!(out.len(), vnet::LEN + 42 + 1000);
    let frame = &out[vnet::LEN..];
    assert_eq!(&frame[16..18], &(20u16 + 8 + 1000).to_be_bytes(), "IPv4 total length");
    assert_eq!(&frame[38..40], &(8u16 + 1000).to_be_bytes(), "UDP length");
    let pseudo = pseudo_v4(&SRC4, &DST4, protocol::UDP, 1008).fold();
    assert_eq!(&frame[40..42], &pseudo.to_be_bytes(), "partial checksum, not complemented");
    // The first datagram's headers otherwise: MACs, ID, flags, TTL, addresses, ports.
    assert_eq!(frame[..16], frames[0][..16]);
    assert_eq!(frame[18..24], frames[0][18..24]);
    assert_eq!(frame[26..38], frames[0][26..38]);
}

#[test]
fn a_short_datagram_closes_and_a_longer_one_flushes() {
    let frames = [udp4(&data(300, 1)), udp4(&data(300, 2)), udp4(&data(120, 3)), udp4(&data(120, 4))];
    let mut c = udp_coalescer();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Flush]);
    let (h, got) = check_udp(c.take().unwrap());
    assert_eq!(h.gso_size, 300);
    assert_eq!(got, [data(300, 1), data(300, 2), data(120, 3)].concat());
    // A longer one after the first.
    offer_all(&mut c, &[udp4(&data(120, 5)), udp4(&data(121, 6))], &[Held, Flush]);
    assert_eq!(c.segments(), 1);
}

#[test]
fn another_udp_flow_or_header_flushes() {
    let p = data(400, 9);
    let first = udp4(&p);
    type Edit = fn(&mut Ipv4);
    let keep: Edit = |_| {};
    let cases: [(&str, (u16, u16), Edit); 7] = [
        ("source port", (SPORT + 1, DPORT), keep),
        ("destination port", (SPORT, DPORT + 1), keep),
        ("source address", (SPORT, DPORT), |i| i.src[3] = 9),
        ("destination address", (SPORT, DPORT), |i| i.dst[3] = 9),
        ("TOS", (SPORT, DPORT), |i| i.tos = 10 << 2), // DSCP 10
        ("TTL", (SPORT, DPORT), |i| i.ttl = 63),
        ("DF", (SPORT, DPORT), |i| i.flags_frag &= !ipv4::FLAG_DF),
    ];
    for (what, ports, edit) in cases {
        let mut c = udp_coalescer();
        assert_eq!(c.offer(&first), Held);
        assert_eq!(c.offer(&udp4_with(ports, &p, edit)), Flush, "{what}");
        assert_eq!(c.segments(), 1, "{what}");
        assert_eq!(c.offer(&udp4_with((SPORT, DPORT), &p, |i| i.ident = 1)), Merged, "{what}");
    }
    let mut c = udp_coalescer();
    assert_eq!(c.offer(&first), Held);
    let mut f = udp4(&p);
    f[0] ^= 0x10;
    assert_eq!(c.offer(&f), Flush, "MAC");
    assert_eq!(c.offer(&udp6(&p)), Flush, "IPv6 after IPv4");
    // TCP and UDP never share a super-frame, whichever comes first (this TCP segment has the
    // same ports and the sequence number a continuation would have).
    assert_eq!(c.offer(&plain4(400, &p)), Flush, "TCP after UDP");
    c.take();
    assert_eq!(c.offer(&plain4(0, &p)), Held);
    assert_eq!(c.offer(&first), Flush, "UDP after TCP");
    assert_eq!(c.offer(&plain4(400, &p)), Merged);
}

#[test]
fn ipv6_udp_header_fields_must_match() {
    let p = data(400, 8);
    type Edit = fn(&mut Ipv6);
    let edits: [(&str, Edit); 5] = [
        ("flow label", |i| i.flow_label = 1),
        ("traffic class", |i| i.traffic_class = 0),
        ("hop limit", |i| i.hop_limit = 1),
        ("source", |i| i.src[0] = 0xfe),
        ("destination", |i| i.dst[15] = 9),
    ];
    for (what, edit) in edits {
        let mut c = udp_coalescer();
        assert_eq!(c.offer(&udp6(&p)), Held);
        assert_eq!(c.offer(&udp6_with((SPORT, DPORT), &p, edit)), Flush, "{what}");
        assert_eq!(c.offer(&udp6(&p)), Merged, "{what}");
    }
}

#[test]
fn udp_non_candidates_pass() {
    let p = data(200, 5);
    let base = udp4(&p);
    // Adding the checksum to a payload word makes the data sum to all ones: the checksum
    // computed is then 0, sent as 0xffff, and a 0 in the field would verify as well.
    let mut ones = udp4(&p);
    let (sum, carry) =
        u16::from_be_bytes([ones[42], ones[43]]).overflowing_add(u16::from_be_bytes([ones[40], ones[41]]));
    ones[42..44].copy_from_slice(&(sum + u16::from(carry)).to_be_bytes());
    ones[40..42].copy_from_slice(&[0xff, 0xff]);
    assert!(pseudo_v4(&SRC4, &DST4, protocol::UDP, 208).add_bytes(&ones[34..]).verifies());
    let mut zero_sum = ones.clone();
    zero_sum[40..42].fill(0);
    assert!(pseudo_v4(&SRC4, &DST4, protocol::UDP, 208).add_bytes(&zero_sum[34..]).verifies());
    let mut zero_sum_other = udp4(&p);
    zero_sum_other[40..42].fill(0);
    let mut bad_sum = udp4(&p);
    bad_sum[50] ^= 1;
    let mut zero_sum6 = udp6(&p);
    zero_sum6[60..62].fill(0);
    let mut bad_sum6 = udp6(&p);
    bad_sum6[70] ^= 1;
    let mut bad_ip = udp4(&p);
    bad_ip[24] ^= 1;
    // A UDP length shorter than the IP payload, the checksum resealed so that only the length
    // disqualifies it.
    let mut udp_len = udp4(&p);
    udp_len[38..40].copy_from_slice(&207u16.to_be_bytes());
    udp_len[40..42].fill(0);
    let sum = pseudo_v4(&SRC4, &DST4, protocol::UDP, 208).add_bytes(&udp_len[34..]);
    udp_len[40..42].copy_from_slice(&sum.finish());
    let mut truncated = udp4(&p);
    truncated.pop();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero checksum over data summing to all ones", zero_sum),
        ("zero checksum", zero_sum_other),
        ("bad checksum", bad_sum),
        ("IPv6 zero checksum", zero_sum6),
        ("IPv6 bad checksum", bad_sum6),
        ("bad IPv4 header checksum", bad_ip),
        ("UDP length not the IP payload", udp_len),
        ("total length past the frame", truncated),
        ("no payload", udp4_with((SPORT, DPORT), &[], |_| {})),
        ("fragment (MF)", udp4_with((SPORT, DPORT), &p, |i| i.flags_frag |= ipv4::FLAG_MF)),
        ("fragment (offset)", udp4_with((SPORT, DPORT), &p, |i| i.flags_frag |= 100)),
        ("IPv4 options", udp4_with((SPORT, DPORT), &p, |i| i.options = vec![1, 1, 1, 1])),
        ("UDP header only", base[..42].to_vec()),
    ];
    for (what, f) in cases {
        let mut c = udp_coalescer();
        assert_eq!(c.offer(&f), Pass, "{what} when empty");
        assert_eq!(c.offer(&base), Held);
        assert_eq!(c.offer(&f), Pass, "{what}");
        assert_eq!(c.segments(), 1, "{what}");
        assert_eq!(&c.take().unwrap()[vnet::LEN..], &base[..], "{what}");
    }
    // A checksum of 0xffff is a computed 0, not "none": it merges.
    let mut c = udp_coalescer();
    assert_eq!(c.offer(&ones), Held);
    assert_eq!(c.offer(&base), Merged);
    check_udp(c.take().unwrap());
}

#[test]
fn ipv6_datagrams_merge() {
    let all = data(3 * 1000 + 10, 6);
    let frames: Vec<Vec<u8>> = all.chunks(1000).map(udp6).collect();
    let mut c = udp_coalescer();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Merged]);
    let out = c.take().unwrap().to_vec();
    let (h, got) = check_udp(&out);
    assert_eq!(got, all);
    assert_eq!((h.gso_size, h.hdr_len, h.csum_start), (1000, 62, 54));
    assert_eq!(&out[vnet::LEN + 18..vnet::LEN + 20], &(8u16 + 3010).to_be_bytes(), "payload length");
    let pseudo = pseudo_v6(&SRC6, &DST6, protocol::UDP, 3018).fold();
    assert_eq!(&out[vnet::LEN + 60..vnet::LEN + 62], &pseudo.to_be_bytes());
}

#[test]
fn at_most_64_datagrams() {
    let all = data(65 * 10, 2);
    let frames: Vec<Vec<u8>> = all.chunks(10).map(udp4).collect();
    let mut c = udp_coalescer();
    for f in &frames[..64] {
        assert_ne!(c.offer(f), Flush);
    }
    assert_eq!(c.segments(), 64);
    assert_eq!(c.offer(&frames[64]), Flush);
    assert_eq!(check_udp(c.take().unwrap()).1, all[..640]);
}

#[test]
fn the_udp_length_stays_within_64k() {
    // 28 header bytes and 44 × 1472 fit in 65535; a 45th does not.
    let all = data(45 * 1472, 4);
    let frames: Vec<Vec<u8>> = all.chunks(1472).map(udp4).collect();
    let mut c = udp_coalescer();
    for f in &frames[..44] {
        assert_ne!(c.offer(f), Flush);
    }
    assert_eq!(c.offer(&frames[44]), Flush);
    assert_eq!(check_udp(c.take().unwrap()).1, all[..44 * 1472]);
    // Exactly 65535: 13 × 5039 + 28.
    let all = data(14 * 5039, 5);
    let frames: Vec<Vec<u8>> = all.chunks(5039).map(udp4).collect();
    for f in &frames[..13] {
        assert_ne!(c.offer(f), Flush);
    }
    assert_eq!(c.offer(&frames[13]), Flush);
    let out = c.take().unwrap().to_vec();
    assert_eq!(&out[vnet::LEN + 16..vnet::LEN + 18], &65535u16.to_be_bytes());
    assert_eq!(check_udp(&out).1, all[..13 * 5039]);
    // IPv6, fixed header included: 3 × 21829 + 48.
    let all = data(4 * 21829, 6);
    let frames: Vec<Vec<u8>> = all.chunks(21829).map(udp6).collect();
    offer_all(&mut c, &frames, &[Held, Merged, Merged, Flush]);
    let out = c.take().unwrap().to_vec();
    assert_eq!(&out[vnet::LEN + 18..vnet::LEN + 20], &(65535u16 - 40).to_be_bytes());
    assert_eq!(check_udp(&out).1, all[..3 * 21829]);
}

#[test]
fn a_single_datagram_comes_back_as_received() {
    for f in [udp4(&data(100, 1)), udp6(&data(3, 2))] {
        let mut c = udp_coalescer();
        assert_eq!(c.offer(&f), Held);
        assert_eq!(c.segments(), 1);
        let out = c.take().unwrap();
        let want = VnetHdr { flags: vnet::F_DATA_VALID, gso_type: vnet::GSO_NONE, ..VnetHdr::default() };
        assert_eq!(&out[..vnet::LEN], &want.to_bytes());
        assert_eq!(&out[vnet::LEN..], &f[..]);
    }
    // Ethernet padding is dropped, and is not payload when merged.
    let mut c = udp_coalescer();
    let mut padded = udp4(b"ab");
    let unpadded = padded.clone();
    padded.resize(60, 0xee);
    assert_eq!(c.offer(&padded), Held);
    assert_eq!(&c.take().unwrap()[vnet::LEN..], &unpadded[..]);
    offer_all(&mut c, &[udp4(b"xyz"), padded], &[Held, Merged]);
    assert_eq!(check_udp(c.take().unwrap()).1, b"xyzab");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn udp_streams_come_back_whole(
        // Bursts of one flow: version, port, size, count, a shorter last datagram or not.
        bursts in proptest::collection::vec(
            (
                any::<bool>(),
                0u16..2,
                1usize..=1472,
                1usize..=100,
                proptest::option::of(any::<prop::sample::Index>()),
            ),
            1..=5,
        ),
        salt in any::<u8>(),
    ) {
        let mut frames = Vec::new();
        let mut sent = Vec::new();
        for &(ipv6, port, size, count, short) in &bursts {
            for i in 0..count {
                let n = match short {
                    Some(at) if i + 1 == count && size > 1 => 1 + at.index(size - 1),
                    _ => size,
                };
                let p = data(n, salt.wrapping_add(frames.len() as u8));
                let ports = (SPORT + port, DPORT);
                let f = if ipv6 { udp6_with(ports, &p, |_| {}) } else { udp4_with(ports, &p, |_| {}) };
                frames.push(f);
                sent.push(((ipv6, port), n, p));
            }
        }
        let out = run_in(udp_coalescer(), &frames);
        let mut got = Vec::new();
        for f in &out {
            got.extend(check_udp(f).1);
        }
        let want: Vec<u8> = sent.iter().flat_map(|s| s.2.iter().copied()).collect();
        prop_assert_eq!(&got, &want);
        // A model of the rules: as many datagrams per frame as they allow.
        let mut expect = 0;
        #[allow(clippy::type_complexity)]
        let mut cur: Option<((bool, u16), usize, usize, usize, bool)> = None;
        for &(key, n, _) in &sent {
            let headers = if key.0 { 48 } else { 28 };
            cur = match cur {
                Some((k, gso, segs, len, false))
                    if k == key && n <= gso && segs < 64 && headers + len + n <= 65535 =>
                {
                    Some((k, gso, segs + 1, len + n, n < gso))
                }
                _ => {
                    expect += 1;
                    Some((key, n, 1, n, false))
                }
            };
        }
        prop_assert_eq!(out.len(), expect);
    }

    #[test]
    fn damaged_udp_frames_never_panic_or_corrupt(
        sizes in proptest::collection::vec(1usize..600, 1..24),
        damage in proptest::collection::vec((0u8..4, any::<usize>(), 1u8..=255), 24),
    ) {
        let mut frames: Vec<Vec<u8>> = sizes.iter().map(|&n| udp4(&data(n, n as u8))).collect();
        for (f, &(op, at, x)) in frames.iter_mut().zip(&damage) {
            match op {
                0 => {
                    let i = at % f.len();
                    f[i] ^= x;
                }
                1 => f.truncate(at % f.len()),
                _ => {}
            }
        }
        for f in run_in(udp_coalescer(), &frames) {
            check_udp(&f);
        }
    }

    #[test]
    fn a_stream_comes_back_whole(
        payload in proptest::collection::vec(any::<u8>(), 1..=60000),
        // Often small enough for the 64-segment limit to split the stream.
        mss in prop_oneof![536usize..=1100, 536usize..=9000],
        start in any::<u32>(),
        ipv6 in any::<bool>(),
    ) {
        let frames: Vec<Vec<u8>> = payload
            .chunks(mss)
            .enumerate()
            .map(|(i, s)| {
                let seq = start.wrapping_add((i * mss) as u32);
                if ipv6 { v6(seq, s, |_, _| {}) } else { plain4(seq, s) }
            })
            .collect();
        let out = run(&frames);
        let mut got = Vec::new();
        for f in &out {
            got.extend(check(f).2);
        }
        prop_assert_eq!(&got, &payload);
        // As many segments per frame as the limits allow (the last may be short).
        let headers = if ipv6 { 60 } else { 40 };
        let (mut expect, mut len, mut n) = (0, MAX_IP, MAX_SEGS);
        for s in payload.chunks(mss) {
            if n == MAX_SEGS || len + s.len() > MAX_IP {
                (expect, len, n) = (expect + 1, headers, 0);
            }
            (len, n) = (len + s.len(), n + 1);
        }
        prop_assert_eq!(out.len(), expect);
    }

    #[test]
    fn damaged_frames_never_panic_or_corrupt(
        sizes in proptest::collection::vec(1usize..1500, 1..24),
        damage in proptest::collection::vec((0u8..4, any::<usize>(), 1u8..=255), 24),
    ) {
        let (mut frames, _) = train4(77, &sizes);
        for (f, &(op, at, x)) in frames.iter_mut().zip(&damage) {
            match op {
                0 => {
                    let i = at % f.len();
                    f[i] ^= x;
                }
                1 => f.truncate(at % f.len()),
                _ => {}
            }
        }
        for f in run(&frames) {
            check(&f);
        }
    }
}
