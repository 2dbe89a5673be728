//! Test bed: throw-away network namespaces joined by veth underlays, VTEP processes running inside
//! them, and socket-level traffic helpers that need no external tools.
//!
//! Used by the end-to-end tests and by `vxtap demo`. It needs root and iproute2 (`ip`, `bridge`);
//! [`netns_available`] says whether that holds. Every resource is owned by a guard whose `Drop`
//! removes it (namespaces deleted, processes killed by PID, temporary directories removed), so a
//! test that panics leaves nothing behind. A process killed outright (SIGKILL) cannot clean up;
//! its leftovers are named `vxt-<tag>-<pid>-<n>` and can be removed with `ip netns del`.
//!
//! Addresses: the underlay uses 198.18.0.0/24 and 2001:db8::/64, the overlay 198.19.0.0/24
//! (benchmarking and documentation ranges); nothing here sends anywhere else.
//!
//! Traffic helpers run their sockets on threads that have entered a namespace with `setns(2)`:
//! the network namespace is a per-thread attribute, so the rest of the process is unaffected.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How long [`Vtep::spawn`] waits for the `ready` line: a debug build on a busy 2-core machine
/// can take a few seconds to start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the underlay veth in every node namespace.
pub const UNDERLAY_DEV: &str = "ul0";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `<prefix>-<tag>-<pid>-<n>`: unique across parallel tests in this process and across processes.
fn unique_name(prefix: &str, tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{tag}-{}-{n}", std::process::id())
}

/// Locks a mutex, ignoring poisoning: the data here (logs, received datagrams) stays valid even if
/// a holder panicked, and the test bed must not turn one failure into a cascade of panics.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a command to completion; a non-zero exit becomes an error carrying its stderr.
fn run_checked(cmd: &mut Command) -> Result<Output> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------------

/// Checks, once per process, that namespaces can be used here: root, `ip netns add/del` and
/// `setns` all work. `Err` carries the reason, for a skip message.
pub fn netns_available() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    let ns = Netns::new("probe").map_err(|e| format!("cannot create a network namespace: {e:#}"))?;
    ns.run(|| ()).map_err(|e| format!("cannot enter a network namespace: {e:#}"))
}

