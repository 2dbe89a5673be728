//! End-to-end tests of the `vxtap` binary: real TAP devices, real UDP sockets, each test in its
//! own network namespaces (see the `vxtap-testbed` crate). They need root; without it they skip, unless
//! `VXTAP_REQUIRE_NETNS=1` makes that a failure.
//!
//! Conventions: node i has underlay address `Underlay::addr(i)`, overlay 198.19.0.(i+1)/24 on
//! `vxt0`, TAP MAC 02:00:00:00:00:(i+1) and a control socket in the test's temp dir.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vxtap_testbed::{netns_test, tcp_transfer, udp_send, vtep_cmd, Family, Underlay};

/// Two vxtap VTEPs: echo both ways, then each has learned the other's TAP MAC at its underlay
/// address and the protocol's port.
fn pair_echo_and_learning(family: Family, proto: Proto) {
    let bed = Bed::mesh(Underlay::pair(family).expect("underlay"), proto);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    for (me, peer) in [(0, 1), (1, 0)] {
        assert_fdb_entry(&bed.fdb(me), &mac(peer), "learned", bed.ul.addr(peer), proto.default_port());
    }
}

netns_test!(vxlan_v4_pair_echo_and_learning, pair_echo_and_learning(Family::V4, Proto::Vxlan));

netns_test!(geneve_v4_pair_echo_and_learning, pair_echo_and_learning(Family::V4, Proto::Geneve));

netns_test!(vxlan_v6_underlay_echo_and_learning, pair_echo_and_learning(Family::V6, Proto::Vxlan));

/// vxtap in node 0, the kernel's VXLAN device in node 1: traffic flows both ways and each side
/// learns the other. The kernel sends and takes plain datagrams, whatever vxtap's offloads do.
fn kernel_interop(extra: &[&str]) {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], extra);
    let kernel = kernel_vxlan(&bed, 1, 0);
    bed.check(kernel.create(bed.ul.node(1)), "kernel vxlan");
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let kernel_mac = bed.check(bed.ul.node(1).link_mac("vx0"), "kernel MAC");
    assert_fdb_entry(&bed.fdb(0), &kernel_mac, "learned", bed.ul.addr(1), 4789);
    let kfdb = bed.check(bed.ul.node(1).bridge_out(&["fdb", "show", "dev", "vx0"]), "bridge fdb");
    let learned =
        kfdb.lines().any(|l| l.to_ascii_lowercase().starts_with(&mac(0)) && l.contains("dst 198.18.0.1"));
    assert!(learned, "kernel did not learn {} at 198.18.0.1:\n{kfdb}", mac(0));
    // TCP both ways: checksums and segment sizes survive the mix of implementations.
    for (server, client) in [(1, 0), (0, 1)] {
        let r = tcp_transfer(bed.ul.node(server), overlay(server, 5001), bed.ul.node(client), 5 << 20);
        bed.check(r, &format!("tcp {client} -> {server}"));
    }
    assert_offloads_used(&bed, 0, 0, !extra.contains(&"--no-offload"));
}

netns_test!(kernel_vxlan_interop, kernel_interop(&[]));

netns_test!(kernel_vxlan_interop_offloads_off, kernel_interop(&["--no-offload"]));

/// With offloads on, node `tx` segmented TAP super-frames and node `rx` wrote coalesced ones;
/// with them off, neither happened.
fn assert_offloads_used(bed: &Bed, tx: usize, rx: usize, on: bool) {
    let segmented = bed.counter_at(&bed.control(tx), "tx_segmented");
    let coalesced = bed.counter_at(&bed.control(rx), "rx_coalesced");
    if on {
        assert!(
            segmented > 0 && coalesced > 0,
            "offloads unused: {segmented} segmented, {coalesced} coalesced"
        );
    } else {
        assert_eq!((segmented, coalesced), (0, 0), "offloads used although turned off");
    }
}

