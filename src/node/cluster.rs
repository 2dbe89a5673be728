//! The dataplane's side of the cluster control plane ([`crate::control::cluster`]): its records read
//! from the running networks, the members' changes applied to the tables, and the running
//! networks sent to the cluster task at start and after every reload. Runs on the control
//! thread; every call is a few synchronous table updates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tracing::warn;

use super::{ifaddrs, Dataplane, NetworkHandle};
use crate::control::cluster::{Change, LocalNet, LocalRecord, NetKey, Status, Tables};
use crate::state::fdb::FloodSource;
use crate::wire::mac::MacAddr;

/// What ties the dataplane to the cluster task, once `--etcd` joined.
pub(super) struct ClusterLink {
    status: Arc<Status>,
    /// The running networks, for the task: sent again after every reload.
    nets: watch::Sender<Vec<LocalNet>>,
}

/// Numbers each network's tables as they are opened (see [`LocalNet::incarnation`]).
static INCARNATIONS: AtomicU64 = AtomicU64::new(1);

/// A number no network opened before has.
pub(super) fn next_incarnation() -> u64 {
    INCARNATIONS.fetch_add(1, Ordering::Relaxed)
}

impl NetworkHandle {
    fn net_key(&self) -> NetKey {
        NetKey { proto: self.config.proto, vni: self.config.vni }
    }
}

impl Dataplane {
    /// Joins the running networks to the cluster: `vxtap stats` shows its status, and the
    /// receiver gives the cluster task the networks, now and after every reload.
    pub fn attach_cluster(&self, status: Arc<Status>) -> watch::Receiver<Vec<LocalNet>> {
        let _state = self.state();
        let (tx, rx) = watch::channel(self.local_nets());
        let _ = self.cluster.set(ClusterLink { status, nets: tx });
        self.follow_cluster();
        rx
    }

    /// Whether the networks are in a cluster (`--etcd` joined): a reload must keep them fit
    /// for it ([`crate::config::check_cluster`]).
    pub fn in_cluster(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// After start or a reload (with the state lock held): the status shown by every network
    /// (a network a reload opened has none yet), and the networks sent to the task.
    pub(super) fn follow_cluster(&self) {
        let Some(link) = self.cluster.get() else { return };
        for n in self.networks().iter() {
            let _ = n.cluster.set(link.status.clone());
        }
        link.nets.send_if_modified(|nets| {
            let now = self.local_nets();
            let changed = *nets != now;
            *nets = now;
            changed
        });
    }

    fn local_nets(&self) -> Vec<LocalNet> {
        self.networks()
            .iter()
            .map(|n| LocalNet { key: n.net_key(), v6: n.config.underlay_v6(), incarnation: n.incarnation })
            .collect()
    }

    /// The running network that is the cluster's network `net`, if it runs.
    fn cluster_network(&self, net: NetKey) -> Option<Arc<NetworkHandle>> {
        self.networks().iter().find(|n| n.net_key() == net).cloned()
    }
}

impl Tables for Dataplane {
    fn local(&self, net: NetKey) -> LocalRecord {
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
            Ok(a) => a.into_iter().filter(|ip| crate::state::neigh::is_host_address(*ip)).collect(),
            Err(e) => {
                warn!(dev = n.config.dev, "reading the TAP's addresses: {e}");
                Vec::new()
            }
        };
        LocalRecord { vtep: SocketAddr::new(ip, n.config.port()), mac, overlay }
    }

    fn apply(&self, net: NetKey, c: &Change) {
        let Some(n) = self.cluster_network(net) else { return };
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
