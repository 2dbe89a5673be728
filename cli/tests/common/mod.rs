//! Shared harness of the netns end-to-end test files: a `Bed` of namespaces with vxtap
//! processes (built on the `vxtap-testbed` crate), traffic and counter helpers, config-file
//! tables, group mode, what to look for in captured frames, and hand-built tunnel datagrams
//! (their inner frames from `vxtap::wire::build`). The etcd cluster harness is [`cluster`].
//! Tests are declared with `vxtap_testbed::netns_test!`.
//! Each test file uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vxtap::wire::build::{Ethernet, MIN_FRAME_LEN};
/// The tunnel protocol, as vxtap names it on its command line (`Display`) and with its port.
pub use vxtap::wire::Proto;
use vxtap::MacAddr;
use vxtap_testbed::{
    counter, fdb_json, stats_json, udp_echo_server, udp_roundtrip, udp_send, EchoServer, KernelVxlan,
    TempDir, Underlay, Vtep, UNDERLAY_DEV,
};

#[cfg(feature = "etcd")]
pub mod cluster;

pub const ECHO_PORT: u16 = 7000;
pub const TRIES: u32 = 20;
pub const TRY_TIMEOUT: Duration = Duration::from_millis(500);
/// Time allowed for counters to move after the traffic that moves them was sent.
pub const SETTLE: Duration = Duration::from_secs(5);
/// Quiet period in which a duplicate or leaked packet would have shown up.
pub const QUIET: Duration = Duration::from_millis(300);

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vxtap"))
}

pub fn mac(i: usize) -> String {
    format!("02:00:00:00:00:{:02x}", i + 1)
}

