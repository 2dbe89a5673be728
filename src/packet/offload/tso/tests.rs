use super::super::vnet::{GSO_ECN, GSO_NONE, GSO_UDP};
use super::*;
use crate::wire::build::{Ethernet, Ipv4, Ipv6, Net, Tcp, Udp};
use crate::wire::mac::MacAddr;
use etherparse::{
    Ipv4Header, LinkExtHeader, NetHeaders, PacketHeaders, TcpHeader, TransportHeader, UdpHeader,
};
use proptest::prelude::*;

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
const SRC4: [u8; 4] = [198, 18, 0, 1];
const DST4: [u8; 4] = [198, 18, 0, 2];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// NOP, NOP, timestamps: what Linux puts on every data segment.
const TS_OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78];

/// Payload bytes that differ from their neighbours and do not repeat with any small period.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(7919) % 251) as u8 ^ (i >> 8) as u8).collect()
}

fn ipv4(id: u16, opts: &[u8]) -> Net {
    Net::Ipv4(Ipv4::new(SRC4, DST4).ttl(61).ident(id).options(opts))
}

fn ipv6() -> Net {
    Net::Ipv6(Ipv6::new(SRC6, DST6).hop_limit(61))
}

/// A TCP header with ACK|ECE set and whatever `flags` adds.
fn tcp(seq: u32, opts: &[u8], flags: impl Fn(&mut Tcp)) -> Tcp {
    let mut t = Tcp::new(40000, 5201).seq(seq).ack(0x0102_0304).window(1024).options(opts);
    t.flags |= tcp::ECE;
    flags(&mut t);
    t
}

/// Builds a super-frame A -> B, TCP or (without `l4`) UDP 4000 -> 4789; the L4 checksum field
/// is garbage (the kernel leaves a partial sum there) so that a test fails if segmentation reads
/// rather than recomputes it.
fn frame(vlan: bool, ip: Net, l4: Option<Tcp>, data: &[u8]) -> Vec<u8> {
    let mut f = Ethernet::new(MAC_B, MAC_A);
    f.net = ip;
    if vlan {
        f = f.vlan(42);
    }
    let f = match l4 {
        Some(t) => f.tcp(t),
        None => f.udp(Udp::new(4000, 4789)),
    };
    let mut v = f.payload(data).build();
    let (l3, ver) = l3_offset(&v).unwrap();
    let (l4_off, proto) = match ver {
        IpVersion::V4 => (l3 + ipv4::header_len(&v[l3..]), v[l3 + ipv4::field::PROTOCOL]),
        IpVersion::V6 => (l3 + ipv6::HEADER_LEN, v[l3 + ipv6::field::NEXT_HEADER]),
    };
    let csum = if proto == protocol::TCP { tcp::field::CHECKSUM } else { udp::field::CHECKSUM };
    v[l4_off..][csum].copy_from_slice(&[0xde, 0xad]);
    v
}

/// A header as the kernel would send it; hdr_len is deliberately not the header length.
fn vnet(gso_type: u8, gso_size: u16, csum_start: usize) -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: 128,
        gso_size,
        csum_start: csum_start as u16,
        csum_offset: 16,
    }
}

/// One parsed segment whose lengths and checksums etherparse found consistent.
struct Seg {
    link_exts: Vec<LinkExtHeader>,
    net: NetHeaders,
    l4: TransportHeader,
    payload: Vec<u8>,
}

/// Parses one segment frame with etherparse and checks every length and checksum in it
/// with etherparse's own computation.
fn verify(seg: &[u8]) -> Seg {
    let p = PacketHeaders::from_ethernet_slice(seg).expect("segment parses");
    let payload = p.payload.slice().to_vec();
    let net = p.net.expect("ip header");
    let l4 = p.transport.expect("transport header");
    let l4_len = l4.header_len() + payload.len();
    match (&net, &l4) {
        (NetHeaders::Ipv4(ip, _), _) => {
            assert_eq!(usize::from(ip.total_len), ip.header_len() + l4_len, "ipv4 total length");
            assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "ipv4 header checksum");
        }
        (NetHeaders::Ipv6(ip, _), _) => {
            assert_eq!(usize::from(ip.payload_length), l4_len, "ipv6 payload length");
        }
        _ => panic!("not ip"),
    }
    match (&net, &l4) {
        (NetHeaders::Ipv4(ip, _), TransportHeader::Tcp(t)) => {
            assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, &payload).unwrap(), "tcp/v4 checksum")
        }
        (NetHeaders::Ipv6(ip, _), TransportHeader::Tcp(t)) => {
            assert_eq!(t.checksum, t.calc_checksum_ipv6(ip, &payload).unwrap(), "tcp/v6 checksum")
        }
        (NetHeaders::Ipv4(ip, _), TransportHeader::Udp(u)) => {
            assert_eq!(usize::from(u.length), l4_len, "udp length");
            assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, &payload).unwrap(), "udp/v4 checksum")
        }
        (NetHeaders::Ipv6(ip, _), TransportHeader::Udp(u)) => {
            assert_eq!(usize::from(u.length), l4_len, "udp length");
            assert_eq!(u.checksum, u.calc_checksum_ipv6(ip, &payload).unwrap(), "udp/v6 checksum")
        }
        _ => panic!("unexpected headers"),
    }
    let hdrs = seg.len() - payload.len();
    assert_eq!(&seg[hdrs..], &payload[..], "nothing after the payload");
    Seg { link_exts: p.link_exts.to_vec(), net, l4, payload }
}