/// Gate for tests: true if namespaces work. Otherwise the test is skipped with a message, unless
/// `VXTAP_REQUIRE_NETNS=1`, where a skip would hide a broken CI setup.
///
/// # Panics
/// When namespaces are unavailable and `VXTAP_REQUIRE_NETNS=1` is set (deliberately).
pub fn require_netns(test: &str) -> bool {
    match netns_available() {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("VXTAP_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("{test}: netns required but unavailable: {reason}");
            }
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

/// A named network namespace (`/run/netns/<name>`), deleted on drop.
///
/// Created with IPv6 disabled by default, so that TAP and vxlan devices made later send no
/// router solicitations, MLD reports or DAD probes: the tests count packets. The IPv6 underlay
/// re-enables IPv6 on its veth only.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `vxt-<tag>-<pid>-<n>` with `lo` up and IPv6 off by default.
    pub fn new(tag: &str) -> Result<Netns> {
        let name = unique_name("vxt", tag);
        run_checked(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name }; // from here on, Drop cleans up if the rest fails
        ns.ip(&["link", "set", "lo", "up"])?;
        for scope in ["default", "all"] {
            ns.sysctl_if_present(&format!("net/ipv6/conf/{scope}/disable_ipv6"), "1")?;
        }
        Ok(ns)
    }

    /// The namespace name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME <args>`; the error includes the command's stderr.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        self.ip_out(args).map(drop)
    }

    /// `ip -n NAME <args>`, returning stdout.
    pub fn ip_out(&self, args: &[&str]) -> Result<String> {
        let out = run_checked(Command::new("ip").args(["-n", &self.name]).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `bridge -n NAME <args>`, returning stdout (for kernel FDB inspection).
    pub fn bridge_out(&self, args: &[&str]) -> Result<String> {
        let out = run_checked(Command::new("bridge").args(["-n", &self.name]).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ip netns exec NAME <args>`, whatever its exit status (the caller decides).
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {args:?} in {}", self.name))
    }

    /// Writes `/proc/sys/<key>` (slash-separated, e.g. `net/ipv6/conf/ul0/disable_ipv6`) as seen
    /// from inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{key}");
        self.run(|| std::fs::write(&path, value))?.with_context(|| format!("writing {path} in {}", self.name))
    }

    /// Like [`Netns::sysctl`] but a missing key is fine: a kernel without IPv6 needs no disabling.
    fn sysctl_if_present(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{key}");
        match self.run(|| std::fs::write(&path, value))? {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.with_context(|| format!("writing {path} in {}", self.name)),
        }
    }

    /// The MAC address of `dev` inside the namespace (from `ip -j link show`).
    pub fn link_mac(&self, dev: &str) -> Result<String> {
        let out = self.ip_out(&["-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link show`")?;
        v.get(0)
            .and_then(|l| l.get("address"))
            .and_then(|a| a.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no address for {dev} in {}: {out}", self.name))
    }

    fn handle(&self) -> Result<File> {
        let path = format!("/run/netns/{}", self.name);
        File::open(&path).with_context(|| format!("opening {path}"))
    }

    /// Runs `f` on a new thread that has entered this namespace, so sockets `f` opens live here.
    /// Blocks until `f` returns. A panic inside `f` is propagated to the caller.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = self.handle()?;
        let joined = std::thread::scope(|s| {
            s.spawn(move || -> Result<R> {
                enter(&file)?;
                Ok(f())
            })
            .join()
        });
        match joined {
            Ok(r) => r.with_context(|| format!("entering {}", self.name)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Like [`Netns::run`], but detached: for servers that outlive the call. The thread's result
    /// is `Err` if it could not enter the namespace.
    pub fn spawn<F, R>(&self, f: F) -> Result<JoinHandle<Result<R>>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = self.handle()?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("in-{name}"))
            .spawn(move || -> Result<R> {
                enter(&file).with_context(|| format!("entering {name}"))?;
                Ok(f())
            })
            .context("spawning a thread")
    }
}

/// Moves the calling thread into the network namespace behind `file`.
fn enter(file: &File) -> Result<()> {
    // SAFETY: the fd is valid for the duration of the call; setns only affects this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns(CLONE_NEWNET)");
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth, bridge, vxlan and TAP devices with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// Underlay topologies
// ---------------------------------------------------------------------------------------------

/// Underlay address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Address of node `i`: 198.18.0.(i+1) or 2001:db8::(i+1).
    fn host(self, i: usize) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(198, 18, 0, i as u8 + 1)),
            Family::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16 + 1)),
        }
    }

    fn prefix_len(self) -> u8 {
        match self {
            Family::V4 => 24,
            Family::V6 => 64,
        }
    }
}

/// Node namespaces whose `ul0` devices share one underlay link, either directly (a veth pair)
/// or through a Linux bridge in an extra switch namespace.
#[derive(Debug)]
pub struct Underlay {
    family: Family,
    nodes: Vec<Netns>,
    addrs: Vec<IpAddr>,
    // Kept after `nodes` so the hosts go first on drop; order does not matter for correctness.
    _switch: Option<Netns>,
}

impl Underlay {
    /// Two namespaces joined by a veth pair: `ul0` = 198.18.0.1/24 and .2 (or 2001:db8::1/64, ::2).
    pub fn pair(family: Family) -> Result<Underlay> {
        let a = Netns::new("a")?;
        let b = Netns::new("b")?;
        veth(&a, UNDERLAY_DEV, &b, UNDERLAY_DEV)?;
        let mut ul = Underlay { family, nodes: vec![a, b], addrs: Vec::new(), _switch: None };
        ul.configure_hosts()?;
        Ok(ul)
    }

    /// `n` IPv4 hosts (`ul0` = 198.18.0.(i+1)/24) on one Linux bridge, so floods reach several peers.
    pub fn star(n: usize) -> Result<Underlay> {
        Underlay::star_with(Family::V4, n)
    }

