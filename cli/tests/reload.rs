//! Live reload end to end (`vxtap reload`, SIGHUP), with real processes in two namespaces: node
//! 0 runs from a config file that the tests rewrite and reload while a paced, sequence-numbered
//! UDP flow crosses network 42, which never changes; at the end not one datagram of it may be
//! missing, either way. Node 1 runs networks 42, 43 and 44 throughout.
//!
//! Conventions: network `v` of node i is TAP `vxt<v>`, VNI v, overlay 198.19.<v>.(i+1)/24, MAC
//! 02:00:00:<v>:00:(i+1), control socket `n<i>-<v>.sock` in the test's temp dir; underlay as in
//! tests/e2e.rs (node i at 198.18.0.(i+1)).

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use vxtap_testbed::{netns_test, Family, Netns, Underlay, UNDERLAY_DEV};

/// Network `vni` of node `node` (laid out as [`network_toml`] says) flooding to the other node,
/// with two queues and `extra` keys.
fn network(bed: &Bed, node: usize, vni: u32, extra: &str) -> String {
    network_toml(bed, node, vni, &[1 - node], &format!("queues = 2\n{extra}"))
}

/// Node 0's configuration file.
fn config0(bed: &Bed) -> PathBuf {
    bed.tmp.join("n0.toml")
}

/// Starts node 1 with networks 42, 43 and 44, and node 0 with the configuration `text`.
fn start(bed: &mut Bed, text: &str) {
    let one = bed.tmp.join("n1.toml");
    let nets: String = [42, 43, 44].iter().map(|&v| network(bed, 1, v, "")).collect();
    std::fs::write(&one, nets).expect("write config");
    bed.spawn(1, &strings(&["--config", &one.to_string_lossy()]));
    std::fs::write(config0(bed), text).expect("write config");
    let path = config0(bed).to_string_lossy().into_owned();
    bed.spawn(0, &strings(&["--config", &path]));
}

/// `vxtap reload --control <control> --json` as a command's output, whatever its status.
fn reload_at(control: &Path) -> Output {
    Command::new(bin()).args(["reload", "--json", "--control"]).arg(control).output().expect("running vxtap")
}

/// Writes node 0's configuration and reloads it through the control socket of `via`; it must
/// succeed. Returns each network's row, by TAP name.
fn reload(bed: &Bed, text: &str, via: u32) -> Vec<Value> {
    std::fs::write(config0(bed), text).expect("write config");
    let out = reload_at(&bed.net_control(0, via));
    assert!(
        out.status.success(),
        "vxtap reload: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        bed.logs()
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("reload --json output");
    v["networks"].as_array().expect("networks").clone()
}

/// The row of `dev` in a reload's output.
fn row<'a>(rows: &'a [Value], dev: &str) -> &'a Value {
    rows.iter().find(|r| r["dev"] == dev).unwrap_or_else(|| panic!("no row for {dev}: {rows:?}"))
}

fn action(rows: &[Value], dev: &str) -> String {
    row(rows, dev)["action"].as_str().expect("action").to_string()
}

/// Writes node 0's configuration and reloads it; it must be refused, with `reason` in the error.
fn reload_refused(bed: &Bed, text: &str, reason: &str) {
    std::fs::write(config0(bed), text).expect("write config");
    let out = reload_at(&bed.net_control(0, 42));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad file was accepted: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains(reason), "the refusal does not say {reason:?}: {stderr}");
}

/// The FDB of node 0's network `vni` as (MAC, destination, kind), ages left out.
fn fdb_of(bed: &Bed, vni: u32) -> BTreeSet<(String, String, String)> {
    let fdb = bed.check(vxtap_testbed::fdb_json(bin(), &bed.net_control(0, vni)), "fdb show");
    fdb.as_array()
        .expect("array")
        .iter()
        .map(|e| (e["mac"].as_str().unwrap().to_string(), e["dst"].to_string(), e["kind"].to_string()))
        .collect()
}

