//! What the cluster task reports to `vxtap stats`: plain atomics, written by the task and read
//! by the control sockets.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The state of the process's etcd session.
#[derive(Debug, Default)]
pub struct Status {
    connected: AtomicU64,
    revision: AtomicU64,
    resyncs: AtomicU64,
    bad_values: AtomicU64,
    /// Members per network (the index given to the task).
    members: Vec<AtomicU64>,
}

impl Status {
    /// The status of a process with `networks` networks.
    pub fn new(networks: usize) -> Status {
        Status { members: (0..networks).map(|_| AtomicU64::new(0)).collect(), ..Status::default() }
    }

    /// Connected: listed and watching (1), or not (0).
    pub fn set_connected(&self, up: bool) {
        self.connected.store(u64::from(up), Relaxed);
    }

    /// The store revision the tables reflect.
    pub fn set_revision(&self, rev: i64) {
        self.revision.store(u64::try_from(rev).unwrap_or(0), Relaxed);
    }

    /// A listing after the first (after a reconnect, a broken watch or a compaction).
    pub fn resynced(&self) {
        self.resyncs.fetch_add(1, Relaxed);
    }

    pub fn bad_values(&self, n: usize) {
        self.bad_values.fetch_add(n as u64, Relaxed);
    }

    pub fn set_members(&self, net: usize, n: usize) {
        if let Some(m) = self.members.get(net) {
            m.store(n as u64, Relaxed);
        }
    }

    /// `(name, value)` pairs for `vxtap stats` of network `net`.
    pub fn fields(&self, net: usize) -> Vec<(String, u64)> {
        vec![
            ("etcd_connected".to_string(), self.connected.load(Relaxed)),
            ("etcd_revision".to_string(), self.revision.load(Relaxed)),
            ("etcd_resyncs".to_string(), self.resyncs.load(Relaxed)),
            ("etcd_bad_values".to_string(), self.bad_values.load(Relaxed)),
            ("etcd_members".to_string(), self.members.get(net).map_or(0, |m| m.load(Relaxed))),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_in_order() {
        let s = Status::new(2);
        s.set_connected(true);
        s.set_revision(42);
        s.resynced();
        s.bad_values(3);
        s.set_members(1, 500);
        let f = s.fields(1);
        let names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["etcd_connected", "etcd_revision", "etcd_resyncs", "etcd_bad_values", "etcd_members"]
        );
        assert_eq!(f.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [1, 42, 1, 3, 500]);
        assert_eq!(s.fields(0)[4].1, 0);
    }
}
