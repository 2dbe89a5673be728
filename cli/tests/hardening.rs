//! Hardening end-to-end tests of the `vxtap` binary: MAC floods and flapping, a locked-down
//! control socket, peers and links that go away and come back, and frames too big for the path.
//! Each test runs in its own network namespaces (see the `vxtap-testbed` crate); they need root
//! and skip without it, unless `VXTAP_REQUIRE_NETNS=1` makes that a failure.
//!
//! Conventions as in `e2e.rs`: node i has underlay address `Underlay::addr(i)` (198.18.0.(i+1)),
//! overlay 198.19.0.(i+1)/24 on `vxt0`, TAP MAC 02:00:00:00:00:(i+1).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use vxtap_testbed::{
    netns_test, udp_roundtrip, udp_send, udp_send_df, vtep_cmd, Df, Family, Netns, Underlay,
};

const VXLAN_PORT: u16 = 4789;
/// Queued bytes on vxtap's receive socket above which the flood senders wait for it to drain:
/// far below its 4 MB buffer, so the kernel drops (almost) nothing and vxtap sees every MAC.
const QUEUE_HIGH_WATER: u64 = 1 << 20;

/// A VXLAN datagram (I flag, VNI 42) carrying a minimum-size Ethernet frame from `src` to `dst`
/// with a local experimental EtherType, which the receiving kernel ignores.
fn vxlan_frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut d = vec![0x08, 0, 0, 0];
    d.extend(vni_bytes(42));
    d.push(0);
    d.extend(dst);
    d.extend(src);
    d.extend([0x88, 0xb5]);
    d.resize(8 + 60, 0);
    d
}

/// Byte range of the inner source MAC in a [`vxlan_frame`].
const INNER_SRC: std::ops::Range<usize> = 14..20;

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// (receive queue bytes, drops) summed over every UDP socket bound to local port `port`, IPv4
/// and IPv6, in the namespace of the calling thread (`/proc/thread-self/net/udp{,6}`); zeros if
/// there is none. vxtap binds several SO_REUSEPORT sockets to its port and the kernel hashes
/// each flow to one of them, so a flood may land on any: reading only the first would miss its
/// queue and its drops.
fn udp_socket_queue(port: u16) -> (u64, u64) {
    let local = format!(":{port:04X}");
    let (mut rx_queue, mut drops) = (0, 0);
    for file in ["/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"] {
        let table = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // no IPv6 in this kernel
            Err(e) => panic!("reading {file}: {e}"),
        };
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 13 && f[1].ends_with(&local) {
                rx_queue += f[4].split(':').nth(1).and_then(|q| u64::from_str_radix(q, 16).ok()).unwrap_or(0);
                drops += f[12].parse::<u64>().unwrap_or(0);
            }
        }
    }
    (rx_queue, drops)
}

/// Waits (polling, bounded) until the receive queue of `port` in the calling thread's namespace
/// is below the high-water mark. Never fails: at worst the kernel drops some datagrams, which
/// its drop count shows.
fn pace(port: u16) {
    wait_until(SETTLE, || udp_socket_queue(port).0 < QUEUE_HIGH_WATER);
}

/// A UDP socket bound to `addr:0` inside `ns`. It stays in that namespace whichever thread uses it.
fn socket_in(ns: &Netns, addr: std::net::IpAddr) -> UdpSocket {
    ns.run(|| UdpSocket::bind(SocketAddr::new(addr, 0)))
        .expect("enter namespace")
        .expect("bind sender socket")
}

/// Sends, from `sock`, one datagram per index in `range`, each with a distinct locally
/// administered unicast source MAC 02:10:xx:xx:xx:xx (never a TAP MAC of the bed) to unicast
/// 02:00:00:00:00:aa (no node's). Must run on a thread inside the receiver's namespace, which
/// it paces by.
fn mac_flood(sock: &UdpSocket, to: SocketAddr, range: std::ops::Range<u32>) {
    let mut d = vxlan_frame([0x02, 0, 0, 0, 0, 0xaa], [0; 6]);
    for i in range {
        let b = i.to_be_bytes();
        d[INNER_SRC].copy_from_slice(&[0x02, 0x10, b[0], b[1], b[2], b[3]]);
        sock.send_to(&d, to).expect("flood send");
        if i % 1000 == 999 {
            pace(to.port());
        }
    }
}

