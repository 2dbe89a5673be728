//! The part of vxtap that owns devices, sockets and threads.
//!
//! Hot path: dedicated threads with blocking I/O — one per queue of each socket, serving that
//! queue of every TAP on the socket and the socket's receive socket of that queue — each owning
//! its buffers, with no lock shared between them. The control side (signals, control sockets,
//! ageing, reload) runs on a tokio runtime in the main thread and only touches shared state (FDB,
//! counters, the snapshots of the networks on each socket).
//!
//! - [`network`]: a network's TAP opened and configured, its FDB built;
//! - `group`: the sockets of one (local address, port), their threads and the networks on them;
//! - `reload`: a new configuration applied to the running networks;
//! - [`tap`], [`netdev`]: the TAP device and interface configuration (ioctls);
//! - `tap_reader`, `tap_writer`: a TAP queue as plain frames, its offloads behind them;
//! - [`udp`]: the underlay sockets (quinn-udp);
//! - `worker`: the two packet loops; `report`: the periodic drop summary;
//! - `api`: the answers to control requests; `metrics`: the values `/metrics` shows;
//! - `cluster`: the tables behind the cluster control plane ([`crate::control::cluster::Tables`]), and
//!   `ifaddrs`, the TAP's addresses it publishes; `suppress`: `--proxy`'s answers on the TAP path.

mod api;
mod cluster;
pub mod control_client;
pub mod control_server;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
pub mod flannel;
mod group;
mod ifaddrs;
mod metrics;
pub mod metrics_http;
mod netdev;
#[cfg(feature = "etcd")]
pub mod netlink;
mod network;
mod reload;
mod report;
mod suppress;
mod sys;
mod tap;
mod tap_reader;
mod tap_writer;
mod udp;
mod wg;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use tracing::{info, warn};

use crate::config::reload::SocketShape;
use crate::config::NetworkConfig;
use crate::packet::pipeline::SocketCounters;
use crate::packet::pmtu::PathMtus;
use crate::state::fdb::Clock;
use group::{GroupEntry, Members, SocketGroup};
pub use network::NetworkHandle;
pub use report::DropReporter;
use tap::Tap;
use udp::{OuterOptions, Underlay, UnderlayOptions};
pub use wg::TICK as WG_TICK;

#[cfg(not(feature = "etcd"))]
pub use disabled::{start_cluster, ClusterHandle};
#[cfg(feature = "etcd")]
pub use etcd::{first_endpoint, start as start_cluster, Handle as ClusterHandle};

/// A build without the `etcd` feature: `vxtap run` refuses cluster options before it gets here
/// ([`UNSUPPORTED`]); these keep its code free of feature switches.
#[cfg(not(feature = "etcd"))]
mod disabled {
    use std::sync::Arc;

    use crate::config::etcd::Settings;
    use crate::control::cluster::{LocalNet, StartError, Status, Tables, UNSUPPORTED};

    /// Never made.
    pub struct ClusterHandle(());

    impl ClusterHandle {
        pub async fn shutdown(self) {}
    }

    /// Always [`UNSUPPORTED`].
    pub async fn start_cluster(
        _: Settings,
        _: tokio::sync::watch::Receiver<Vec<LocalNet>>,
        _: Arc<dyn Tables>,
        _: Arc<Status>,
    ) -> Result<ClusterHandle, StartError> {
        Err(StartError(UNSUPPORTED.into()))
    }
}

/// Everything `vxtap run` started.
pub struct Dataplane {
    /// The networks running now, in configuration order: what control requests, metrics and
    /// housekeeping read. A reload replaces the whole list.
    networks: ArcSwap<Vec<Arc<NetworkHandle>>>,
    /// What start and reload change, one at a time.
    state: Mutex<State>,
    /// The cluster task's view of the networks, once `--etcd` joined.
    cluster: std::sync::OnceLock<cluster::ClusterLink>,
    /// The encrypted underlay, when configured: every socket group sends and receives through it.
    wg: Option<Arc<wg::WgDevice>>,
}

struct State {
    clock: Arc<dyn Clock>,
    /// The sockets, by bound address.
    groups: BTreeMap<SocketAddr, GroupEntry>,
}

/// A network opened but not serving yet: TAP up, FDB built.
struct Opened {
    config: NetworkConfig,
    tap: Arc<Tap>,
    net: Arc<crate::packet::pipeline::Network>,
}

