//! The part of vxtap that owns devices, sockets and threads.
//!
//! Hot path: dedicated threads with blocking I/O — one TAP reader per queue of each network, one
//! receiver per underlay receive socket (one socket per queue) — each owning its buffers, with no
//! lock shared between them. The control side (signals, control sockets, ageing) runs on a tokio
//! runtime in the main thread and only touches shared state (FDB, counters).
//!
//! - [`network`]: a network's TAP opened and configured, its FDB built;
//! - [`tap`], [`netdev`]: the TAP device and interface configuration (ioctls);
//! - `tap_reader`, `tap_writer`: a TAP queue as plain frames, its offloads behind them;
//! - [`udp`]: the underlay sockets (quinn-udp);
//! - `worker`: the two packet loops; `report`: the periodic drop summary;
//! - `api`: the answers to control requests; `metrics`: the values `/metrics` shows.

mod api;
mod metrics;
mod netdev;
mod network;
mod report;
mod sys;
mod tap;
mod tap_reader;
mod tap_writer;
mod udp;
mod worker;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use tracing::{info, warn};

use crate::allow::Allowlist;
use crate::config::{AllowFrom, NetworkConfig};
use crate::fdb::Clock;
use crate::pipeline::{Demux, Policies};
use crate::pmtu::{Df, PathMtus};
use crate::wire::{vxlan, Proto, RxPolicy};
pub use network::NetworkHandle;
pub use report::DropReporter;
use tap::Tap;
use udp::{OuterOptions, Underlay, UnderlayOptions};

/// Everything `vxtap run` started.
pub struct Dataplane {
    pub networks: Vec<NetworkHandle>,
}

