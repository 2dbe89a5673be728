//! Path MTU: two hosts behind a router whose link to the far host is narrower than 1500 bytes
//! (`Underlay::routed`), the topology where vxtap used to black-hole TCP. Each test builds its own
//! namespaces (see `vxtap_testbed`); they need root.
//!
//! Node 0 (A) is on the wide side, node 1 (B) behind the narrow link; overlay 198.19.0.1 and .2.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use vxtap::packet::offload::checksum::{pseudo_v4, Sum};
use vxtap::wire::Proto;
use vxtap_testbed::{
    netns_test, tcp_transfer, udp_echo_server, udp_send_df, vtep_cmd, Capture, Df, Family, Netns, Underlay,
};

const MEGABYTES_20: usize = 20 << 20;

/// vxtap in both nodes of a routed topology whose narrow link is `mtu` bytes, with `extra` flags.
fn narrow_bed(family: Family, mtu: u32, proto: Proto, extra: &[&str]) -> Bed {
    let mut bed = Bed::new(Underlay::routed(family, mtu).expect("routed underlay"));
    bed.start_with(0, proto, &[1], extra);
    bed.start_with(1, proto, &[0], extra);
    bed
}

/// 20 MB of TCP each way across the narrow path, hash-verified.
fn tcp_both_ways(family: Family, mtu: u32, proto: Proto, extra: &[&str]) {
    let bed = narrow_bed(family, mtu, proto, extra);
    for (server, client) in [(1, 0), (0, 1)] {
        let r = tcp_transfer(bed.ul.node(server), overlay(server, 5001), bed.ul.node(client), MEGABYTES_20);
        let r = bed.check(r, &format!("20 MB of TCP {client} -> {server} across a {mtu}-byte link"));
        eprintln!("{proto} {family:?} {extra:?}: {client} -> {server} {:.0} Mbit/s", r.mbit_per_s);
    }
}

netns_test!(vxlan_tcp_crosses_a_1400_link, tcp_both_ways(Family::V4, 1400, Proto::Vxlan, &[]));
netns_test!(geneve_tcp_crosses_a_1400_link, tcp_both_ways(Family::V4, 1400, Proto::Geneve, &[]));
netns_test!(
    vxlan_tcp_crosses_a_1400_link_df_set,
    tcp_both_ways(Family::V4, 1400, Proto::Vxlan, &["--df", "set"])
);
netns_test!(
    geneve_tcp_crosses_a_1400_link_df_set,
    tcp_both_ways(Family::V4, 1400, Proto::Geneve, &["--df", "set"])
);
netns_test!(vxlan_tcp_crosses_a_1280_ipv6_link, tcp_both_ways(Family::V6, 1280, Proto::Vxlan, &[]));
netns_test!(geneve_tcp_crosses_a_1280_ipv6_link, tcp_both_ways(Family::V6, 1280, Proto::Geneve, &[]));
netns_test!(
    vxlan_tcp_crosses_a_1280_ipv6_link_df_set,
    tcp_both_ways(Family::V6, 1280, Proto::Vxlan, &["--df", "set"])
);
netns_test!(
    geneve_tcp_crosses_a_1280_ipv6_link_df_set,
    tcp_both_ways(Family::V6, 1280, Proto::Geneve, &["--df", "set"])
);

/// `ping -M do` with `size` bytes of payload to `to` from `ns`, until a line of its output
/// contains `expect` (the ICMP error the inner stack got back), or panics with the outputs.
fn ping_until(bed: &Bed, ns: &Netns, to: &str, size: usize, expect: &str) {
    let mut outputs = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        let mut args = vec!["ping", "-M", "do", "-c", "3", "-i", "0.3", "-W", "1", "-s"];
        let size = size.to_string();
        args.push(&size);
        if to.contains(':') {
            args.insert(1, "-6");
        }
        args.push(to);
        let out = bed.check(ns.exec(&args), "ping");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        outputs.push_str(&text);
        text.contains(expect)
    });
    assert!(ok, "no {expect:?} in:\n{outputs}\n{}", bed.logs());
}

