//! Multicast group mode (RFC 7348 §4.2), against the kernel's VXLAN device in group mode as the
//! reference peer, each test in its own namespaces. The outer header on the wire (TTL, DS field,
//! ECN, flow label, source ports), group datagrams included, is `outer_header.rs`.
//!
//! Conventions as in e2e.rs: node i has underlay address `Underlay::addr(i)`, overlay
//! 198.19.0.(i+1)/24 on `vxt0` (or `vx0` for a kernel device), TAP MAC 02:00:00:00:00:(i+1).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use common::*;
use serde_json::Value;
use vxtap_testbed::{netns_test, udp_send, Capture, Family, Underlay, UNDERLAY_DEV};

const GROUP_V6: &str = "ff05::100";

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

/// Once the pair talks: a burst of `n` broadcasts ("<label> <i>") from node 1 reaches node 0's
/// echo server exactly once each.
fn broadcasts_arrive_once(bed: &Bed, n: usize, label: &str) {
    let servers = bed.echo_servers();
    bed.echo_pair();
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| format!("{label} {i}").into_bytes()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    bed.check(udp_send(bed.ul.node(1), SocketAddr::from(([198, 19, 0, 255], ECHO_PORT)), &refs), "burst");
    for p in &payloads {
        assert!(servers[0].wait_for(p, 1, SETTLE), "lost: {}", String::from_utf8_lossy(p));
    }
    std::thread::sleep(QUIET);
    let copies: usize = payloads.iter().map(|p| servers[0].count_of(p)).sum();
    assert_eq!(copies, n, "exactly one copy of each");
}

// With four receive queues, a burst of broadcasts from a peer reaches the TAP once each.
netns_test!(group_datagrams_arrive_once_whatever_the_queues, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    start_group(&mut bed, 0, GROUP_V4, &["--queues", "4"]);
    start_group(&mut bed, 1, GROUP_V4, &[]);
    broadcasts_arrive_once(&bed, 200, "broadcast");
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
    broadcasts_arrive_once(&bed, 100, "wildcard");
});
