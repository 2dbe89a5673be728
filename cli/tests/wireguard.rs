//! WireGuard: `vxtap genkey` and `vxtap pubkey` against `wg genkey` and `wg pubkey`
//! (wireguard-tools), `vxtap run` naming a bad WireGuard setting before it touches any device,
//! and the encrypted data path in network namespaces: vxtap against a kernel VXLAN over
//! wireguard-go, and vxtap against vxtap.
//!
//! Without `wg` the comparison prints why and passes as skipped, unless `VXTAP_REQUIRE_NETNS=1`
//! (CI, which installs wireguard-tools), where that is a failure, as for the netns tests.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

fn vxtap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vxtap"))
}

/// Runs `cmd` with `input` on stdin.
fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// stdout of a command that must succeed.
fn out(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).expect("text")
}

/// Whether `wg` runs here; else the reason, printed, or a panic under `VXTAP_REQUIRE_NETNS=1`.
fn wg_available(test: &str) -> bool {
    let reason = match Command::new("wg").arg("--version").output() {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!("`wg --version` failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("no `wg` (wireguard-tools: apt-get install wireguard-tools): {e}"),
    };
    if std::env::var("VXTAP_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test}: wg required but unavailable: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
    false
}

#[test]
fn genkey_and_pubkey_are_wgs() {
    if !wg_available("genkey_and_pubkey_are_wgs") {
        return;
    }
    for _ in 0..8 {
        // wg's key, vxtap's public key.
        let key = out(wg("genkey").output().expect("wg genkey"), "wg genkey");
        let theirs = out(with_stdin(wg("pubkey"), key.as_bytes()), "wg pubkey");
        let ours = out(with_stdin(vxtap_cmd("pubkey"), key.as_bytes()), "vxtap pubkey");
        assert_eq!(ours, theirs, "the public key of {key}");
        // vxtap's key, wg's public key; printed exactly as wg genkey prints one.
        let key = out(vxtap_cmd("genkey").output().expect("vxtap genkey"), "vxtap genkey");
        assert_eq!((key.len(), key.ends_with("=\n")), (45, true), "{key:?}");
        let theirs = out(with_stdin(wg("pubkey"), key.as_bytes()), "wg pubkey");
        let ours = out(with_stdin(vxtap_cmd("pubkey"), key.as_bytes()), "vxtap pubkey");
        assert_eq!(ours, theirs, "the public key of {key}");
        assert_eq!((theirs.len(), theirs.ends_with("=\n")), (45, true));
    }
}

fn wg(sub: &str) -> Command {
    let mut c = Command::new("wg");
    c.arg(sub);
    c
}

fn vxtap_cmd(sub: &str) -> Command {
    let mut c = vxtap();
    c.arg(sub);
    c
}

#[test]
fn genkey_keys_are_clamped_and_new() {
    let decode = |k: &str| -> Vec<u8> {
        // A small base64 decoder, independent of the one vxtap uses.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bits: Vec<u8> = k
            .trim_end()
            .trim_end_matches('=')
            .bytes()
            .map(|c| A.iter().position(|&a| a == c).unwrap() as u8)
            .collect();
        let mut out = Vec::new();
        let (mut acc, mut n) = (0u32, 0);
        for b in bits {
            acc = acc << 6 | u32::from(b);
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((acc >> n) as u8);
            }
        }
        out
    };
    let keys: Vec<String> =
        (0..4).map(|_| out(vxtap_cmd("genkey").output().expect("genkey"), "genkey")).collect();
    for k in &keys {
        let b = decode(k);
        assert_eq!(b.len(), 32, "{k}");
        assert_eq!((b[0] & 7, b[31] & 0xc0), (0, 0x40), "clamped as wg genkey does: {k}");
    }
    assert!(keys.windows(2).all(|w| w[0] != w[1]), "a new key each time");
}

#[test]
fn pubkey_refuses_what_is_not_a_private_key() {
    // RFC 7748 §6.1: Alice's key and its public key, with surrounding space.
    let o = with_stdin(vxtap_cmd("pubkey"), b"  dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n\n");
    assert_eq!(out(o, "pubkey"), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n");
    for bad in
        [&b""[..], b"\n", b"not a key\n", b"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm==\n", b"\xff\xfe\n"]
    {
        let o = with_stdin(vxtap_cmd("pubkey"), bad);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains("stdin"), "{bad:?}: {err}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn run_names_a_bad_wireguard_setting_before_starting() {
    let dir = std::env::temp_dir().join(format!("vxtap-wg-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("wg.key");
    std::fs::write(&key, "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n").unwrap();
    let k = key.to_str().unwrap();
    let bob = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";
    let peer = format!("{bob},endpoint=198.18.0.2:51820,tunnel=10.77.0.2");
    let flags = [
        "run",
        "--dev",
        "vxt9",
        "--vni",
        "9",
        "--remote",
        "10.77.0.2",
        "--wg-private-key",
        k,
        "--wg-address",
        "10.77.0.1",
        "--wg-peer",
        &peer,
    ];
    // A key file others may read is refused before any device is touched.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = vxtap().args(flags).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("run `chmod 600 {k}`")), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------------
// The encrypted data path, in network namespaces
// ---------------------------------------------------------------------------------------------

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{bin, strings};
use vxtap_testbed::{
    counter, netns_test, stats_json, tcp_transfer, udp_send, vtep_cmd, Capture, Family, Netns, TempDir,
    Underlay, Vtep, UNDERLAY_DEV,
};

/// The tunnel addresses (inside WireGuard) and overlay addresses (on the TAP or kernel vxlan) of
/// host `i`.
fn tunnel(i: usize) -> String {
    format!("198.19.255.{}", i + 1)
}
fn overlay(i: usize) -> String {
    format!("198.19.0.{}", i + 1)
}

/// What the data-path tests need besides namespaces: wireguard-go and `wg`.
fn wireguard_tools() -> Result<(), String> {
    for (cmd, arg) in [("wg", "--version"), ("wireguard-go", "--version")] {
        match Command::new(cmd).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("`{cmd} {arg}` failed: {}", String::from_utf8_lossy(&o.stderr))),
            Err(e) => return Err(format!("no `{cmd}` (wireguard-go, wireguard-tools): {e}")),
        }
    }
    Ok(())
}

/// A private key file (mode 600) in `dir`, and its public key.
fn keypair(dir: &TempDir, name: &str) -> (PathBuf, String) {
    let key = out(wg("genkey").output().expect("wg genkey"), "wg genkey");
    let path = dir.join(name);
    std::fs::write(&path, &key).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = out(with_stdin(wg("pubkey"), key.as_bytes()), "wg pubkey");
    (path, public.trim().to_string())
}

/// wireguard-go on interface `ifname` in a namespace, with a kernel vxlan over it; killed by PID
/// (and its control socket removed) when dropped.
struct WireguardGo {
    child: Child,
    ifname: String,
}

impl WireguardGo {
    /// Starts wireguard-go in `ns` as `ifname`, with private key `key` on port 51820, peer
    /// `peer_pub` at `endpoint` with tunnel address `peer_tunnel`; its own tunnel address is
    /// `own_tunnel`, and a kernel vxlan `kvx` (VNI 42, MTU 1370) over it carries `own_overlay`.
    #[allow(clippy::too_many_arguments)]
    fn start(
        ns: &Netns,
        ifname: &str,
        key: &Path,
        peer_pub: &str,
        endpoint: SocketAddr,
        own_tunnel: &str,
        peer_tunnel: &str,
        own_overlay: &str,
    ) -> WireguardGo {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "env",
                "WG_PROCESS_FOREGROUND=1",
                "wireguard-go",
                "-f",
                ifname,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning wireguard-go");
        let wg = WireguardGo { child, ifname: ifname.to_string() };
        let sock = wg.socket();
        assert!(common::wait_until(Duration::from_secs(10), || sock.exists()), "wireguard-go did not start");
        let run = |args: &[&str]| {
            let o = ns.exec(args).expect("exec");
            assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        let (allowed, endpoint) = (format!("{peer_tunnel}/32"), endpoint.to_string());
        let key = key.to_str().unwrap();
        run(&["wg", "set", ifname, "private-key", key, "listen-port", "51820", "peer", peer_pub]);
        run(&["wg", "set", ifname, "peer", peer_pub, "endpoint", &endpoint, "allowed-ips", &allowed]);
        run(&["ip", "addr", "add", &format!("{own_tunnel}/24"), "dev", ifname]);
        run(&["ip", "link", "set", ifname, "up"]);
        run(&[
            "ip",
            "link",
            "add",
            "kvx",
            "type",
            "vxlan",
            "id",
            "42",
            "dstport",
            "4789",
            "local",
            own_tunnel,
            "remote",
            peer_tunnel,
            "dev",
            ifname,
        ]);
        run(&["ip", "link", "set", "kvx", "mtu", "1370", "up"]);
        run(&["ip", "addr", "add", &format!("{own_overlay}/24"), "dev", "kvx"]);
        wg
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/wireguard/{}.sock", self.ifname))
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        // The child is wireguard-go itself (`ip netns exec` executes it in place).
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
    }
}

/// A unique interface name: wireguard-go's control sockets are shared by every namespace.
fn wg_ifname(n: usize) -> String {
    format!("wgt{}{n}", std::process::id() % 10000)
}

/// Pings `to` from `ns` until one answers, for up to `timeout`.
fn ping(ns: &Netns, to: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let o = ns.exec(&["ping", "-c", "1", "-W", "1", to]).expect("ping");
        if o.status.success() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

/// The UDP ports and payload of an IPv4 or IPv6 frame captured on the underlay.
fn udp_of(frame: &[u8]) -> Option<(u16, u16, &[u8])> {
    let header = match frame.get(12..14)? {
        [0x08, 0x00] if frame.len() >= 14 + 20 + 8 && frame[14 + 9] == 17 => {
            usize::from(frame[14] & 0x0f) * 4
        }
        [0x86, 0xdd] if frame.len() >= 14 + 40 + 8 && frame[14 + 6] == 17 => 40,
        _ => return None,
    };
    let udp = frame.get(14 + header..).filter(|u| u.len() >= 8)?;
    let port = |i: usize| u16::from_be_bytes([udp[i], udp[i + 1]]);
    Some((port(0), port(2), &udp[8..]))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// vxtap in node `i` over WireGuard to the peer at node `j` (`proto`, VNI 42).
fn vxtap_args(
    ul: &Underlay,
    i: usize,
    j: usize,
    key: &Path,
    peer_pub: &str,
    proto: &str,
    ctl: &Path,
) -> Vec<String> {
    let endpoint = SocketAddr::new(ul.addr(j), 51820);
    let peer = format!("{peer_pub},endpoint={endpoint},tunnel={}", tunnel(j));
    strings(&[
        "--dev",
        "vxt0",
        "--vni",
        "42",
        "--proto",
        proto,
        "--address",
        &format!("{}/24", overlay(i)),
        "--remote",
        &tunnel(j),
        "--wg-private-key",
        key.to_str().unwrap(),
        "--wg-address",
        &tunnel(i),
        "--wg-peer",
        &peer,
        "--control",
        ctl.to_str().unwrap(),
    ])
}

/// Every frame of `capture` that is UDP: only WireGuard (port 51820 at both ends), none of them
/// carrying `marker`.
fn assert_only_wireguard(capture: &Capture, marker: &[u8]) {
    let frames = capture.frames();
    let udp: Vec<_> = frames.iter().filter_map(|f| udp_of(f)).collect();
    assert!(udp.len() > 100, "traffic was captured ({} UDP frames)", udp.len());
    for (sport, dport, _) in &udp {
        assert_eq!((*sport, *dport), (51820, 51820), "only WireGuard crosses the underlay");
    }
    assert!(!frames.iter().any(|f| contains(f, marker)), "the marker never appears on the wire");
}

netns_test!(vxtap_and_kernel_vxlan_over_wireguard_go, requires = wireguard_tools, {
    let ul = Underlay::pair(Family::V4).expect("underlay");
    let tmp = TempDir::new("wg").expect("temp dir");
    let (a_key, a_pub) = keypair(&tmp, "a.key");
    let (b_key, b_pub) = keypair(&tmp, "b.key");
    let (a, b) = (ul.node(0), ul.node(1));
    let ifname = wg_ifname(0);
    let endpoint_b = SocketAddr::new(ul.addr(1), 51820);
    let mut wg_go =
        Some(WireguardGo::start(a, &ifname, &a_key, &b_pub, endpoint_b, &tunnel(0), &tunnel(1), &overlay(0)));
    let ctl = tmp.join("b.sock");
    let args = vxtap_args(&ul, 1, 0, &b_key, &a_pub, "vxlan", &ctl);
    let mut vtep = Vtep::spawn(b, bin(), &args).expect("vxtap over WireGuard");
    let capture = Capture::start(b, UNDERLAY_DEV).expect("capture");

    assert!(ping(b, &overlay(0), Duration::from_secs(10)), "vxtap -> kernel vxlan: {}", vtep.log());
    assert!(ping(a, &overlay(1), Duration::from_secs(10)), "kernel vxlan -> vxtap: {}", vtep.log());
    for (server, server_ip, client) in [(a, overlay(0), b), (b, overlay(1), a)] {
        let at = SocketAddr::new(server_ip.parse().unwrap(), 5001);
        let r = tcp_transfer(server, at, client, 4 << 20)
            .unwrap_or_else(|e| panic!("TCP to {at}: {e:#}\n{}", vtep.log()));
        eprintln!("TCP {} -> {at}: {:.0} Mbit/s", client.name(), r.mbit_per_s);
    }
    let marker = b"vxtap-wireguard-marker-never-on-the-wire";
    let to_a = SocketAddr::new(overlay(0).parse().unwrap(), 7000);
    udp_send(b, to_a, &[&marker[..]; 5]).expect("marker");
    std::thread::sleep(Duration::from_millis(300));
    assert_only_wireguard(&capture, marker);

    // A forged datagram to the listen port: dropped and counted.
    let listen = SocketAddr::new(ul.addr(1), 51820);
    let before = counter(&stats_json(bin(), &ctl).unwrap(), "wg_drop_invalid").unwrap();
    udp_send(a, listen, &[b"forged: not a WireGuard message"]).expect("forged");
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            counter(&stats_json(bin(), &ctl).unwrap(), "wg_drop_invalid").unwrap() > before
        }),
        "forged datagram counted"
    );
    // A VXLAN datagram in clear to the tunnel port: dropped and counted, never delivered.
    let clear = common::vxlan_packet(0x08, 42);
    udp_send(a, SocketAddr::new(ul.addr(1), 4789), &[&clear[..]]).expect("cleartext");
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            counter(&stats_json(bin(), &ctl).unwrap(), "wg_drop_cleartext").unwrap() >= 1
        }),
        "cleartext counted"
    );
    // A captured transport message from wireguard-go, sent again: a replay, dropped and counted.
    let frames = capture.frames();
    let IpAddr::V4(from_a) = ul.addr(0) else { unreachable!("an IPv4 underlay") };
    let replayed = frames
        .iter()
        .filter(|f| f.len() > 30 && f[26..30] == from_a.octets())
        .filter_map(|f| udp_of(f))
        .find(|(_, _, p)| p.first() == Some(&4) && p.len() > 64)
        .map(|(_, _, p)| p.to_vec());
    let replayed = replayed.expect("a captured transport message");
    udp_send(a, listen, &[&replayed[..]]).expect("replay");
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            counter(&stats_json(bin(), &ctl).unwrap(), "wg_drop_replay").unwrap() >= 1
        }),
        "replay counted: {}",
        stats_json(bin(), &ctl).unwrap()
    );
    let stats = stats_json(bin(), &ctl).unwrap();
    assert!(counter(&stats, "wg_handshakes_completed").unwrap() >= 1, "{stats}");
    let peers: serde_json::Value =
        serde_json::from_str(&vtep_cmd(bin(), &ctl, &["peers", "--json"]).unwrap()).unwrap();
    let wg_row = &peers[0]["wg"];
    assert_eq!(wg_row["public_key"], a_pub.as_str(), "{peers}");
    assert_eq!(wg_row["endpoint"], SocketAddr::new(ul.addr(0), 51820).to_string(), "{peers}");
    assert!(
        wg_row["latest_handshake_secs"].is_u64() && wg_row["rx_bytes"].as_u64() > Some(4 << 20),
        "{peers}"
    );

    // wireguard-go restarts (new sessions, the same keys): traffic recovers within seconds.
    drop(wg_go.take());
    wg_go =
        Some(WireguardGo::start(a, &ifname, &a_key, &b_pub, endpoint_b, &tunnel(0), &tunnel(1), &overlay(0)));
    let t = Instant::now();
    assert!(
        ping(a, &overlay(1), Duration::from_secs(15)),
        "after a restart, kernel -> vxtap: {}",
        vtep.log()
    );
    assert!(
        ping(b, &overlay(0), Duration::from_secs(15)),
        "after a restart, vxtap -> kernel: {}",
        vtep.log()
    );
    eprintln!("recovered {:?} after wireguard-go restarted", t.elapsed());
    vtep.terminate(Duration::from_secs(5)).expect("vxtap stops");
    drop(wg_go);
});