/// An inner packet too big for the path gets the ICMP error the kernel would send for a bridged
/// tunnel, with the MTU that fits: 1400 less 50 bytes of VXLAN over IPv4. Then the inner stack
/// knows the path (the local error) and a ping that fits goes through.
fn too_big_pings(proto: Proto) {
    let bed = narrow_bed(Family::V4, 1400, proto, &[]);
    let a = bed.ul.node(0);
    ping_until(&bed, a, "198.19.0.2", 1400, "mtu = 1350");
    ping_until(&bed, a, "198.19.0.2", 1322, " bytes from 198.19.0.2");
    // IPv6 inside: a Packet Too Big.
    for (i, ns) in [(1, bed.ul.node(0)), (2, bed.ul.node(1))] {
        bed.check(ns.sysctl("net/ipv6/conf/vxt0/disable_ipv6", "0"), "IPv6 on vxt0");
        bed.check(
            ns.ip(&["addr", "add", &format!("2001:db8:ff::{i}/64"), "dev", "vxt0", "nodad"]),
            "address",
        );
    }
    ping_until(&bed, a, "2001:db8:ff::2", 1400, "Packet too big: mtu=1350");
    ping_until(&bed, a, "2001:db8:ff::2", 1302, " bytes from 2001:db8:ff::2");
    let stats = bed.stats(0);
    assert!(counter(&stats, "tx_icmp_too_big") >= 2, "{stats}");
}

netns_test!(vxlan_too_big_packets_get_icmp_errors, too_big_pings(Proto::Vxlan));
netns_test!(geneve_too_big_packets_get_icmp_errors, too_big_pings(Proto::Geneve));

fn counter(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or_else(|| panic!("no {key} in {stats}"))
}

/// An inner IPv4 datagram with DF clear that does not fit the path is not dropped: the underlay
/// fragments it, as the sender allowed. Sent once, it must arrive.
fn df_clear_udp_arrives(extra: &[&str]) {
    let bed = narrow_bed(Family::V4, 1400, Proto::Vxlan, extra);
    let server = bed.check(udp_echo_server(bed.ul.node(1), overlay(1, ECHO_PORT)), "echo server");
    bed.echo(0, 1); // ARP and learning settled
    for (i, size) in [1372usize, 1400, 1420].into_iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|j| (j + i) as u8).collect();
        bed.check(udp_send_df(bed.ul.node(0), overlay(1, ECHO_PORT), &payload, 1, Df::Clear), "send");
        assert!(server.wait_for(&payload, 1, SETTLE), "{size}-byte DF=0 datagram lost\n{}", bed.logs());
    }
}

netns_test!(df_clear_udp_crosses_the_narrow_link, df_clear_udp_arrives(&[]));
netns_test!(df_clear_udp_crosses_the_narrow_link_df_unset, df_clear_udp_arrives(&["--df", "unset"]));

