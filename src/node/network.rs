//! One overlay network as it runs: its TAP opened and configured (MAC, MTU, up, address), its
//! FDB built from the configuration, and the handle that ties it to the socket it shares.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::group::SocketGroup;
use super::tap::{Tap, TapOptions};
use super::udp::Underlay;
use crate::config::NetworkConfig;
use crate::control::cluster::Status;
use crate::packet::pipeline::{Network, Policies};
use crate::state::fdb::{Clock, Fdb, FdbConfig};
use crate::wire::EncapHeader;

/// A running network: its configuration, packet-path state, TAP and the socket it shares.
pub struct NetworkHandle {
    pub config: NetworkConfig,
    pub net: Arc<Network>,
    pub tap: Arc<Tap>,
    /// The socket it shares, and the networks on it.
    pub(super) group: Arc<SocketGroup>,
    /// The group's sockets.
    pub(super) underlay: Arc<Underlay>,
    /// The TAP's kernel drop count when vxtap started (a reused TAP may have some already).
    tap_drops_at_start: u64,
    /// The cluster control plane's status, once attached (`--etcd`).
    pub(super) cluster: OnceLock<Arc<Status>>,
    /// Which opening of the network's tables this is: kept by changes in place, new when
    /// opened (the cluster applies its members to new tables again).
    pub(super) incarnation: u64,
    /// The cluster members' VTEPs and node names, for `peers`.
    pub(super) members: Mutex<Vec<(SocketAddr, String)>>,
    /// The flannel task's status, when the network is `vxtap flannel`'s: `stats` shows it and
    /// `peers` calls its members' VTEPs `flannel`.
    pub(super) flannel: OnceLock<Arc<crate::control::flannel::Status>>,
}

impl NetworkHandle {
    pub(super) fn new(
        config: NetworkConfig,
        net: Arc<Network>,
        tap: Arc<Tap>,
        group: Arc<SocketGroup>,
    ) -> NetworkHandle {
        let tap_drops_at_start = tap.kernel_drops().unwrap_or(0);
        let underlay = group.underlay.clone();
        NetworkHandle {
            config,
            net,
            tap,
            group,
            underlay,
            tap_drops_at_start,
            cluster: OnceLock::new(),
            incarnation: super::cluster::next_incarnation(),
            members: Mutex::new(Vec::new()),
            flannel: OnceLock::new(),
        }
    }

    /// The same running network under `config` (a reload changed it in place); its place in
    /// the cluster, if any, stays, and so do its tables.
    pub(super) fn with_config(&self, config: NetworkConfig) -> NetworkHandle {
        let cluster = OnceLock::new();
        if let Some(c) = self.cluster.get() {
            let _ = cluster.set(c.clone());
        }
        let flannel = OnceLock::new();
        if let Some(f) = self.flannel.get() {
            let _ = flannel.set(f.clone());
        }
        NetworkHandle {
            flannel,
            config,
            net: self.net.clone(),
            tap: self.tap.clone(),
            group: self.group.clone(),
            underlay: self.underlay.clone(),
            tap_drops_at_start: self.tap_drops_at_start,
            cluster,
            incarnation: self.incarnation,
            members: Mutex::new(self.members.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        }
    }

    /// Frames the kernel dropped at the TAP since vxtap started (queue full: not read in time).
    pub(super) fn tap_drops(&self) -> u64 {
        self.tap.kernel_drops().unwrap_or(self.tap_drops_at_start).saturating_sub(self.tap_drops_at_start)
    }
}

/// The FDB settings of a network's configuration.
pub(super) fn fdb_config(c: &NetworkConfig) -> FdbConfig {
    FdbConfig {
        learning: c.learning,
        ageing: std::time::Duration::from_secs(c.ageing),
        max_learned: c.max_fdb,
    }
}

/// The packet-path policies of a network's configuration.
pub(super) fn policies(c: &NetworkConfig) -> Policies {
    Policies { df: c.df, mss_clamp: c.mss_clamp, tos: c.tos }
}

/// Opens and configures one network's TAP and builds its FDB.
pub(super) fn open(c: &NetworkConfig, clock: Arc<dyn Clock>) -> Result<(Tap, Network)> {
    let tap = Tap::open(&c.dev, TapOptions { queues: c.queues(), offload: c.offload })?;
    if let Some(mac) = c.mac {
        tap.set_mac(mac)?;
    }
    if c.cpu_pinning && tap.queues().len() > 1 {
        if let Err(e) = tap.steer_by_cpu() {
            warn!(dev = c.dev, "cannot steer the TAP's frames by CPU, they go by flow hash: {e}");
        }
    }
    tap.set_mtu(c.mtu())?;
    tap.set_up()?;
    if let Some(addr) = &c.address {
        tap.add_address(addr)?;
    }
    let fdb = Fdb::new(c.vni, Some(tap.mac()?), fdb_config(c), clock);
    let port = c.port();
    // The group (if any) is the default destination, like the kernel's `group`: it and the
    // remotes get every frame with no FDB entry.
    let group = c.group.map(|g| SocketAddr::new(g, port));
    fdb.set_flood_list(
        group.into_iter().chain(c.remotes.iter().map(|r| r.with_default_port(port))).collect(),
    );
    for s in &c.statics {
        fdb.add_static(s.mac, s.dst.with_default_port(port))
            .with_context(|| format!("static entry {}", s.mac))?;
    }
    let header = EncapHeader::for_proto(c.proto, c.vni)?;
    let o = tap.offloads();
    info!(dev = c.dev, vni = c.vni, proto = %c.proto, mtu = c.mtu(), mac = %tap.mac()?, created = tap.created(),
          queues = tap.queues().len(), vnet_hdr = o.vnet_hdr, tso = o.tso, uso = o.uso, "TAP up");
    if c.offload && !o.tso {
        warn!(dev = c.dev, "the kernel refused the TAP's TSO offload: one frame per read");
    }
    Ok((tap, Network::new(c.vni, port, header, fdb).with_policies(policies(c)).with_proxy(c.proxy)))
}
