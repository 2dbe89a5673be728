//! The cluster harness of `cluster.rs` and `proxy.rs`: a star underlay whose last host runs a
//! throw-away etcd, and vxtap in the other hosts with `--etcd` and no `--remote`/`--static`,
//! its etcd protected or not ([`Security`]).

use std::time::{Duration, Instant};

use serde_json::Value;
use vxtap::config::etcd::PASSWORD_ENV;
use vxtap::control::{FdbKind, FdbRow, Request, Stats};
use vxtap_testbed::{vtep_cmd, Etcd, Netns, Underlay};

use super::*;

/// The lease time to live the tests run with, so that a crash is noticed quickly.
pub const TTL: u64 = 3;
/// Deadline for anything that depends on etcd and the VTEPs reacting (generous: debug builds on
/// a loaded 2-core machine).
pub const CONVERGE: Duration = Duration::from_secs(30);
pub const PREFIX: &str = "/vxtap/v1";
/// The etcd user of the clusters with authentication on, and its password (passed to vxtap in
/// [`PASSWORD_ENV`]: never a flag).
pub const USER: &str = "vxtap";
pub const PASSWORD: &str = "overlay-key-7f3a";

/// How a cluster's etcd is protected: TLS with client certificates, authentication.
#[derive(Clone, Copy, Default)]
pub struct Security {
    pub tls: bool,
    pub auth: bool,
}

/// A star of `n` VTEP hosts plus one host running etcd.
pub struct Cluster {
    pub bed: Bed,
    pub etcd: Etcd,
    pub ttl: u64,
    /// `--etcd`: the server's endpoint, unless a test lists others.
    pub endpoints: String,
    /// Flags and environment of every VTEP for [`Security`]: the TLS files, the user, the password.
    pub secure: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Cluster {
    pub fn new(n: usize) -> Cluster {
        Cluster::with_ttl(n, TTL)
    }

    pub fn with_ttl(n: usize, ttl: u64) -> Cluster {
        Cluster::build(n, ttl, Security::default())
    }

    pub fn secured(n: usize, security: Security) -> Cluster {
        Cluster::build(n, TTL, security)
    }

    pub fn build(n: usize, ttl: u64, security: Security) -> Cluster {
        let ul = Underlay::star(n + 1).expect("underlay");
        let bed = Bed::new(ul);
        let (ns, ip) = (bed.ul.node(n), bed.ul.addr(n));
        let mut etcd =
            if security.tls { Etcd::start_tls(ns, ip) } else { Etcd::start(ns, ip) }.expect("etcd");
        let (mut secure, mut env) = (Vec::new(), Vec::new());
        if let Some(tls) = etcd.tls() {
            for (flag, path) in [("--etcd-ca", &tls.ca), ("--etcd-cert", &tls.cert), ("--etcd-key", &tls.key)]
            {
                secure.extend([flag.to_string(), path.to_string_lossy().into_owned()]);
            }
        }
        if security.auth {
            etcd.enable_auth(&format!("{PREFIX}/"), USER, PASSWORD).expect("etcd authentication");
            secure.extend(strings(&["--etcd-user", USER]));
            env.push((PASSWORD_ENV.to_string(), PASSWORD.to_string()));
        }
        let endpoints = etcd.endpoint();
        let mut c = Cluster { bed, etcd, ttl, endpoints, secure, env };
        c.bed.vteps.pop(); // the etcd host runs no VTEP
        c
    }

    /// `vxtap run` in node i: VNI 42, TAP vxt0 with 198.19.0.(i+1)/24 and MAC 02:..:(i+1), node
    /// name n<i>, no remote, plus `extra`.
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        let args = self.args(i, extra);
        let env = self.env.clone();
        self.bed.spawn_env(i, &args, &env);
    }

    pub fn args(&self, i: usize, extra: &[&str]) -> Vec<String> {
        self.args_as(i, &format!("n{i}"), extra)
    }

    /// [`Cluster::args`] with another node name.
    pub fn args_as(&self, i: usize, node: &str, extra: &[&str]) -> Vec<String> {
        let (local, ctl) = (self.bed.ul.addr(i).to_string(), self.bed.control(i));
        let mut args = strings(&["--dev", "vxt0", "--vni", "42", "--local", &local]);
        args.extend(strings(&["--address", &format!("198.19.0.{}/24", i + 1), "--mac", &mac(i)]));
        args.extend(strings(&["--control", &ctl.to_string_lossy(), "--etcd", &self.endpoints]));
        args.extend(strings(&["--node", node, "--etcd-ttl", &self.ttl.to_string()]));
        args.extend(self.secure.iter().cloned());
        args.extend(strings(extra));
        args
    }

    pub fn node(&self, i: usize) -> &Netns {
        self.bed.ul.node(i)
    }

    /// A counter of node i, asked in process (for close polling).
    pub fn stat(&self, i: usize, key: &str) -> u64 {
        let stats: Stats = vxtap::node::control_client::request(&self.bed.control(i), &Request::Stats)
            .unwrap_or_else(|e| panic!("node {i}: stats: {e:#}\n{}", self.logs()));
        stats.get(key).unwrap_or_else(|| panic!("node {i}: no counter {key}"))
    }

    /// Whether node i's FDB has node j's TAP MAC as an etcd entry pointing at node j's VTEP.
    /// Asks the control socket in process (no CLI to spawn), so polling it times events closely.
    pub fn has_member(&self, i: usize, j: usize) -> bool {
        let rows: Vec<FdbRow> = vxtap::node::control_client::request(&self.bed.control(i), &Request::FdbShow)
            .unwrap_or_else(|e| panic!("node {i}: fdb show: {e:#}\n{}", self.logs()));
        let want: vxtap::MacAddr = mac(j).parse().unwrap();
        rows.iter().any(|r| r.mac == want && r.kind == FdbKind::Etcd && r.dst == self.bed.ul.addr(j))
    }

    /// Waits until node i's view of node j's membership is `present`; panics with the logs.
    pub fn wait_member(&self, i: usize, j: usize, present: bool, within: Duration) -> Duration {
        let t0 = Instant::now();
        if !wait_until(within, || self.has_member(i, j) == present) {
            panic!(
                "node {i}: member {j} {} within {within:?}: {}\n{}",
                if present { "did not join" } else { "was not dropped" },
                self.bed.fdb(i),
                self.logs()
            );
        }
        t0.elapsed()
    }

    /// Waits until every pair of the running nodes `nodes` sees the other.
    pub fn converge(&self, nodes: &[usize]) {
        for &i in nodes {
            for &j in nodes.iter().filter(|&&j| j != i) {
                self.wait_member(i, j, true, CONVERGE);
            }
        }
    }

    pub fn wait_stat(&self, i: usize, key: &str, want: impl Fn(u64) -> bool, within: Duration) {
        if !wait_until(within, || want(self.stat(i, key))) {
            panic!(
                "node {i}: {key} not as expected within {within:?}: {}\n{}",
                self.bed.stats(i),
                self.logs()
            );
        }
    }

    pub fn logs(&self) -> String {
        format!("{}--- etcd log ---\n{}", self.bed.logs(), self.etcd.log())
    }

    pub fn json(&self, i: usize, args: &[&str]) -> Value {
        let out = vtep_cmd(bin(), &self.bed.control(i), args).unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
        serde_json::from_str(&out).expect("json")
    }
}