    /// [`Underlay::star`] for either family.
    pub fn star_with(family: Family, n: usize) -> Result<Underlay> {
        if !(1..=250).contains(&n) {
            bail!("star of {n} hosts: need 1..=250");
        }
        let sw = Netns::new("sw")?;
        sw.ip(&["link", "add", "br0", "type", "bridge"])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let host = Netns::new(&format!("h{i}"))?;
            let port = format!("p{i}");
            veth(&host, UNDERLAY_DEV, &sw, &port)?;
            sw.ip(&["link", "set", &port, "master", "br0"])?;
            sw.ip(&["link", "set", &port, "up"])?;
            nodes.push(host);
        }
        let mut ul = Underlay { family, nodes, addrs: Vec::new(), _switch: Some(sw) };
        ul.configure_hosts()?;
        Ok(ul)
    }

    fn configure_hosts(&mut self) -> Result<()> {
        for (i, ns) in self.nodes.iter().enumerate() {
            let addr = self.family.host(i);
            let cidr = format!("{addr}/{}", self.family.prefix_len());
            if self.family == Family::V6 {
                // IPv6 only on the underlay veth; `nodad` makes the address usable at once.
                ns.sysctl(&format!("net/ipv6/conf/{UNDERLAY_DEV}/disable_ipv6"), "0")?;
                ns.sysctl(&format!("net/ipv6/conf/{UNDERLAY_DEV}/accept_dad"), "0")?;
                ns.ip(&["addr", "add", &cidr, "dev", UNDERLAY_DEV, "nodad"])?;
            } else {
                ns.ip(&["addr", "add", &cidr, "dev", UNDERLAY_DEV])?;
            }
            ns.ip(&["link", "set", UNDERLAY_DEV, "up"])?;
            self.addrs.push(addr);
        }
        Ok(())
    }

    /// The address family of the underlay.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Number of host nodes (the switch namespace is not counted).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a topology has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Host namespace `i`.
    ///
    /// # Panics
    /// If `i >= len()`, as slice indexing does.
    pub fn node(&self, i: usize) -> &Netns {
        &self.nodes[i]
    }

    /// Underlay address of host `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn addr(&self, i: usize) -> IpAddr {
        self.addrs[i]
    }
}

/// Creates a veth pair directly between two namespaces, so no name is ever taken in the root one.
fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<()> {
    run_checked(Command::new("ip").args([
        "link",
        "add",
        a_dev,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_dev,
        "netns",
        b.name(),
    ]))
    .map(drop)
}

/// A kernel VXLAN device: the reference peer for interop tests and for validating the test bed.
#[derive(Clone, Debug)]
pub struct KernelVxlan {
    pub dev: String,
    pub vni: u32,
    pub port: u16,
    pub local: IpAddr,
    /// Flood destination, installed as the all-zeros FDB entry.
    pub remote: IpAddr,
    /// Overlay address, e.g. `198.19.0.2/24`.
    pub address: String,
}

impl KernelVxlan {
    /// Creates, addresses and brings up the device on `ul0` in `ns`, with learning left on.
    ///
    /// Also turns off transmit checksum offload on `ul0`. The kernel leaves the *inner* UDP/TCP
    /// checksum of a VXLAN packet for the NIC to fill in; a veth never does, and a userspace
    /// peer reading the datagram from a socket would pass the unfinished checksum on to its TAP,
    /// where the kernel drops the frame. A real NIC completes it, so this only makes the wire
    /// look like a real one. Needs `ethtool`.
    pub fn create(&self, ns: &Netns) -> Result<()> {
        let out = ns.exec(&["ethtool", "-K", UNDERLAY_DEV, "tx", "off"])?;
        if !out.status.success() {
            bail!(
                "ethtool -K {UNDERLAY_DEV} tx off in {}: {}",
                ns.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let (vni, port, local) = (self.vni.to_string(), self.port.to_string(), self.local.to_string());
        ns.ip(&[
            "link",
            "add",
            &self.dev,
            "type",
            "vxlan",
            "id",
            &vni,
            "dstport",
            &port,
            "local",
            &local,
            "dev",
            UNDERLAY_DEV,
        ])?;
        let remote = self.remote.to_string();
        ns.bridge_out(&["fdb", "append", "00:00:00:00:00:00", "dev", &self.dev, "dst", &remote])?;
        ns.ip(&["addr", "add", &self.address, "dev", &self.dev])?;
        ns.ip(&["link", "set", &self.dev, "up"])
    }
}

// ---------------------------------------------------------------------------------------------
// Temporary directory
// ---------------------------------------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop: per-test control sockets and
/// config files go here, so parallel tests never share a path.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(unique_name("vxt", tag));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// VTEP processes
// ---------------------------------------------------------------------------------------------

/// A `vxtap run` process inside a namespace, killed (SIGKILL, by PID) on drop. Its stdout and
/// stderr are collected into a log for readiness checks and failure messages.
///
/// It is started through `ip netns exec`, which execs the program in place, so the PID we hold
/// is vxtap's own and signals reach it directly.
pub struct Vtep {
    child: Child,
    log: Arc<Mutex<String>>,
    pumps: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Vtep {
    /// Runs `ip netns exec NS <bin> run <args...>` and waits (up to [`READY_TIMEOUT`]) for a log
    /// line with the word `ready`. Early exit or timeout is an error that includes the log.
    pub fn spawn(ns: &Netns, bin: &Path, args: &[String]) -> Result<Vtep> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(bin)
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {} in {}", bin.display(), ns.name()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, log.clone()));
        }
        let mut vtep = Vtep { child, log, pumps, status: None };
        vtep.wait_for_word("ready", READY_TIMEOUT)
            .with_context(|| format!("vxtap run {}", args.join(" ")))?;
        Ok(vtep)
    }

    /// The process id (vxtap's own, see the type docs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far, stdout and stderr interleaved by line.
    pub fn log(&self) -> String {
        lock(&self.log).clone()
    }

    /// Polls the log until a line contains `word` as a whole word (so "already" is not "ready").
    pub fn wait_for_word(&mut self, word: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.log).lines().any(|l| has_word(l, word)) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                bail!("exited ({status}) before logging '{word}'; log:\n{}", self.log());
            }
            if Instant::now() >= deadline {
                bail!("no '{word}' within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Non-blocking reap; once exited, the pumps are drained so the log is complete.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().context("waiting for vxtap")?;
            if self.status.is_some() {
                for p in self.pumps.drain(..) {
                    let _ = p.join();
                }
            }
        }
        Ok(self.status)
    }

