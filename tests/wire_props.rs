//! Property tests: emit-then-parse round trips, and no panic on arbitrary bytes.

use std::net::IpAddr;
use std::num::NonZeroU8;

use proptest::prelude::*;
use vxtap::wire::{self, geneve, vxlan, wg, EncapHeader, Proto, RxPolicy, MAX_VNI};

fn option_strategy() -> impl Strategy<Value = (u16, u8, Vec<u8>)> {
    (
        any::<u16>(),
        any::<u8>(),
        (0usize..=31).prop_flat_map(|w| proptest::collection::vec(any::<u8>(), w * 4)),
    )
}

proptest! {
    #[test]
    fn vxlan_round_trip(vni in 0..=MAX_VNI, frame in proptest::collection::vec(any::<u8>(), 14..200)) {
        let mut buf = vec![0u8; wire::MAX_HEADER_LEN + frame.len()];
        buf[wire::MAX_HEADER_LEN..].copy_from_slice(&frame);
        let start = EncapHeader::vxlan(vni).unwrap().prepend(&mut buf, wire::MAX_HEADER_LEN).unwrap();
        for strict in [false, true] {
            let policy = RxPolicy::Vxlan(vxlan::RxPolicy { strict_reserved: strict });
            let got = wire::decapsulate(&buf[start..], &policy).unwrap();
            prop_assert_eq!(got.vni, vni);
            prop_assert_eq!(got.frame, &frame[..]);
        }
    }

    #[test]
    fn geneve_round_trip(
        vni in 0..=MAX_VNI,
        oam in any::<bool>(),
        raw_opts in proptest::collection::vec(option_strategy(), 0..4),
        frame in proptest::collection::vec(any::<u8>(), 14..100),
    ) {
        let opts: Vec<_> = raw_opts.iter().map(|(c, k, d)| geneve::GeneveOption { class: *c, kind: *k, data: d }).collect();
        let repr = geneve::Repr { vni, oam, protocol: geneve::PROTO_ETHERNET, options: &opts };
        let total: usize = opts.iter().map(|o| o.wire_len()).sum();
        let header = match EncapHeader::geneve(&repr) {
            Ok(h) => h,
            Err(e) => {
                prop_assert!(total > geneve::MAX_OPTIONS_LEN, "emit refused an encodable list: {e}");
                return Ok(());
            }
        };
        prop_assert_eq!(header.len(), 8 + total);
        let mut buf = vec![0u8; wire::MAX_HEADER_LEN + frame.len()];
        buf[wire::MAX_HEADER_LEN..].copy_from_slice(&frame);
        let start = header.prepend(&mut buf, wire::MAX_HEADER_LEN).unwrap();
        let p = geneve::Packet::new_checked(&buf[start..]).unwrap();
        prop_assert_eq!((p.version(), p.vni(), p.oam(), p.protocol()), (0, vni, oam, geneve::PROTO_ETHERNET));
        prop_assert_eq!(p.critical(), opts.iter().any(|o| o.is_critical()));
        let parsed: Vec<_> = p.options().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(&parsed, &opts);
        prop_assert_eq!(p.payload(), &frame[..]);
        // Accept every option as known: delivery then depends only on the O bit.
        let mut policy = geneve::RxPolicy::default();
        for o in &opts { policy.known_options.insert(o.class, o.kind); }
        let got = wire::decapsulate(&buf[start..], &RxPolicy::Geneve(policy));
        if oam {
            prop_assert_eq!(got.err(), Some(wire::Error::GeneveOam));
        } else {
            prop_assert_eq!(got.unwrap().frame, &frame[..]);
        }
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for proto in [Proto::Vxlan, Proto::Geneve] {
            if let Ok(d) = wire::decapsulate(&bytes, &RxPolicy::for_proto(proto)) {
                prop_assert!(d.frame.len() >= wire::ETHERNET_HEADER_LEN);
                prop_assert!(d.vni <= MAX_VNI);
            }
        }
        if let Ok(p) = geneve::Packet::new_checked(&bytes[..]) {
            let n = p.options().take(100).count();
            prop_assert!(n <= 64, "at most 63 zero-length options plus one error");
        }
        let _ = vxtap::packet::flow::flow_hash(&bytes);
    }
}

/// Two distinct tunnel addresses of one family.
fn tunnel_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
        (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
    ]
    .prop_filter("distinct", |(a, b)| a != b)
}