// The kernel's VXLAN device behind the narrow link: TCP completes both ways.
netns_test!(kernel_vxlan_peer_behind_the_narrow_link, {
    let mut bed = Bed::new(Underlay::routed(Family::V4, 1400).expect("routed underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], &[]);
    let kernel = kernel_vxlan(&bed, 1, 0);
    bed.check(kernel.create(bed.ul.node(1)), "kernel vxlan");
    for (server, client) in [(1, 0), (0, 1)] {
        let r = tcp_transfer(bed.ul.node(server), overlay(server, 5001), bed.ul.node(client), MEGABYTES_20);
        bed.check(r, &format!("TCP {client} -> {server} with a kernel peer"));
    }
});

/// `vxtap peers --json` of node `i`: the row of `dst`.
fn peer_row(bed: &Bed, i: usize, dst: IpAddr) -> Value {
    let out = bed.check(vtep_cmd(bin(), &bed.control(i), &["peers", "--json"]), "vxtap peers");
    let rows: Value = serde_json::from_str(&out).expect("peers JSON");
    rows.as_array()
        .and_then(|a| a.iter().find(|r| r["dst"].as_str().and_then(|d| d.parse().ok()) == Some(dst)).cloned())
        .unwrap_or_else(|| panic!("no peer {dst} in {out}"))
}

// The peers view shows the path MTU learned towards a VTEP, and when the kernel forgets it
// (`ip route flush cache`), the wide path again.
netns_test!(peers_show_the_learned_path_mtu_and_its_recovery, {
    let bed = narrow_bed(Family::V4, 1400, Proto::Vxlan, &[]);
    let b = bed.ul.addr(1);
    let row = peer_row(&bed, 0, b);
    assert_eq!(
        (row["source"].as_str(), row["port"].as_u64(), row["vni"].as_u64()),
        (Some("remote"), Some(4789), Some(42))
    );
    assert_eq!(row["pmtu"], 1500, "nothing learned yet: {row}");
    let r = tcp_transfer(bed.ul.node(1), overlay(1, 5001), bed.ul.node(0), 2 << 20);
    bed.check(r, "TCP across");
    assert_eq!(peer_row(&bed, 0, b)["pmtu"], 1400);
    assert!(peer_row(&bed, 0, b)["last_seen_secs"].as_u64().is_some(), "B's MAC was learned");
    bed.check(bed.ul.node(0).ip(&["route", "flush", "cache"]), "flush");
    let recovered = wait_until(Duration::from_secs(5), || peer_row(&bed, 0, b)["pmtu"] == 1500);
    assert!(recovered, "{}", peer_row(&bed, 0, b));
    // And vxtap's own table follows: TCP still completes after the flush.
    let r = tcp_transfer(bed.ul.node(1), overlay(1, 5002), bed.ul.node(0), 2 << 20);
    bed.check(r, "TCP after the flush");
});

/// The MSS option of the SYN as B's stack receives it, and whether the segment's checksum is right.
fn syn_mss(frame: &[u8]) -> Option<(u16, bool)> {
    if frame.len() < 54 || frame[12..14] != [0x08, 0x00] || frame[23] != 6 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0xf) * 4;
    let tcp = &frame[14 + ihl..];
    if tcp[13] & 0x12 != 0x02 {
        return None; // not a bare SYN
    }
    let hlen = usize::from(tcp[12] >> 4) * 4;
    let mut at = 20;
    let mut mss = None;
    while at + 1 < hlen {
        match tcp[at] {
            0 => break,
            1 => at += 1,
            2 => {
                mss = Some(u16::from_be_bytes([tcp[at + 2], tcp[at + 3]]));
                break;
            }
            _ => at += usize::from(tcp[at + 1]).max(2),
        }
    }
    let ok = pseudo_v4(&frame[26..30], &frame[30..34], 6, tcp.len() as u16)
        .combine(Sum::ZERO.add_bytes(tcp))
        .verifies();
    Some((mss?, ok))
}

// `--mss-clamp=1300`: the SYN B's stack receives carries the MSS that fits a 1300-byte path
// (1300 - 50 of VXLAN over IPv4 - 40 of IPv4 and TCP = 1210), with a valid checksum, and the
// transfer completes.
netns_test!(mss_clamp_rewrites_the_syn, {
    let bed = narrow_bed(Family::V4, 1400, Proto::Vxlan, &["--mss-clamp=1300"]);
    let _servers = bed.echo_servers();
    bed.echo(0, 1);
    let capture = bed.check(Capture::start(bed.ul.node(1), "vxt0"), "capture on B's TAP");
    let r = tcp_transfer(bed.ul.node(1), overlay(1, 5001), bed.ul.node(0), 2 << 20);
    bed.check(r, "TCP with the clamp");
    let syn = capture.wait_for(SETTLE, |f| syn_mss(f).is_some()).expect("a SYN on B's TAP");
    assert_eq!(syn_mss(&syn), Some((1210, true)), "MSS and checksum");
});

// A flood of oversize DF frames: every one is counted, and the ICMP replies are bounded by the
// rate limit (10 at once, 100 a second).
netns_test!(too_big_replies_are_rate_limited_and_counted, {
    let bed = narrow_bed(Family::V4, 1400, Proto::Vxlan, &[]);
    let _servers = bed.echo_servers();
    bed.echo(0, 1);
    let to = overlay(1, ECHO_PORT);
    // DF set, and the sender ignores what it learns, so the flood reaches vxtap.
    let payload = vec![0x5a; 1420];
    bed.check(udp_send_df(bed.ul.node(0), to, &payload, 20, Df::Always), "send"); // teach the path
    wait_until(SETTLE, || counter(&bed.stats(0), "drop_too_big") > 0);
    let start = Instant::now();
    let before = bed.stats(0);
    bed.check(udp_send_df(bed.ul.node(0), to, &payload, 3000, Df::Always), "flood");
    let settled = |s: &Value| counter(s, "drop_too_big") + counter(s, "drop_kernel_tap");
    let mut last = settled(&bed.stats(0));
    wait_until(SETTLE, || {
        let now = settled(&bed.stats(0));
        let still = now == last;
        last = now;
        still && now >= settled(&before) + 100
    });
    let secs = start.elapsed().as_secs_f64();
    let after = bed.stats(0);
    let d = |k: &str| counter(&after, k) - counter(&before, k);
    let (dropped, sent, limited) = (d("drop_too_big"), d("tx_icmp_too_big"), d("tx_icmp_ratelimited"));
    assert!(dropped >= 100, "the flood reached vxtap: {after}");
    assert_eq!(sent + limited, dropped, "every oversize frame is counted once: {after}");
    let bound = 10.0 + 100.0 * secs + 1.0;
    assert!((sent as f64) <= bound, "{sent} replies in {secs:.2} s (bound {bound:.0})");
    assert!(limited > 0, "the limit held some back: {after}");
});