/// The counters of node 0's network `vni` that no traffic of the test moves while nothing
/// changes: drops by reason (but the kernel's) and FDB sizes.
fn quiet_stats(bed: &Bed, vni: u32) -> Vec<(String, u64)> {
    let stats = bed.stats_at(&bed.net_control(0, vni));
    let keep = |k: &str| (k.starts_with("drop_") && !k.starts_with("drop_kernel")) || k.starts_with("fdb_");
    stats
        .as_object()
        .expect("object")
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

fn has_entry(bed: &Bed, vni: u32, mac: &str, kind: &str) -> bool {
    fdb_of(bed, vni).iter().any(|(m, _, k)| m == mac && k == &format!("\"{kind}\""))
}

/// The interface index of `dev` in `ns`, if it exists.
fn ifindex(ns: &Netns, dev: &str) -> Option<u64> {
    let out = ns.ip_out(&["-j", "link", "show", "dev", dev]).ok()?;
    serde_json::from_str::<Value>(&out).ok()?[0]["ifindex"].as_u64()
}

fn link_mtu(ns: &Netns, dev: &str) -> Option<u64> {
    let out = ns.ip_out(&["-j", "link", "show", "dev", dev]).ok()?;
    serde_json::from_str::<Value>(&out).ok()?[0]["mtu"].as_u64()
}

/// A VXLAN datagram of VNI `vni` (a broadcast frame from 02:00:00:00:00:63) sent from the
/// underlay address `from` of node 1 to `to`.
fn send_vxlan(bed: &Bed, from: Ipv4Addr, to: SocketAddr, vni: u32) {
    let r = bed.ul.node(1).run(move || -> std::io::Result<()> {
        let sock = UdpSocket::bind((from, 0))?;
        sock.send_to(&vxlan_packet(0x08, vni), to).map(drop)
    });
    bed.check(r.and_then(|r| r.map_err(anyhow::Error::from)), "sending a VXLAN datagram");
}

// ---------------------------------------------------------------------------------------------
// The flow through network 42
// ---------------------------------------------------------------------------------------------

const FLOW_PORT: u16 = 7100;
/// Datagrams the flow sends at least, one per millisecond.
const FLOW_MIN: u64 = 2000;
const FLOW_GAP: Duration = Duration::from_millis(1);

/// Sequence numbers seen, each once.
type Seen = Arc<Mutex<BTreeSet<u64>>>;

/// A paced flow of sequence-numbered datagrams from node 1 to node 0 over network 42, echoed
/// back by node 0: what node 0 received and what came back are both counted.
struct Flow {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    sender: Option<JoinHandle<u64>>,
    threads: Vec<JoinHandle<()>>,
    received: Seen,
    echoed: Seen,
}

/// A UDP socket's receive loop until `done`: records each datagram's sequence number in `seen`
/// and, with `echo`, sends it back.
fn receive(sock: UdpSocket, seen: Seen, done: Arc<AtomicBool>, echo: bool) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 2048];
    while !done.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n >= 8 {
                let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
                seen.lock().unwrap_or_else(|e| e.into_inner()).insert(seq);
                if echo {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        }
    }
}