/// The packet etherparse builds from the same fields: the oracle of `wg::Headers::prepend`.
fn etherparse_packet(
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    ttl: u8,
    d: &wg::PerDatagram,
    payload: &[u8],
) -> Vec<u8> {
    use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder};
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            let mut h = Ipv4Header::new(0, ttl, IpNumber::UDP, s.octets(), t.octets()).unwrap();
            h.dscp = etherparse::IpDscp::try_new(d.ds >> 2).unwrap();
            h.ecn = etherparse::IpEcn::try_new(d.ds & 3).unwrap();
            h.identification = d.ident;
            h.dont_fragment = d.df;
            IpHeaders::Ipv4(h, Default::default())
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => IpHeaders::Ipv6(
            Ipv6Header {
                traffic_class: d.ds,
                flow_label: Ipv6FlowLabel::try_new(d.flow_label & 0xfffff).unwrap(),
                payload_length: 0,
                next_header: IpNumber::UDP,
                hop_limit: ttl,
                source: s.octets(),
                destination: t.octets(),
            },
            Default::default(),
        ),
        _ => unreachable!("one family"),
    };
    let mut out = Vec::new();
    PacketBuilder::ip(ip).udp(d.src_port, port).write(&mut out, payload).unwrap();
    out
}

proptest! {
    #[test]
    fn wg_headers_round_trip(
        (src, dst) in tunnel_pair(),
        port in 1..=u16::MAX,
        ttl in 1..=u8::MAX,
        (src_port, ds, df, ident, flow_label) in (any::<u16>(), any::<u8>(), any::<bool>(), any::<u16>(), any::<u32>()),
        ipv4_csum in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        mtu in 0usize..400,
    ) {
        let d = wg::PerDatagram { src_port, ds, df, ident, flow_label };
        let mut h = wg::Headers::new(src, dst, port).unwrap().with_ttl(NonZeroU8::new(ttl).unwrap());
        if !ipv4_csum {
            h = h.without_ipv4_udp_checksum();
        }
        let at = wg::MAX_HEADER_LEN;
        let mut buf = vec![0u8; at + payload.len() + wg::PADDING_MULTIPLE];
        buf[at..at + payload.len()].copy_from_slice(&payload);
        let start = h.prepend(&mut buf, at..at + payload.len(), &d).unwrap();
        let packet = &buf[start..at + payload.len()];
        let mut want = etherparse_packet(src, dst, port, ttl, &d, &payload);
        if src.is_ipv4() && !ipv4_csum {
            want[26..28].copy_from_slice(&[0, 0]);
        }
        prop_assert_eq!(packet, &want[..]);
        // Received back, padded the way WireGuard pads it.
        let end = start + wg::padded_len(packet.len(), mtu);
        prop_assert!(end <= buf.len());
        let allowed = [src];
        let ports = [port];
        let policy = wg::RxPolicy { local: dst, allowed: &allowed, ports: &ports };
        let got = wg::check(&buf[start..end], &policy).unwrap();
        prop_assert_eq!(got, wg::Received { src, src_port, dst_port: port, ds, payload: &payload[..] });
        // The same packet from a peer that does not own the source, or to another address.
        let policy = wg::RxPolicy { local: dst, allowed: &[dst], ports: &ports };
        prop_assert_eq!(wg::check(&buf[start..end], &policy), Err(wg::Error::SourceNotAllowed(src)));
        let policy = wg::RxPolicy { local: src, allowed: &allowed, ports: &ports };
        prop_assert_eq!(wg::check(&buf[start..end], &policy), Err(wg::Error::WrongDestination(dst)));
    }

    #[test]
    fn wg_check_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
        (src, dst) in tunnel_pair(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let allowed = [src];
        let policy = wg::RxPolicy { local: dst, allowed: &allowed, ports: &[4789, 6081] };
        let accepted = |p: &[u8]| match wg::check(p, &policy) {
            Ok(r) => {
                assert_eq!(r.src, src);
                assert!(r.payload.len() + 28 <= p.len());
                true
            }
            Err(_) => false,
        };
        accepted(&bytes);
        // A valid packet with bytes changed: deeper paths than random bytes reach.
        let mut buf = vec![0u8; 48 + bytes.len()];
        buf[48..].copy_from_slice(&bytes);
        let h = wg::Headers::new(src, dst, 4789).unwrap();
        let end = buf.len();
        let start = h.prepend(&mut buf, 48..end, &wg::PerDatagram::default()).unwrap();
        let packet = &mut buf[start..];
        prop_assert!(accepted(packet));
        for (i, b) in &flips {
            let i = i.index(packet.len());
            packet[i] ^= b;
        }
        accepted(packet);
        for cut in [0, 1, 19, 20, 27, 28, 39, 40, 47, 48] {
            accepted(&packet[..cut.min(packet.len())]);
        }
    }
}
