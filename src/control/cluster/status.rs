//! What the cluster task reports to `vxtap stats`: plain atomics, written by the task and read
//! by the control sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::NetKey;

/// The state of the process's etcd session.
#[derive(Debug, Default)]
pub struct Status {
    connected: AtomicU64,
    revision: AtomicU64,
    resyncs: AtomicU64,
    bad_values: AtomicU64,
    /// Members per network. A lock, not an atomic: written once per change of membership and
    /// read by `stats`, never on the packet path; and the set of networks follows reloads.
    members: Mutex<HashMap<NetKey, u64>>,
}

impl Status {
    pub fn new() -> Status {
        Status::default()
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

    pub fn set_members(&self, net: NetKey, n: usize) {
        self.members().insert(net, n as u64);
    }

    /// Forgets the networks not in `nets` (a reload removed them).
    pub fn retain(&self, nets: &[NetKey]) {
        self.members().retain(|k, _| nets.contains(k));
    }

    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<NetKey, u64>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `(name, value)` pairs for `vxtap stats` of network `net`.
    pub fn fields(&self, net: NetKey) -> Vec<(String, u64)> {
        vec![
            ("etcd_connected".to_string(), self.connected.load(Relaxed)),
            ("etcd_revision".to_string(), self.revision.load(Relaxed)),
            ("etcd_resyncs".to_string(), self.resyncs.load(Relaxed)),
            ("etcd_bad_values".to_string(), self.bad_values.load(Relaxed)),
            ("etcd_members".to_string(), self.members().get(&net).copied().unwrap_or(0)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NetKey = NetKey { proto: crate::wire::Proto::Vxlan, vni: 42 };
    const B: NetKey = NetKey { proto: crate::wire::Proto::Geneve, vni: 42 };

    #[test]
    fn fields_in_order() {
        let s = Status::new();
        s.set_connected(true);
        s.set_revision(42);
        s.resynced();
        s.bad_values(3);
        s.set_members(B, 500);
        let f = s.fields(B);
        let names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["etcd_connected", "etcd_revision", "etcd_resyncs", "etcd_bad_values", "etcd_members"]
        );
        assert_eq!(f.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [1, 42, 1, 3, 500]);
        assert_eq!(s.fields(A)[4].1, 0);
        s.retain(&[A]);
        assert_eq!(s.fields(B)[4].1, 0, "a network a reload removed is forgotten");
    }
}
