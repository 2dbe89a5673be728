//! Interop with Open vSwitch's userspace datapath (`datapath_type=netdev`): the independent Geneve
//! peer (this kernel has no geneve module), and a second VXLAN one besides the kernel's device.
//!
//! vxtap runs in node 0 as usual. Node 1 runs a private OVS (its own database, sockets, logs and
//! run directory in a temp dir; both daemons started by PID inside the namespace, never through
//! `ovs-ctl`, which kills by name). The recipe for native tunnelling in the userspace datapath:
//!
//! * `br-phy` (netdev) with the veth `ul0` as its port; the underlay address 198.18.0.2/24 moves
//!   from `ul0` onto `br-phy`'s internal (tap) port. OVS takes its tunnel routes from the kernel
//!   routing table of its namespace (`ovs/route/show`) and its neighbours by snooping ARP on that
//!   bridge (`tnl/arp/show`), so the tunnel's next hop must be a bridge's own address.
//! * `br-int` (netdev) with the tunnel port (`remote_ip=198.18.0.1 key=42`) and the overlay
//!   address 198.19.0.2/24 (MTU 1450) on its internal port; NORMAL learning switch on both.
//!
//! Needs the Debian package openvswitch-switch (and ethtool). Without the OVS binaries the tests
//! skip with a message, unless `VXTAP_REQUIRE_NETNS=1`, where that is a failure (`netns_test!`'s
//! `requires = ovs_installed`).
//!
//! The sender's veth in node 0 has transmit checksum offload turned off: OVS reads `ul0` with
//! AF_PACKET and would see vxtap's outer UDP checksum unfinished (a veth never completes it, a NIC
//! would), counting `datapath_drop_tunnel_pop_error`.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use vxtap_testbed::{
    netns_test, tcp_transfer, udp_echo_server, udp_roundtrip, Family, Netns, TempDir, Underlay, UNDERLAY_DEV,
};

/// Generous: two `ovs-vswitchd` start on a busy 2-core machine while other tests run.
const OVS_TIMEOUT: Duration = Duration::from_secs(20);
const SCHEMAS: [&str; 2] =
    ["/usr/share/openvswitch/vswitch.ovsschema", "/usr/local/share/openvswitch/vswitch.ovsschema"];

/// Full paths of the OVS programs and the schema, or the reason they are unusable.
struct OvsTools {
    vswitchd: PathBuf,
    dbserver: PathBuf,
    dbtool: PathBuf,
    vsctl: PathBuf,
    appctl: PathBuf,
    schema: PathBuf,
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl OvsTools {
    fn find() -> Result<OvsTools, String> {
        let prog =
            |n: &str| find_program(n).ok_or_else(|| format!("{n} not found (install openvswitch-switch)"));
        let schema = SCHEMAS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| format!("no vswitch.ovsschema in {SCHEMAS:?}"))?;
        if find_program("ethtool").is_none() {
            return Err("ethtool not found".into());
        }
        Ok(OvsTools {
            vswitchd: prog("ovs-vswitchd")?,
            dbserver: prog("ovsdb-server")?,
            dbtool: prog("ovsdb-tool")?,
            vsctl: prog("ovs-vsctl")?,
            appctl: prog("ovs-appctl")?,
            schema,
        })
    }
}

/// The extra requirement of these tests (`netns_test!(name, requires = ovs_installed, ...)`):
/// the OVS programs and schema are there. Without them the tests skip with the reason, or fail
/// under `VXTAP_REQUIRE_NETNS=1` (CI installs OVS), exactly like a missing namespace.
fn ovs_installed() -> Result<(), String> {
    OvsTools::find().map(drop)
}