impl Dataplane {
    /// Opens the TAPs, binds the sockets and starts the packet threads; with `wireguard`, the
    /// WireGuard device too, through which every datagram then goes (`configs` have had
    /// [`crate::config::wireguard::Settings::apply`]).
    pub fn start(
        configs: &[NetworkConfig],
        clock: Arc<dyn Clock>,
        wireguard: Option<&crate::config::wireguard::Settings>,
    ) -> Result<Dataplane> {
        raise_fd_limit(configs);
        let wg = match wireguard {
            None => None,
            Some(s) => {
                let plain_mtu = configs
                    .iter()
                    .map(|c| (c.mtu() + c.overhead()) as usize + 4)
                    .max()
                    .unwrap_or(0)
                    .saturating_sub(crate::wire::wg::overhead(s.outer_v6()));
                let device = Arc::new(wg::WgDevice::new(s, plain_mtu)?);
                info!(listen_port = s.listen_port, address = %s.address, peers = s.peers.len(),
                      public_key = %s.public_key, "WireGuard device up");
                Some(device)
            }
        };
        let dp = Dataplane {
            networks: ArcSwap::from_pointee(Vec::new()),
            state: Mutex::new(State { clock, groups: BTreeMap::new() }),
            cluster: std::sync::OnceLock::new(),
            wg,
        };
        let mut handles = BTreeMap::new();
        {
            let mut state = dp.state();
            // Networks on the same (address, port) share a socket and are told apart by VNI;
            // they share what is learned about the paths to the VTEPs too.
            for (bind, members) in crate::config::reload::by_socket(configs) {
                let path_mtus = Arc::new(PathMtus::default());
                let opened = members
                    .iter()
                    .map(|c| {
                        open_network(c, &state.clock, &path_mtus)
                            .with_context(|| format!("network {}", c.dev))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (entry, started) = start_group(bind, path_mtus, opened, dp.wg.as_ref())?;
                state.groups.insert(bind, entry);
                handles.extend(started.into_iter().map(|h| (h.config.dev.clone(), h)));
            }
        }
        dp.networks.store(Arc::new(configs.iter().filter_map(|c| handles.remove(&c.dev)).collect()));
        if let Some(wg) = &dp.wg {
            wg.start()?;
        }
        Ok(dp)
    }

    /// Drives the WireGuard timers (handshakes, keepalives, session expiry), if WireGuard is on:
    /// from the control side every [`WG_TICK`].
    pub fn wg_tick(&self) {
        if let Some(wg) = &self.wg {
            wg.tick();
        }
    }

    /// Whether the underlay is WireGuard.
    pub fn wireguard(&self) -> bool {
        self.wg.is_some()
    }

    /// The networks running now, in configuration order.
    pub fn networks(&self) -> Arc<Vec<Arc<NetworkHandle>>> {
        self.networks.load_full()
    }

    /// The running network on TAP `dev`.
    pub fn network(&self, dev: &str) -> Option<Arc<NetworkHandle>> {
        self.networks.load().iter().find(|n| n.config.dev == dev).cloned()
    }

    /// Ages out idle learned entries of every network; runs off the hot path.
    pub fn expire(&self) -> usize {
        self.networks.load().iter().map(|n| n.net.fdb.expire()).sum()
    }

    /// Checks again the path MTUs learned towards remote VTEPs: the kernel forgets what an ICMP
    /// error taught it (net.ipv4.route.mtu_expires, `ip route flush cache`), and a path that is
    /// wide again stops cutting super-frames small. Runs off the hot path, once a second.
    pub fn refresh_path_mtus(&self) {
        let networks = self.networks.load();
        let mut done: Vec<&Arc<PathMtus>> = Vec::new();
        for n in networks.iter() {
            let table = &n.net.path_mtus;
            if table.is_empty() || done.iter().any(|t| Arc::ptr_eq(t, table)) {
                continue;
            }
            done.push(table);
            // The largest datagram a network of this socket sends: a full frame, tagged.
            let widest = networks
                .iter()
                .filter(|m| Arc::ptr_eq(&m.net.path_mtus, table))
                .map(|m| m.config.mtu() + m.config.overhead() + 4)
                .max()
                .unwrap_or(u32::MAX);
            for (dst, old) in table.snapshot() {
                let now = n.underlay.path_mtu(dst);
                if now != Some(old) {
                    info!(vtep = %dst, old, new = ?now, "path MTU changed");
                }
                table.set(dst, now.filter(|m| *m < widest));
            }
        }
    }

    /// A reporter of this dataplane's drops, starting from now.
    pub fn drop_reporter(&self) -> DropReporter {
        DropReporter::new(self)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Send pools bind up to two sockets per source port as flows appear (`max_src_ports`): room
/// for the pools of `configs` twice over (a reload builds a socket's new pool before the old one
/// closes), and 8192 for the rest.
fn raise_fd_limit(configs: &[NetworkConfig]) {
    let pools: usize = configs.iter().map(|c| 4 * c.max_src_ports()).sum();
    let fds = sys::raise_fd_limit(8 * 1024 + pools as u64);
    tracing::debug!(fds, "open descriptor limit");
}

/// Opens a network's TAP and builds its packet-path state, recording path MTUs in the table of
/// the socket it will send on.
fn open_network(c: &NetworkConfig, clock: &Arc<dyn Clock>, path_mtus: &Arc<PathMtus>) -> Result<Opened> {
    let (tap, net) = network::open(c, clock.clone())?;
    Ok(Opened { config: c.clone(), tap: Arc::new(tap), net: Arc::new(net.with_path_mtus(path_mtus.clone())) })
}

/// Binds the sockets at `bind` for the networks `opened` (in configuration order, at least one)
/// and starts their threads.
fn start_group(
    bind: SocketAddr,
    path_mtus: Arc<PathMtus>,
    opened: Vec<Opened>,
    wg: Option<&Arc<wg::WgDevice>>,
) -> Result<(GroupEntry, Vec<Arc<NetworkHandle>>)> {
    let shape = SocketShape::of(opened.iter().map(|o| &o.config)).context("a socket without networks")?;
    let first = &opened[0].config;
    let opts = UnderlayOptions {
        src_ports: shape.src_ports,
        max_src_ports: shape.max_src_ports,
        udp_csum: shape.udp_csum,
        queues: shape.queues,
        offload: shape.offload,
        fragmenting: shape.fragmenting,
        outer: OuterOptions {
            ttl: shape.ttl,
            flowlabel: shape.flowlabel,
            multicast_if: multicast_if(first)?,
            multicast: shape.multicast(),
        },
        groups: shape.groups.clone(),
        cpu_pinning: shape.cpu_pinning,
    };
    let underlay = Arc::new(Underlay::bind(bind, opts)?);
    let counters = SocketCounters::default();
    let members = Members::build(shape.proto, opened.iter().map(|o| (&o.config, &o.net, &o.tap)), &counters);
    if opened.iter().any(|o| o.config.allow_from.contains(&crate::config::AllowFrom::Any)) {
        info!(%bind, "accepting datagrams from any source (--allow-from any)");
    } else if opened.iter().all(|o| o.net.fdb.flood_list().is_empty() && o.config.statics.is_empty())
        && opened.iter().all(|o| o.config.allow_from.is_empty())
    {
        warn!(%bind, "no --remote, --static or --allow-from: datagrams from every source will be refused \
               until a VTEP is added with `vxtap fdb add`; --allow-from any accepts and learns from anyone");
    }
    info!(%bind, source_ports = ?underlay.send.ports(), receive_sockets = underlay.recv.len(),
          gso_segments = underlay.gso_segments(), gro = underlay.gro(), "underlay sockets bound");
    if shape.offload && !shape.udp_csum {
        info!(%bind, "UDP GSO is off: the kernel refuses it with zero checksums (--no-udp-csum)");
    }
    let group = Arc::new(SocketGroup::new(bind, underlay, path_mtus, counters, members, wg.cloned())?);
    if let Some(wg) = wg {
        let receiver: Arc<dyn wg::Receiver> = group.clone();
        wg.attach(Arc::downgrade(&receiver));
    }
    let threads = worker::spawn_threads(&group)?;
    let handles = opened
        .into_iter()
        .map(|o| Arc::new(NetworkHandle::new(o.config, o.net, o.tap, group.clone())))
        .collect();
    Ok((GroupEntry { group, shape, threads }, handles))
}

/// The interface index of a network's `underlay_dev` (0 without one: the kernel picks by route).
fn multicast_if(c: &NetworkConfig) -> Result<u32> {
    match &c.underlay_dev {
        None => Ok(0),
        Some(dev) => netdev::if_index(dev).with_context(|| {
            format!("network {}: no interface {dev} (--underlay-dev) in this network namespace", c.dev)
        }),
    }
}