    /// Sends a signal by PID, unless the process has already been reaped (the PID could be reused).
    pub fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        if self.try_wait()?.is_some() {
            bail!("vxtap already exited; log:\n{}", self.log());
        }
        // SAFETY: plain kill(2) on a child we have not reaped yet.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, sig) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill");
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for the exit status. On timeout the process is killed
    /// and an error (with the log) is returned.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.try_wait()? {
            return Ok(st);
        }
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("vxtap did not exit within {timeout:?} of SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Vtep {
    fn drop(&mut self) {
        if self.status.is_none() {
            // Child::kill is a no-op if std already reaped it, so a reused PID is never hit.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies lines from a child's pipe into the shared log until EOF (the child exits).
fn pump<R: Read + Send + 'static>(r: R, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            let mut log = lock(&log);
            log.push_str(&text);
            if !text.ends_with('\n') {
                log.push('\n');
            }
            line.clear();
        }
    })
}

/// Whole-word match: `word` not preceded or followed by an alphanumeric character.
fn has_word(line: &str, word: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    line.match_indices(word)
        .any(|(i, _)| !alnum(line[..i].chars().next_back()) && !alnum(line[i + word.len()..].chars().next()))
}

// ---------------------------------------------------------------------------------------------
// Control-socket helpers (run the vxtap CLI from the root namespace: the socket is a file)
// ---------------------------------------------------------------------------------------------

/// Runs `<bin> <args...> --control <control>` and returns stdout; non-zero exit is an error with
/// stderr.
pub fn vtep_cmd(bin: &Path, control: &Path, args: &[&str]) -> Result<String> {
    let out = run_checked(Command::new(bin).args(args).arg("--control").arg(control))?;
    String::from_utf8(out.stdout).context("vxtap output is not UTF-8")
}

fn json_cmd(bin: &Path, control: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let out = vtep_cmd(bin, control, args)?;
    serde_json::from_str(&out).with_context(|| format!("parsing output of {args:?}: {out}"))
}

/// `vxtap stats --json`: the counters object.
pub fn stats_json(bin: &Path, control: &Path) -> Result<serde_json::Value> {
    json_cmd(bin, control, &["stats", "--json"])
}

/// `vxtap fdb show --json`: the array of entries.
pub fn fdb_json(bin: &Path, control: &Path) -> Result<serde_json::Value> {
    json_cmd(bin, control, &["fdb", "show", "--json"])
}

/// One counter from a stats object; a missing or non-integer key is an error.
pub fn counter(stats: &serde_json::Value, key: &str) -> Result<u64> {
    stats.get(key).and_then(|v| v.as_u64()).ok_or_else(|| anyhow!("no counter {key} in {stats}"))
}

// ---------------------------------------------------------------------------------------------
// UDP traffic
// ---------------------------------------------------------------------------------------------

