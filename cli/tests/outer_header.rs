//! The outer header end to end, on the wire: the TTL (1 for group datagrams, the route's for
//! unicast, `--ttl`), the DS field (`--tos` fixed and `inherit`), ECN (RFC 6040: a CE mark
//! carried into the inner packet, a packet that is not ECN-capable dropped), the IPv6 flow label
//! (`--flowlabel`: per flow, fixed, none) and the UDP source port (one per flow, spread over
//! `--src-ports`). Each test in its own namespaces; captures with AF_PACKET.
//!
//! Conventions as in e2e.rs: node i has underlay address `Underlay::addr(i)`, overlay
//! 198.19.0.(i+1)/24 on `vxt0`, TAP MAC 02:00:00:00:00:(i+1).

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use common::*;
use vxtap::packet::offload::checksum::Sum;
use vxtap::wire::build::{Ethernet, Ipv4, Udp};
use vxtap::wire::EncapHeader;
use vxtap::MacAddr;
use vxtap_testbed::{netns_test, Capture, Family, Netns, Underlay, UNDERLAY_DEV};

/// Sends `payload` from `ns` to `to` with the IP DS byte `tos`.
fn send_with_tos(ns: &Netns, to: SocketAddr, payload: &[u8], tos: u8) {
    ns.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_broadcast(true).unwrap();
        let v = libc::c_int::from(tos);
        // SAFETY: an int option living for the call.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_TOS,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        s.send_to(payload, to).unwrap();
    })
    .unwrap();
}

/// On the wire from node 0: group datagrams go to the group with TTL 1 (or --ttl), unicast ones
/// with the route's TTL (or --ttl), and the DS byte follows `--tos`.
fn on_the_wire(extra: &[&str], group_ttl: u8, unicast_ttl: u8, tos_of: fn(u8) -> u8) {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    start_group(&mut bed, 0, GROUP_V4, extra);
    start_group(&mut bed, 1, GROUP_V4, &[]);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let capture = bed.check(Capture::start(bed.ul.node(0), UNDERLAY_DEV), "capture");
    let inner_tos = 0xb8 | 0b10; // EF, ECT(0)
    let (bcast, ucast) = (b"to the group".as_slice(), b"to one VTEP".as_slice());
    send_with_tos(bed.ul.node(0), SocketAddr::from(([198, 19, 0, 255], ECHO_PORT)), bcast, inner_tos);
    send_with_tos(bed.ul.node(0), overlay(1, ECHO_PORT), ucast, inner_tos);
    let g = capture.wait_for(SETTLE, |f| carries(f, bcast)).expect("group datagram");
    let u = capture.wait_for(SETTLE, |f| carries(f, ucast)).expect("unicast datagram");
    let group: IpAddr = GROUP_V4.parse().unwrap();
    assert_eq!(outer_v4(&g), Some((group, group_ttl, tos_of(inner_tos))), "group datagram: dst, TTL, DS");
    assert_eq!(outer_v4(&u), Some((bed.ul.addr(1), unicast_ttl, tos_of(inner_tos))), "unicast: dst, TTL, DS");
}

netns_test!(outer_header_defaults, on_the_wire(&[], 1, 64, |inner| inner & 0x3));
netns_test!(outer_ttl_and_tos_inherit, on_the_wire(&["--ttl", "5", "--tos", "inherit"], 5, 5, |inner| inner));
netns_test!(outer_tos_fixed, on_the_wire(&["--tos", "0x20"], 1, 64, |inner| 0x20 | (inner & 0x3)));

/// A VXLAN datagram to node 0's TAP (MAC 02:00:00:00:00:01, 198.19.0.1:7000) from a made-up
/// host 198.19.0.99, with the inner IPv4 DS byte `inner_ds` and a UDP `payload`, checksums right.
fn vxlan_to_node0(inner_ds: u8, payload: &[u8]) -> Vec<u8> {
    let frame = Ethernet::new(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 0x99]))
        .ipv4(Ipv4::new([198, 19, 0, 99], [198, 19, 0, 1]).tos(inner_ds).ident(1))
        .udp(Udp::new(40001, ECHO_PORT))
        .payload(payload)
        .build();
    [EncapHeader::vxlan(42).unwrap().as_bytes(), &frame].concat()
}