/// Datagrams node 0's vxtap has taken off its socket or the kernel dropped for it: waits until
/// that accounts for `n`, so that what was sent has been processed.
fn wait_flood_processed(bed: &Bed, rx0: u64, n: u64) {
    let ok = wait_until(Duration::from_secs(20), || {
        let drops = bed.ul.node(0).run(|| udp_socket_queue(VXLAN_PORT).1).expect("enter ns");
        bed.rx(0) - rx0 + drops >= n
    });
    assert!(ok, "node 0 did not process {n} flood datagrams: {}\n{}", bed.stats(0), bed.logs());
}

fn stat(bed: &Bed, i: usize, key: &str) -> u64 {
    bed.counter_at(&bed.control(i), key)
}

/// The log of node i's vxtap so far.
fn log_of(bed: &Bed, i: usize) -> String {
    bed.vteps[i].as_ref().expect("no vxtap in that node").log()
}

// A learned-entry cap holds under a flood of a million distinct source MACs from a permitted
// VTEP: the table stays at the cap, refusals are counted, the process does not grow, and real
// traffic keeps flowing during and after the flood.
netns_test!(mac_flood_keeps_table_bounded_and_rss_flat, {
    const CAP: u64 = 1000;
    const WARM_UP: u32 = 50_000;
    const TOTAL: u32 = 1_000_000;
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], &["--max-fdb", "1000"]);
    bed.start(1, Proto::Vxlan);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let pid = bed.vtep(0).pid();
    let to = SocketAddr::new(bed.ul.addr(0), VXLAN_PORT);
    let sock = socket_in(bed.ul.node(1), bed.ul.addr(1));
    let started = Instant::now();

    let rx0 = bed.rx(0);
    bed.ul.node(0).run(|| mac_flood(&sock, to, 0..WARM_UP)).expect("enter ns");
    wait_flood_processed(&bed, rx0, u64::from(WARM_UP));
    let rss_warm = rss_kib(pid);
    let entries_warm = stat(&bed, 0, "fdb_entries");
    assert!(
        entries_warm <= CAP + 2,
        "fdb_entries {entries_warm} over the cap after warm-up: {}",
        bed.stats(0)
    );

    // The rest of the flood on one thread while the overlay hosts echo on this one.
    let mut echoes_during = 0u32;
    std::thread::scope(|s| {
        let flood =
            s.spawn(|| bed.ul.node(0).run(|| mac_flood(&sock, to, WARM_UP..TOTAL)).expect("enter ns"));
        while !flood.is_finished() {
            bed.echo(1, 0);
            bed.echo(0, 1);
            echoes_during += 1;
        }
        flood.join().expect("flood thread");
    });
    wait_flood_processed(&bed, rx0, u64::from(TOTAL));
    let flood_time = started.elapsed();
    let rss_end = rss_kib(pid);
    let stats = bed.stats(0);
    let kernel_drops = bed.ul.node(0).run(|| udp_socket_queue(VXLAN_PORT).1).expect("enter ns");
    let (entries, full) = (stat(&bed, 0, "fdb_entries"), stat(&bed, 0, "drop_fdb_full"));
    eprintln!(
        "mac flood: {TOTAL} datagrams in {flood_time:?}; vxtap rx {} (kernel socket drops {kernel_drops}); \
         fdb_entries {entries_warm} after {WARM_UP}, {entries} after all; drop_fdb_full {full}; \
         fdb_learned {}; VmRSS {rss_warm} KiB after warm-up, {rss_end} KiB after ({:+} KiB); \
         {echoes_during} echo round pairs during the flood",
        bed.rx(0) - rx0,
        stat(&bed, 0, "fdb_learned"),
        rss_end as i64 - rss_warm as i64,
    );
    assert!(entries <= CAP + 2, "fdb_entries {entries} over the cap: {stats}");
    assert!(full > 0, "no learn was refused at the cap: {stats}");
    // Most of the flood reached vxtap, so the cap (not kernel drops) is what bounded the table.
    assert!(full >= u64::from(TOTAL) / 2, "only {full} learns refused of {TOTAL} new MACs: {stats}");
    assert!(rss_end < rss_warm + 4 * 1024, "VmRSS grew from {rss_warm} KiB to {rss_end} KiB\n{}", bed.logs());
    assert!(echoes_during > 0, "the flood ended before an echo could run alongside it");
    bed.echo_pair();
    bed.assert_running(0);
});