// Three VTEPs on a bridge: a broadcast reaches each peer exactly once (no re-flooding by the
// receivers), and learned unicast goes to its one destination only.
netns_test!(star_flood_once_and_unicast_stays_unicast, {
    let bed = Bed::mesh(Underlay::star(3).expect("underlay"), Proto::Vxlan);
    let servers = bed.echo_servers();
    let bcast = b"broadcast from A";
    bed.blast(0, SocketAddr::from(([198, 19, 0, 255], ECHO_PORT)), bcast, 1);
    for (j, server) in servers.iter().enumerate().skip(1) {
        assert!(server.wait_for(bcast, 1, SETTLE), "node {j} missed the broadcast\n{}", bed.logs());
    }
    std::thread::sleep(QUIET);
    for (j, server) in servers.iter().enumerate().skip(1) {
        assert_eq!(server.count_of(bcast), 1, "node {j} got the broadcast more than once (re-flooded?)");
    }

    // Learn A<->B first (ARP and FDB), let the noise die down, then count.
    bed.echo(0, 1);
    let (b0, c0) = settled(|| (bed.rx(1), bed.rx(2)));
    bed.blast(0, overlay(1, ECHO_PORT), b"unicast A->B", 100);
    bed.wait_counter(&bed.control(1), "rx_packets", b0 + 100);
    std::thread::sleep(QUIET);
    assert_eq!(bed.rx(2), c0, "unicast A->B leaked to C: {}", bed.stats(2));
});

// Two VNIs in one process per node, sharing one socket: both carry traffic, and traffic on one
// does not show up on the other.
netns_test!(config_file_two_vnis_are_isolated, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    for node in 0..2 {
        let table = |vni| network_toml(&bed, node, vni, &[1 - node], "proto = \"vxlan\"\nport = 4789");
        let path = bed.tmp.join(&format!("n{node}.toml"));
        std::fs::write(&path, table(42) + &table(43)).expect("write config");
        bed.spawn(node, &strings(&["--config", &path.to_string_lossy()]));
    }
    let _servers = bed.echo_servers();
    let (vni42_b, vni43_b) =
        (SocketAddr::from(([198, 19, 42, 2], ECHO_PORT)), SocketAddr::from(([198, 19, 43, 2], ECHO_PORT)));
    bed.echo_to(0, vni42_b);
    bed.echo_to(0, vni43_b);

    let (ctl42, ctl43) = (bed.net_control(1, 42), bed.net_control(1, 43));
    let (rx42, rx43) =
        settled(|| (bed.counter_at(&ctl42, "rx_packets"), bed.counter_at(&ctl43, "rx_packets")));
    bed.blast(0, vni42_b, b"only on VNI 42", 100);
    bed.wait_counter(&ctl42, "rx_packets", rx42 + 100);
    std::thread::sleep(QUIET);
    assert_eq!(bed.counter_at(&ctl43, "rx_packets"), rx43, "VNI 42 traffic reached VNI 43");
});

/// 50 MB over TCP across the overlay, verified by hash at the far end, with offloads on (the
/// default: TSO super-frames segmented, UDP GSO/GRO, coalesced writes) or off.
fn tcp_50mb(proto: Proto, extra: &[&str]) {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start_with(0, proto, &[1], extra);
    bed.start_with(1, proto, &[0], extra);
    let r = tcp_transfer(bed.ul.node(1), overlay(1, 5001), bed.ul.node(0), 50 << 20);
    let report = bed.check(r, "tcp transfer");
    eprintln!(
        "{proto} {extra:?}: {} bytes in {:?}: {:.0} Mbit/s",
        report.bytes, report.duration, report.mbit_per_s
    );
    assert!(bed.rx(1) > 0 && bed.rx(0) > 0);
    assert_offloads_used(&bed, 0, 1, !extra.contains(&"--no-offload"));
}

netns_test!(vxlan_tcp_50mb_hash_verified, tcp_50mb(Proto::Vxlan, &[]));

netns_test!(geneve_tcp_50mb_hash_verified, tcp_50mb(Proto::Geneve, &[]));

netns_test!(vxlan_tcp_50mb_offloads_off, tcp_50mb(Proto::Vxlan, &["--no-offload"]));

netns_test!(
    geneve_tcp_50mb_offloads_off_one_queue,
    tcp_50mb(Proto::Geneve, &["--no-offload", "--queues", "1"])
);

/// Sends each malformed datagram from a plain socket in node 1 to node 0's vxtap and checks that
/// the named drop counter rises; afterwards, real traffic still flows.
fn assert_drops(proto: Proto, cases: &[(&str, Vec<u8>)]) {
    let bed = Bed::mesh(Underlay::pair(Family::V4).expect("underlay"), proto);
    let target = SocketAddr::new(bed.ul.addr(0), proto.default_port());
    let ctl = bed.control(0);
    for (key, datagram) in cases {
        let before = bed.counter_at(&ctl, key);
        bed.check(udp_send(bed.ul.node(1), target, &[datagram.as_slice()]), "send malformed");
        bed.wait_counter(&ctl, key, before + 1);
    }
    let _servers = bed.echo_servers();
    bed.echo(1, 0);
    bed.echo(0, 1);
}