fn unspecified_for(to: &SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// A UDP echo server on a thread inside a namespace. It records every datagram it receives (so
/// tests can count floods) and stops on drop.
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Starts an echo server bound to `bind` in `ns`; returns once the socket is bound. Bind to the
/// wildcard address to also receive broadcasts.
pub fn udp_echo_server(ns: &Netns, bind: SocketAddr) -> Result<EchoServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let (stop2, seen2) = (stop.clone(), seen.clone());
    let thread = ns.spawn(move || {
        let sock = match UdpSocket::bind(bind).and_then(|s| {
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(anyhow!("binding echo server to {bind}: {e}")));
                return;
            }
        };
        let _ = tx.send(sock.local_addr().map_err(anyhow::Error::from));
        let mut buf = vec![0u8; 65536];
        while !stop2.load(Ordering::Relaxed) {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    lock(&seen2).push(buf[..n].to_vec());
                    let _ = sock.send_to(&buf[..n], from);
                }
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return, // the socket broke; tests see missing echoes
            }
        }
    })?;
    let addr = match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(r) => r?,
        Err(_) => match thread.join() {
            Ok(Err(e)) => return Err(e),
            _ => bail!("echo server in {} did not start", ns.name()),
        },
    };
    Ok(EchoServer { addr, stop, seen, thread: Some(thread) })
}

impl EchoServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of datagrams received so far.
    pub fn count(&self) -> usize {
        lock(&self.seen).len()
    }

    /// Number of received datagrams equal to `payload`.
    pub fn count_of(&self, payload: &[u8]) -> usize {
        lock(&self.seen).iter().filter(|d| d.as_slice() == payload).count()
    }

    /// Waits until at least `n` datagrams equal to `payload` arrived; false on timeout.
    pub fn wait_for(&self, payload: &[u8], n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count_of(payload) < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `payload` to `to` from `ns` and waits for the same bytes back, retrying up to `tries`
/// times with `timeout` each: the first datagrams wait for ARP and FDB learning.
pub fn udp_roundtrip(
    ns: &Netns,
    to: SocketAddr,
    payload: &[u8],
    tries: u32,
    timeout: Duration,
) -> Result<()> {
    ns.run(|| -> Result<()> {
        let sock = UdpSocket::bind(unspecified_for(&to))?;
        let mut buf = vec![0u8; 65536];
        for _ in 0..tries {
            sock.send_to(payload, to).with_context(|| format!("sending to {to}"))?;
            let deadline = Instant::now() + timeout;
            while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                sock.set_read_timeout(Some(left))?;
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) if &buf[..n] == payload => return Ok(()),
                    Ok(_) => continue, // a late echo of an earlier try is identical, so this is noise
                    Err(_) => break,
                }
            }
        }
        bail!("no echo from {to} within {tries} tries of {timeout:?} (from {})", ns.name())
    })?
}

/// Sends each datagram once from an ephemeral port in `ns` (broadcast allowed).
pub fn udp_send(ns: &Netns, to: SocketAddr, datagrams: &[&[u8]]) -> Result<()> {
    ns.run(|| -> Result<()> {
        let sock = UdpSocket::bind(unspecified_for(&to))?;
        sock.set_broadcast(true)?;
        for d in datagrams {
            sock.send_to(d, to).with_context(|| format!("sending to {to} from {}", ns.name()))?;
        }
        Ok(())
    })?
}

// ---------------------------------------------------------------------------------------------
// TCP bulk transfer
// ---------------------------------------------------------------------------------------------

/// Outcome of [`tcp_transfer`]; the data was verified before this is returned.
#[derive(Clone, Debug)]
pub struct TransferReport {
    pub bytes: u64,
    pub duration: Duration,
    pub mbit_per_s: f64,
    /// FNV-1a 64 of the data, as computed by both ends.
    pub hash: u64,
}

/// 64-bit FNV-1a: tiny, dependency-free and order-sensitive, enough to catch reordering,
/// duplication or corruption of a stream.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so the data is incompressible and a
/// misplaced segment changes the hash.
struct PatternGen(u64);