/// Segments `f` and checks what holds for every super-frame: the layout, the prefix at
/// every stride, lengths and checksums (via etherparse), and the payload reassembled.
fn split(f: &[u8], hdr: &VnetHdr, prefix: &[u8], hdrs: usize, data: &[u8]) -> Vec<Seg> {
    let gso = usize::from(hdr.gso_size);
    let count = data.len().div_ceil(gso);
    let mut out = vec![0u8; (prefix.len() + hdrs + gso) * count + 100];
    let s = segment(f, hdr, prefix, &mut out).unwrap();
    assert_eq!(s.stride, prefix.len() + hdrs + gso);
    assert_eq!(s.count, count);
    assert_eq!(s.len, count * (prefix.len() + hdrs) + data.len());
    let segs: Vec<Seg> = out[..s.len]
        .chunks(s.stride)
        .map(|seg| {
            assert_eq!(&seg[..prefix.len()], prefix, "prefix");
            assert_eq!(&seg[prefix.len()..prefix.len() + 12], &f[..12], "macs copied");
            verify(&seg[prefix.len()..])
        })
        .collect();
    assert_eq!(segs.len(), count);
    for (i, seg) in segs.iter().enumerate() {
        let want = if i + 1 < count { gso } else { data.len() - gso * (count - 1) };
        assert_eq!(seg.payload.len(), want, "segment {i} payload length");
    }
    let joined: Vec<u8> = segs.iter().flat_map(|s| s.payload.iter().copied()).collect();
    assert_eq!(joined, data, "payload reassembled");
    segs
}

fn tcp_of(s: &Seg) -> &TcpHeader {
    match &s.l4 {
        TransportHeader::Tcp(t) => t,
        _ => panic!("not tcp"),
    }
}

fn ipv4_of(s: &Seg) -> &Ipv4Header {
    match &s.net {
        NetHeaders::Ipv4(ip, _) => ip,
        _ => panic!("not ipv4"),
    }
}

#[test]
fn tcp_v4_super_frame_becomes_mss_segments() {
    let data = payload(3 * 1448 + 100);
    let t = tcp(0xffff_f000, &TS_OPTS, |t| t.flags |= tcp::PSH | tcp::FIN | tcp::CWR);
    let f = frame(false, ipv4(0xfffe, &[]), Some(t), &data);
    let hdr = vnet(GSO_TCPV4 | GSO_ECN, 1448, 34);
    let prefix: Vec<u8> = (0..50u8).map(|b| b ^ 0xa5).collect();
    let segs = split(&f, &hdr, &prefix, 14 + 20 + 32, &data);
    assert_eq!(segs.len(), 4);
    assert_eq!(segs[3].payload.len(), 100);
    for (i, s) in segs.iter().enumerate() {
        let ip = ipv4_of(s);
        assert_eq!(ip.identification, 0xfffe_u16.wrapping_add(i as u16), "ids wrap from 0xffff to 0");
        assert!(ip.dont_fragment);
        assert_eq!(ip.time_to_live, 61);
        let t = tcp_of(s);
        assert_eq!(t.sequence_number, 0xffff_f000_u32.wrapping_add(1448 * i as u32), "seq wraps");
        assert_eq!(t.acknowledgment_number, 0x0102_0304);
        assert_eq!(t.options.as_slice(), &TS_OPTS, "options on every segment");
        assert!(t.ack && t.ece, "other flags kept");
        assert!(!t.syn && !t.rst && !t.urg);
        assert_eq!(t.psh, i == 3, "psh only on the last");
        assert_eq!(t.fin, i == 3, "fin only on the last");
        assert_eq!(t.cwr, i == 0, "cwr only on the first");
    }
    let ids: Vec<u16> = segs.iter().map(|s| ipv4_of(s).identification).collect();
    assert_eq!(ids, [0xfffe, 0xffff, 0, 1]);
}

