//! Byte-exact vectors from an independent implementation.
//!
//! Origin: built with scapy 2.8.0 (Python 3.11), `bytes(pkt[UDP].payload)` of
//! - VXLAN: `Ether()/IP(src="198.18.0.1",dst="198.18.0.2")/UDP(sport=49999,dport=4789)/VXLAN(vni=42, flags=0x08)/
//!   Ether(src="02:00:00:00:00:0a",dst="02:00:00:00:00:0b")/IP(src="198.19.0.1",dst="198.19.0.2")/
//!   ICMP(type=8,id=0x1234,seq=1)/Raw(b"vxtap-vector")`
//! - Geneve: `.../UDP(sport=50000,dport=6081)/GENEVE(vni=0x123456, proto=0x6558, critical=1, options=[
//!   GeneveOptions(classid=0x0102,type=0x80,data=deadbeef), GeneveOptions(classid=0xffff,type=0x01,
//!   data=0011223344556677)])/Ether(src="02:00:00:00:00:0a",dst="ff:ff:ff:ff:ff:ff")/ARP(psrc="198.19.0.1",pdst="198.19.0.2")`
//!   (scapy does not set C by itself; `critical=1` was given, as RFC 8926 requires when an option is critical)
//! - Geneve OAM: `GENEVE(vni=7, oam=1)/Ether()/IPv6(src="2001:db8::1",dst="2001:db8::2")/UDP(sport=1000,dport=2000)/Raw(b"x")`

use vxtap::wire::{self, geneve, vxlan, Decapsulated, EncapHeader, Error, Proto, RxPolicy};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const VXLAN_VECTOR: &str = "0800000000002a0002000000000b02000000000a080045000028000100004001
    eeaac6130001c6130002080041771234000176787461702d766563746f72";

const GENEVE_VECTOR: &str = "054065581234560001028001deadbeefffff01020011223344556677ffffffff
    ffff02000000000a0806000108000604000102000000000ac613000100000000
    0000c6130002";

const GENEVE_OAM_VECTOR: &str = "008065580000070002000000000b02000000000a86dd60000000000911402001
    0db800000000000000000000000120010db800000000000000000000000203e8
    07d0000920af78";

#[test]
fn vxlan_vector_parses() {
    let d = hex(VXLAN_VECTOR);
    let p = vxlan::Packet::new_checked(&d[..]).unwrap();
    assert_eq!(p.flags(), 0x08);
    assert_eq!(p.vni(), 42);
    assert!(!p.reserved_bits_set());
    let Decapsulated { vni, frame } = wire::decapsulate(&d, &RxPolicy::for_proto(Proto::Vxlan)).unwrap();
    assert_eq!(vni, 42);
    assert_eq!(&frame[..12], &hex("02000000000b02000000000a")[..], "inner dst then src MAC");
    assert_eq!(frame.len(), d.len() - 8);
}

#[test]
fn vxlan_vector_is_what_we_emit() {
    let d = hex(VXLAN_VECTOR);
    let mut buf = vec![0u8; wire::MAX_HEADER_LEN + d.len() - 8];
    buf[wire::MAX_HEADER_LEN..].copy_from_slice(&d[8..]);
    let start = EncapHeader::vxlan(42).unwrap().prepend(&mut buf, wire::MAX_HEADER_LEN).unwrap();
    assert_eq!(&buf[start..], &d[..]);
}

#[test]
fn geneve_vector_parses_with_options() {
    let d = hex(GENEVE_VECTOR);
    let p = geneve::Packet::new_checked(&d[..]).unwrap();
    assert_eq!((p.version(), p.options_len(), p.oam(), p.critical()), (0, 20, false, true));
    assert_eq!((p.protocol(), p.vni()), (0x6558, 0x123456));
    let opts: Vec<_> = p.options().map(Result::unwrap).collect();
    assert_eq!(opts.len(), 2);
    assert_eq!((opts[0].class, opts[0].kind, opts[0].is_critical()), (0x0102, 0x80, true));
    assert_eq!(opts[0].data, &hex("deadbeef")[..]);
    assert_eq!((opts[1].class, opts[1].kind, opts[1].is_critical()), (0xffff, 0x01, false));
    assert_eq!(opts[1].data, &hex("0011223344556677")[..]);
    assert_eq!(&p.payload()[..6], &[0xff; 6], "broadcast ARP inside");

    // The critical option is unknown to a default endpoint: dropped. Known: delivered.
    let mut policy = geneve::RxPolicy::default();
    assert_eq!(
        wire::decapsulate(&d, &RxPolicy::Geneve(policy.clone())).err(),
        Some(Error::GeneveCriticalOption { class: 0x0102, kind: 0x80 })
    );
    policy.known_options.insert(0x0102, 0x80);
    let got = wire::decapsulate(&d, &RxPolicy::Geneve(policy)).unwrap();
    assert_eq!((got.vni, got.frame.len()), (0x123456, d.len() - 28));
}

#[test]
fn geneve_vector_is_what_we_emit() {
    let d = hex(GENEVE_VECTOR);
    let (a, b) = (hex("deadbeef"), hex("0011223344556677"));
    let opts = [
        geneve::GeneveOption { class: 0x0102, kind: 0x80, data: &a },
        geneve::GeneveOption { class: 0xffff, kind: 0x01, data: &b },
    ];
    let header = EncapHeader::geneve(&geneve::Repr::ethernet(0x123456, &opts)).unwrap();
    assert_eq!(header.as_bytes(), &d[..28]);
}

#[test]
fn geneve_oam_vector_is_not_delivered() {
    let d = hex(GENEVE_OAM_VECTOR);
    let p = geneve::Packet::new_checked(&d[..]).unwrap();
    assert_eq!((p.oam(), p.critical(), p.vni(), p.options_len()), (true, false, 7, 0));
    assert_eq!(wire::decapsulate(&d, &RxPolicy::for_proto(Proto::Geneve)).err(), Some(Error::GeneveOam));
}