impl PatternGen {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const TCP_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `bytes` of pseudo-random data from `client_ns` to a server listening at `server_addr` in
/// `server_ns`. Both sides hash independently; the server reports its count and hash back over
/// the same connection, and any mismatch is an error. Duration runs from connect to that report.
pub fn tcp_transfer(
    server_ns: &Netns,
    server_addr: SocketAddr,
    client_ns: &Netns,
    bytes: usize,
) -> Result<TransferReport> {
    let (tx, rx) = mpsc::channel();
    let server = server_ns.spawn(move || -> Result<(u64, u64)> {
        let listener = match TcpListener::bind(server_addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(anyhow!("binding {server_addr}: {e}")));
                return Err(e.into());
            }
        };
        let _ = tx.send(Ok(()));
        tcp_serve_once(listener)
    })?;
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(r) => r?,
        Err(_) => bail!("TCP server in {} did not start", server_ns.name()),
    }
    let client = client_ns.run(|| tcp_send_pattern(server_addr, bytes))?;
    let served = server.join().map_err(|_| anyhow!("TCP server thread panicked"))?;
    let (duration, hash, reported) = match (client, served) {
        (Ok(c), Ok(_)) => c,
        (Err(e), Ok(_)) => return Err(e.context("TCP client")),
        (Ok(_), Err(e)) => return Err(e.context("TCP server")),
        (Err(ce), Err(se)) => bail!("TCP client: {ce:#}; server: {se:#}"),
    };
    if reported != (bytes as u64, hash) {
        bail!("server got {} bytes hash {:#x}, sent {bytes} bytes hash {hash:#x}", reported.0, reported.1);
    }
    let secs = duration.as_secs_f64().max(1e-9);
    Ok(TransferReport { bytes: bytes as u64, duration, mbit_per_s: bytes as f64 * 8.0 / secs / 1e6, hash })
}

/// Accepts one connection (within the I/O timeout), hashes it to EOF and writes back
/// `count || hash` (big-endian u64s).
fn tcp_serve_once(listener: TcpListener) -> Result<(u64, u64)> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + TCP_IO_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TCP_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(TCP_IO_TIMEOUT))?;
    let (mut count, mut fnv) = (0u64, Fnv1a::default());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = stream.read(&mut buf).context("server read")?;
        if n == 0 {
            break;
        }
        fnv.update(&buf[..n]);
        count += n as u64;
    }
    let mut summary = [0u8; 16];
    summary[..8].copy_from_slice(&count.to_be_bytes());
    summary[8..].copy_from_slice(&fnv.finish().to_be_bytes());
    stream.write_all(&summary).context("server reply")?;
    Ok((count, fnv.finish()))
}

/// Client side: connect (retrying while ARP and learning settle), stream the pattern, half-close,
/// read the server's summary. Returns (duration, own hash, (server count, server hash)).
fn tcp_send_pattern(to: SocketAddr, bytes: usize) -> Result<(Duration, u64, (u64, u64))> {
    let mut last_err = None;
    let mut stream = None;
    for _ in 0..10 {
        match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => {
                last_err = Some(e);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let mut stream = stream.ok_or_else(|| anyhow!("connecting to {to}: {last_err:?}"))?;
    let start = Instant::now();
    stream.set_read_timeout(Some(TCP_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(TCP_IO_TIMEOUT))?;
    let (mut gen, mut fnv) = (PatternGen(0x9e37_79b9_7f4a_7c15), Fnv1a::default());
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        gen.fill(&mut buf[..n]);
        fnv.update(&buf[..n]);
        stream.write_all(&buf[..n]).with_context(|| format!("client write, {} bytes sent", bytes - left))?;
        left -= n;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut summary = [0u8; 16];
    stream.read_exact(&mut summary).context("reading server summary")?;
    let duration = start.elapsed();
    let count = u64::from_be_bytes(summary[..8].try_into().expect("8 bytes"));
    let hash = u64::from_be_bytes(summary[8..].try_into().expect("8 bytes"));
    Ok((duration, fnv.finish(), (count, hash)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_match_is_whole_word() {
        assert!(has_word("INFO vxtap: ready dev=vxt0", "ready"));
        assert!(has_word("ready", "ready"));
        assert!(has_word("vxt0: ready.", "ready"));
        assert!(!has_word("device vxt0 already exists", "ready"));
        assert!(!has_word("readying", "ready"));
    }

    #[test]
    fn fnv_known_vector() {
        // Published FNV-1a 64 test vectors.
        let mut h = Fnv1a::default();
        h.update(b"");
        assert_eq!(h.finish(), 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv1a::default();
        h.update(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn pattern_is_deterministic_across_chunkings() {
        let mut one = vec![0u8; 64];
        PatternGen(7).fill(&mut one);
        let mut two = vec![0u8; 64];
        let mut g = PatternGen(7);
        g.fill(&mut two[..32]);
        g.fill(&mut two[32..]);
        assert_eq!(one, two);
        assert_ne!(one[..8], one[8..16]);
    }
}