netns_test!(
    vxlan_malformed_datagrams_are_counted,
    assert_drops(
        Proto::Vxlan,
        &[
            ("drop_truncated", vec![0x08, 0, 0, 0]),
            ("drop_unknown_vni", vxlan_packet(0x08, 99)),
            ("drop_bad_header", vxlan_packet(0x00, 42)),
        ],
    )
);

netns_test!(
    geneve_malformed_datagrams_are_counted,
    assert_drops(
        Proto::Geneve,
        &[
            ("drop_truncated", vec![0, 0, 0x65, 0x58]),
            ("drop_unknown_vni", geneve_packet(0, false, 99, &[])),
            // Option class 0x0102, type 0x80 (critical bit set), no data.
            ("drop_geneve_critical_option", geneve_packet(0, true, 42, &[0x01, 0x02, 0x80, 0x00])),
            ("drop_geneve_version", geneve_packet(1, false, 42, &[])),
        ],
    )
);

// Static entries added over the control socket show up as static and go away on delete.
netns_test!(fdb_add_and_del_static_entry, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start(0, Proto::Vxlan);
    let (ctl, m) = (bed.control(0), "02:00:00:00:00:99");
    bed.check(vtep_cmd(bin(), &ctl, &["fdb", "add", m, "198.18.0.2"]), "fdb add");
    assert_fdb_entry(&bed.fdb(0), m, "static", bed.ul.addr(1), 4789);
    let wrong_family = vtep_cmd(bin(), &ctl, &["fdb", "add", "02:00:00:00:00:98", "2001:db8::2"]);
    let err = wrong_family.expect_err("an IPv6 VTEP on an IPv4 underlay was accepted");
    assert!(format!("{err:#}").contains("address families differ"), "{err:#}");
    bed.check(vtep_cmd(bin(), &ctl, &["fdb", "del", m]), "fdb del");
    assert!(fdb_entry(&bed.fdb(0), m).is_none(), "{m} still in fdb: {}", bed.fdb(0));
});

// SIGTERM: exit 0 promptly, with the TAP and the control socket removed.
netns_test!(sigterm_exits_cleanly, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start(0, Proto::Vxlan);
    assert!(bed.control(0).exists(), "control socket missing while running");
    let t = Instant::now();
    let status = bed.vtep(0).terminate(Duration::from_secs(2));
    let status = bed.check(status, "terminate");
    assert!(status.success(), "exit status {status}\n{}", bed.logs());
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert!(bed.ul.node(0).ip(&["link", "show", "vxt0"]).is_err(), "vxt0 survived SIGTERM");
    assert!(!bed.control(0).exists(), "control socket survived SIGTERM");
});

/// Sets offloads on the TAP `dev` the way an earlier process with a virtio-net header would have
/// left them on a persistent device (TUNSETOFFLOAD is device-wide and outlives the process).
fn leave_stale_offloads(dev: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let tun = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    // SAFETY: ifreq is plain data; TUNSETIFF reads it; TUNSETOFFLOAD takes an int by value.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(dev.bytes()) {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        if libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = (libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6) as libc::c_uint;
        if libc::ioctl(tun.as_raw_fd(), libc::TUNSETOFFLOAD, flags) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn tso_on(bed: &Bed, node: usize) -> bool {
    let out = bed.check(bed.ul.node(node).exec(&["ethtool", "-k", "vxt0"]), "ethtool -k");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "tcp-segmentation-offload: on")
}

// A persistent (single-queue) TAP that exists already is reused: with --no-offload its stale
// offloads are reset (or bulk TCP would break while ping works), traffic flows, and it is left
// in place on exit since vxtap did not create it.
netns_test!(reused_persistent_tap_has_offloads_reset_and_survives_exit, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.check(bed.ul.node(0).ip(&["tuntap", "add", "dev", "vxt0", "mode", "tap"]), "tuntap add");
    bed.check(
        bed.ul.node(0).run(|| leave_stale_offloads("vxt0")).map(|r| r.map_err(anyhow::Error::from)),
        "setns",
    )
    .unwrap_or_else(|e| panic!("setting stale offloads: {e}"));
    assert!(tso_on(&bed, 0), "precondition: TSO left on");
    bed.start_with(0, Proto::Vxlan, &[1], &["--no-offload"]);
    bed.start(1, Proto::Vxlan);
    assert!(!tso_on(&bed, 0), "vxtap kept the stale TSO offload");
    let r = tcp_transfer(bed.ul.node(1), overlay(1, 5001), bed.ul.node(0), 4 << 20);
    bed.check(r, "tcp over the reused TAP");
    let status = bed.vtep(0).terminate(Duration::from_secs(2));
    assert!(bed.check(status, "terminate").success());
    assert!(bed.ul.node(0).ip(&["link", "show", "vxt0"]).is_ok(), "a TAP vxtap did not create was removed");
});