// One MAC seen alternately behind two VTEPs: every move is counted, the entry follows, and
// traffic between the real hosts is unaffected.
netns_test!(flapping_mac_is_counted_and_path_keeps_flowing, {
    const FLAPS: u32 = 2000;
    let flapper = "02:00:00:00:ee:01";
    let mut bed = Bed::new(Underlay::star(3).expect("underlay"));
    // One receive socket in node 0, so the alternation reaches its FDB in arrival order. With
    // several (SO_REUSEPORT), the flows from nodes 1 and 2 may hash to different sockets and
    // workers, and how often the entry moves would depend on how each batches, i.e. on how fast
    // this build is.
    bed.start_with(0, Proto::Vxlan, &[1, 2], &["--queues", "1"]);
    bed.start(1, Proto::Vxlan);
    bed.start(2, Proto::Vxlan);
    let _servers = bed.echo_servers();
    bed.echo(0, 1);
    let moved0 = stat(&bed, 0, "fdb_moved");
    let to = SocketAddr::new(bed.ul.addr(0), VXLAN_PORT);
    let (s1, s2) = (socket_in(bed.ul.node(1), bed.ul.addr(1)), socket_in(bed.ul.node(2), bed.ul.addr(2)));
    let d = vxlan_frame([0x02, 0, 0, 0, 0xee, 0x02], [0x02, 0, 0, 0, 0xee, 0x01]);
    // One thread sends from both: arrivals keep the alternation.
    bed.ul
        .node(0)
        .run(|| {
            for i in 0..FLAPS {
                s1.send_to(&d, to).expect("send from node 1");
                s2.send_to(&d, to).expect("send from node 2");
                if i % 200 == 199 {
                    pace(VXLAN_PORT);
                }
            }
        })
        .expect("enter ns");
    let want = moved0 + u64::from(FLAPS) / 2;
    if !wait_until(SETTLE, || stat(&bed, 0, "fdb_moved") >= want) {
        panic!("fdb_moved did not reach {want}: {}\n{}", bed.stats(0), bed.logs());
    }
    eprintln!("flapping: {} moves counted for {FLAPS} alternations", stat(&bed, 0, "fdb_moved") - moved0);
    // The entry follows the MAC to wherever it was seen last.
    for (node, sock) in [(1, &s1), (2, &s2)] {
        sock.send_to(&d, to).expect("send");
        let dst = bed.ul.addr(node).to_string();
        let follows = wait_until(SETTLE, || {
            fdb_entry(&bed.fdb(0), flapper)
                .is_some_and(|e| e["kind"] == "learned" && e["dst"] == dst.as_str())
        });
        assert!(follows, "{flapper} not learned behind node {node}: {}", bed.fdb(0));
    }
    bed.echo_pair();
    bed.echo(0, 2);
});

// The control socket is 0600: another user can neither read nor change the FDB through it.
netns_test!(unprivileged_user_cannot_change_the_fdb, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    // The directory is searchable by everyone, so only the socket's own mode can refuse.
    std::fs::set_permissions(bed.tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    bed.start(0, Proto::Vxlan);
    let ctl = bed.control(0);
    let mode = std::fs::metadata(&ctl).expect("stat control socket").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");

    let m = "02:00:00:00:00:77";
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .args(["fdb", "add", m, "198.18.0.2", "--control"])
        .arg(&ctl)
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "fdb add as nobody succeeded: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.to_ascii_lowercase().contains("permission"), "unexpected error: {stderr}");
    assert!(fdb_entry(&bed.fdb(0), m).is_none(), "{m} was added by nobody: {}", bed.fdb(0));

    // Reading is refused as well.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .args(["stats", "--json", "--control"])
        .arg(&ctl)
        .output()
        .expect("run setpriv");
    assert!(!out.status.success(), "stats as nobody succeeded: {}", String::from_utf8_lossy(&out.stdout));

    // Root still can (the refusal is about the caller, not a broken socket).
    bed.check(vtep_cmd(bin(), &ctl, &["fdb", "add", m, "198.18.0.2"]), "fdb add as root");
    assert!(fdb_entry(&bed.fdb(0), m).is_some(), "root's fdb add missing: {}", bed.fdb(0));
});

// A peer's vxtap restarts (its TAP is removed and recreated): traffic resumes both ways with
// the other side left running.
netns_test!(peer_restart_traffic_resumes, {
    let mut bed = Bed::mesh(Underlay::pair(Family::V4).expect("underlay"), Proto::Vxlan);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let pid0 = bed.vtep(0).pid();
    let old = bed.vtep(1).pid();
    let status = bed.vtep(1).terminate(Duration::from_secs(5));
    let status = bed.check(status, "terminate node 1");
    assert!(status.success(), "node 1 exit status {status}\n{}", bed.logs());
    assert!(bed.ul.node(1).ip(&["link", "show", "vxt0"]).is_err(), "node 1's TAP survived its vxtap");
    bed.start(1, Proto::Vxlan);
    assert_ne!(bed.vtep(1).pid(), old, "node 1 was not restarted");
    bed.echo(1, 0);
    bed.echo(0, 1);
    assert_eq!(bed.vtep(0).pid(), pid0);
    bed.assert_running(0);
});

