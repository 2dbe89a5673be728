//! What the flannel task reports to `vxtap stats`: plain atomics, written by the task and read
//! by the control socket.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Status {
    connected: AtomicU64,
    revision: AtomicU64,
    resyncs: AtomicU64,
    peers: AtomicU64,
    bad_leases: AtomicU64,
    other_backends: AtomicU64,
    route_errors: AtomicU64,
}

impl Status {
    pub fn new() -> Status {
        Status::default()
    }
    /// Listed and watching (1), or not (0).
    pub fn set_connected(&self, up: bool) {
        self.connected.store(u64::from(up), Relaxed);
    }
    pub fn set_revision(&self, rev: i64) {
        self.revision.store(u64::try_from(rev).unwrap_or(0), Relaxed);
    }
    pub fn resynced(&self) {
        self.resyncs.fetch_add(1, Relaxed);
    }
    pub fn set_peers(&self, n: usize) {
        self.peers.store(n as u64, Relaxed);
    }
    /// Leases whose key or value did not parse, each time they were read.
    pub fn bad_lease(&self) {
        self.bad_leases.fetch_add(1, Relaxed);
    }
    /// Leases of a backend other than vxlan, each time they were read.
    pub fn other_backend(&self) {
        self.other_backends.fetch_add(1, Relaxed);
    }
    /// Routes, neighbour entries or FDB entries the kernel or the table refused.
    pub fn route_error(&self) {
        self.route_errors.fetch_add(1, Relaxed);
    }

    /// `(name, value)` pairs for `vxtap stats`.
    pub fn fields(&self) -> Vec<(String, u64)> {
        [
            ("flannel_connected", &self.connected),
            ("flannel_revision", &self.revision),
            ("flannel_resyncs", &self.resyncs),
            ("flannel_peers", &self.peers),
            ("flannel_bad_leases", &self.bad_leases),
            ("flannel_other_backends", &self.other_backends),
            ("flannel_route_errors", &self.route_errors),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.load(Relaxed)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_in_order() {
        let s = Status::new();
        s.set_connected(true);
        s.set_revision(9);
        s.set_peers(2);
        s.bad_lease();
        s.other_backend();
        s.other_backend();
        let f = s.fields();
        assert_eq!(f[0], ("flannel_connected".to_string(), 1));
        assert_eq!(f.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [1, 9, 0, 2, 1, 2, 0]);
    }
}
