//! Geneve option TLV parsing (`Options`), the checked packet view, `Repr::check`, and the
//! parse -> `emit_options` round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxtap::wire::geneve::{emit_options, GeneveOption, Options, Packet, Repr, RxPolicy};

fn inside(inner: &[u8], outer: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

/// Iterates an option area to the end, checking the iterator's bounds; returns the options if
/// they all parsed.
fn walk<'a>(area: &'a [u8]) -> Option<Vec<GeneveOption<'a>>> {
    let mut opts = Vec::new();
    let mut ok = true;
    let mut items = 0usize;
    let mut consumed = 0usize;
    for item in Options::new(area) {
        items += 1;
        assert!(items <= area.len() / 4 + 1, "iterator yielded {items} items for {} bytes", area.len());
        match item {
            Ok(o) => {
                assert!(ok, "Ok option after an Err");
                assert!(inside(o.data, area), "option data outside the area");
                assert_eq!(o.data.len() % 4, 0);
                assert!(o.data.len() <= 124);
                consumed += o.wire_len();
                assert!(consumed <= area.len());
                opts.push(o);
            }
            Err(_) => ok = false,
        }
    }
    if ok {
        assert_eq!(consumed, area.len(), "all options Ok but the area was not consumed");
    }
    ok.then_some(opts)
}

fn round_trip(area: &[u8], opts: &[GeneveOption<'_>]) {
    let mut buf = vec![0u8; area.len() + 8];
    match emit_options(opts, &mut buf) {
        Ok(n) => {
            assert_eq!(n, area.len(), "emit wrote a different length");
            let mut at = 0;
            for o in opts {
                let w = o.wire_len();
                let (got, want) = (&buf[at..at + w], &area[at..at + w]);
                assert_eq!(got[..3], want[..3], "class/type differ");
                assert_eq!(got[3], want[3] & 0x1f, "length octet differs beyond the reserved bits");
                assert_eq!(got[4..], want[4..], "option data differs");
                at += w;
            }
        }
        // Parsed options are always encodable individually; the only refusal is a total over
        // the 252-byte Opt Len limit, which a raw area longer than 252 bytes can produce.
        Err(e) => {
            assert!(area.len() > 252, "emit refused parsed options ({e:?}) of a {}-byte area", area.len())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The raw bytes as an option area.
    if let Some(opts) = walk(data) {
        round_trip(data, &opts);
    }

    // The raw bytes as a Geneve header + payload.
    if let Ok(packet) = Packet::new_checked(data) {
        let hl = packet.header_len();
        assert!(hl <= data.len());
        assert_eq!(packet.payload().len(), data.len() - hl);
        let area = &data[8..hl];
        let all_ok = packet.options().all(|o| o.is_ok());
        assert_eq!(all_ok, walk(area).is_some());
        let checked = Repr::check(&packet, &RxPolicy::default());
        if let Ok(vni) = checked {
            assert!(vni <= vxtap::wire::MAX_VNI);
            assert!(all_ok, "check accepted a packet with a bad option");
            assert!(!packet.oam());
        }
        if let Some(opts) = walk(area) {
            round_trip(area, &opts);
        }
    }
});