/// The overlay addresses of `vxt0` in `ns`.
fn tap_addresses(bed: &Bed, node: usize) -> String {
    bed.check(bed.ul.node(node).ip_out(&["-o", "-4", "addr", "show", "dev", "vxt0"]), "ip addr show")
}

// The TAP is taken down and up by an administrator: vxtap keeps running, the address stays,
// and traffic resumes once the link is up.
netns_test!(tap_down_up_traffic_resumes, {
    let mut bed = Bed::mesh(Underlay::pair(Family::V4).expect("underlay"), Proto::Vxlan);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let ns = bed.ul.node(0);
    bed.check(ns.ip(&["link", "set", "vxt0", "down"]), "link down");
    // While down, a send into the overlay does not reach the peer (the link really is down).
    let r = udp_roundtrip(ns, overlay(1, ECHO_PORT), b"while down", 2, TRY_TIMEOUT);
    assert!(r.is_err(), "echo worked with vxt0 down");
    bed.check(bed.ul.node(0).ip(&["link", "set", "vxt0", "up"]), "link up");
    let addrs = tap_addresses(&bed, 0);
    assert!(addrs.contains("198.19.0.1/24"), "vxt0 lost its address over down/up: {addrs:?}");
    bed.assert_running(0);
    bed.echo_pair();
    bed.assert_running(0);
});

// The local underlay address disappears: sends fail, are counted and reported with the OS
// error in the log; when the address comes back, traffic resumes without a restart.
netns_test!(underlay_address_loss_is_reported_and_recovered, {
    let mut bed = Bed::mesh(Underlay::pair(Family::V4).expect("underlay"), Proto::Vxlan);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let before = bed.stats(0);
    let (send0, tx0) = (stat(&bed, 0, "drop_send"), stat(&bed, 0, "tx_packets"));
    let ns = bed.ul.node(0);
    bed.check(ns.ip(&["addr", "del", "198.18.0.1/24", "dev", "ul0"]), "addr del");
    bed.blast(0, overlay(1, ECHO_PORT), b"underlay gone", 5);
    bed.wait_counter(&bed.control(0), "drop_send", send0 + 5);
    let during = bed.stats(0);
    let reported = wait_until(Duration::from_secs(15), || log_of(&bed, 0).contains("last send error:"));
    let log = log_of(&bed, 0);
    let line = log.lines().find(|l| l.contains("last send error:")).unwrap_or("");
    eprintln!("address loss: stats before {before}\nduring {during}\nlog line: {line}");
    assert!(reported, "no 'last send error:' in node 0's log within 15 s\n{}", bed.logs());
    assert!(line.contains("dropped"), "summary line without 'dropped': {line}");
    assert!(line.contains("send="), "summary line without the send count: {line}");
    assert!(line.contains("os error"), "summary line without the OS error: {line}");
    assert_eq!(stat(&bed, 0, "tx_packets"), tx0, "a send counted as sent without an address");

    bed.check(bed.ul.node(0).ip(&["addr", "add", "198.18.0.1/24", "dev", "ul0"]), "addr add");
    bed.echo_pair();
    assert!(stat(&bed, 0, "tx_packets") > tx0);
    bed.assert_running(0);
});

// With the TAP MTU at the underlay's (1500), a full-size frame encapsulates to 1550 bytes:
// it is counted as too big (never fragmented, never fatal) and small traffic still flows.
netns_test!(oversized_frame_is_counted_not_fatal, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], &["--mtu", "1500"]);
    bed.start(1, Proto::Vxlan);
    let mtu = bed.check(bed.ul.node(0).ip_out(&["-o", "link", "show", "dev", "vxt0"]), "ip link show");
    assert!(mtu.contains("mtu 1500 "), "vxt0 MTU is not 1500: {mtu}");
    let servers = bed.echo_servers();
    bed.echo_pair();
    let (too_big0, replies0) = (stat(&bed, 0, "drop_too_big"), stat(&bed, 0, "tx_icmp_too_big"));
    // 1472 bytes of UDP payload: a 1500-byte IP packet, a 1514-byte frame on the TAP, 1550 bytes
    // on a 1500-byte underlay. DF is set whatever the sender learns, so all three reach vxtap.
    let big = vec![0xa5u8; 1472];
    bed.check(udp_send_df(bed.ul.node(0), overlay(1, ECHO_PORT), &big, 3, Df::Always), "send big");
    bed.wait_counter(&bed.control(0), "drop_too_big", too_big0 + 3);
    std::thread::sleep(QUIET);
    assert_eq!(servers[1].count_of(&big), 0, "the oversized datagram arrived (fragmented?)");
    assert!(stat(&bed, 0, "tx_icmp_too_big") > replies0, "the sender was told the MTU");
    bed.assert_running(0);
    eprintln!("oversized: drop_too_big {} -> {}", too_big0, stat(&bed, 0, "drop_too_big"));
    // Told, the sender's stack fragments what it sends next: a plain socket's datagram arrives.
    let r = udp_roundtrip(bed.ul.node(0), overlay(1, ECHO_PORT), &big, TRIES, TRY_TIMEOUT);
    bed.check(r, "the same datagram once the sender knows the MTU");
    bed.echo_pair();
});