impl Dataplane {
    /// Opens the TAPs, binds the sockets and starts the packet threads.
    pub fn start(configs: &[NetworkConfig], clock: Arc<dyn Clock>) -> Result<Dataplane> {
        // Send pools bind up to two sockets per slot as flows appear.
        let fds = sys::raise_fd_limit(8 * 1024 + (4 * udp::MAX_SLOTS * configs.len()) as u64);
        tracing::debug!(fds, "open descriptor limit");
        // Networks on the same (address, port) share a socket and are told apart by VNI; they
        // share what is learned about the paths to the VTEPs too.
        let mut groups: BTreeMap<SocketAddr, Vec<usize>> = BTreeMap::new();
        for (i, c) in configs.iter().enumerate() {
            groups.entry(c.bind_addr()).or_default().push(i);
        }
        let path_mtus: BTreeMap<SocketAddr, Arc<PathMtus>> =
            groups.keys().map(|b| (*b, Arc::new(PathMtus::default()))).collect();
        let mut opened = Vec::new();
        for c in configs {
            let policies = Policies { df: c.df, mss_clamp: c.mss_clamp, tos: c.tos };
            let (tap, net) = network::open(c, clock.clone()).with_context(|| format!("network {}", c.dev))?;
            let net = net.with_path_mtus(path_mtus[&c.bind_addr()].clone()).with_policies(policies);
            opened.push((c.clone(), Arc::new(tap), Arc::new(net)));
        }
        let mut shared = vec![None; opened.len()];
        for (bind, members) in groups {
            let first = &opened[members[0]].0;
            let opts = UnderlayOptions {
                src_ports: first.src_ports(),
                udp_csum: first.udp_csum,
                queues: first.queues(),
                offload: first.offload,
                fragmenting: members.iter().any(|&i| opened[i].0.df != Df::Set),
                outer: OuterOptions {
                    ttl: first.ttl,
                    flowlabel: first.flowlabel,
                    multicast_if: multicast_if(first)?,
                    multicast: members.iter().any(|&i| opened[i].0.group.is_some()),
                },
                groups: {
                    let mut g: Vec<IpAddr> = members.iter().filter_map(|&i| opened[i].0.group).collect();
                    g.sort();
                    g.dedup();
                    g
                },
                cpu_pinning: first.cpu_pinning,
            };
            let underlay = Arc::new(Underlay::bind(bind, opts)?);
            let policy = match first.proto {
                Proto::Vxlan => RxPolicy::Vxlan(vxlan::RxPolicy {
                    strict_reserved: members.iter().any(|&i| opened[i].0.strict_reserved),
                }),
                Proto::Geneve => RxPolicy::for_proto(Proto::Geneve),
            };
            let nets = members.iter().map(|&i| opened[i].2.clone()).collect();
            let allow = allowlist(members.iter().map(|&i| &opened[i].0));
            if allow.is_open() {
                info!(%bind, "accepting datagrams from any source (--allow-from any)");
            } else if members
                .iter()
                .all(|&i| opened[i].2.fdb.flood_list().is_empty() && opened[i].0.statics.is_empty())
                && members.iter().all(|&i| opened[i].0.allow_from.is_empty())
            {
                warn!(%bind, "no --remote, --static or --allow-from: datagrams from every source will be refused \
                       until a VTEP is added with `vxtap fdb add`; --allow-from any accepts and learns from anyone");
            }
            let demux = Arc::new(Demux::with_allowlist(policy, nets, allow));
            let taps: Vec<Arc<Tap>> = members.iter().map(|&i| opened[i].1.clone()).collect();
            info!(%bind, source_ports = ?underlay.send.ports(), receive_sockets = underlay.recv.len(),
                  gso_segments = underlay.gso_segments(), gro = underlay.gro(), "underlay sockets bound");
            if first.offload && !first.udp_csum {
                info!(%bind, "UDP GSO is off: the kernel refuses it with zero checksums (--no-udp-csum)");
            }
            for &i in &members {
                shared[i] = Some((demux.clone(), underlay.clone()));
            }
            // One thread per queue for both directions; one more per multicast group socket.
            for q in 0..underlay.recv.len() {
                let (d, t, u) = (demux.clone(), taps.clone(), underlay.clone());
                if q < underlay.queues() {
                    spawn(format!("q{q}-{}", bind.port()), move || worker::serve_queue(d, t, q, u))?;
                } else {
                    spawn(format!("group{q}-{}", bind.port()), move || worker::serve_receive(d, t, q, u))?;
                }
            }
        }
        let networks = opened
            .into_iter()
            .zip(shared)
            .filter_map(|((config, tap, net), shared)| {
                let (demux, underlay) = shared?;
                Some(NetworkHandle::new(config, net, tap, demux, underlay))
            })
            .collect();
        Ok(Dataplane { networks })
    }

    /// Ages out idle learned entries of every network; runs off the hot path.
    pub fn expire(&self) -> usize {
        self.networks.iter().map(|n| n.net.fdb.expire()).sum()
    }

    /// Checks again the path MTUs learned towards remote VTEPs: the kernel forgets what an ICMP
    /// error taught it (net.ipv4.route.mtu_expires, `ip route flush cache`), and a path that is
    /// wide again stops cutting super-frames small. Runs off the hot path, once a second.
    pub fn refresh_path_mtus(&self) {
        let mut done: Vec<&Arc<PathMtus>> = Vec::new();
        for n in &self.networks {
            let table = &n.net.path_mtus;
            if table.is_empty() || done.iter().any(|t| Arc::ptr_eq(t, table)) {
                continue;
            }
            done.push(table);
            // The largest datagram a network of this socket sends: a full frame, tagged.
            let widest = self
                .networks
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
}

/// The sources a socket accepts: everyone if any of its networks says `any`, else the union of
/// their `--allow-from` networks (the known VTEPs are added by the demultiplexer).
fn allowlist<'a>(configs: impl Iterator<Item = &'a NetworkConfig>) -> Allowlist {
    let mut nets = Vec::new();
    for c in configs {
        for a in &c.allow_from {
            match a {
                AllowFrom::Any => return Allowlist::any(),
                AllowFrom::Net(n) => nets.push(*n),
            }
        }
    }
    Allowlist::new(nets, Vec::new())
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

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .with_context(|| format!("starting thread {name}"))?;
    Ok(())
}
