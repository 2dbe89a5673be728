//! Validates the test bed (the `vxtap-testbed` crate) itself against the kernel's own VXLAN
//! device, without vxtap: if these fail, the end-to-end tests' failures say nothing about vxtap.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vxtap_testbed::{
    netns_test, tcp_transfer, udp_echo_server, udp_roundtrip, Family, KernelVxlan, Netns, TempDir, Underlay,
    Vtep,
};

/// Kernel VXLAN (VNI 42, port 4789) in both nodes of a pair, overlay 198.19.0.1/24 and .2.
fn kernel_pair(family: Family) -> Underlay {
    let ul = Underlay::pair(family).expect("underlay");
    for (me, peer) in [(0, 1), (1, 0)] {
        KernelVxlan {
            dev: "vx0".into(),
            vni: 42,
            port: 4789,
            local: ul.addr(me),
            remote: ul.addr(peer),
            address: format!("198.19.0.{}/24", me + 1),
        }
        .create(ul.node(me))
        .expect("kernel vxlan");
    }
    ul
}

fn overlay(i: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([198, 19, 0, i], port))
}

fn echo_both_ways(ul: &Underlay) {
    let _servers: Vec<_> =
        (0..2).map(|i| udp_echo_server(ul.node(i), "0.0.0.0:7000".parse().unwrap()).unwrap()).collect();
    for (from, to) in [(0, 1), (1, 0)] {
        udp_roundtrip(ul.node(from), overlay(to as u8 + 1, 7000), b"hello", 20, Duration::from_millis(500))
            .expect("echo across kernel vxlan");
    }
}

netns_test!(kernel_vxlan_v4_udp_and_tcp, {
    let ul = kernel_pair(Family::V4);
    echo_both_ways(&ul);
    let report = tcp_transfer(ul.node(1), overlay(2, 5001), ul.node(0), 50 << 20).expect("tcp transfer");
    eprintln!("kernel vxlan: {report:?}");
    assert_eq!(report.bytes, 50 << 20);
});

netns_test!(kernel_vxlan_v6_underlay, {
    let ul = kernel_pair(Family::V6);
    echo_both_ways(&ul);
});

netns_test!(star_underlay_reaches_every_host, {
    let ul = Underlay::star(3).expect("star");
    let _server = udp_echo_server(ul.node(2), "0.0.0.0:7000".parse().unwrap()).unwrap();
    for from in 0..2 {
        let to = SocketAddr::new(ul.addr(2), 7000);
        udp_roundtrip(ul.node(from), to, b"ping", 10, Duration::from_millis(500)).expect("underlay echo");
    }
});

netns_test!(netns_is_removed_on_drop_and_tap_ipv6_is_off, {
    let ns = Netns::new("drop").unwrap();
    let name = ns.name().to_owned();
    ns.ip(&["tuntap", "add", "dev", "t0", "mode", "tap"]).unwrap();
    let v6 = ns.exec(&["cat", "/proc/sys/net/ipv6/conf/t0/disable_ipv6"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&v6.stdout).trim(), "1", "new devices must start without IPv6");
    assert!(ns.ip(&["link", "show", "nonexistent0"]).is_err());
    drop(ns);
    assert!(!Path::new("/run/netns").join(&name).exists(), "{name} survived drop");
});

/// A shell script standing in for vxtap (it gets `run` as $1).
fn fake_vxtap(tmp: &TempDir, body: &str) -> PathBuf {
    let script = tmp.join("fake-vxtap");
    std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

// The PID held by Vtep must be the program itself (ip netns exec execs in place), so SIGTERM
// reaches it: a stand-in script that exits 0 only on SIGTERM proves it.
netns_test!(vtep_signals_reach_the_program, {
    let tmp = TempDir::new("sig").unwrap();
    let script = fake_vxtap(&tmp, "trap 'exit 0' TERM\necho \"$1: ready\" >&2\nwhile :; do sleep 0.05; done");
    let ns = Netns::new("sig").unwrap();
    let mut vtep = Vtep::spawn(&ns, &script, &[]).expect("spawn");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", vtep.pid())).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("fake-vxtap"), "pid is not the program itself");
    let t = Instant::now();
    let status = vtep.terminate(Duration::from_secs(2)).expect("terminate");
    assert!(status.success(), "{status}; log: {}", vtep.log());
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(vtep.log().contains("run: ready"));
});

netns_test!(vtep_early_exit_is_an_error_with_the_log, {
    let tmp = TempDir::new("early").unwrap();
    let script = fake_vxtap(&tmp, "echo \"device vxt0 already exists\" >&2\nexit 3");
    let ns = Netns::new("early").unwrap();
    let err = Vtep::spawn(&ns, &script, &[]).err().expect("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("already exists") && msg.contains("exit"), "{msg}");
});