netns_test!(vxtap_to_vxtap_geneve_over_wireguard, requires = wireguard_tools, {
    vxtap_to_vxtap(Family::V4, "geneve");
});

netns_test!(vxtap_to_vxtap_vxlan_over_wireguard_on_ipv6, requires = wireguard_tools, {
    vxtap_to_vxtap(Family::V6, "vxlan");
});

/// Two vxtap over WireGuard, `proto` inside, on an underlay of `family`: ping and TCP both ways,
/// only WireGuard on the wire.
fn vxtap_to_vxtap(family: Family, proto: &str) {
    let ul = Underlay::pair(family).expect("underlay");
    let tmp = TempDir::new("wg").expect("temp dir");
    let keys = [keypair(&tmp, "a.key"), keypair(&tmp, "b.key")];
    let ctl = [tmp.join("a.sock"), tmp.join("b.sock")];
    let capture = Capture::start(ul.node(1), UNDERLAY_DEV).expect("capture");
    let spawn = |i: usize| {
        let j = 1 - i;
        let args = vxtap_args(&ul, i, j, &keys[i].0, &keys[j].1, proto, &ctl[i]);
        Vtep::spawn(ul.node(i), bin(), &args).expect("vxtap over WireGuard")
    };
    // The peer is not up yet: no session, so nothing goes, and nothing in clear (the capture
    // below covers this phase too).
    let first = spawn(0);
    assert!(!ping(ul.node(0), &overlay(1), Duration::from_secs(1)), "no peer yet");
    let stats = stats_json(bin(), &ctl[0]).unwrap();
    assert!(counter(&stats, "wg_tx_no_session").unwrap() >= 1, "{stats}");
    let mut vteps = [first, spawn(1)];
    assert!(ping(ul.node(0), &overlay(1), Duration::from_secs(10)), "{}", vteps[0].log());
    assert!(ping(ul.node(1), &overlay(0), Duration::from_secs(10)), "{}", vteps[1].log());
    for (s, c) in [(0, 1), (1, 0)] {
        let at = SocketAddr::new(overlay(s).parse::<IpAddr>().unwrap(), 5001);
        let r = tcp_transfer(ul.node(s), at, ul.node(c), 4 << 20)
            .unwrap_or_else(|e| panic!("TCP to {at}: {e:#}"));
        eprintln!("TCP node {c} -> {at}: {:.0} Mbit/s", r.mbit_per_s);
    }
    let marker = b"vxtap-geneve-marker-never-on-the-wire";
    udp_send(ul.node(1), SocketAddr::new(overlay(0).parse().unwrap(), 7000), &[&marker[..]; 5])
        .expect("marker");
    std::thread::sleep(Duration::from_millis(300));
    assert_only_wireguard(&capture, marker);
    for (v, c) in vteps.iter_mut().zip(&ctl) {
        let stats = stats_json(bin(), c).unwrap();
        assert_eq!(counter(&stats, "wg_drop_cleartext").unwrap(), 0, "{stats}");
        assert!(counter(&stats, "rx_packets").unwrap() > 1000, "{stats}");
        v.terminate(Duration::from_secs(5)).expect("vxtap stops");
    }
}

