//! The whole receive path: `Demux::decapsulate` (wire parsing, VNI lookup, FDB learning) and
//! `flow::flow_hash`.
//!
//! Input layout: byte 0 = selector, byte 1 = source address octet, rest = UDP payload.
//!   selector bit 0     : 0 = VXLAN demux (VNI 42), 1 = Geneve demux (VNI 0x123456)
//!   selector bits 1..2 : source address form: 0 = 198.18.0.X, 1 = ::ffff:198.18.0.X (mapped),
//!                        2 = 2001:db8::X, 3 = 198.18.X.1
//!   selector bit 3     : advance the FDB clock by 301 s first and expire (ageing path)
//! The demuxes are built once and keep their FDB state across inputs, so learning, moves and the
//! learned-entry cap (64) are exercised by sequences of inputs.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vxtap::state::fdb::{Fdb, FdbConfig, ManualClock};
use vxtap::wire::mac::MacAddr;
use vxtap::packet::pipeline::{Demux, Network};
use vxtap::wire::{EncapHeader, Proto, RxPolicy};

const MAX_LEARNED: usize = 64;
const LOCAL_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
/// A static entry, so learning from another VTEP hits the StaticKept / mismatch path.
const STATIC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

struct Side {
    demux: Demux,
    clock: Arc<ManualClock>,
}

fn build(proto: Proto, vni: u32) -> Side {
    let clock = Arc::new(ManualClock::new(0));
    let config = FdbConfig { learning: true, ageing: Duration::from_secs(300), max_learned: MAX_LEARNED };
    let fdb = Fdb::new(vni, Some(LOCAL_MAC), config, clock.clone());
    let port = proto.default_port();
    fdb.add_static(STATIC_MAC, SocketAddr::from(([198, 18, 0, 2], port))).unwrap();
    let header = EncapHeader::for_proto(proto, vni).unwrap();
    let network = Arc::new(Network::new(vni, port, header, fdb));
    Side { demux: Demux::new(RxPolicy::for_proto(proto), vec![network]), clock }
}

static SIDES: OnceLock<[Side; 2]> = OnceLock::new();

fn source(selector: u8, x: u8) -> IpAddr {
    match (selector >> 1) & 3 {
        0 => IpAddr::V4(Ipv4Addr::new(198, 18, 0, x)),
        1 => IpAddr::V6(Ipv4Addr::new(198, 18, 0, x).to_ipv6_mapped()),
        2 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(x))),
        _ => IpAddr::V4(Ipv4Addr::new(198, 18, x, 1)),
    }
}

fn is_subslice(inner: &[u8], outer: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

fuzz_target!(|input: &[u8]| {
    let [selector, x, data @ ..] = input else {
        return;
    };
    let sides = SIDES.get_or_init(|| [build(Proto::Vxlan, 42), build(Proto::Geneve, 0x123456)]);
    let side = &sides[usize::from(selector & 1)];
    let network = &side.demux.networks()[0];
    if selector & 8 != 0 {
        side.clock.advance(301_000);
        network.fdb.expire();
    }

    let _ = vxtap::packet::flow::flow_hash(data);
    let out = side.demux.decapsulate(data, source(*selector, *x));
    if let Some((index, frame)) = out {
        assert_eq!(index, 0, "only one network per demux");
        assert!(frame.len() >= 14, "delivered frame shorter than an Ethernet header: {}", frame.len());
        assert!(is_subslice(frame, data), "frame is not a sub-slice of the datagram");
        assert_eq!(
            frame.as_ptr() as usize + frame.len(),
            data.as_ptr() as usize + data.len(),
            "frame does not run to the end of the datagram"
        );
        let _ = vxtap::packet::flow::flow_hash(frame);
    }
    for side in sides {
        let fdb = &side.demux.networks()[0].fdb;
        assert!(fdb.learned_len() <= MAX_LEARNED, "learned_len {} over cap {MAX_LEARNED}", fdb.learned_len());
        // Learned entries plus the one static entry.
        assert!(fdb.len() <= MAX_LEARNED + 1, "fdb len {} over cap + statics", fdb.len());
        assert_eq!(fdb.lookup(&LOCAL_MAC), None, "local MAC was learned");
    }
});