/// A daemon started in the foreground by `ip netns exec` (which execs in place, so the PID is the
/// daemon's own), killed by that PID and reaped on drop.
struct Daemon {
    name: &'static str,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Child::kill does nothing once std has reaped the child, so a reused PID is never hit.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private OVS in one namespace. Fields drop in order: the switch daemon, the database, then
/// the temp dir with its sockets and logs. The namespace (owned by the caller) must outlive this,
/// so that the daemons are gone before its devices are.
struct OvsPeer {
    vswitchd: Option<Daemon>,
    dbserver: Option<Daemon>,
    tools: OvsTools,
    ns: String,
    tmp: TempDir,
}

impl OvsPeer {
    /// Creates the database and starts `ovsdb-server` and `ovs-vswitchd` in `ns`, each waited
    /// for by connecting to its socket.
    fn start(tools: OvsTools, ns: &Netns) -> OvsPeer {
        let tmp = TempDir::new("ovs").expect("temp dir");
        let mut peer = OvsPeer { vswitchd: None, dbserver: None, tools, ns: ns.name().to_string(), tmp };
        let db = peer.tmp.join("conf.db");
        let out = peer.command(&peer.tools.dbtool).arg("create").arg(&db).arg(&peer.tools.schema).output();
        let out = out.expect("running ovsdb-tool");
        assert!(out.status.success(), "ovsdb-tool create: {}", String::from_utf8_lossy(&out.stderr));

        let (db_sock, db_ctl) = (peer.tmp.join("db.sock"), peer.tmp.join("ovsdb-server.ctl"));
        let args = [
            db.to_string_lossy().into_owned(),
            format!("--remote=punix:{}", db_sock.display()),
            format!("--unixctl={}", db_ctl.display()),
            format!("--pidfile={}", peer.tmp.join("ovsdb-server.pid").display()),
            format!("--log-file={}", peer.tmp.join("ovsdb-server.log").display()),
        ];
        peer.dbserver = Some(peer.spawn("ovsdb-server", &peer.tools.dbserver.clone(), &args));
        peer.wait_socket(&db_sock);
        peer.vsctl(&["--no-wait", "init"]);

        let ctl = peer.ctl();
        let args = [
            format!("unix:{}", db_sock.display()),
            format!("--unixctl={}", ctl.display()),
            format!("--pidfile={}", peer.tmp.join("ovs-vswitchd.pid").display()),
            format!("--log-file={}", peer.tmp.join("ovs-vswitchd.log").display()),
        ];
        peer.vswitchd = Some(peer.spawn("ovs-vswitchd", &peer.tools.vswitchd.clone(), &args));
        peer.wait_socket(&ctl);
        peer
    }

    fn ctl(&self) -> PathBuf {
        self.tmp.join("ovs-vswitchd.ctl")
    }

