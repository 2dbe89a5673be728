//! Network namespaces and the gate that decides whether the tests that need them run: the
//! availability probe, [`require_netns`] and the [`netns_test!`](crate::netns_test) macro, plus
//! [`TempDir`] for per-test files.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;

use anyhow::{anyhow, Context, Result};

use crate::{run_checked, unique_name};

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
/// Tests do not call this directly: they are declared with [`netns_test!`](crate::netns_test),
/// which calls it (through [`require_netns_and`]) before the body.
///
/// # Panics
/// When namespaces are unavailable and `VXTAP_REQUIRE_NETNS=1` is set (deliberately).
pub fn require_netns(test: &str) -> bool {
    require_netns_and(test, || Ok(()))
}

/// [`require_netns`] with one more requirement of the test's own (for example, Open vSwitch
/// installed), checked once namespaces work: `extra` returns `Err(reason)` when it is not met.
/// Either way the outcome is the same as for missing namespaces: skipped with the reason
/// printed, or a panic under `VXTAP_REQUIRE_NETNS=1`.
///
/// # Panics
/// When namespaces or the extra requirement are unavailable and `VXTAP_REQUIRE_NETNS=1` is set.
pub fn require_netns_and(test: &str, extra: impl FnOnce() -> Result<(), String>) -> bool {
    let required = std::env::var("VXTAP_REQUIRE_NETNS").as_deref() == Ok("1");
    gate(test, netns_available().and_then(|()| extra()), required)
}

/// The decision behind [`require_netns_and`]: run, skip with the reason, or panic if `required`.
fn gate(test: &str, available: Result<(), String>, required: bool) -> bool {
    match available {
        Ok(()) => true,
        Err(reason) => {
            if required {
                panic!("{test}: netns required but unavailable: {reason}");
            }
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

/// Declares a `#[test]` that needs network namespaces: the one way every netns test is written.
///
/// The body runs only if [`require_netns`] says namespaces work; otherwise the test prints why
/// and passes as skipped, or panics when `VXTAP_REQUIRE_NETNS=1` (CI), where a skip would hide a
/// broken setup. `requires = check` adds a requirement of the test's own, a
/// `FnOnce() -> Result<(), String>` whose `Err` is the reason (see [`require_netns_and`]).
///
/// The body is an expression: a call to a helper shared by several tests, or a block.
///
/// ```
/// use vxtap_testbed::{netns_test, Netns};
///
/// netns_test!(loopback_is_up, {
///     let ns = Netns::new("doc").expect("namespace");
///     assert!(ns.ip_out(&["link", "show", "lo"]).expect("ip").contains("UP"));
/// });
///
/// fn tool_installed() -> Result<(), String> {
///     Err("not installed here".into())
/// }
///
/// netns_test!(needs_a_tool, requires = tool_installed, unreachable!());
/// # fn main() {}
/// ```
///
/// It lives here, beside the gate it calls, rather than in one test file's helpers, so that every
/// test target (with or without the shared harness of `tests/common`) declares its netns tests
/// the same way.
#[macro_export]
macro_rules! netns_test {
    ($name:ident, requires = $requirement:expr, $body:expr $(,)?) => {
        #[test]
        fn $name() {
            if $crate::require_netns_and(stringify!($name), $requirement) {
                $body;
            }
        }
    };
    ($name:ident, $body:expr $(,)?) => {
        $crate::netns_test!($name, requires = || Ok(()), $body);
    };
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
        handle(&self.name)
    }

    /// Runs `f` on a new thread that has entered this namespace, so sockets `f` opens live here.
    /// Blocks until `f` returns. A panic inside `f` is propagated to the caller.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        run_in(&self.name, f)
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

fn handle(name: &str) -> Result<File> {
    let path = format!("/run/netns/{name}");
    File::open(&path).with_context(|| format!("opening {path}"))
}

/// [`Netns::run`] by the namespace's name, for guards that outlive no borrow of it.
pub(crate) fn run_in<F, R>(name: &str, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let file = handle(name)?;
    let joined = std::thread::scope(|s| {
        s.spawn(move || -> Result<R> {
            enter(&file)?;
            Ok(f())
        })
        .join()
    });
    match joined {
        Ok(r) => r.with_context(|| format!("entering {name}")),
        Err(panic) => std::panic::resume_unwind(panic),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_runs_skips_or_fails() {
        assert!(gate("t", Ok(()), false));
        assert!(gate("t", Ok(()), true));
        assert!(!gate("t", Err("no OVS".into()), false));
    }

    #[test]
    #[should_panic(expected = "t: netns required but unavailable: no OVS")]
    fn gate_fails_when_required() {
        gate("t", Err("no OVS".into()), true);
    }
}
