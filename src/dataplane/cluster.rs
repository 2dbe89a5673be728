//! The dataplane's side of the cluster control plane ([`crate::cluster`]): its records read
//! from the running networks, and the members' changes applied to the tables. Runs on the
//! control thread; every call is a few synchronous table updates.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::warn;

use super::{ifaddrs, Dataplane, NetworkHandle};
use crate::cluster::{Change, LocalRecord, Status, Tables};
use crate::fdb::FloodSource;
use crate::mac::MacAddr;

impl Dataplane {
    /// Shows the cluster's status in every network's `vxtap stats`: the task's network `i` is
    /// the network running `i`-th now, found again by protocol and VNI after a reload (networks
    /// a reload adds are not in the cluster until the next start).
    pub fn attach_cluster(&self, status: Arc<Status>) {
        let networks = self.networks();
        let keys = networks.iter().map(|n| (n.config.proto, n.config.vni)).collect();
        let _ = self.cluster_keys.set(keys);
        for (i, n) in networks.iter().enumerate() {
            let _ = n.cluster.set((status.clone(), i));
        }
    }

    /// The running network that is the cluster task's network `net`, if it still runs.
    fn cluster_network(&self, net: usize) -> Option<Arc<NetworkHandle>> {
        let (proto, vni) = *self.cluster_keys.get()?.get(net)?;
        self.networks().iter().find(|n| n.config.proto == proto && n.config.vni == vni).cloned()
    }
}

impl Tables for Dataplane {
    fn local(&self, net: usize) -> LocalRecord {
        let Some(n) = self.cluster_network(net) else {
            // Removed by a reload: nothing to publish any more (the record names no VTEP).
            return LocalRecord {
                vtep: SocketAddr::from(([0, 0, 0, 0], 0)),
                mac: MacAddr::ZERO,
                overlay: Vec::new(),
            };
        };
        let ip = n.config.bind_addr().ip();
        let mac = n.net.fdb.local_mac().or_else(|| n.tap.mac().ok()).unwrap_or(MacAddr::ZERO);
        let overlay = match ifaddrs::addresses(&n.config.dev) {
            Ok(a) => a.into_iter().filter(|ip| crate::neigh::is_host_address(*ip)).collect(),
            Err(e) => {
                warn!(dev = n.config.dev, "reading the TAP's addresses: {e}");
                Vec::new()
            }
        };
        LocalRecord { vtep: SocketAddr::new(ip, n.config.port()), mac, overlay }
    }

    fn apply(&self, c: &Change) {
        let Some(n) = self.cluster_network(c.net) else { return };
        let fdb = &n.net.fdb;
        for m in &c.left {
            fdb.remove_etcd(&m.mac);
            if !c.vtep_in_use(m.vtep.ip()) {
                fdb.remove_learned_at(m.vtep.ip());
            }
        }
        for (old, new) in &c.updated {
            if old.mac != new.mac {
                fdb.remove_etcd(&old.mac);
            }
            if old.vtep.ip() != new.vtep.ip() && !c.vtep_in_use(old.vtep.ip()) {
                fdb.remove_learned_at(old.vtep.ip());
            }
        }
        for m in c.joined.iter().chain(c.updated.iter().map(|(_, new)| new)) {
            match fdb.set_etcd(m.mac, m.vtep) {
                Ok(true) => {}
                Ok(false) => warn!(dev = n.config.dev, node = m.node, mac = %m.mac,
                                   "member's MAC has a static entry: the static entry is kept"),
                Err(e) => warn!(dev = n.config.dev, node = m.node, "member's FDB entry refused: {e}"),
            }
        }
        fdb.set_flood(FloodSource::Etcd, c.members.iter().map(|m| m.vtep).collect());
        n.net.neigh.set_etcd(c.neighbours());
        *n.members.lock().unwrap_or_else(|e| e.into_inner()) =
            c.members.iter().map(|m| (m.vtep, m.node.clone())).collect();
        n.group.refresh_allowlist();
    }
}
