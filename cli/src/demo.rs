//! `vxtap demo`: the quickstart's main job. Two network namespaces joined by a veth pair, a vxtap
//! VTEP in each, traffic across the overlay (UDP echo round trips and a hash-verified TCP
//! transfer), then what each VTEP learned and counted; everything is removed at the end, also on
//! error, by the test bed's guards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use vxtap::wire::Proto;
use vxtap_testbed::{
    etcd_installed, netns_available, stats_json, tcp_transfer, udp_echo_server, udp_roundtrip, vtep_cmd,
    Etcd, Family, TempDir, Underlay, Vtep,
};

const ECHO_PORT: u16 = 7000;
const TCP_PORT: u16 = 5001;
const PINGS: u32 = 20;

pub fn run(proto: Proto, megabytes: usize) -> Result<()> {
    netns_available().map_err(|why| {
        anyhow!("vxtap demo needs root and iproute2 (`ip`) to create network namespaces: {why}")
    })?;
    if megabytes == 0 || megabytes > 10_000 {
        return Err(anyhow!("--megabytes must be between 1 and 10000"));
    }
    let bin = std::env::current_exe().context("locating the vxtap binary")?;
    let tmp = TempDir::new("demo")?;
    let underlay = Underlay::pair(Family::V4)?;
    println!("vxtap demo: {proto} over a veth pair between two network namespaces");
    println!(
        "  underlay  A {} <-> B {}  ({} and {})",
        underlay.addr(0),
        underlay.addr(1),
        underlay.node(0).name(),
        underlay.node(1).name()
    );

    let mut vteps = Vec::new();
    for (me, peer) in [(0usize, 1usize), (1, 0)] {
        let control = tmp.join(&format!("{}.sock", ["a", "b"][me]));
        let args: Vec<String> = [
            "--dev",
            "vxt0",
            "--vni",
            "42",
            "--proto",
            &proto.to_string(),
            "--local",
            &underlay.addr(me).to_string(),
            "--remote",
            &underlay.addr(peer).to_string(),
            "--address",
            &format!("198.19.0.{}/24", me + 1),
            "--control",
            &control.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        println!("  VTEP {}    vxtap run {}", ["A", "B"][me], args.join(" "));
        let vtep = Vtep::spawn(underlay.node(me), &bin, &args)
            .with_context(|| format!("starting VTEP {}", ["A", "B"][me]))?;
        vteps.push((vtep, control));
    }

    let b_echo = SocketAddr::from(([198, 19, 0, 2], ECHO_PORT));
    let _server = udp_echo_server(underlay.node(1), b_echo)?;
    // The first round trip also resolves ARP and teaches both FDBs.
    udp_roundtrip(underlay.node(0), b_echo, b"hello", 20, Duration::from_millis(500))?;
    let mut rtts = Vec::new();
    for i in 0..PINGS {
        let t = Instant::now();
        udp_roundtrip(underlay.node(0), b_echo, format!("ping {i}").as_bytes(), 3, Duration::from_secs(1))?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    println!(
        "\nUDP echo A -> B over the overlay: {PINGS} round trips, min {:?} median {:?} max {:?}",
        rtts[0],
        rtts[rtts.len() / 2],
        rtts[rtts.len() - 1]
    );

    let report = tcp_transfer(
        underlay.node(1),
        SocketAddr::from(([198, 19, 0, 2], TCP_PORT)),
        underlay.node(0),
        megabytes << 20,
    )?;
    println!(
        "TCP A -> B: {} MB in {:.2} s = {:.0} Mbit/s, content verified (FNV-1a {:016x} on both ends)",
        report.bytes >> 20,
        report.duration.as_secs_f64(),
        report.mbit_per_s,
        report.hash
    );

    for (i, (_, control)) in vteps.iter().enumerate() {
        let name = ["A", "B"][i];
        println!("\nVTEP {name}: vxtap fdb show");
        print!("{}", indent(&vtep_cmd(&bin, control, &["fdb", "show"])?));
        let stats = stats_json(&bin, control)?;
        let shown: Vec<String> = stats
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| !k.starts_with("drop_") || v.as_u64() != Some(0))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("VTEP {name}: vxtap stats (drop counters that are zero left out)\n  {}", shown.join(" "));
    }

    for (vtep, _) in &mut vteps {
        vtep.terminate(Duration::from_secs(2))?;
    }
    println!("\nBoth VTEPs stopped with SIGTERM; namespaces, veth and TAPs are being removed.");
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `vxtap demo --cluster`: three namespaces on one bridge and a fourth running a throw-away
/// etcd; three VTEPs with `--etcd` and no `--remote` find each other, talk, and see one leave.
pub fn cluster(proto: Proto) -> Result<()> {
    netns_available().map_err(|why| {
        anyhow!("vxtap demo needs root and iproute2 (`ip`) to create network namespaces: {why}")
    })?;
    if !vxtap::control::cluster::SUPPORTED {
        return Err(anyhow!("{}", vxtap::control::cluster::UNSUPPORTED));
    }
    etcd_installed().map_err(|why| anyhow!("vxtap demo --cluster runs a throw-away etcd: {why}"))?;
    let bin = std::env::current_exe().context("locating the vxtap binary")?;
    let tmp = TempDir::new("demo")?;
    let underlay = Underlay::star(4)?;
    let etcd = Etcd::start(underlay.node(3), underlay.addr(3))?;
    println!("vxtap demo --cluster: {proto}, three hosts and an etcd on one bridge");
    println!("  etcd      {} (in {})", etcd.endpoint(), underlay.node(3).name());
    let names = ["host-a", "host-b", "host-c"];
    let mut vteps = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let control = tmp.join(&format!("{name}.sock"));
        let args: Vec<String> = [
            "--dev",
            "vxt0",
            "--vni",
            "42",
            "--proto",
            &proto.to_string(),
            "--local",
            &underlay.addr(i).to_string(),
            "--address",
            &format!("198.19.0.{}/24", i + 1),
            "--control",
            &control.to_string_lossy(),
            "--etcd",
            &etcd.endpoint(),
            "--node",
            name,
            "--proxy",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        println!("  {name}    vxtap run {}", args.join(" "));
        let vtep = Vtep::spawn(underlay.node(i), &bin, &args).with_context(|| format!("starting {name}"))?;
        vteps.push((vtep, control));
    }

    let members = |control: &std::path::Path| -> Result<u64> {
        Ok(stats_json(&bin, control)?.get("etcd_members").and_then(|v| v.as_u64()).unwrap_or(0))
    };
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(30);
    for (i, (_, control)) in vteps.iter().enumerate() {
        while members(control)? < 2 {
            if Instant::now() >= deadline {
                return Err(anyhow!("{} did not see the two others within 30 s", names[i]));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!(
        "\nEvery VTEP knows the two others {:?} after the last one started (no --remote anywhere)",
        t0.elapsed()
    );

    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(udp_echo_server(
            underlay.node(i),
            SocketAddr::from(([198, 19, 0, i as u8 + 1], ECHO_PORT)),
        )?);
    }
    for from in 0..3 {
        for to in (0..3).filter(|&to| to != from) {
            let addr = SocketAddr::from(([198, 19, 0, to as u8 + 1], ECHO_PORT));
            udp_roundtrip(underlay.node(from), addr, b"hello", 20, Duration::from_millis(500))?;
        }
    }
    println!("UDP echo between every pair over the overlay: ok");

    let a = &vteps[0].1.clone();
    for (what, args) in [
        ("fdb show", &["fdb", "show"][..]),
        ("peers", &["peers"][..]),
        ("neigh show", &["neigh", "show"][..]),
    ] {
        println!("\nhost-a: vxtap {what}");
        print!("{}", indent(&vtep_cmd(&bin, a, args)?));
    }
    let stats = stats_json(&bin, a)?;
    let shown: Vec<String> = stats
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("etcd_") || k.ends_with("_suppressed"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("host-a: vxtap stats (cluster and suppression counters)\n  {}", shown.join(" "));

    let t = Instant::now();
    vteps[2].0.terminate(Duration::from_secs(2))?;
    while members(a)? != 1 {
        if t.elapsed() > Duration::from_secs(10) {
            return Err(anyhow!("host-a still lists host-c 10 s after it stopped"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("\nhost-c stopped with SIGTERM (its lease revoked): host-a dropped it within {:?}", t.elapsed());

    drop(servers);
    for (vtep, _) in vteps.iter_mut().take(2) {
        vtep.terminate(Duration::from_secs(2))?;
    }
    println!("All VTEPs stopped; etcd, namespaces, veth and TAPs are being removed.");
    Ok(())
}