// RFC 6040 on the way in: a CE mark on the outer header reaches an ECN-capable inner packet (its
// checksum fixed); under CE, a packet that is not ECN-capable is dropped and counted.
netns_test!(outer_ce_reaches_the_inner_packet, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], &[]);
    let capture = bed.check(Capture::start(bed.ul.node(0), "vxt0"), "capture on the TAP");
    let vtep = SocketAddr::new(bed.ul.addr(0), 4789);
    send_with_tos(bed.ul.node(1), vtep, &vxlan_to_node0(0x02, b"ect0 under ce"), 0x03);
    let f = capture.wait_for(SETTLE, |f| carries(f, b"ect0 under ce")).expect("the frame on the TAP");
    assert_eq!(f[15] & 0x3, 0x3, "CE inside");
    assert!(Sum::ZERO.add_bytes(&f[14..34]).verifies(), "inner IPv4 header checksum");
    let drops = bed.counter_at(&bed.control(0), "drop_ecn_not_ect");
    send_with_tos(bed.ul.node(1), vtep, &vxlan_to_node0(0x00, b"not-ect under ce"), 0x03);
    bed.wait_counter(&bed.control(0), "drop_ecn_not_ect", drops + 1);
    assert!(!capture.frames().iter().any(|f| carries(f, b"not-ect under ce")), "dropped, not delivered");
    send_with_tos(bed.ul.node(1), vtep, &vxlan_to_node0(0x02, b"ect0 no ce"), 0x02);
    let f = capture.wait_for(SETTLE, |f| carries(f, b"ect0 no ce")).expect("the frame on the TAP");
    assert_eq!(f[15] & 0x3, 0x2, "left as it was");
});

/// The flow label of a captured IPv6 VXLAN datagram carrying `payload`.
fn flow_label(capture: &Capture, payload: &[u8]) -> u32 {
    let f = capture.wait_for(SETTLE, |f| carries(f, payload)).expect("datagram on the wire");
    assert_eq!(&f[12..14], &[0x86, 0xdd], "IPv6 underlay");
    u32::from_be_bytes([0, f[15] & 0xf, f[16], f[17]])
}

/// Over an IPv6 underlay: `--flowlabel N` on every datagram; by default (inherit) a label per
/// flow, so two flows that take different outer source ports get different labels.
fn flow_labels(extra: &[&str], check: fn(&[u32])) {
    let mut bed = Bed::new(Underlay::pair(Family::V6).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], extra);
    bed.start_with(1, Proto::Vxlan, &[0], &[]);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let capture = bed.check(Capture::start(bed.ul.node(0), UNDERLAY_DEV), "capture");
    let mut labels = Vec::new();
    for port in 7001..7009u16 {
        let payload = format!("flow label {port}");
        bed.blast(0, SocketAddr::from(([198, 19, 0, 2], port)), payload.as_bytes(), 1);
        labels.push(flow_label(&capture, payload.as_bytes()));
    }
    check(&labels);
}

netns_test!(
    fixed_flow_label,
    flow_labels(&["--flowlabel", "0x12345"], |l| assert!(l.iter().all(|x| *x == 0x12345), "{l:x?}"))
);
netns_test!(
    flow_label_per_flow,
    flow_labels(&[], |l| {
        let mut d = l.to_vec();
        d.sort();
        d.dedup();
        assert!(l.iter().all(|x| *x != 0) && d.len() > 1, "labels {l:x?}");
    })
);
netns_test!(
    no_flow_label,
    flow_labels(&["--flowlabel", "0"], |l| assert!(l.iter().all(|x| *x == 0), "{l:x?}"))
);

// Outer source-port entropy like the kernel's: 32 inner flows leave from at least 28 distinct
// outer source ports of --src-ports, each flow always from the same one (seen on the wire).
netns_test!(thirty_two_flows_get_distinct_outer_source_ports, {
    let bed = Bed::mesh(Underlay::pair(Family::V4).expect("underlay"), Proto::Vxlan);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let capture = bed.check(Capture::start(bed.ul.node(0), UNDERLAY_DEV), "capture");
    let to = overlay(1, ECHO_PORT);
    // 32 flows: 32 sockets on ports the kernel picks (fixed ports could be taken), kept for
    // both rounds so each flow keeps its 5-tuple.
    let sent = bed.check(
        bed.ul.node(0).run(|| -> anyhow::Result<usize> {
            let sockets: Vec<std::net::UdpSocket> =
                (0..32).map(|_| std::net::UdpSocket::bind(("0.0.0.0", 0))).collect::<Result<_, _>>()?;
            for round in 0..2 {
                for (i, s) in sockets.iter().enumerate() {
                    s.send_to(format!("entropy flow {i:02} round {round}").as_bytes(), to)?;
                }
            }
            Ok(sockets.len() * 2)
        }),
        "flows",
    );
    let outer_port = |i: u16, round: u16| -> u16 {
        let marker = format!("entropy flow {i:02} round {round}");
        let f = capture
            .wait_for(SETTLE, |f| carries(f, marker.as_bytes()))
            .unwrap_or_else(|| panic!("{marker} not on the wire"));
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let l4 = 14 + usize::from(f[14] & 0xf) * 4;
        u16::from_be_bytes([f[l4], f[l4 + 1]])
    };
    let first: Vec<u16> = (0..32).map(|i| outer_port(i, 0)).collect();
    let again: Vec<u16> = (0..32).map(|i| outer_port(i, 1)).collect();
    assert_eq!(first, again, "a flow keeps its port");
    assert!(first.iter().all(|p| (49152..=65535).contains(p)), "{first:?}");
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert!(distinct.len() >= 28, "{} distinct outer ports for 32 flows: {first:?}", distinct.len());
    assert_eq!(sent.ok(), Some(64));
});
