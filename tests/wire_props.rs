//! Property tests: emit-then-parse round trips, and no panic on arbitrary bytes.

use proptest::prelude::*;
use vxtap::wire::{self, geneve, vxlan, EncapHeader, Proto, RxPolicy, MAX_VNI};

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