impl Flow {
    fn start(bed: &Bed) -> Flow {
        let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (received, echoed): (Seen, Seen) = Default::default();
        let bind = |node: usize, port: u16| {
            let r = bed.ul.node(node).run(move || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)));
            bed.check(r.and_then(|r| r.map_err(anyhow::Error::from)), "binding a flow socket")
        };
        let (server, client) = (bind(0, FLOW_PORT), bind(1, 0));
        let to = SocketAddr::from(([198, 19, 42, 1], FLOW_PORT));
        let back = client.try_clone().expect("clone");
        let (r, d) = (received.clone(), done.clone());
        let t1 = std::thread::spawn(move || receive(server, r, d, true));
        let (e, d) = (echoed.clone(), done.clone());
        let t2 = std::thread::spawn(move || receive(back, e, d, false));
        let s = stop.clone();
        // Paced by deadlines: a late wake-up is made up for, a stall is not turned into a burst.
        let sender = std::thread::spawn(move || {
            let mut payload = [0x5a_u8; 64];
            let (mut seq, mut next) = (0u64, Instant::now());
            while !(s.load(Ordering::Relaxed) && seq >= FLOW_MIN) {
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                let _ = client.send_to(&payload, to);
                seq += 1;
                next += FLOW_GAP;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else if now - next > Duration::from_millis(20) {
                    next = now;
                }
            }
            seq
        });
        Flow { stop, done, sender: Some(sender), threads: vec![t1, t2], received, echoed }
    }

    /// Stops the sender, waits for the stragglers and returns how many were sent and the
    /// sequence numbers missing at node 0 and back at node 1.
    fn finish(mut self) -> (u64, Vec<u64>, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.take().expect("sender").join().expect("sender panicked");
        let missing = |seen: &Seen| -> Vec<u64> {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            (0..sent).filter(|s| !seen.contains(s)).collect()
        };
        wait_until(Duration::from_secs(10), || {
            missing(&self.received).is_empty() && missing(&self.echoed).is_empty()
        });
        let (lost_there, lost_back) = (missing(&self.received), missing(&self.echoed));
        (sent, lost_there, lost_back)
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.done.store(true, Ordering::Relaxed);
        if let Some(s) = self.sender.take() {
            let _ = s.join();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// A static entry node 0's network 43 starts with, and the one a reload puts instead.
const STATIC_OLD: &str = "02:00:00:00:00:66";
const STATIC_NEW: &str = "02:00:00:00:00:77";
/// Added at run time (`vxtap fdb add`): no configuration's, so no reload removes it.
const RUNTIME: &str = "02:00:00:00:00:55";
/// The inner source of the hand-made datagrams.
const CRAFTED_SRC: &str = "02:00:00:00:00:63";
/// A second underlay address of node 1, allowed by network 43's `allow_from` at first.
const ALLOWED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);

// Networks added, removed, changed in place and restarted, bad files refused, and SIGHUP, all
// while a flow runs through network 42, which loses nothing.
netns_test!(reload_while_a_flow_runs_through_an_unchanged_network, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    let net43 = |bed: &Bed, extra: &str| network(bed, 0, 43, extra);
    let statics43 = format!("statics = [\"{STATIC_OLD}=198.18.0.2\"]\nallow_from = [\"{ALLOWED}\"]");
    let c0 = network(&bed, 0, 42, "") + &net43(&bed, &statics43);
    start(&mut bed, &c0);
    bed.check(bed.ul.node(1).ip(&["addr", "add", &format!("{ALLOWED}/24"), "dev", UNDERLAY_DEV]), "address");
    let _servers = bed.echo_servers();
    let echo = |bed: &Bed, from: usize, vni: u32| {
        bed.echo_to(from, SocketAddr::from(([198, 19, vni as u8, 2 - from as u8], ECHO_PORT)))
    };
    echo(&bed, 1, 42);
    echo(&bed, 0, 43);
    let flow = Flow::start(&bed);

    // A network is added on the socket 42 and 43 share: it carries traffic at once.
    let c1 = c0.clone() + &network(&bed, 0, 44, "");
    let rows = reload(&bed, &c1, 42);
    assert_eq!(
        (action(&rows, "vxt42"), action(&rows, "vxt43"), action(&rows, "vxt44")),
        ("unchanged".into(), "unchanged".into(), "added".into())
    );
    echo(&bed, 0, 44);
    echo(&bed, 1, 44);
    assert!(bed.net_control(0, 44).exists(), "no control socket for the added network");

    // 43's static entries and allow_from change in place. First, what they allow now: a
    // datagram from the second address of node 1 is taken.
    let (ctl43, ctl42) = (bed.net_control(0, 43), bed.net_control(0, 42));
    bed.check(vxtap_testbed::vtep_cmd(bin(), &ctl43, &["fdb", "add", RUNTIME, "198.18.0.2"]), "fdb add");
    let rx43 = settled(|| bed.counter_at(&ctl43, "rx_packets"));
    send_vxlan(&bed, ALLOWED, SocketAddr::from(([198, 18, 0, 1], 4789)), 43);
    bed.wait_counter(&ctl43, "rx_packets", rx43 + 1);
    let learned42 = fdb_of(&bed, 42);
    let c2 = network(&bed, 0, 42, "")
        + &net43(&bed, &format!("statics = [\"{STATIC_NEW}=198.18.0.2\"]"))
        + &network(&bed, 0, 44, "");
    let rows = reload(&bed, &c2, 43);
    assert_eq!(action(&rows, "vxt43"), "changed", "{rows:?}");
    let details = row(&rows, "vxt43")["details"].to_string();
    assert!(details.contains(&format!("+{STATIC_NEW}")) && details.contains("allow_from"), "{details}");
    assert!(has_entry(&bed, 43, STATIC_NEW, "static"), "{:?}", fdb_of(&bed, 43));
    assert!(!has_entry(&bed, 43, STATIC_OLD, "static"), "{:?}", fdb_of(&bed, 43));
    assert!(has_entry(&bed, 43, RUNTIME, "static"), "an entry added at run time was removed");
    assert!(has_entry(&bed, 43, CRAFTED_SRC, "learned"), "a learned entry was removed");
    assert_eq!(fdb_of(&bed, 42), learned42, "network 42's FDB changed");
    let (rx43, refused) =
        settled(|| (bed.counter_at(&ctl43, "rx_packets"), bed.counter_at(&ctl43, "drop_not_allowed")));
    send_vxlan(&bed, ALLOWED, SocketAddr::from(([198, 18, 0, 1], 4789)), 43);
    bed.wait_counter(&ctl43, "drop_not_allowed", refused + 1);
    assert_eq!(bed.counter_at(&ctl43, "rx_packets"), rx43, "a source no longer allowed got through");

    // Learning and ageing change in place: 43 stops learning and forgets within a second, 42
    // keeps what it learned for longer.
    let c3 = network(&bed, 0, 42, "ageing = 600")
        + &net43(&bed, &format!("statics = [\"{STATIC_NEW}=198.18.0.2\"]\nlearning = false\nageing = 1"))
        + &network(&bed, 0, 44, "");
    let rows = reload(&bed, &c3, 44);
    assert_eq!((action(&rows, "vxt42"), action(&rows, "vxt43")), ("changed".into(), "changed".into()));
    assert_eq!(row(&rows, "vxt42")["details"], serde_json::json!(["ageing 300 -> 600"]));
    let no_learned = |bed: &Bed| !fdb_of(bed, 43).iter().any(|(_, _, k)| k == "\"learned\"");
    assert!(wait_until(SETTLE, || no_learned(&bed)), "43 kept learned entries: {:?}", fdb_of(&bed, 43));
    echo(&bed, 0, 43);
    echo(&bed, 1, 43);
    assert!(no_learned(&bed), "43 learned with learning off: {:?}", fdb_of(&bed, 43));
    assert!(!fdb_of(&bed, 42).is_empty() && fdb_of(&bed, 42) == learned42, "42's FDB changed");

    // A bad file is refused whole, with the reason, and nothing changes.
    let before =
        (fdb_of(&bed, 42), fdb_of(&bed, 43), ifindex(bed.ul.node(0), "vxt44"), quiet_stats(&bed, 43));
    reload_refused(&bed, &c3.replacen("[[network]]", "[[network]", 1), "n0.toml");
    reload_refused(&bed, &c3.replace("vni = 44", "vni = 42"), "VNI 42 is configured twice");
    reload_refused(&bed, &c3.replace("ageing = 600", "ageing = \"long\""), "line 10: invalid type");
    let after = (fdb_of(&bed, 42), fdb_of(&bed, 43), ifindex(bed.ul.node(0), "vxt44"), quiet_stats(&bed, 43));
    assert_eq!(after, before, "a refused file changed something");
    echo(&bed, 0, 44);

    // A setting of 43's TAP changes: 43 alone restarts, on a new TAP.
    let old43 = ifindex(bed.ul.node(0), "vxt43").expect("vxt43");
    let c4 = c3.replace("learning = false", "learning = false\nmtu = 1400");
    let rows = reload(&bed, &c4, 42);
    assert_eq!(row(&rows, "vxt43")["details"], serde_json::json!(["mtu 1450 -> 1400"]));
    assert_eq!(
        (action(&rows, "vxt42"), action(&rows, "vxt43"), action(&rows, "vxt44")),
        ("unchanged".into(), "restarted".into(), "unchanged".into())
    );
    assert_eq!(link_mtu(bed.ul.node(0), "vxt43"), Some(1400));
    assert_ne!(ifindex(bed.ul.node(0), "vxt43"), Some(old43), "vxt43 was not recreated");
    assert!(has_entry(&bed, 43, STATIC_NEW, "static"), "the restarted network lost its configuration");
    echo(&bed, 0, 43);

    // 43 moves to another port: a socket of its own.
    let c5 = c4.replace("mtu = 1400", "mtu = 1400\nport = 4790");
    let rows = reload(&bed, &c5, 44);
    assert_eq!(action(&rows, "vxt43"), "restarted");
    assert_eq!(
        row(&rows, "vxt43")["details"],
        serde_json::json!(["socket 198.18.0.1:4789 -> 198.18.0.1:4790"])
    );
    let rx43 = settled(|| bed.counter_at(&ctl43, "rx_packets"));
    send_vxlan(&bed, Ipv4Addr::new(198, 18, 0, 2), SocketAddr::from(([198, 18, 0, 1], 4790)), 43);
    bed.wait_counter(&ctl43, "rx_packets", rx43 + 1);

    // 43 is removed: its TAP, its control socket and its socket go.
    let c6 = network(&bed, 0, 42, "ageing = 600") + &network(&bed, 0, 44, "");
    let rows = reload(&bed, &c6, 42);
    assert_eq!((action(&rows, "vxt43"), action(&rows, "vxt44")), ("removed".into(), "unchanged".into()));
    assert_eq!(ifindex(bed.ul.node(0), "vxt43"), None, "vxt43 is still there");
    assert!(!ctl43.exists(), "the control socket of a removed network is still there");
    let port_free = bed.ul.node(0).run(|| UdpSocket::bind("198.18.0.1:4790").is_ok());
    assert!(bed.check(port_free, "binding"), "the socket of a removed network is still bound");
    echo(&bed, 1, 44);

    // SIGHUP does the same.
    let c7 = network(&bed, 0, 42, &format!("ageing = 600\nstatics = [\"{STATIC_OLD}=198.18.0.2\"]"))
        + &network(&bed, 0, 44, "");
    std::fs::write(config0(&bed), &c7).expect("write config");
    let hup = bed.vtep(0).signal(libc::SIGHUP);
    bed.check(hup, "SIGHUP");
    assert!(
        wait_until(SETTLE, || has_entry(&bed, 42, STATIC_OLD, "static")),
        "SIGHUP did not reload: {:?}\n{}",
        fdb_of(&bed, 42),
        bed.logs()
    );
    // One line per network that changed, none for those that did not.
    let log = bed.vtep(0).log();
    assert!(log.contains("SIGHUP"), "{}", bed.logs());
    let said = |what: &str, dev: &str| {
        log.lines().any(|l| l.contains(&format!("reload: {what}")) && l.contains(dev))
    };
    assert!(said("added", "vxt44") && said("removed", "vxt43") && said("restarted", "vxt43"), "{log}");
    let lines42 = log.lines().filter(|l| l.contains("reload: ") && l.contains("dev=\"vxt42\"")).count();
    assert_eq!(lines42, 2, "42 changed twice (ageing, then a static entry), and only then: {log}");
    echo(&bed, 0, 44);

    let (sent, lost_there, lost_back) = flow.finish();
    eprintln!("flow through network 42: {sent} datagrams each way");
    assert!(sent >= FLOW_MIN);
    assert!(
        lost_there.is_empty() && lost_back.is_empty(),
        "network 42 lost {} of {sent} datagrams on the way to node 0 ({:?}...) and {} on the way back ({:?}...)\n{}",
        lost_there.len(),
        &lost_there[..lost_there.len().min(10)],
        lost_back.len(),
        &lost_back[..lost_back.len().min(10)],
        bed.logs()
    );
    let stats = bed.stats_at(&ctl42);
    eprintln!("node 0 network 42 after the reloads: {stats}");
    bed.assert_running(0);
});