#[test]
fn ipv4_options_and_vlan_tag_are_copied() {
    let data = payload(5000);
    let ip_opts = [0x94, 4, 0, 0]; // router alert
    let f = frame(true, ipv4(7, &ip_opts), Some(tcp(1, &[], |_| {})), &data);
    let hdr = vnet(GSO_TCPV4, 1400, 18 + 24);
    let segs = split(&f, &hdr, &[], 18 + 24 + 20, &data);
    assert_eq!(segs.len(), 4);
    for s in &segs {
        assert_eq!(ipv4_of(s).options.as_slice(), &ip_opts);
        match s.link_exts.as_slice() {
            [LinkExtHeader::Vlan(v)] => assert_eq!(v.vlan_id.value(), 42),
            other => panic!("vlan tag lost: {other:?}"),
        }
    }
}

#[test]
fn tcp_v6_super_frame_becomes_mss_segments() {
    let data = payload(4 * 1428 + 7);
    let t = tcp(77, &TS_OPTS, |t| t.flags |= tcp::PSH);
    let f = frame(false, ipv6(), Some(t), &data);
    let hdr = vnet(GSO_TCPV6, 1428, 54);
    let segs = split(&f, &hdr, &[9; 16], 14 + 40 + 32, &data);
    assert_eq!(segs.len(), 5);
    for (i, s) in segs.iter().enumerate() {
        let t = tcp_of(s);
        assert_eq!(t.sequence_number, 77 + 1428 * i as u32);
        assert_eq!(t.psh, i == 4);
        assert_eq!(t.options.as_slice(), &TS_OPTS);
    }
}

#[test]
fn tcp_over_vlan_v6() {
    let data = payload(3000);
    let f = frame(true, ipv6(), Some(tcp(5, &[], |_| {})), &data);
    let segs = split(&f, &vnet(GSO_TCPV6, 1000, 18 + 40), &[1, 2, 3], 18 + 40 + 20, &data);
    assert_eq!(segs.len(), 3, "exact multiple: no short last segment");
    assert!(segs.iter().all(|s| s.payload.len() == 1000));
}

#[test]
fn udp_l4_over_v4_and_v6() {
    let data = payload(2 * 1472 + 3);
    let f4 = frame(false, ipv4(100, &[]), None, &data);
    let segs = split(&f4, &vnet(GSO_UDP_L4, 1472, 34), &[0xee; 8], 14 + 20 + 8, &data);
    assert_eq!(segs.len(), 3);
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(ipv4_of(s).identification, 100 + i as u16);
        assert!(matches!(s.l4, TransportHeader::Udp(UdpHeader { source_port: 4000, .. })));
    }
    let f6 = frame(false, ipv6(), None, &data);
    let segs = split(&f6, &vnet(GSO_UDP_L4, 1452, 54), &[], 14 + 40 + 8, &data);
    assert_eq!(segs.len(), 3);
}

#[test]
fn small_payload_is_one_segment_with_all_flags() {
    let data = payload(333);
    let t = tcp(9, &[], |t| t.flags |= tcp::PSH | tcp::FIN | tcp::CWR);
    let f = frame(false, ipv4(3, &[]), Some(t), &data);
    let segs = split(&f, &vnet(GSO_TCPV4, 1448, 34), &[7; 5], 14 + 20 + 20, &data);
    assert_eq!(segs.len(), 1);
    let t = tcp_of(&segs[0]);
    assert!(t.psh && t.fin && t.cwr, "the only segment is first and last");
}

#[test]
fn ignores_the_super_frame_length_fields() {
    // A 64 KB+ super-frame carries IP lengths of 0 (BIG TCP) or garbage.
    let data = payload(3000);
    let mut f = frame(false, ipv4(1, &[]), Some(tcp(1, &[], |_| {})), &data);
    f[14 + 2..14 + 4].fill(0);
    split(&f, &vnet(GSO_TCPV4, 1448, 34), &[], 54, &data);
    let mut f = frame(false, ipv6(), Some(tcp(1, &[], |_| {})), &data);
    f[14 + 4..14 + 6].copy_from_slice(&[0x12, 0x34]);
    split(&f, &vnet(GSO_TCPV6, 1448, 54), &[], 74, &data);
}