netns_test!(reload_over_wireguard_applies_its_settings_to_new_networks, requires = wireguard_tools, {
    let ul = Underlay::pair(Family::V4).expect("underlay");
    let tmp = TempDir::new("wg").expect("temp dir");
    let keys = [keypair(&tmp, "a.key"), keypair(&tmp, "b.key")];
    let ctl = [tmp.join("a.sock"), tmp.join("b.sock"), tmp.join("a43.sock")];
    let wireguard = format!(
        "[wireguard]\nprivate_key = \"{}\"\naddress = \"{}\"\n\n[[wireguard.peer]]\npublic_key = \"{}\"\n\
         endpoint = \"{}\"\ntunnel = \"{}\"\n\n",
        keys[0].0.display(),
        tunnel(0),
        keys[1].1,
        SocketAddr::new(ul.addr(1), 51820),
        tunnel(1)
    );
    let net = |dev: &str, vni: u32, address: &str, control: &Path| {
        format!(
            "[[network]]\ndev = \"{dev}\"\nvni = {vni}\nremotes = [\"{}\"]\n{address}control = \"{}\"\n\n",
            tunnel(1),
            control.display()
        )
    };
    let first = wireguard.clone() + &net("vxt0", 42, &format!("address = \"{}/24\"\n", overlay(0)), &ctl[0]);
    let file = tmp.join("a.toml");
    std::fs::write(&file, &first).unwrap();
    let _a =
        Vtep::spawn(ul.node(0), bin(), &strings(&["--config", file.to_str().unwrap()])).expect("vxtap a");
    let args = vxtap_args(&ul, 1, 0, &keys[1].0, &keys[0].1, "vxlan", &ctl[1]);
    let _b = Vtep::spawn(ul.node(1), bin(), &args).expect("vxtap b");
    assert!(ping(ul.node(0), &overlay(1), Duration::from_secs(10)), "before the reload");

    // A network added by a reload is over WireGuard too: its MTU default counts it.
    std::fs::write(&file, first.clone() + &net("vxt1", 43, "", &ctl[2])).unwrap();
    let o = Command::new(bin()).args(["reload", "--control"]).arg(&ctl[0]).output().expect("reload");
    assert!(o.status.success(), "reload: {}", String::from_utf8_lossy(&o.stderr));
    let mtu = ul.node(0).exec(&["cat", "/sys/class/net/vxt1/mtu"]).expect("mtu");
    assert_eq!(String::from_utf8_lossy(&mtu.stdout).trim(), "1390", "the WireGuard MTU default");
    assert!(ping(ul.node(0), &overlay(1), Duration::from_secs(10)), "after the reload");

    // A changed [wireguard] table is refused, and nothing changes.
    let changed = first.replace("[[wireguard.peer]]", "listen_port = 51821\n\n[[wireguard.peer]]");
    std::fs::write(&file, changed).unwrap();
    let o = Command::new(bin()).args(["reload", "--control"]).arg(&ctl[0]).output().expect("reload");
    assert!(!o.status.success(), "a changed [wireguard] table is refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("[wireguard] table changed"));
    assert!(ping(ul.node(0), &overlay(1), Duration::from_secs(10)), "after the refused reload");
});
