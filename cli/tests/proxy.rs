//! `--proxy`, ARP and ND suppression end to end: a VTEP answers ARP requests and neighbour
//! solicitations for the cluster's members on the TAP, from the neighbour table etcd fills, and
//! forwards the rest. Runs on the cluster harness (`common/cluster.rs`: a throw-away etcd in a
//! star underlay), so it needs what `cluster.rs` needs: the `etcd` feature, root and etcd.

#![cfg(feature = "etcd")]

mod common;

use std::net::Ipv6Addr;

use common::cluster::*;
use common::*;
use vxtap::wire::build::{solicited_node, Arp, Ethernet, Icmp, Ipv6};
use vxtap::MacAddr;
use vxtap_testbed::{capture, etcd_installed, netns_test, send_frame, vxlan_inner};

/// An ARP request for `target` from `sender` at `sender_ip`, broadcast.
fn arp_request(sender: &str, sender_ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mac: MacAddr = sender.parse().unwrap();
    Ethernet::new(MacAddr::BROADCAST, mac).arp(Arp::request(mac, sender_ip, target)).build()
}

/// A duplicate address detection probe: a neighbour solicitation from :: for `target`.
fn dad_probe(src_mac: &str, target: Ipv6Addr) -> Vec<u8> {
    let (group, group_mac) = solicited_node(target);
    Ethernet::new(group_mac, src_mac.parse().unwrap())
        .ipv6(Ipv6::new(Ipv6Addr::UNSPECIFIED, group).hop_limit(255))
        .icmp(Icmp::neighbour_solicitation(target, None))
        .build()
}

/// Inner frames of the VXLAN datagrams captured so far.
fn inner_frames(cap: &vxtap_testbed::Capture) -> Vec<Vec<u8>> {
    cap.frames().iter().filter_map(|f| vxlan_inner(f, 4789).map(<[u8]>::to_vec)).collect()
}

fn is_broadcast_arp_request(f: &[u8]) -> bool {
    f.len() >= 42 && f[..6] == [0xff; 6] && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1]
}

/// A neighbour solicitation (IPv6, ICMPv6 135, no extension header) for `target`.
fn is_solicitation_for(f: &[u8], target: Ipv6Addr) -> bool {
    f.len() >= 78 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 135 && f[62..78] == target.octets()
}

// --proxy: an ARP request and a neighbour solicitation for a member's addresses are answered on
// the TAP and nothing crosses the underlay for them (the Linux stack accepts the answers: the
// traffic that needed them flows); unknown targets, gratuitous ARP, probes and DAD still cross.
netns_test!(proxy_answers_for_members_and_forwards_the_rest, requires = etcd_installed, {
    let mut c = Cluster::new(2);
    let v6 = |i: usize| -> Ipv6Addr { format!("2001:db8:1::{}", i + 1).parse().unwrap() };
    for i in 0..2 {
        c.start(i, &["--proxy"]);
        let ns = c.node(i);
        c.bed.check(ns.sysctl("net/ipv6/conf/vxt0/disable_ipv6", "0"), "enable IPv6 on the TAP");
        c.bed.check(ns.sysctl("net/ipv6/conf/vxt0/accept_dad", "0"), "no DAD");
        let cidr = format!("{}/64", v6(i));
        c.bed.check(ns.ip(&["-6", "addr", "add", &cidr, "dev", "vxt0", "nodad"]), "IPv6 address");
    }
    c.converge(&[0, 1]);
    let _servers = c.bed.echo_servers();
    for i in 0..2 {
        let want = v6(1 - i).to_string();
        let known = wait_until(CONVERGE, || {
            c.json(i, &["neigh", "show", "--json"])
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["ip"].as_str() == Some(&want))
        });
        assert!(known, "node {i}: the member's IPv6 address never reached the neighbour table\n{}", c.logs());
    }
    let cap = capture(c.node(0), vxtap_testbed::UNDERLAY_DEV).unwrap();

    // ARP: the stack of node 0 asks for node 1's address, vxtap answers, the echo works.
    c.bed.check(c.node(0).ip(&["neigh", "flush", "dev", "vxt0"]), "neigh flush");
    let arp_before = c.stat(0, "arp_suppressed");
    c.bed.echo(0, 1);
    assert!(c.stat(0, "arp_suppressed") > arp_before, "{}", c.bed.stats(0));
    let neigh = c.bed.check(c.node(0).ip_out(&["neigh", "show", "198.19.0.2", "dev", "vxt0"]), "ip neigh");
    assert!(neigh.to_ascii_lowercase().contains(&mac(1)), "the stack took the reply: {neigh}");
    let crossed: Vec<_> = inner_frames(&cap).into_iter().filter(|f| is_broadcast_arp_request(f)).collect();
    assert!(crossed.is_empty(), "ARP requests crossed the underlay: {crossed:?}");

    // ND: the same for an IPv6 ping (each side resolves the other through its own vxtap).
    let nd_before = c.stat(0, "nd_suppressed");
    let pinged = wait_until(CONVERGE, || {
        c.node(0)
            .exec(&["ping", "-6", "-c", "1", "-W", "1", &v6(1).to_string()])
            .is_ok_and(|o| o.status.success())
    });
    assert!(pinged, "IPv6 ping over the overlay failed: {}\n{}", c.bed.stats(0), c.logs());
    assert!(c.stat(0, "nd_suppressed") > nd_before, "{}", c.bed.stats(0));
    let neigh = c
        .bed
        .check(c.node(0).ip_out(&["-6", "neigh", "show", &v6(1).to_string(), "dev", "vxt0"]), "ip neigh");
    assert!(neigh.to_ascii_lowercase().contains(&mac(1)), "the stack took the advertisement: {neigh}");
    let crossed: Vec<_> =
        inner_frames(&cap).into_iter().filter(|f| is_solicitation_for(f, v6(1)) && f[0] & 1 == 1).collect();
    assert!(crossed.is_empty(), "solicitations for a member crossed the underlay: {crossed:?}");

    // What is not answered crosses as before.
    let me = mac(0);
    let cases = [
        ("unknown target", arp_request(&me, [198, 19, 0, 1], [198, 19, 0, 99])),
        ("gratuitous ARP", arp_request(&me, [198, 19, 0, 1], [198, 19, 0, 1])),
        ("ARP probe", arp_request(&me, [0, 0, 0, 0], [198, 19, 0, 2])),
        ("DAD", dad_probe(&me, v6(1))),
    ];
    let (arp, nd) = (c.stat(0, "arp_suppressed"), c.stat(0, "nd_suppressed"));
    for (what, frame) in cases {
        cap.clear();
        c.bed.check(send_frame(c.node(0), "vxt0", &frame), what);
        let crossed = wait_until(SETTLE, || inner_frames(&cap).iter().any(|f| f.starts_with(&frame)));
        assert!(crossed, "{what} did not cross the underlay");
    }
    assert_eq!((c.stat(0, "arp_suppressed"), c.stat(0, "nd_suppressed")), (arp, nd), "none was answered");
});
