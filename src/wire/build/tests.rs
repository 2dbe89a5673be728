use super::*;
use crate::wire::{ethernet, ipv4, ipv6, tcp, udp};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const SRC4: [u8; 4] = [198, 19, 0, 1];
const DST4: [u8; 4] = [198, 19, 0, 2];
const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// RFC 1071 by the book, apart from the builder's own sum: the words of `parts` in turn
/// (each of even length but the last) sum to all ones when the checksum in them is right.
fn verifies(parts: &[&[u8]]) -> bool {
    let bytes: Vec<u8> = parts.concat();
    let mut s: u64 =
        bytes.chunks(2).map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

fn pseudo4(proto: u8, len: usize) -> Vec<u8> {
    [&SRC4[..], &DST4, &[0, proto], &(len as u16).to_be_bytes()].concat()
}

fn pseudo6(proto: u8, len: usize) -> Vec<u8> {
    [&SRC6[..], &DST6, &(len as u32).to_be_bytes(), &[0, 0, 0, proto]].concat()
}

#[test]
fn tcp_over_ipv4_is_etherparses_byte_for_byte() {
    // What `vxtap bench` times: etherparse built it before, byte for byte.
    let f = Ethernet::new(B, A)
        .ipv4(Ipv4::new(SRC4, DST4))
        .tcp(Tcp::new(40000, 5201).seq(1))
        .payload(&[0xab; 10])
        .build();
    let mut want = Vec::new();
    PacketBuilder::ethernet2(A.0, B.0) // etherparse takes the source first
        .ipv4(SRC4, DST4, 64)
        .tcp(40000, 5201, 1, 65535)
        .write(&mut want, &[0xab; 10])
        .unwrap();
    assert_eq!(f, want);
    assert_eq!(f.len(), 14 + 20 + 20 + 10);
}

#[test]
fn udp_over_ipv4_and_ipv6_is_etherparses_byte_for_byte() {
    let f = Ethernet::new(B, A)
        .ipv4(Ipv4::new(SRC4, DST4))
        .udp(Udp::new(4000, 4789))
        .payload(b"datagram")
        .build();
    let mut want = Vec::new();
    PacketBuilder::ethernet2(A.0, B.0)
        .ipv4(SRC4, DST4, 64)
        .udp(4000, 4789)
        .write(&mut want, b"datagram")
        .unwrap();
    assert_eq!(f, want);
    let f = Ethernet::new(B, A).ipv6(Ipv6::new(SRC6, DST6)).udp(Udp::new(4000, 4789)).payload(b"odd").build();
    let mut want = Vec::new();
    PacketBuilder::ethernet2(A.0, B.0).ipv6(SRC6, DST6, 64).udp(4000, 4789).write(&mut want, b"odd").unwrap();
    assert_eq!(f, want);
}

#[test]
fn ipv4_fields_lengths_and_header_checksum() {
    let ip = Ipv4::new(SRC4, DST4)
        .tos(46 << 2 | 0b10)
        .ident(0x1c46)
        .flags_frag(ipv4::FLAG_MF | 185)
        .ttl(7)
        .protocol(protocol::UDP)
        .options(&[0x94, 4, 0, 0, 1]);
    let f = Ethernet::new(B, A).ipv4(ip).payload(&[9; 11]).build();
    let h = &f[14..];
    assert_eq!((ipv4::version(h), ipv4::header_len(h)), (4, 28), "options padded to 8 bytes");
    assert_eq!(h[ipv4::field::DSCP_ECN], 0xba);
    assert_eq!((ipv4::total_len(h), ipv4::ident(h)), (28 + 11, 0x1c46));
    assert_eq!(ipv4::flags_frag(h), ipv4::FLAG_MF | 185);
    assert!(ipv4::is_fragment(h));
    assert_eq!((h[ipv4::field::TTL], h[ipv4::field::PROTOCOL]), (7, protocol::UDP));
    assert_eq!((&h[ipv4::field::SRC], &h[ipv4::field::DST]), (&SRC4[..], &DST4[..]));
    assert_eq!(&h[20..28], &[0x94, 4, 0, 0, 1, 0, 0, 0]);
    assert!(verifies(&[&h[..28]]), "header checksum");
    assert_eq!(&h[28..], &[9; 11], "the payload as it is: no transport header");

    // The defaults: DF, TTL 64, ID 0, TOS 0; the protocol of a bare payload is 253.
    let f = Ethernet::new(B, A).ipv4(Ipv4::new(SRC4, DST4)).build();
    let h = &f[14..];
    assert_eq!((ipv4::flags_frag(h), h[ipv4::field::TTL], ipv4::ident(h)), (ipv4::FLAG_DF, 64, 0));
    assert_eq!((h[ipv4::field::DSCP_ECN], h[ipv4::field::PROTOCOL]), (0, PROTOCOL_EXPERIMENTAL));
    let f = Ethernet::new(B, A).ipv4(Ipv4::new(SRC4, DST4).may_fragment()).build();
    assert_eq!(ipv4::flags_frag(&f[14..]), 0);
}

#[test]
fn tcp_fields_options_and_checksum_over_both_versions() {
    let t = Tcp::new(40000, 5201)
        .seq(0xffff_f000)
        .ack(0x0102_0304)
        .window(512)
        .mss(1460)
        .timestamps(5, 99)
        .options(&[3, 3, 7]);
    assert_eq!(t.flags, tcp::ACK, "ack() sets the flag");
    let t = Tcp { flags: t.flags | tcp::PSH | tcp::ECE, ns: true, ..t };
    for v6 in [false, true] {
        let frame = Ethernet::new(B, A).tcp(t.clone()).payload(b"data!");
        let (f, l4) = if v6 {
            (frame.ipv6(Ipv6::new(SRC6, DST6)).build(), 54)
        } else {
            (frame.ipv4(Ipv4::new(SRC4, DST4)).build(), 34)
        };
        let s = &f[l4..];
        assert_eq!(tcp::ports(s), (40000, 5201));
        assert_eq!((tcp::seq_number(s), tcp::ack_number(s)), (0xffff_f000, 0x0102_0304));
        assert_eq!(tcp::header_len(s), 20 + 20, "4 + 12 + 3 option bytes padded to 20");
        assert_eq!(tcp::flags(s), tcp::ACK | tcp::PSH | tcp::ECE);
        assert_eq!(s[tcp::field::DATA_OFF] & 1, 1, "NS");
        assert_eq!(tcp::window(s), 512);
        assert_eq!(&s[20..40], &[2, 4, 5, 0xb4, 1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 99, 3, 3, 7, 0]);
        assert_eq!(&s[40..], b"data!");
        let pseudo = if v6 { pseudo6(protocol::TCP, s.len()) } else { pseudo4(protocol::TCP, s.len()) };
        assert!(verifies(&[&pseudo, s]), "TCP checksum (v6: {v6})");
        // And by etherparse's reckoning.
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else { panic!("no TCP") };
        let want = match p.net.as_ref().unwrap() {
            NetSlice::Ipv4(ip) => tcp.calc_checksum_ipv4(ip.header().source(), ip.header().destination()),
            NetSlice::Ipv6(ip) => tcp.calc_checksum_ipv6(ip.header().source(), ip.header().destination()),
            NetSlice::Arp(_) => unreachable!(),
        };
        assert_eq!(tcp.checksum(), want.unwrap());
    }
}

#[test]
fn ipv6_fields_and_extension_headers() {
    let ip = Ipv6::new(SRC6, DST6)
        .traffic_class(0x2e)
        .flow_label(0x5_4321)
        .hop_limit(61)
        .extension(protocol::IPV6_HOP_BY_HOP, &[1, 4, 0, 0, 0, 0])
        .extension(protocol::IPV6_DEST_OPTS, &[1, 8]);
    let f = Ethernet::new(B, A).ipv6(ip).udp(Udp::new(1, 2)).payload(b"x").build();
    let h = &f[14..];
    assert_eq!(ipv6::version(h), 6);
    assert_eq!((ipv6::traffic_class(h), ipv6::flow_label(h)), (0x2e, 0x5_4321));
    assert_eq!(h[ipv6::field::HOP_LIMIT], 61);
    assert_eq!(ipv6::payload_len(h), 8 + 8 + 8 + 1);
    assert_eq!(h[ipv6::field::NEXT_HEADER], protocol::IPV6_HOP_BY_HOP);
    assert_eq!(&h[40..48], &[protocol::IPV6_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
    assert_eq!(&h[48..56], &[protocol::UDP, 0, 1, 8, 0, 0, 0, 0], "padded to 8 bytes");
    let u = &h[56..];
    assert_eq!((udp::ports(u), udp::length(u)), ((1, 2), 9));
    assert!(verifies(&[&pseudo6(protocol::UDP, 9), u]), "the pseudo-header has the upper-layer length");
    let p = SlicedPacket::from_ethernet(&f).unwrap();
    assert!(matches!(p.transport, Some(TransportSlice::Udp(_))), "etherparse walks the chain");
    // A bare payload: No Next Header, or the protocol set.
    let f = Ethernet::new(B, A).ipv6(Ipv6::new(SRC6, DST6)).payload(&[1, 2, 3]).build();
    assert_eq!((f[14 + 6], ipv6::payload_len(&f[14..]), &f[54..]), (59, 3, &[1, 2, 3][..]));
    let f = Ethernet::new(B, A).ipv6(Ipv6::new(SRC6, DST6).protocol(protocol::IPV6_FRAG)).build();
    assert_eq!(f[14 + 6], protocol::IPV6_FRAG);
}

#[test]
fn vlan_tags_sit_between_the_addresses_and_the_ethertype() {
    let inner = || Ethernet::new(B, A).ipv4(Ipv4::new(SRC4, DST4)).udp(Udp::new(1, 2));
    let untagged = inner().build();
    let tagged = inner().vlan(42).build();
    assert_eq!(&tagged[..12], &untagged[..12]);
    assert_eq!(&tagged[12..18], &[0x81, 0x00, 0x00, 42, 0x08, 0x00]);
    assert_eq!(&tagged[18..], &untagged[14..]);
    assert_eq!(ethernet::vlan_id(&tagged), Some(42));
    let p = SlicedPacket::from_ethernet(&tagged).unwrap();
    assert_eq!(p.link_exts.len(), 1, "etherparse sees the tag");
    assert!(matches!(p.transport, Some(TransportSlice::Udp(_))));
    let qinq = inner().qinq(100, 42).build();
    assert_eq!(&qinq[12..22], &[0x88, 0xa8, 0x00, 100, 0x81, 0x00, 0x00, 42, 0x08, 0x00]);
    assert_eq!(&qinq[22..], &untagged[14..]);
    let p = SlicedPacket::from_ethernet(&qinq).unwrap();
    assert_eq!(p.link_exts.len(), 2, "etherparse sees both tags");
    assert!(matches!(p.transport, Some(TransportSlice::Udp(_))));
    let prio = inner().tag(ethernet::ETHERTYPE_VLAN, 5 << 13 | 7).build();
    assert_eq!(&prio[12..16], &[0x81, 0x00, 0xa0, 7]);
}

#[test]
fn raw_frames_and_padding() {
    let f = Ethernet::new(MacAddr::BROADCAST, A).pad_to(MIN_FRAME_LEN).build();
    assert_eq!(f.len(), 60);
    assert_eq!(&f[..14], &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
    assert!(f[14..].iter().all(|&b| b == 0));
    let f = Ethernet::new(B, A).ethertype(0x0806).payload(&[1; 50]).pad_to(60).build();
    assert_eq!((f.len(), &f[12..14]), (64, &[0x08, 0x06][..]), "longer than the minimum: not padded");
    // Padding is not part of the IP packet.
    let f =
        Ethernet::new(B, A).ipv4(Ipv4::new(SRC4, DST4)).udp(Udp::new(1, 2)).payload(b"ab").pad_to(60).build();
    assert_eq!((f.len(), ipv4::total_len(&f[14..]), udp::length(&f[34..])), (60, 30, 10));
}

#[test]
fn arp_request_is_the_kernels() {
    let f = Ethernet::new(MacAddr::BROADCAST, A).arp(Arp::request(A, SRC4, DST4)).build();
    #[rustfmt::skip]
    let want: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet, IPv4, 6, 4, request
        2, 0, 0, 0, 0, 1, 198, 19, 0, 1, // sender
        0, 0, 0, 0, 0, 0, 198, 19, 0, 2, // target
    ];
    assert_eq!(f, want);
}

#[test]
fn icmp_checksums() {
    let echo = Icmp::new(8, 0).body(&[0x12, 0x34, 0, 1]);
    let f = Ethernet::new(B, A).ipv4(Ipv4::new(SRC4, DST4)).icmp(echo.clone()).payload(b"ping").build();
    assert_eq!(f[14 + 9], protocol::ICMP);
    assert_eq!(&f[34..], &[8, 0, f[36], f[37], 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g']);
    assert!(verifies(&[&f[34..]]), "ICMP has no pseudo-header");
    let f = Ethernet::new(B, A).ipv6(Ipv6::new(SRC6, DST6)).icmp(echo).build();
    assert_eq!(f[14 + 6], protocol::ICMPV6);
    assert!(verifies(&[&pseudo6(protocol::ICMPV6, 8), &f[54..]]), "ICMPv6 checksum");
}

#[test]
fn neighbour_solicitation_to_the_solicited_node_group() {
    let target: Ipv6Addr = "2001:db8:1::2:abcd".parse().unwrap();
    let (group, mac) = solicited_node(target);
    assert_eq!(group, "ff02::1:ff02:abcd".parse::<Ipv6Addr>().unwrap());
    assert_eq!(mac, MacAddr([0x33, 0x33, 0xff, 0x02, 0xab, 0xcd]));
    let ns = Icmp::neighbour_solicitation(target, Some(A));
    let f = Ethernet::new(mac, A).ipv6(Ipv6::new(SRC6, group).hop_limit(255)).icmp(ns).build();
    assert_eq!(f.len(), 14 + 40 + 32);
    let m = &f[54..];
    assert_eq!((m[0], m[1], &m[4..8]), (135, 0, &[0, 0, 0, 0][..]));
    assert_eq!(&m[8..24], &target.octets());
    assert_eq!(&m[24..], &[1, 1, 2, 0, 0, 0, 0, 1], "source link-layer address option");
    let pseudo = [&SRC6[..], &group.octets(), &32u32.to_be_bytes(), &[0, 0, 0, 58]].concat();
    assert!(verifies(&[&pseudo, m]));
    let bare = Icmp::neighbour_solicitation(target, None);
    assert_eq!(bare.body.len(), 20);
}

#[test]
fn a_udp_checksum_of_zero_is_sent_as_all_ones() {
    let build =
        |p: &[u8]| Ethernet::new(B, A).ipv4(Ipv4::new(SRC4, DST4)).udp(Udp::new(1, 2)).payload(p).build();
    let first = build(&[0, 0]);
    // A payload word equal to the checksum makes the data sum to all ones: the checksum is 0.
    let f = build(&first[40..42]);
    assert_eq!(&f[40..42], &[0xff, 0xff]);
    assert!(verifies(&[&pseudo4(protocol::UDP, 10), &f[34..]]));
}

#[test]
fn lengths_that_do_not_fit_are_zero() {
    let big = vec![0u8; 65536];
    let f = Ethernet::new(B, A).ipv4(Ipv4::new(SRC4, DST4)).tcp(Tcp::new(1, 2)).payload(&big).build();
    assert_eq!((f.len(), ipv4::total_len(&f[14..])), (54 + 65536, 0));
    let f = Ethernet::new(B, A).ipv6(Ipv6::new(SRC6, DST6)).udp(Udp::new(1, 2)).payload(&big).build();
    assert_eq!((ipv6::payload_len(&f[14..]), udp::length(&f[54..])), (0, 0));
}

#[test]
#[should_panic(expected = "needs an IP header")]
fn a_transport_without_ip_is_refused() {
    Ethernet::new(B, A).udp(Udp::new(1, 2)).build();
}