// A stream of bad datagrams is reported by periodic summaries, never a log line per packet.
netns_test!(bad_input_is_logged_as_a_summary_not_per_packet, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start(0, Proto::Vxlan);
    let target = SocketAddr::new(bed.ul.addr(0), VXLAN_PORT);
    let bad = vxlan_packet(0x00, 42); // no I flag
    bed.blast(1, target, &bad, 2000);
    bed.wait_counter(&bed.control(0), "drop_bad_header", 2000);
    // The burst may straddle two summary periods: the counts in the summaries add up to it.
    let reported = |log: &str| -> u64 {
        log.split("bad_header=")
            .skip(1)
            .filter_map(|t| t.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
            .sum()
    };
    let summary = wait_until(Duration::from_secs(15), || reported(&log_of(&bed, 0)) == 2000);
    let log = log_of(&bed, 0);
    assert!(summary, "the summaries do not account for the 2000 bad headers:\n{log}");
    let lines = log.lines().filter(|l| l.contains("bad_header") || l.contains("VXLAN")).count();
    assert!(lines <= 2, "{lines} log lines about 2000 bad datagrams:\n{log}");
});

// Drops the kernel makes on vxtap's behalf, which vxtap itself never sees, are counted too:
// frames the TAP queue had no room for and datagrams the receive socket had no room for, while
// vxtap was not reading (stopped here with SIGSTOP). Both show in `vxtap stats` and in the
// periodic summary, and traffic flows again once vxtap reads.
netns_test!(kernel_drops_at_the_tap_and_the_socket_are_counted, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start(0, Proto::Vxlan);
    bed.start(1, Proto::Vxlan);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    for key in ["drop_kernel_tap", "drop_kernel_socket"] {
        assert_eq!(stat(&bed, 0, key), 0, "{key} before anything was dropped");
    }

    let stopped = bed.vtep(0).signal(libc::SIGSTOP);
    bed.check(stopped, "SIGSTOP");
    // Far more than a TAP queue (1000 frames) and a receive buffer (8 MB, ~1 KB per datagram)
    // hold. The broadcast inner frames are harmless to both nodes once delivered.
    let to_tap = bed.ul.node(0).run(|| {
        let sock = UdpSocket::bind("198.19.0.1:0")?;
        for _ in 0..20_000 {
            sock.send_to(b"queued while vxtap sleeps", overlay(1, ECHO_PORT))?;
        }
        std::io::Result::Ok(())
    });
    let datagram = vxlan_packet(0x08, 42);
    let to_socket =
        udp_send(bed.ul.node(1), SocketAddr::new(bed.ul.addr(0), VXLAN_PORT), &vec![&datagram[..]; 40_000]);
    let resumed = bed.vtep(0).signal(libc::SIGCONT);
    bed.check(resumed, "SIGCONT");
    bed.check(to_tap, "enter node 0").expect("send into the TAP");
    bed.check(to_socket, "send to node 0's socket");

    bed.wait_counter(&bed.control(0), "drop_kernel_tap", 1);
    bed.wait_counter(&bed.control(0), "drop_kernel_socket", 1);
    let summarized = wait_until(Duration::from_secs(15), || {
        let log = log_of(&bed, 0);
        log.contains("kernel_tap=") && log.contains("kernel_socket=")
    });
    assert!(summarized, "no summary names the kernel's drops:\n{}", log_of(&bed, 0));
    bed.assert_running(0);
    bed.echo_pair();
    eprintln!(
        "kernel drops: tap {}, socket {}",
        stat(&bed, 0, "drop_kernel_tap"),
        stat(&bed, 0, "drop_kernel_socket")
    );
});