// A network that cannot be set up (its TAP name is taken by another kind of device) is reported
// as failed, `vxtap reload` exits non-zero, and the rest of the file is applied.
netns_test!(a_network_that_cannot_start_fails_alone, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    let c0 = network(&bed, 0, 42, "");
    start(&mut bed, &c0);
    let _servers = bed.echo_servers();
    bed.echo_to(0, SocketAddr::from(([198, 19, 42, 2], ECHO_PORT)));
    let taken = network(&bed, 0, 45, "").replace("dev = \"vxt45\"", &format!("dev = \"{UNDERLAY_DEV}\""));
    let c1 = network(&bed, 0, 42, "ageing = 60") + &taken + &network(&bed, 0, 44, "");
    std::fs::write(config0(&bed), &c1).expect("write config");
    let out = reload_at(&bed.net_control(0, 42));
    assert!(!out.status.success(), "a failed network must fail the reload");
    let v: Value = serde_json::from_slice(&out.stdout).expect("the rows are printed all the same");
    let rows = v["networks"].as_array().expect("rows").clone();
    assert_eq!(action(&rows, UNDERLAY_DEV), "failed");
    assert!(row(&rows, UNDERLAY_DEV)["error"].as_str().unwrap().contains("not a TAP"), "{rows:?}");
    assert_eq!((action(&rows, "vxt42"), action(&rows, "vxt44")), ("changed".into(), "added".into()));
    bed.echo_to(0, SocketAddr::from(([198, 19, 44, 2], ECHO_PORT)));
    assert!(!bed.net_control(0, 45).exists());
    // The next reload tries again: still failing, nothing else to do.
    let again = reload_at(&bed.net_control(0, 44));
    let v: Value = serde_json::from_slice(&again.stdout).expect("rows");
    let rows = v["networks"].as_array().expect("rows").clone();
    assert_eq!((action(&rows, "vxt42"), action(&rows, UNDERLAY_DEV)), ("unchanged".into(), "failed".into()));
    // Plain output, one line per network.
    let text = Command::new(bin())
        .args(["reload", "--control"])
        .arg(bed.net_control(0, 44))
        .output()
        .expect("vxtap");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.lines().any(|l| l == "vxt44 vni 44 unchanged"), "{text}");
    bed.assert_running(0);
});

