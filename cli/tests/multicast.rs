//! Multicast group mode (RFC 7348 §4.2) and the outer-header options, against the kernel's
//! VXLAN device in group mode as the reference peer, each test in its own namespaces.
//!
//! Conventions as in e2e.rs: node i has underlay address `Underlay::addr(i)`, overlay
//! 198.19.0.(i+1)/24 on `vxt0` (or `vx0` for a kernel device), TAP MAC 02:00:00:00:00:(i+1).

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;

use common::*;
use serde_json::Value;
use vxtap::packet::offload::checksum::{pseudo_v4, Sum};
use vxtap::wire::Proto;
use vxtap_testbed::{netns_test, udp_send, Capture, Family, Netns, Underlay, UNDERLAY_DEV};

const GROUP_V4: &str = "239.1.1.1";
const GROUP_V6: &str = "ff05::100";

/// vxtap in node `i` in group mode: no --remote; members may be anywhere on the underlay.
fn start_group(bed: &mut Bed, i: usize, group: &str, extra: &[&str]) {
    let allow = if group.contains(':') { "2001:db8::/64" } else { "198.18.0.0/24" };
    let mut flags = vec!["--group", group, "--underlay-dev", UNDERLAY_DEV, "--allow-from", allow];
    flags.extend_from_slice(extra);
    bed.start_with(i, Proto::Vxlan, &[], &flags);
}

/// The kernel's VXLAN device in group mode in node `i`, the way its users set it up.
fn kernel_group(bed: &Bed, i: usize, group: &str) {
    let ns = bed.ul.node(i);
    // The kernel leaves inner checksums for a NIC to finish; a veth never does (see e2e.rs).
    let out = bed.check(ns.exec(&["ethtool", "-K", UNDERLAY_DEV, "tx", "off"]), "ethtool");
    assert!(out.status.success(), "ethtool: {}", String::from_utf8_lossy(&out.stderr));
    let local = bed.ul.addr(i).to_string();
    let args = [
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "group",
        group,
        "dev",
        UNDERLAY_DEV,
        "dstport",
        "4789",
        "local",
        &local,
    ];
    bed.check(ns.ip(&args), "kernel vxlan in group mode");
    bed.check(ns.ip(&["addr", "add", &format!("198.19.0.{}/24", i + 1), "dev", "vx0"]), "address");
    bed.check(ns.ip(&["link", "set", "vx0", "up"]), "up");
}

/// The kernel's FDB in node `i` has `mac` at `dst`.
fn kernel_learned(bed: &Bed, i: usize, mac: &str, dst: IpAddr) -> bool {
    let fdb = bed.check(bed.ul.node(i).bridge_out(&["fdb", "show", "dev", "vx0"]), "bridge fdb");
    fdb.lines().any(|l| l.to_ascii_lowercase().starts_with(mac) && l.contains(&format!("dst {dst} ")))
}

fn group_row(bed: &Bed, i: usize, group: &str) -> Value {
    let fdb = bed.fdb(i);
    fdb.as_array()
        .and_then(|a| a.iter().find(|e| e["kind"] == "group").cloned())
        .filter(|e| e["dst"] == group && e["mac"] == "00:00:00:00:00:00" && e["port"] == 4789)
        .unwrap_or_else(|| panic!("no group entry for {group} in {fdb}"))
}