pub fn overlay(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(198, 19, 0, i as u8 + 1), port))
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads `read` until its value has stayed the same for [`QUIET`] and returns it (or the last
/// value once [`SETTLE`] has passed): a baseline taken once the stragglers of earlier traffic have
/// been processed, however slow this build is, instead of after a fixed sleep.
pub fn settled<T: PartialEq>(mut read: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + SETTLE;
    let (mut value, mut since) = (read(), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = read();
        if now != value {
            (value, since) = (now, Instant::now());
        } else if since.elapsed() >= QUIET || Instant::now() >= deadline {
            return value;
        }
    }
}

/// An underlay with vxtap processes in some of its nodes. Fields drop in declaration order:
/// processes first, then namespaces, then the temp dir with sockets and configs.
pub struct Bed {
    pub vteps: Vec<Option<Vtep>>,
    pub ul: Underlay,
    pub tmp: TempDir,
}

impl Bed {
    pub fn new(ul: Underlay) -> Bed {
        Bed { vteps: (0..ul.len()).map(|_| None).collect(), ul, tmp: TempDir::new("e2e").expect("temp dir") }
    }

    /// vxtap in every node, each flooding to all the others.
    pub fn mesh(ul: Underlay, proto: Proto) -> Bed {
        let mut bed = Bed::new(ul);
        for i in 0..bed.ul.len() {
            bed.start(i, proto);
        }
        bed
    }

    pub fn control(&self, i: usize) -> PathBuf {
        self.tmp.join(&format!("n{i}.sock"))
    }

    /// The control socket of network `vni` of node `i` when it runs from a config file.
    pub fn net_control(&self, i: usize, vni: u32) -> PathBuf {
        self.tmp.join(&format!("n{i}-{vni}.sock"))
    }

    /// `vxtap run` in node i on VNI 42 with the conventional addresses, flooding to every other node.
    pub fn start(&mut self, i: usize, proto: Proto) {
        let peers: Vec<usize> = (0..self.ul.len()).filter(|&j| j != i).collect();
        self.start_with(i, proto, &peers, &[]);
    }

    /// `vxtap run` in node i on VNI 42 flooding to `peers`, with `extra` flags.
    pub fn start_with(&mut self, i: usize, proto: Proto, peers: &[usize], extra: &[&str]) {
        let (local, cidr, ctl) =
            (self.ul.addr(i).to_string(), format!("198.19.0.{}/24", i + 1), self.control(i));
        let mut args =
            strings(&["--dev", "vxt0", "--vni", "42", "--proto", &proto.to_string(), "--local", &local]);
        args.extend(strings(&["--address", &cidr, "--mac", &mac(i), "--control", &ctl.to_string_lossy()]));
        for &j in peers {
            args.extend(["--remote".to_string(), self.ul.addr(j).to_string()]);
        }
        args.extend(strings(extra));
        self.spawn(i, &args);
    }

    /// `vxtap run <args>` in node i.
    pub fn spawn(&mut self, i: usize, args: &[String]) {
        self.spawn_env(i, args, &[]);
    }

    /// [`Bed::spawn`] with `env` added to vxtap's environment.
    pub fn spawn_env(&mut self, i: usize, args: &[String], env: &[(String, String)]) {
        let vtep =
            Vtep::spawn_env(self.ul.node(i), bin(), args, env).unwrap_or_else(|e| panic!("node {i}: {e:#}"));
        self.vteps[i] = Some(vtep);
    }

    pub fn vtep(&mut self, i: usize) -> &mut Vtep {
        self.vteps[i].as_mut().expect("no vxtap in that node")
    }

    /// All vxtap logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, v) in self.vteps.iter().enumerate() {
            if let Some(v) = v {
                out.push_str(&format!("--- node {i} log ---\n{}", v.log()));
            }
        }
        out
    }

    /// Unwraps, or panics with `what`, the error and every vxtap log.
    pub fn check<T>(&self, r: anyhow::Result<T>, what: &str) -> T {
        r.unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", self.logs()))
    }

    pub fn stats_at(&self, control: &Path) -> Value {
        self.check(stats_json(bin(), control), "vxtap stats")
    }

    pub fn stats(&self, i: usize) -> Value {
        self.stats_at(&self.control(i))
    }

    pub fn counter_at(&self, control: &Path, key: &str) -> u64 {
        self.check(counter(&self.stats_at(control), key), "stats counter")
    }

    pub fn rx(&self, i: usize) -> u64 {
        self.counter_at(&self.control(i), "rx_packets")
    }

    pub fn fdb(&self, i: usize) -> Value {
        self.check(fdb_json(bin(), &self.control(i)), "vxtap fdb show")
    }

    /// A UDP echo server on the wildcard address in every node (receives broadcasts too).
    pub fn echo_servers(&self) -> Vec<EchoServer> {
        let any: SocketAddr = (Ipv4Addr::UNSPECIFIED, ECHO_PORT).into();
        (0..self.ul.len()).map(|i| self.check(udp_echo_server(self.ul.node(i), any), "echo server")).collect()
    }

    /// UDP echo from node `from` to `to` (an overlay address with an echo server behind it).
    pub fn echo_to(&self, from: usize, to: SocketAddr) {
        let payload = format!("echo {from} -> {to}");
        let r = udp_roundtrip(self.ul.node(from), to, payload.as_bytes(), TRIES, TRY_TIMEOUT);
        self.check(r, &format!("overlay echo {from} -> {to}"));
    }

    pub fn echo(&self, from: usize, to: usize) {
        self.echo_to(from, overlay(to, ECHO_PORT));
    }

    /// Overlay echo both ways between nodes 0 and 1.
    pub fn echo_pair(&self) {
        self.echo(0, 1);
        self.echo(1, 0);
    }

    /// Panics, with every log, if node i's vxtap has exited.
    pub fn assert_running(&mut self, i: usize) {
        let exited = self.vtep(i).try_wait().expect("wait").is_some();
        assert!(!exited, "node {i} exited\n{}", self.logs());
    }

    /// Sends `n` copies of `payload` from node `from` to the overlay address `to`.
    pub fn blast(&self, from: usize, to: SocketAddr, payload: &[u8], n: usize) {
        let copies = vec![payload; n];
        self.check(udp_send(self.ul.node(from), to, &copies), "udp send");
    }

    /// Waits until the counter at `control` reaches `at_least`; panics with the stats otherwise.
    pub fn wait_counter(&self, control: &Path, key: &str, at_least: u64) {
        if !wait_until(SETTLE, || self.counter_at(control, key) >= at_least) {
            panic!("{key} did not reach {at_least}: {}\n{}", self.stats_at(control), self.logs());
        }
    }
}

/// The kernel's VXLAN device in node `at` (VNI 42, port 4789, overlay 198.19.0.(at+1)/24),
/// flooding to node `to`.
pub fn kernel_vxlan(bed: &Bed, at: usize, to: usize) -> KernelVxlan {
    KernelVxlan {
        dev: "vx0".into(),
        vni: 42,
        port: 4789,
        local: bed.ul.addr(at),
        remote: bed.ul.addr(to),
        address: format!("198.19.0.{}/24", at + 1),
    }
}

/// The TAP MAC of network `vni` of node `i` when it runs from a config file:
/// 02:00:00:<vni>:00:(i+1).
pub fn net_mac(vni: u32, i: usize) -> String {
    format!("02:00:00:{vni:02x}:00:{:02x}", i + 1)
}