/// Node 2 is no VTEP of node 0's: its datagrams, with a valid header and node 0's VNI, are dropped
/// before parsing and nothing is learned from them; `--allow-from any` (the kernel's behaviour)
/// lets them in.
fn spoofed_vni(open: bool) {
    let mut bed = Bed::new(Underlay::star(3).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], if open { &["--allow-from", "any"] } else { &[] });
    bed.start_with(1, Proto::Vxlan, &[0], &[]);
    let _servers = bed.echo_servers();
    bed.echo(0, 1);
    let ctl = bed.control(0);
    let rx = settled(|| bed.rx(0));
    let spoof = vxlan_packet(0x08, 42);
    let spoofed_mac = "02:00:00:00:00:63"; // the inner frame's source
    bed.blast(2, SocketAddr::new(bed.ul.addr(0), 4789), &spoof, 10);
    if open {
        bed.wait_counter(&ctl, "rx_packets", rx + 10);
        assert_fdb_entry(&bed.fdb(0), spoofed_mac, "learned", bed.ul.addr(2), 4789);
    } else {
        bed.wait_counter(&ctl, "drop_not_allowed", 10);
        assert_eq!(bed.rx(0), rx, "a spoofed frame reached the TAP");
        assert!(fdb_entry(&bed.fdb(0), spoofed_mac).is_none(), "learned from an unlisted host");
        // Making node 2 a VTEP at runtime (a flood-list entry) lets it in.
        bed.check(vtep_cmd(bin(), &ctl, &["fdb", "add", "00:00:00:00:00:00", "198.18.0.3"]), "fdb add");
        bed.blast(2, SocketAddr::new(bed.ul.addr(0), 4789), &spoof, 10);
        bed.wait_counter(&ctl, "rx_packets", rx + 10);
    }
    bed.echo(1, 0);
}

netns_test!(unlisted_source_cannot_inject_frames, spoofed_vni(false));

netns_test!(allow_from_any_accepts_every_source, spoofed_vni(true));

// `--user`: once set up, vxtap runs as that user with no capability left, its control socket
// belongs to the user, traffic flows, and SIGTERM still exits cleanly.
netns_test!(runs_unprivileged_after_setup, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], &["--user", "nobody"]);
    bed.start(1, Proto::Vxlan);
    let status = std::fs::read_to_string(format!("/proc/{}/status", bed.vtep(0).pid())).expect("status");
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
    };
    assert_eq!(field("Uid:"), Some(vec!["65534"; 4]), "{status}");
    assert_eq!(field("CapEff:"), Some(vec!["0000000000000000"]), "{status}");
    assert_eq!(field("CapPrm:"), Some(vec!["0000000000000000"]), "{status}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(bed.control(0)).expect("socket").uid(), 65534);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let status = bed.vtep(0).terminate(Duration::from_secs(2));
    assert!(bed.check(status, "terminate").success());
});

