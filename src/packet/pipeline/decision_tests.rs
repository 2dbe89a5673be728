//! One frame, one parse, one decision: a Q-in-Q (802.1ad + 802.1Q) IPv4 frame gets the treatment
//! an untagged one does — hashed on its inner flow, its DF bit inherited, its ECN carried to the
//! outer header (RFC 6040), its SYN's MSS clamped — where the rules used to disagree (the hash
//! looked past both tags, DF, DS and the clamp past one 802.1Q tag only).

use super::*;
use crate::packet::dsfield::Tos;
use crate::packet::offload::checksum::{pseudo_v4, Sum};
use crate::packet::pmtu::Df;
use crate::state::fdb::{FdbConfig, ManualClock};
use crate::wire::ethernet::{ETHERTYPE_ARP, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
use crate::wire::Proto;

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const VTEP: ([u8; 4], u16) = ([198, 18, 0, 2], 4789);
/// The two tags of Q-in-Q: service VLAN 7, customer VLAN 42.
const QINQ: [(u16, u16); 2] = [(ETHERTYPE_QINQ, 7), (ETHERTYPE_VLAN, 42)];
/// AF41 with ECT(0).
const AF41_ECT0: u8 = 34 << 2 | 0b10;
const DF: u16 = 0x4000;
/// TCP flags of a SYN, and its options: MSS 1460, then NOPs.
const SYN: u8 = 0x02;
const MSS_1460: [u8; 8] = [2, 4, 0x05, 0xb4, 1, 1, 1, 1];

/// B -> A over `tags`: an IPv4 TCP segment 198.19.0.1:`sport` -> 198.19.0.2:5201 with DS byte
/// `ds`, flags word `flags`, TCP flags `tcp_flags` and options `opts`, checksums right.
fn tcp_frame(tags: &[(u16, u16)], ds: u8, flags: u16, sport: u16, tcp_flags: u8, opts: &[u8]) -> Vec<u8> {
    let mut f = [A, B].concat();
    for (tpid, vid) in tags {
        f.extend(tpid.to_be_bytes());
        f.extend(vid.to_be_bytes());
    }
    f.extend([0x08, 0x00]);
    let tcp_len = 20 + opts.len();
    let mut ip = vec![0x45, ds];
    ip.extend(((20 + tcp_len) as u16).to_be_bytes());
    ip.extend([0, 1]);
    ip.extend(flags.to_be_bytes());
    ip.extend([64, 6, 0, 0, 198, 19, 0, 1, 198, 19, 0, 2]);
    let ck = Sum::ZERO.add_bytes(&ip).finish();
    ip[10..12].copy_from_slice(&ck);
    let mut t = sport.to_be_bytes().to_vec();
    t.extend([0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0]);
    t.extend([((tcp_len / 4) as u8) << 4, tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(opts);
    let ck = pseudo_v4(&ip[12..16], &ip[16..20], 6, tcp_len as u16).combine(Sum::ZERO.add_bytes(&t)).finish();
    t[16..18].copy_from_slice(&ck);
    f.extend(ip);
    f.extend(t);
    f
}

fn network(p: Policies) -> Network {
    let fdb = Fdb::new(42, None, FdbConfig::default(), Arc::new(ManualClock::new(0)));
    fdb.add_static(MacAddr(A), SocketAddr::from(VTEP)).unwrap();
    Network::new(42, 4789, EncapHeader::for_proto(Proto::Vxlan, 42).unwrap(), fdb).with_policies(p)
}

#[test]
fn qinq_and_plain_frames_are_decided_alike() {
    let n = network(Policies { df: Df::Inherit, mss_clamp: None, tos: Tos::Inherit });
    for tags in [&[][..], &QINQ[..1], &QINQ] {
        let frame = |ds, flags, sport| tcp_frame(tags, ds, flags, sport, 0x10, &[]);
        let d = n.decide(&frame(AF41_ECT0, DF, 40000)).unwrap();
        assert_eq!(d.to.as_slice(), &[SocketAddr::from(VTEP)]);
        assert_eq!(d.view.l2_len(), 14 + 4 * tags.len());
        assert!(!d.fragment, "{tags:x?}: DF inside, so not on the underlay either");
        assert_eq!(d.tos, AF41_ECT0, "{tags:x?}: DSCP inherited, ECT(0) copied out (RFC 6040)");
        assert!(n.decide(&frame(AF41_ECT0, 0, 40000)).unwrap().fragment, "{tags:x?}: DF clear");
        assert_eq!(n.decide(&frame(0b01, DF, 40000)).unwrap().tos, 0b01, "{tags:x?}: ECT(1)");
        assert_eq!(n.decide(&frame(0xb8, DF, 40000)).unwrap().tos, 0xb8, "{tags:x?}: Not-ECT stays so");
        // Hashed on the inner flow: the source port moves it, the DS byte does not.
        let h = d.flow_hash;
        assert_ne!(h, n.decide(&frame(AF41_ECT0, DF, 40001)).unwrap().flow_hash, "{tags:x?}: port");
        assert_eq!(h, n.decide(&frame(0, 0, 40000)).unwrap().flow_hash, "{tags:x?}: same flow");
        // Not on the Ethernet header alone: an ARP payload behind the same header hashes apart.
        let mut arp = frame(AF41_ECT0, DF, 40000);
        let at = 12 + 4 * tags.len();
        arp[at..at + 2].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        let not_ip = n.decide(&arp).unwrap();
        assert_ne!(h, not_ip.flow_hash, "{tags:x?}");
        assert_eq!((not_ip.fragment, not_ip.tos), (true, 0), "{tags:x?}: non-IP, Not-ECT");
    }
    // Q-in-Q frames of one flow in other VLANs (same MACs) keep to one port.
    let mut other_vlans = tcp_frame(&QINQ, 0, DF, 40000, 0x10, &[]);
    other_vlans[15] = 8;
    other_vlans[19] = 43;
    let same = tcp_frame(&QINQ, 0, DF, 40000, 0x10, &[]);
    assert_eq!(n.decide(&other_vlans).unwrap().flow_hash, n.decide(&same).unwrap().flow_hash);
}

#[test]
fn a_double_tagged_syn_has_its_mss_clamped() {
    let n =
        network(Policies { df: Df::Inherit, mss_clamp: Some(MssClamp::PathMtu(1300)), tos: Tos::default() });
    // 1300 - 36 of outer IPv4, UDP and VXLAN - the Ethernet header - 40 of IPv4 and TCP.
    for (tags, mss) in [(&[][..], 1210u16), (&QINQ[..1], 1206), (&QINQ, 1202)] {
        let f = tcp_frame(tags, 0, DF, 40000, SYN, &MSS_1460);
        let mut buf = vec![0u8; HEADROOM];
        buf.extend(&f);
        let e = n.encapsulate(&mut buf, f.len()).unwrap();
        assert_eq!(e.datagram, HEADROOM - 8..HEADROOM + f.len());
        let l4 = HEADROOM + 14 + 4 * tags.len() + 20;
        let tcp = &buf[l4..];
        assert_eq!(u16::from_be_bytes([tcp[22], tcp[23]]), mss, "{tags:x?}");
        let ip = &buf[l4 - 20..l4];
        let ok = pseudo_v4(&ip[12..16], &ip[16..20], 6, tcp.len() as u16).combine(Sum::ZERO.add_bytes(tcp));
        assert!(ok.verifies(), "{tags:x?}: checksum fixed");
        // Not a SYN: left alone, and the clamp's limit not even worked out.
        let ack = tcp_frame(tags, 0, DF, 40000, 0x10, &MSS_1460);
        assert_eq!(n.decide(&ack).unwrap().mss_limit, None);
    }
}

#[test]
fn the_receive_path_marks_ce_behind_two_tags() {
    let mut f = tcp_frame(&QINQ, AF41_ECT0, DF, 40000, 0x10, &[]);
    let view = Frame::parse(&f).unwrap();
    assert_eq!(dsfield::decap(dsfield::ECN_CE, &mut f, &view), dsfield::Decap::MarkedCe);
    assert_eq!(f[22 + 1], 34 << 2 | dsfield::ECN_CE);
    assert!(Sum::ZERO.add_bytes(&f[22..42]).verifies(), "IPv4 header checksum fixed");
    let mut not_ect = tcp_frame(&QINQ, 0, DF, 40000, 0x10, &[]);
    let view = Frame::parse(&not_ect).unwrap();
    assert_eq!(dsfield::decap(dsfield::ECN_CE, &mut not_ect, &view), dsfield::Decap::Drop);
}