/// Network `vni` of node `i` as a `[[network]]` table of its config file: TAP `vxt<vni>`, VNI
/// `vni`, overlay 198.19.<vni>.(i+1)/24, MAC [`net_mac`], control socket [`Bed::net_control`],
/// flooding to the nodes `remotes`, then the `extra` keys.
pub fn network_toml(bed: &Bed, i: usize, vni: u32, remotes: &[usize], extra: &str) -> String {
    let mut t = format!("[[network]]\ndev = \"vxt{vni}\"\nvni = {vni}\nlocal = \"{}\"\n", bed.ul.addr(i));
    if !remotes.is_empty() {
        let list: Vec<String> = remotes.iter().map(|&j| format!("\"{}\"", bed.ul.addr(j))).collect();
        t += &format!("remotes = [{}]\n", list.join(", "));
    }
    t += &format!(
        "address = \"198.19.{vni}.{}/24\"\nmac = \"{}\"\ncontrol = \"{}\"\n{extra}\n\n",
        i + 1,
        net_mac(vni, i),
        bed.net_control(i, vni).display()
    );
    t
}

/// The multicast group of the IPv4 group-mode tests.
pub const GROUP_V4: &str = "239.1.1.1";

/// vxtap in node `i` in group mode: no --remote; members may be anywhere on the underlay.
pub fn start_group(bed: &mut Bed, i: usize, group: &str, extra: &[&str]) {
    let allow = if group.contains(':') { "2001:db8::/64" } else { "198.18.0.0/24" };
    let mut flags = vec!["--group", group, "--underlay-dev", UNDERLAY_DEV, "--allow-from", allow];
    flags.extend_from_slice(extra);
    bed.start_with(i, Proto::Vxlan, &[], &flags);
}

/// Whether a captured frame carries `payload` anywhere.
pub fn carries(frame: &[u8], payload: &[u8]) -> bool {
    frame.windows(payload.len()).any(|w| w == payload)
}

/// The outer destination address of a captured IPv4 VXLAN datagram, and its TTL and DS byte.
pub fn outer_v4(frame: &[u8]) -> Option<(IpAddr, u8, u8)> {
    let ihl = usize::from(*frame.get(14)? & 0xf) * 4;
    let vxlan_port = frame.get(14 + ihl + 2..14 + ihl + 4)? == 4789u16.to_be_bytes();
    (frame[12..14] == [0x08, 0x00] && frame[23] == 17 && vxlan_port).then(|| {
        let dst: [u8; 4] = frame[30..34].try_into().unwrap();
        (IpAddr::from(dst), frame[22], frame[15])
    })
}

/// The FDB entry for `mac`, compared case-insensitively.
pub fn fdb_entry<'a>(fdb: &'a Value, mac: &str) -> Option<&'a Value> {
    fdb.as_array()?.iter().find(|e| e["mac"].as_str().is_some_and(|m| m.eq_ignore_ascii_case(mac)))
}

pub fn assert_fdb_entry(fdb: &Value, mac: &str, kind: &str, dst: IpAddr, port: u16) {
    let e = fdb_entry(fdb, mac).unwrap_or_else(|| panic!("{mac} not in fdb: {fdb}"));
    assert_eq!(e["kind"], kind, "{e}");
    let got: IpAddr =
        e["dst"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad dst in {e}"));
    assert_eq!(got, dst, "{e}");
    assert_eq!(e["port"], port, "{e}");
    assert_eq!(e["vni"], 42, "{e}");
}

/// A minimum-size broadcast frame from `src` (the local experimental EtherType, zeros after
/// it): something to learn `src` from.
pub fn broadcast_from(src: MacAddr) -> Vec<u8> {
    Ethernet::new(MacAddr::BROADCAST, src).pad_to(MIN_FRAME_LEN).build()
}

/// A minimal Ethernet frame (broadcast, local experimental EtherType), so that only the outer
/// header is at fault in the malformed datagrams.
pub fn inner_frame() -> Vec<u8> {
    broadcast_from(MacAddr([0x02, 0, 0, 0, 0, 0x63]))
}

pub fn vni_bytes(vni: u32) -> [u8; 3] {
    let b = vni.to_be_bytes();
    [b[1], b[2], b[3]]
}

/// VXLAN header (RFC 7348) with the given flags byte, then a frame.
pub fn vxlan_packet(flags: u8, vni: u32) -> Vec<u8> {
    let mut p = vec![flags, 0, 0, 0];
    p.extend(vni_bytes(vni));
    p.push(0);
    p.extend(inner_frame());
    p
}

/// Geneve header (RFC 8926) with version, options (a multiple of 4 bytes) and the C flag set when
/// an option is critical, then an Ethernet frame (protocol 0x6558).
pub fn geneve_packet(version: u8, critical: bool, vni: u32, options: &[u8]) -> Vec<u8> {
    let mut p = vec![version << 6 | (options.len() / 4) as u8, if critical { 0x40 } else { 0 }, 0x65, 0x58];
    p.extend(vni_bytes(vni));
    p.push(0);
    p.extend_from_slice(options);
    p.extend(inner_frame());
    p
}