/// A burst of same-size UDP datagrams crosses intact and in order. With offloads on and a TAP
/// that took USO, the receiver merged them into UDP super-frames (fewer TAP writes than
/// datagrams); with them off it did not.
///
/// The burst goes out in windows of `WINDOW` back-to-back datagrams, each sent once the receiver
/// has all but the last window: never more than two windows in flight, far less than the sender's
/// TAP queue (1000 frames) holds, so how many arrive does not depend on how fast this build of
/// vxtap drains it. Each window is still a burst for the receiver to coalesce.
fn udp_burst(extra: &[&str]) {
    const N: u32 = 2000;
    const LEN: usize = 200;
    const WINDOW: usize = 250;
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], extra);
    bed.start_with(1, Proto::Vxlan, &[0], extra);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let to = overlay(1, 7100);
    let socket = bed.check(
        bed.ul.node(1).run(|| -> std::io::Result<std::net::UdpSocket> {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            s.set_recv_buffer_size(8 << 20)?;
            s.bind(&to.into())?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            Ok(s.into())
        }),
        "setns",
    );
    let socket = socket.unwrap_or_else(|e| panic!("binding {to}: {e}"));
    let datagram = |seq: u32| -> Vec<u8> {
        let mut d = seq.to_be_bytes().to_vec();
        d.extend((0..LEN - 4).map(|i| (i as u32 ^ seq) as u8));
        d
    };
    let received = Arc::new(AtomicUsize::new(0));
    let sent_all = Arc::new(AtomicBool::new(false));
    let counter = std::thread::spawn({
        let (received, sent_all) = (received.clone(), sent_all.clone());
        move || {
            let (mut got, mut buf) = (Vec::new(), [0u8; 2048]);
            loop {
                match socket.recv(&mut buf) {
                    Ok(len) => {
                        got.push(buf[..len].to_vec());
                        received.store(got.len(), Ordering::Relaxed);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if sent_all.load(Ordering::Relaxed) {
                            return got;
                        }
                    }
                    Err(e) => panic!("receiving the burst: {e}"),
                }
            }
        }
    });
    // One sending socket, hence one flow, kept in order end to end.
    let sender = bed.check(bed.ul.node(0).run(|| std::net::UdpSocket::bind("0.0.0.0:0")), "setns");
    let sender = sender.unwrap_or_else(|e| panic!("binding the sender: {e}"));
    for (k, seqs) in (0..N).collect::<Vec<_>>().chunks(WINDOW).enumerate() {
        // Bounded: if datagrams were lost, the burst goes on and the count below tells.
        wait_until(SETTLE, || received.load(Ordering::Relaxed) + WINDOW >= k * WINDOW);
        for &seq in seqs {
            sender.send_to(&datagram(seq), to).unwrap_or_else(|e| panic!("sending datagram {seq}: {e}"));
        }
    }
    // The tail: everything arrived, or nothing more is arriving.
    settled(|| received.load(Ordering::Relaxed));
    sent_all.store(true, Ordering::Relaxed);
    let got = counter.join().expect("receiver thread");
    let mut last = None;
    for d in &got {
        let seq = u32::from_be_bytes(d[..4].try_into().unwrap());
        assert_eq!(d, &datagram(seq), "datagram {seq} corrupted");
        assert!(last < Some(seq), "datagram {seq} after {last:?}: reordered or duplicated");
        last = Some(seq);
    }
    assert!(got.len() as u32 >= N / 2, "only {} of {N} datagrams arrived\n{}", got.len(), bed.logs());
    let coalesced = bed.counter_at(&bed.control(1), "rx_coalesced");
    let uso = bed.vtep(1).log().contains("uso=true");
    match (extra.contains(&"--no-offload"), uso) {
        (true, _) => assert_eq!(coalesced, 0, "offloads off, yet coalesced"),
        (false, true) => assert!(coalesced > 0, "a TAP with USO got no UDP super-frame"),
        (false, false) => eprintln!("this kernel's TAP has no USO: UDP is not coalesced"),
    }
    eprintln!("{extra:?}: {} of {N} datagrams, {coalesced} super-frames", got.len());
}

netns_test!(udp_burst_intact_and_coalesced, udp_burst(&[]));

netns_test!(udp_burst_intact_offloads_off, udp_burst(&["--no-offload"]));

/// The CPUs each of `pid`'s queue threads may run on, by thread name (`q<N>-<port>`).
fn queue_thread_cpus(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        if !comm.starts_with('q') {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("").trim();
        out.push((comm, cpus.to_string()));
    }
    out.sort();
    out
}

// CPU pinning (--cpu-pinning, the latency mode): with one queue per CPU, queue q's thread may run
// on CPU q only (the TAP steers frames to the queue of their CPU); by default they are free.
netns_test!(queue_threads_stay_on_their_cpus, {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], &["--cpu-pinning"]);
    bed.start(1, Proto::Vxlan);
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let pinned = queue_thread_cpus(bed.vtep(0).pid());
    assert_eq!(pinned.len(), ncpu, "one queue thread per CPU: {pinned:?}");
    for (q, (name, cpus)) in pinned.iter().enumerate() {
        assert!(name.starts_with(&format!("q{q}-")), "{pinned:?}");
        assert_eq!(cpus, &q.to_string(), "thread {name}");
    }
    let free = queue_thread_cpus(bed.vtep(1).pid());
    let all = if ncpu == 1 { "0".to_string() } else { format!("0-{}", ncpu - 1) };
    assert!(free.iter().all(|(_, cpus)| *cpus == all), "{free:?}");
});