// A reload whose file gains a [wireguard] table is refused: WireGuard is set up at start only, and
// the networks must not go on in clear against what the file now says. They run on unchanged.
netns_test!(a_reload_cannot_turn_wireguard_on, {
    use std::os::unix::fs::PermissionsExt;
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    let c0 = network(&bed, 0, 42, "");
    start(&mut bed, &c0);
    let _servers = bed.echo_servers();
    bed.echo_to(0, SocketAddr::from(([198, 19, 42, 2], ECHO_PORT)));
    let key = bed.tmp.join("wg.key");
    std::fs::write(&key, "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n").expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let wireguard = format!(
        "[wireguard]\nprivate_key = \"{}\"\naddress = \"10.77.0.1\"\n\n[[wireguard.peer]]\n\
         public_key = \"3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=\"\nendpoint = \"{}:51820\"\n\
         tunnel = \"10.77.0.2\"\n\n",
        key.display(),
        bed.ul.addr(1)
    );
    reload_refused(&bed, &(wireguard + &c0), "the [wireguard] table changed");
    bed.echo_to(0, SocketAddr::from(([198, 19, 42, 2], ECHO_PORT)));
    bed.assert_running(0);
});

// A VTEP started from flags has no file to reload: `vxtap reload` says so and fails, and the VTEP
// runs on unchanged.
netns_test!(without_a_config_file_there_is_nothing_to_reload, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start(0, Proto::Vxlan);
    bed.start(1, Proto::Vxlan);
    let out = reload_at(&bed.control(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("without --config"), "{stderr}");
    let _servers = bed.echo_servers();
    bed.echo_pair();
});

#[test]
fn reload_help_says_what_changes_in_place_and_what_restarts() {
    let out = Command::new(bin()).args(["reload", "--help"]).output().expect("running vxtap");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for words in ["in place", "restarts", "refused", "SIGHUP", "--control", "--dev", "--json"] {
        assert!(help.contains(words), "`vxtap reload --help` does not mention {words:?}:\n{help}");
    }
}
