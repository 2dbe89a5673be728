//! Test bed for vxtap: throw-away network namespaces joined by veth underlays, VTEP processes
//! running inside them, and socket-level traffic helpers that need no external tools.
//!
//! Used by vxtap's end-to-end tests and by `vxtap demo`. It is its own crate, not part of the
//! `vxtap` library's API, and does not depend on it: a VTEP is whatever program path the caller
//! passes to [`Vtep::spawn`] (the tests pass `env!("CARGO_BIN_EXE_vxtap")`).
//!
//! It needs root and iproute2 (`ip`, `bridge`); [`netns_available`] says whether that holds, and
//! tests are declared with [`netns_test!`] so that they skip (or fail under
//! `VXTAP_REQUIRE_NETNS=1`) without it. Every resource is owned by a guard whose `Drop` removes it
//! (namespaces deleted, processes killed by PID, temporary directories removed), so a test that
//! panics leaves nothing behind. A process killed outright (SIGKILL) cannot clean up; its
//! leftovers are named `vxt-<tag>-<pid>-<n>` and can be removed with `ip netns del`.
//!
//! Addresses: the underlay uses 198.18.0.0/24 and 2001:db8::/64, the overlay 198.19.0.0/24
//! (benchmarking and documentation ranges); nothing here sends anywhere else.
//!
//! Traffic helpers run their sockets on threads that have entered a namespace with `setns(2)`:
//! the network namespace is a per-thread attribute, so the rest of the process is unaffected.
//!
//! The modules, all re-exported here:
//! - `netns`: [`Netns`], the availability probe and test gate ([`require_netns`],
//!   [`netns_test!`]), [`TempDir`];
//! - `underlay`: [`Family`], [`Underlay`] (veth pair, bridge star, or two subnets behind a router
//!   with a narrow link), [`KernelVxlan`];
//! - `vtep`: the [`Vtep`] process guard and control-socket helpers ([`vtep_cmd`], [`stats_json`],
//!   [`fdb_json`], [`counter`]);
//! - `traffic`: UDP echo, round trip and send, the hash-verified [`tcp_transfer`], [`Fnv1a`];
//! - `etcd`: [`Etcd`], a throw-away etcd server in a namespace with a small client of its JSON
//!   gateway (put, delete, list, compact, leases); or over TLS with client certificates
//!   ([`EtcdTls`]), and with authentication on, driven with `etcdctl`;
//! - `capture`: raw frames on a device ([`capture`], [`send_frame`]), to see what crossed the
//!   underlay and to hand a TAP hand-made frames.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context, Result};

mod capture;
mod etcd;
mod netns;
mod traffic;
mod underlay;
mod vtep;

pub use capture::{capture, send_frame, vxlan_inner, Capture};
pub use etcd::{etcd_installed, secure_etcd_installed, Etcd, EtcdTls, ETCD_READY_TIMEOUT};
pub use netns::{netns_available, require_netns, require_netns_and, Netns, TempDir};
pub use traffic::{
    tcp_transfer, udp_echo_server, udp_roundtrip, udp_send, udp_send_df, Df, EchoServer, Fnv1a,
    TransferReport,
};
pub use underlay::{Family, KernelVxlan, Underlay, UNDERLAY_DEV};
pub use vtep::{counter, fdb_json, stats_json, vtep_cmd, Vtep, READY_TIMEOUT};

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