/// vxtap in node 0 and the kernel in node 1, both in group mode, nobody configured with the
/// other: traffic both ways, and each learns the other's MAC at its underlay address.
fn kernel_interop(family: Family, group: &str) {
    let mut bed = Bed::new(Underlay::pair(family).expect("underlay"));
    start_group(&mut bed, 0, group, &[]);
    kernel_group(&bed, 1, group);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let kernel_mac = bed.check(bed.ul.node(1).link_mac("vx0"), "kernel MAC");
    assert_fdb_entry(&bed.fdb(0), &kernel_mac, "learned", bed.ul.addr(1), 4789);
    assert!(kernel_learned(&bed, 1, &mac(0), bed.ul.addr(0)), "the kernel did not learn vxtap's MAC");
    group_row(&bed, 0, group);
    let out = bed.check(vxtap_testbed::vtep_cmd(bin(), &bed.control(0), &["peers", "--json"]), "peers");
    let peers: Value = serde_json::from_str(&out).unwrap();
    let found = peers.as_array().unwrap().iter().any(|p| {
        p["source"] == "group"
            && p["dst"].as_str().and_then(|d| d.parse::<IpAddr>().ok()) == Some(bed.ul.addr(1))
    });
    assert!(found, "the kernel peer is listed as found through the group: {out}");
}

netns_test!(kernel_group_interop_ipv4, kernel_interop(Family::V4, GROUP_V4));
netns_test!(kernel_group_interop_ipv6, kernel_interop(Family::V6, GROUP_V6));

netns_test!(vxtap_group_pair_ipv6, {
    let mut bed = Bed::new(Underlay::pair(Family::V6).expect("underlay"));
    start_group(&mut bed, 0, GROUP_V6, &[]);
    start_group(&mut bed, 1, GROUP_V6, &[]);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    for (me, peer) in [(0, 1), (1, 0)] {
        assert_fdb_entry(&bed.fdb(me), &mac(peer), "learned", bed.ul.addr(peer), 4789);
    }
});

/// The outer destination address of a captured IPv4 VXLAN datagram, and its TTL and DS byte.
fn outer_v4(frame: &[u8]) -> Option<(IpAddr, u8, u8)> {
    let ihl = usize::from(*frame.get(14)? & 0xf) * 4;
    let vxlan_port = frame.get(14 + ihl + 2..14 + ihl + 4)? == 4789u16.to_be_bytes();
    (frame[12..14] == [0x08, 0x00] && frame[23] == 17 && vxlan_port).then(|| {
        let dst: [u8; 4] = frame[30..34].try_into().unwrap();
        (IpAddr::from(dst), frame[22], frame[15])
    })
}

/// Whether a captured frame carries `payload` anywhere.
fn carries(frame: &[u8], payload: &[u8]) -> bool {
    frame.windows(payload.len()).any(|w| w == payload)
}

// Three VTEPs on one bridge, two vxtap and one kernel, all in group mode: every pair talks; a
// broadcast reaches each peer exactly once; once learned, unicast goes to the VTEP, not the group.
netns_test!(three_vteps_in_a_group, {
    let mut bed = Bed::new(Underlay::star(3).expect("star"));
    start_group(&mut bed, 0, GROUP_V4, &[]);
    start_group(&mut bed, 1, GROUP_V4, &[]);
    kernel_group(&bed, 2, GROUP_V4);
    let servers = bed.echo_servers();
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        bed.echo(a, b);
        bed.echo(b, a);
    }
    let payload = b"one broadcast, one copy each";
    bed.blast(0, SocketAddr::from(([198, 19, 0, 255], ECHO_PORT)), payload, 1);
    for (i, s) in servers.iter().enumerate().skip(1) {
        assert!(s.wait_for(payload, 1, SETTLE), "node {i} missed the broadcast\n{}", bed.logs());
    }
    std::thread::sleep(QUIET);
    // Node 0's copy is its own stack's local delivery; vxtap must not loop a second one back.
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(s.count_of(payload), 1, "node {i}: copies of the broadcast");
    }
    let capture = bed.check(Capture::start(bed.ul.node(0), UNDERLAY_DEV), "capture");
    let unicast = b"learned unicast stays unicast";
    bed.blast(0, overlay(1, ECHO_PORT), unicast, 1);
    assert!(servers[1].wait_for(unicast, 1, SETTLE));
    let sent = capture.wait_for(SETTLE, |f| carries(f, unicast)).expect("the datagram on the wire");
    let (dst, _, _) = outer_v4(&sent).expect("a VXLAN datagram");
    assert_eq!(dst, bed.ul.addr(1), "sent to the VTEP, not to the group");
});