    /// A command with every OVS directory pointed at the temp dir: per-bridge sockets
    /// (`<rundir>/br-int.mgmt`) would otherwise collide with a system OVS or a parallel test.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR"] {
            cmd.env(var, self.tmp.path());
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn spawn(&self, name: &'static str, program: &Path, args: &[String]) -> Daemon {
        let log = |suffix: &str| {
            std::fs::File::create(self.tmp.join(&format!("{name}.{suffix}"))).expect("daemon output file")
        };
        let mut cmd = self.command(Path::new("ip"));
        cmd.args(["netns", "exec", &self.ns]).arg(program).args(args);
        cmd.stdout(log("stdout")).stderr(log("stderr"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Daemon { name, child }
    }

    /// Waits until a unix socket accepts connections; panics with the logs if the daemons died.
    fn wait_socket(&mut self, path: &Path) {
        let mut died = None;
        let ok = wait_until(OVS_TIMEOUT, || {
            for d in [self.dbserver.as_mut(), self.vswitchd.as_mut()].into_iter().flatten() {
                if let Ok(Some(st)) = d.child.try_wait() {
                    died = Some(format!("{} exited ({st}) during startup", d.name));
                    return true;
                }
            }
            UnixStream::connect(path).is_ok()
        });
        if let Some(died) = died {
            panic!("{died}\n{}", self.logs());
        }
        assert!(ok, "{} not accepting connections within {OVS_TIMEOUT:?}\n{}", path.display(), self.logs());
    }

    /// `ovs-vsctl` on the private database. Without `--no-wait` it returns only once
    /// `ovs-vswitchd` has applied the change, which is the readiness wait for bridges and ports.
    fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}", self.tmp.join("db.sock").display());
        let out = self.command(&self.tools.vsctl).arg(db).arg("--timeout=20").args(args).output();
        let out = out.expect("running ovs-vsctl");
        assert!(
            out.status.success(),
            "ovs-vsctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ovs-appctl` on the private `ovs-vswitchd`; failures are returned as text (for diagnostics).
    fn appctl(&self, args: &[&str]) -> String {
        let out = self
            .command(&self.tools.appctl)
            .arg("-t")
            .arg(self.ctl())
            .arg("--timeout=10")
            .args(args)
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => format!("ovs-appctl {args:?} failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => format!("ovs-appctl {args:?}: {e}"),
        }
    }

    /// Daemon logs and datapath state, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["ovsdb-server.log", "ovsdb-server.stderr", "ovs-vswitchd.log", "ovs-vswitchd.stderr"] {
            let text = std::fs::read_to_string(self.tmp.join(f)).unwrap_or_default();
            out.push_str(&format!("--- {f} ---\n{text}"));
        }
        if self.vswitchd.is_some() && self.ctl().exists() {
            for cmd in [&["dpctl/dump-flows"][..], &["ovs/route/show"], &["tnl/arp/show"], &["coverage/show"]]
            {
                out.push_str(&format!("--- ovs-appctl {} ---\n{}", cmd.join(" "), self.appctl(cmd)));
            }
        }
        out
    }
}

/// Runs a command in `ns`, panicking with its stderr on failure.
fn exec(ns: &Netns, args: &[&str]) {
    let out = ns.exec(args).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(out.status.success(), "{args:?} in {}: {}", ns.name(), String::from_utf8_lossy(&out.stderr));
}

/// Moves node 1's underlay onto an OVS `br-phy` and puts `br-int` with the tunnel port and the
/// overlay address next to it. Returns once OVS routes the underlay through `br-phy`.
fn configure(ovs: &OvsPeer, ns: &Netns, proto: Proto) {
    let ip = |args: &[&str]| ns.ip(args).unwrap_or_else(|e| panic!("{e:#}\n{}", ovs.logs()));
    let netdev = ["set", "bridge", "br-phy", "datapath_type=netdev"];
    ovs.vsctl(
        &[&["add-br", "br-phy", "--"][..], &netdev, &["--", "add-port", "br-phy", UNDERLAY_DEV]].concat(),
    );
    ip(&["addr", "flush", "dev", UNDERLAY_DEV]);
    ip(&["addr", "add", "198.18.0.2/24", "dev", "br-phy"]);
    ip(&["link", "set", "br-phy", "up"]);

    let tunnel = format!("type={proto}");
    ovs.vsctl(&[
        "add-br",
        "br-int",
        "--",
        "set",
        "bridge",
        "br-int",
        "datapath_type=netdev",
        "--",
        "set",
        "interface",
        "br-int",
        "mtu_request=1450",
        "--",
        "add-port",
        "br-int",
        "tun0",
        "--",
        "set",
        "interface",
        "tun0",
        &tunnel,
        "options:remote_ip=198.18.0.1",
        "options:key=42",
    ]);
    ip(&["addr", "add", "198.19.0.2/24", "dev", "br-int"]);
    ip(&["link", "set", "br-int", "up"]);

    // OVS learns routes from its namespace's kernel table by netlink, asynchronously.
    let routed = wait_until(OVS_TIMEOUT, || {
        let routes = ovs.appctl(&["ovs/route/show"]);
        routes.lines().any(|l| l.contains("198.18.0.0/24 dev br-phy"))
    });
    assert!(routed, "OVS never routed the underlay via br-phy\n{}", ovs.logs());
    let ports = ovs.appctl(&["tnl/ports/show"]);
    let port = proto.default_port();
    assert!(ports.contains(&port.to_string()), "no tunnel port {port} listening: {ports}");
}

/// How vxtap's datagrams get a checksum OVS's AF_PACKET reader accepts over veth.
#[derive(Clone, Copy)]
enum Checksum {
    /// vxtap's computed checksum, with tx offload off on its veth so it is complete on the wire.
    Computed,
    /// `--no-udp-csum`: a zero checksum, which needs no offload setting at all.
    Zero,
}

fn ovs_interop(test: &str, proto: Proto, csum: Checksum) {
    let tools = OvsTools::find().unwrap_or_else(|reason| panic!("{test}: {reason}"));
    let start = std::time::Instant::now();
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    match csum {
        Checksum::Computed => {
            exec(bed.ul.node(0), &["ethtool", "-K", UNDERLAY_DEV, "tx", "off"]);
            bed.start_with(0, proto, &[1], &[]);
        }
        Checksum::Zero => bed.start_with(0, proto, &[1], &["--no-udp-csum"]),
    }
    // Declared after `bed`, so dropped first: the daemons die before the namespaces go.
    let ovs = OvsPeer::start(tools, bed.ul.node(1));
    configure(&ovs, bed.ul.node(1), proto);
    let ovs_ready = start.elapsed();
    let fail = |what: &str, e: anyhow::Error| -> ! {
        panic!("{what}: {e:#}\nvxtap stats: {}\n{}\n{}", bed.stats(0), bed.logs(), ovs.logs())
    };

    let any: SocketAddr = (Ipv4Addr::UNSPECIFIED, ECHO_PORT).into();
    let _servers: Vec<_> = (0..2)
        .map(|i| udp_echo_server(bed.ul.node(i), any).unwrap_or_else(|e| fail("echo server", e)))
        .collect();
    for (from, to) in [(0, 1), (1, 0)] {
        let payload = format!("{proto} echo {from} -> {to}");
        let r =
            udp_roundtrip(bed.ul.node(from), overlay(to, ECHO_PORT), payload.as_bytes(), TRIES, TRY_TIMEOUT);
        r.unwrap_or_else(|e| fail(&format!("overlay echo {from} -> {to}"), e));
    }

    let echoed = start.elapsed();

    // vxtap learned the MAC of OVS's br-int at node 1's underlay address and the protocol's port.
    let ovs_mac = bed.ul.node(1).link_mac("br-int").unwrap_or_else(|e| fail("br-int MAC", e));
    assert_fdb_entry(&bed.fdb(0), &ovs_mac, "learned", bed.ul.addr(1), proto.default_port());
    // And OVS's NORMAL switch learned vxtap's TAP MAC on the tunnel port.
    let ofport = ovs.vsctl(&["get", "interface", "tun0", "ofport"]);
    let fdb = ovs.appctl(&["fdb/show", "br-int"]);
    let learned = fdb.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 3 && f[0] == ofport.trim() && f[2].eq_ignore_ascii_case(&mac(0))
    });
    assert!(learned, "OVS did not learn {} on port {}:\n{fdb}", mac(0), ofport.trim());

    // TCP both ways: segment sizes, inner checksums and MTUs agree across implementations.
    for (server, client) in [(1, 0), (0, 1)] {
        let r = tcp_transfer(bed.ul.node(server), overlay(server, 5001), bed.ul.node(client), 4 << 20);
        let report = r.unwrap_or_else(|e| fail(&format!("tcp {client} -> {server}"), e));
        eprintln!("{proto} via OVS, tcp {client} -> {server}: {:.0} Mbit/s", report.mbit_per_s);
    }
    let stats = bed.stats(0);
    let drops: Vec<_> = stats
        .as_object()
        .expect("stats object")
        .iter()
        .filter(|(k, v)| k.starts_with("drop_") && v.as_u64() != Some(0))
        .collect();
    assert!(drops.is_empty(), "vxtap dropped packets from OVS: {drops:?}\n{}", ovs.logs());
    eprintln!(
        "{test}: OVS up and configured at {ovs_ready:?}, echoes done at {echoed:?}, all done at {:?}",
        start.elapsed()
    );
}

netns_test!(
    ovs_geneve_interop,
    requires = ovs_installed,
    ovs_interop("ovs_geneve_interop", Proto::Geneve, Checksum::Computed)
);

netns_test!(
    ovs_vxlan_interop,
    requires = ovs_installed,
    ovs_interop("ovs_vxlan_interop", Proto::Vxlan, Checksum::Computed)
);

netns_test!(
    ovs_geneve_interop_zero_udp_checksum,
    requires = ovs_installed,
    ovs_interop("ovs_geneve_interop_zero_udp_checksum", Proto::Geneve, Checksum::Zero)
);