#[test]
fn rejects_what_it_cannot_segment() {
    let data = payload(3000);
    let f = frame(false, ipv4(1, &[]), Some(tcp(1, &[], |_| {})), &data);
    let f6 = frame(false, ipv6(), Some(tcp(1, &[], |_| {})), &data);
    let u4 = frame(false, ipv4(1, &[]), None, &data);
    let mut out = vec![0u8; 10_000];
    let mut seg = |f: &[u8], h: VnetHdr| segment(f, &h, &[], &mut out);
    assert_eq!(seg(&f, vnet(GSO_TCPV4, 1448, 34)).map(|s| s.count), Ok(3), "the baseline works");

    assert_eq!(seg(&f, vnet(GSO_TCPV4, 0, 34)), Err(Error::Malformed), "gso_size 0");
    assert_eq!(seg(&f, vnet(GSO_TCPV4, 1448, 35)), Err(Error::Malformed), "csum_start");
    let no_csum = VnetHdr { flags: 0, ..vnet(GSO_TCPV4, 1448, 99) };
    assert!(seg(&f, no_csum).is_ok(), "csum_start only matters with F_NEEDS_CSUM");
    assert_eq!(seg(&f[..34 + 19], vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "truncated tcp");
    assert_eq!(seg(&f[..54], vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "no payload");
    let mut opts_past_end = f[..60].to_vec();
    opts_past_end[34 + 12] = 0xf0; // 60-byte TCP header in a 26-byte remainder
    assert_eq!(seg(&opts_past_end, vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "data offset");
    let mut short_doff = f.clone();
    short_doff[34 + 12] = 0x40;
    assert_eq!(seg(&short_doff, vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "data offset < 5");
    let mut ihl = f.clone();
    ihl[14] = 0x44;
    assert_eq!(seg(&ihl, vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "ihl < 5");
    let mut frag = f.clone();
    frag[14 + 6] |= 0x20; // MF
    assert_eq!(seg(&frag, vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "fragment");
    assert_eq!(seg(&f[..30], vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "truncated ip");

    assert_eq!(seg(&f6, vnet(GSO_TCPV4, 1448, 54)), Err(Error::Malformed), "v4 type on v6");
    assert_eq!(seg(&f, vnet(GSO_TCPV6, 1448, 34)), Err(Error::Malformed), "v6 type on v4");
    assert_eq!(seg(&f, vnet(GSO_UDP_L4, 1448, 34)), Err(Error::Malformed), "udp type on tcp");
    assert_eq!(seg(&u4, vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "tcp type on udp");
    let u6 = frame(false, ipv6(), None, &data);
    assert_eq!(seg(&u6, vnet(GSO_TCPV6, 1448, 54)), Err(Error::Malformed), "tcp type on udp/v6");
    let mut v4_nibble = f6.clone();
    v4_nibble[14] = 0x40;
    assert_eq!(seg(&v4_nibble, vnet(GSO_TCPV6, 1448, 54)), Err(Error::Malformed), "version 4 in v6");
    let mut v6_nibble = f.clone();
    v6_nibble[14] = 0x65;
    assert_eq!(seg(&v6_nibble, vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "version 6 in v4");
    let mut arp = f.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(seg(&arp, vnet(GSO_TCPV4, 1448, 34)), Err(Error::Malformed), "not ip");

    assert_eq!(seg(&f, vnet(GSO_NONE, 1448, 34)), Err(Error::Unsupported), "GSO_NONE");
    assert_eq!(seg(&u4, vnet(GSO_UDP, 1448, 34)), Err(Error::Unsupported), "UFO");
    assert_eq!(seg(&f, vnet(0x7f, 1448, 34)), Err(Error::Unsupported), "unknown type");

    // IPv6 with an 8-byte hop-by-hop header (PadN) in front of TCP.
    let mut ext = f6[..54].to_vec();
    ext[14 + 6] = 0; // next header: hop-by-hop
    ext.extend_from_slice(&[protocol::TCP, 0, 1, 4, 0, 0, 0, 0]);
    ext.extend_from_slice(&f6[54..]);
    assert_eq!(seg(&ext, vnet(GSO_TCPV6, 1448, 62)), Err(Error::Unsupported), "v6 extension header");
}

#[test]
fn no_room_leaves_out_untouched() {
    let data = payload(3000);
    let f = frame(false, ipv4(1, &[]), Some(tcp(1, &[], |_| {})), &data);
    let hdr = vnet(GSO_TCPV4, 1448, 34);
    let need = 3 * (4 + 54) + 3000;
    let mut out = vec![0x5a; need - 1];
    assert_eq!(segment(&f, &hdr, &[1, 2, 3, 4], &mut out), Err(Error::NoRoom));
    assert!(out.iter().all(|&b| b == 0x5a), "nothing written");
    let mut out = vec![0x5a; need];
    assert_eq!(
        segment(&f, &hdr, &[1, 2, 3, 4], &mut out),
        Ok(Segments { stride: 4 + 54 + 1448, count: 3, len: need }),
        "an exact fit is enough"
    );
}

#[test]
fn complete_checksum_fills_a_partial_udp_checksum() {
    let data = payload(101);
    let mut f = frame(false, ipv4(1, &[]), None, &data);
    // What the kernel leaves for CHECKSUM_PARTIAL: the folded pseudo-header sum.
    let partial = pseudo_v4(&SRC4, &DST4, protocol::UDP, 8 + 101).fold();
    f[34 + 6..34 + 8].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..Default::default() };
    assert_eq!(complete_checksum(&mut f, &hdr), Ok(()));
    let s = verify(&f);
    assert!(matches!(&s.l4, TransportHeader::Udp(u) if u.checksum != 0));

    let untouched = f.clone();
    let plain = VnetHdr { flags: 0, ..hdr };
    assert_eq!(complete_checksum(&mut f, &plain), Ok(()));
    assert_eq!(f, untouched, "no F_NEEDS_CSUM, nothing to do");
    let past = VnetHdr { csum_offset: 101 + 7, ..hdr };
    assert_eq!(complete_checksum(&mut f, &past), Err(Error::Malformed));
    let start_past = VnetHdr { csum_start: f.len() as u16, csum_offset: 0, ..hdr };
    assert_eq!(complete_checksum(&mut f, &start_past), Err(Error::Malformed));
    assert_eq!(f, untouched);
}

#[test]
fn errors_display_short_text() {
    assert_eq!(Error::NoRoom.to_string(), "no room for the segments");
    let e: Box<dyn std::error::Error> = Box::new(Error::Malformed);
    assert_eq!(e.to_string(), "malformed super-frame");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn segments_reassemble_and_verify(
        len in 1usize..=65000,
        mss in 1u16..=9000,
        prefix_len in 0usize..=64,
        v6 in any::<bool>(),
        vlan in any::<bool>(),
    ) {
        let data = payload(len);
        let prefix = vec![0xc3; prefix_len];
        // Headers only, then the payload appended: IPv4 cannot describe 64 KB + headers,
        // and segmentation must not care what the super-frame's length fields say.
        let ip = if v6 { ipv6() } else { ipv4(0xfff0, &[]) };
        let mut f = frame(vlan, ip, Some(tcp(0xffff_0000, &TS_OPTS, |t| t.flags |= tcp::FIN)), &[]);
        let hdrs = f.len();
        f.extend_from_slice(&data);
        let l4 = hdrs - 32;
        let l3 = if vlan { 18 } else { 14 };
        let hdr = vnet(if v6 { GSO_TCPV6 } else { GSO_TCPV4 }, mss, l4);
        let mss = usize::from(mss);
        let mut out = vec![0u8; len.div_ceil(mss) * (prefix_len + hdrs) + len];
        let s = segment(&f, &hdr, &prefix, &mut out).unwrap();
        prop_assert_eq!(s.count, len.div_ceil(mss));
        prop_assert_eq!(s.len, out.len());
        let mut joined = Vec::with_capacity(len);
        for (i, seg) in out.chunks(s.stride).enumerate() {
            prop_assert_eq!(&seg[..prefix_len], &prefix[..]);
            let seg = &seg[prefix_len..];
            let body = &seg[hdrs..];
            let l4_len = (hdrs - l4 + body.len()) as u16;
            let pseudo = if v6 {
                prop_assert_eq!(&seg[l3..][ipv6::field::PAYLOAD_LEN], &l4_len.to_be_bytes());
                pseudo_v6(&SRC6, &DST6, protocol::TCP, u32::from(l4_len))
            } else {
                prop_assert!(Sum::ZERO.add_bytes(&seg[l3..l4]).verifies(), "ip checksum");
                prop_assert_eq!(&seg[l3..][ipv4::field::TOTAL_LEN], &(l4_len + 20).to_be_bytes());
                pseudo_v4(&SRC4, &DST4, protocol::TCP, l4_len)
            };
            prop_assert!(pseudo.add_bytes(&seg[l4..]).verifies(), "tcp checksum of segment {}", i);
            let seq = tcp::seq_number(&seg[l4..]);
            prop_assert_eq!(seq, 0xffff_0000_u32.wrapping_add((i * mss) as u32));
            prop_assert_eq!(seg[l4 + tcp::field::FLAGS] & tcp::FIN != 0, i + 1 == s.count);
            joined.extend_from_slice(body);
        }
        prop_assert_eq!(joined, data);
    }
}