// With four receive queues, a burst of broadcasts from a peer reaches the TAP once each.
netns_test!(group_datagrams_arrive_once_whatever_the_queues, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    start_group(&mut bed, 0, GROUP_V4, &["--queues", "4"]);
    start_group(&mut bed, 1, GROUP_V4, &[]);
    let servers = bed.echo_servers();
    bed.echo_pair();
    const N: usize = 200;
    let payloads: Vec<Vec<u8>> = (0..N).map(|i| format!("broadcast {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    bed.check(udp_send(bed.ul.node(1), SocketAddr::from(([198, 19, 0, 255], ECHO_PORT)), &refs), "burst");
    for p in &payloads {
        assert!(servers[0].wait_for(p, 1, SETTLE), "lost: {}", String::from_utf8_lossy(p));
    }
    std::thread::sleep(QUIET);
    let copies: usize = payloads.iter().map(|p| servers[0].count_of(p)).sum();
    assert_eq!(copies, N, "exactly one copy of each");
});

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
    let mut udp = vec![0x9c, 0x41, 0x1b, 0x58];
    udp.extend(((8 + payload.len()) as u16).to_be_bytes());
    udp.extend([0, 0]);
    udp.extend_from_slice(payload);
    let (src, dst) = ([198, 19, 0, 99], [198, 19, 0, 1]);
    let ck = pseudo_v4(&src, &dst, 17, udp.len() as u16).combine(Sum::ZERO.add_bytes(&udp)).finish();
    udp[6..8].copy_from_slice(&ck);
    let mut ip = vec![0x45, inner_ds];
    ip.extend(((20 + udp.len()) as u16).to_be_bytes());
    ip.extend([0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend(src);
    ip.extend(dst);
    let ck = Sum::ZERO.add_bytes(&ip).finish();
    ip[10..12].copy_from_slice(&ck);
    let mut p = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    p.extend([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    p.extend(ip);
    p.extend(udp);
    p
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

// Group mode without an allowlist cannot work (members are not known in advance): refused at
// start with a message that says what to add. No namespace needed.
#[test]
fn group_mode_without_allow_from_is_refused() {
    let out = Command::new(bin())
        .args(["run", "--vni", "42", "--group", GROUP_V4, "--underlay-dev", "ul0", "--dev", "vxt-nope"])
        .output()
        .expect("run vxtap");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--allow-from"), "{err}");
}

// The same with wildcard receive sockets (no --local): every socket of a SO_REUSEPORT group
// would get a copy of each group datagram unless told not to (IP_MULTICAST_ALL).
netns_test!(group_datagrams_arrive_once_on_wildcard_sockets, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    let ctl = bed.control(0);
    let args = [
        "--dev",
        "vxt0",
        "--vni",
        "42",
        "--address",
        "198.19.0.1/24",
        "--mac",
        &mac(0),
        "--control",
        ctl.to_str().unwrap(),
        "--group",
        GROUP_V4,
        "--underlay-dev",
        UNDERLAY_DEV,
        "--allow-from",
        "198.18.0.0/24",
        "--queues",
        "4",
    ];
    bed.spawn(0, &strings(&args));
    start_group(&mut bed, 1, GROUP_V4, &[]);
    let servers = bed.echo_servers();
    bed.echo_pair();
    let payloads: Vec<Vec<u8>> = (0..100).map(|i| format!("wildcard {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    bed.check(udp_send(bed.ul.node(1), SocketAddr::from(([198, 19, 0, 255], ECHO_PORT)), &refs), "burst");
    for p in &payloads {
        assert!(servers[0].wait_for(p, 1, SETTLE), "lost: {}", String::from_utf8_lossy(p));
    }
    std::thread::sleep(QUIET);
    let copies: usize = payloads.iter().map(|p| servers[0].count_of(p)).sum();
    assert_eq!(copies, payloads.len(), "exactly one copy of each");
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
