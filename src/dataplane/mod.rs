//! The part of vxtap that owns devices, sockets and threads.
//!
//! Hot path: dedicated threads with blocking I/O — one TAP reader per queue of each network, one
//! receiver per underlay receive socket (one socket per queue) — each owning its buffers, with no
//! lock shared between them. The control side (signals, control sockets, ageing) runs on a tokio
//! runtime in the main thread and only touches shared state (FDB, counters).

pub mod tap;
pub mod udp;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::allow::Allowlist;
use crate::config::{AllowFrom, NetworkConfig};
use crate::control::Request;
use crate::fdb::{Clock, Fdb, FdbConfig};
use crate::mac::MacAddr;
use crate::pipeline::{Demux, Network};
use crate::stats::{DropReason, Snapshot};
use crate::wire::{vxlan, EncapHeader, Proto, RxPolicy};
use tap::{Tap, TapOptions};
use udp::{Underlay, UnderlayOptions};

/// A running network: its configuration, packet-path state, TAP and the socket it shares.
pub struct NetworkHandle {
    pub config: NetworkConfig,
    pub net: Arc<Network>,
    pub tap: Arc<Tap>,
    demux: Arc<Demux>,
    underlay: Arc<Underlay>,
    /// The TAP's kernel drop count when vxtap started (a reused TAP may have some already).
    tap_drops_at_start: u64,
}

/// Everything `vxtap run` started.
pub struct Dataplane {
    pub networks: Vec<NetworkHandle>,
}

impl Dataplane {
    /// Opens the TAPs, binds the sockets and starts the packet threads.
    pub fn start(configs: &[NetworkConfig], clock: Arc<dyn Clock>) -> Result<Dataplane> {
        let mut opened = Vec::new();
        for c in configs {
            let (tap, net) = open_network(c, clock.clone()).with_context(|| format!("network {}", c.dev))?;
            opened.push((c.clone(), Arc::new(tap), Arc::new(net)));
        }
        // Networks on the same (address, port) share a socket and are told apart by VNI.
        let mut groups: BTreeMap<SocketAddr, Vec<usize>> = BTreeMap::new();
        for (i, (c, _, _)) in opened.iter().enumerate() {
            groups.entry(c.bind_addr()).or_default().push(i);
        }
        let mut shared = vec![None; opened.len()];
        for (bind, members) in groups {
            let first = &opened[members[0]].0;
            let opts = UnderlayOptions {
                src_ports: first.src_ports(),
                udp_csum: first.udp_csum,
                queues: first.queues(),
                offload: first.offload,
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
                let (c, tap, net) = (&opened[i].0, &opened[i].1, &opened[i].2);
                for q in 0..tap.queues().len() {
                    let (tap, net, u) = (tap.clone(), net.clone(), underlay.clone());
                    spawn(format!("tx-{}-{q}", c.dev), move || worker::tap_to_underlay(net, tap, q, u))?;
                }
                shared[i] = Some((demux.clone(), underlay.clone()));
            }
            for q in 0..underlay.recv.len() {
                let (d, t, u) = (demux.clone(), taps.clone(), underlay.clone());
                spawn(format!("rx-{}-{q}", bind.port()), move || worker::underlay_to_tap(d, t, q, u))?;
            }
        }
        let networks = opened
            .into_iter()
            .zip(shared)
            .filter_map(|((config, tap, net), shared)| {
                let (demux, underlay) = shared?;
                let tap_drops_at_start = tap.kernel_drops().unwrap_or(0);
                Some(NetworkHandle { config, net, tap, demux, underlay, tap_drops_at_start })
            })
            .collect();
        Ok(Dataplane { networks })
    }

    /// Ages out idle learned entries of every network; runs off the hot path.
    pub fn expire(&self) -> usize {
        self.networks.iter().map(|n| n.net.fdb.expire()).sum()
    }

    /// A reporter of this dataplane's drops, starting from now.
    pub fn drop_reporter(&self) -> DropReporter {
        let mut sockets: Vec<(Arc<Demux>, Arc<Underlay>)> = Vec::new();
        for n in &self.networks {
            if !sockets.iter().any(|(d, _)| Arc::ptr_eq(d, &n.demux)) {
                sockets.push((n.demux.clone(), n.underlay.clone()));
            }
        }
        let networks = self.networks.iter().map(|n| (n.net.counters.snapshot(), n.tap_drops())).collect();
        let sockets = sockets
            .into_iter()
            .map(|(d, u)| SocketDrops {
                last: d.counters.snapshot(),
                kernel: u.kernel_drops(),
                demux: d,
                underlay: u,
            })
            .collect();
        DropReporter { networks, sockets }
    }
}

/// Logs what was dropped since the last call, one line per network and per socket that dropped
/// anything: bad input is never logged once per packet, however much of it arrives.
pub struct DropReporter {
    /// Per network: its counters and the TAP's kernel drops at the last report.
    networks: Vec<(Snapshot, u64)>,
    sockets: Vec<SocketDrops>,
}

/// A shared socket's counters and kernel drops at the last report.
struct SocketDrops {
    last: Snapshot,
    kernel: u64,
    demux: Arc<Demux>,
    underlay: Arc<Underlay>,
}

/// One summary from vxtap's own drop counts (`ours`, as "reason=n ...") and a kernel drop count
/// that rose by `kernel` (shown as `label=n`); None when nothing was dropped.
fn summary(ours: Option<String>, label: &str, kernel: u64) -> Option<String> {
    let kernel = (kernel > 0).then(|| format!("{label}={kernel}"));
    match (ours, kernel) {
        (Some(o), Some(k)) => Some(format!("{o} {k}")),
        (o, k) => o.or(k),
    }
}

impl DropReporter {
    pub fn report(&mut self, dataplane: &Dataplane, period: std::time::Duration) {
        let secs = period.as_secs();
        for (n, (last, last_tap)) in dataplane.networks.iter().zip(&mut self.networks) {
            let now = n.net.counters.snapshot();
            let tap = n.tap_drops();
            let d = summary(now.drops_since(last), "kernel_tap", tap.saturating_sub(*last_tap));
            *last_tap = tap;
            if let Some(d) = d {
                let err = match (
                    now.dropped(DropReason::Send) > last.dropped(DropReason::Send),
                    n.net.counters.last_send_error(),
                ) {
                    (true, Some(e)) => format!("; last send error: {e}"),
                    _ => String::new(),
                };
                warn!(dev = n.config.dev, vni = n.net.vni, "dropped in the last {secs} s: {d}{err}");
            }
            *last = now;
        }
        for s in &mut self.sockets {
            let now = s.demux.counters.snapshot();
            let kernel = s.underlay.kernel_drops();
            if let Some(d) =
                summary(now.drops_since(&s.last), "kernel_socket", kernel.saturating_sub(s.kernel))
            {
                let vnis: Vec<u32> = s.demux.networks().iter().map(|n| n.vni).collect();
                warn!(?vnis, "socket dropped in the last {secs} s: {d}");
            }
            s.last = now;
            s.kernel = kernel;
        }
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

/// Blocks until `fd` has something to read (or an error to report): the packet threads' only
/// wait, level-triggered, so nothing that arrived meanwhile is missed.
fn wait_readable(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the call.
    match unsafe { libc::poll(&mut pfd, 1, -1) } {
        r if r < 0 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .with_context(|| format!("starting thread {name}"))?;
    Ok(())
}

/// Opens and configures one network's TAP and builds its FDB.
fn open_network(c: &NetworkConfig, clock: Arc<dyn Clock>) -> Result<(Tap, Network)> {
    let tap = Tap::open(&c.dev, TapOptions { queues: c.queues(), offload: c.offload })?;
    if let Some(mac) = c.mac {
        tap.set_mac(mac)?;
    }
    tap.set_mtu(c.mtu())?;
    tap.set_up()?;
    if let Some(addr) = &c.address {
        tap.add_address(addr)?;
    }
    let fdb_config = FdbConfig {
        learning: c.learning,
        ageing: std::time::Duration::from_secs(c.ageing),
        max_learned: c.max_fdb,
    };
    let fdb = Fdb::new(c.vni, Some(tap.mac()?), fdb_config, clock);
    let port = c.port();
    fdb.set_flood_list(c.remotes.iter().map(|r| r.with_default_port(port)).collect());
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
    Ok((tap, Network::new(c.vni, port, header, fdb)))
}

impl NetworkHandle {
    /// Answers one control request for this network.
    pub fn handle(&self, req: &Request) -> Result<Value, String> {
        let fdb = &self.net.fdb;
        match req {
            Request::FdbShow => Ok(self.fdb_json()),
            Request::Stats => Ok(self.stats_json()),
            Request::FdbAdd { mac, dst } => {
                let dst = dst.with_default_port(self.net.peer_port);
                if let Some(local) = self.config.local.filter(|l| l.is_ipv6() != dst.is_ipv6()) {
                    return Err(format!("{dst} cannot be reached from {local}: address families differ"));
                }
                if mac.is_zero() {
                    fdb.add_flood(dst);
                } else {
                    fdb.add_static(*mac, dst).map_err(|e| e.to_string())?;
                }
                self.demux.refresh_allowlist();
                info!(dev = self.config.dev, %mac, %dst, "fdb entry added");
                Ok(Value::Null)
            }
            Request::FdbDel { mac, dst } => {
                let removed = match (mac.is_zero(), dst) {
                    (true, Some(d)) => fdb.remove_flood(&d.with_default_port(self.net.peer_port)),
                    (true, None) => {
                        return Err("deleting a flood entry (00:00:00:00:00:00) needs its IP".into())
                    }
                    (false, _) => fdb.remove(mac),
                };
                if removed {
                    self.demux.refresh_allowlist();
                    info!(dev = self.config.dev, %mac, "fdb entry deleted");
                    Ok(Value::Null)
                } else {
                    Err(format!("no entry for {mac} on {}", self.config.dev))
                }
            }
        }
    }

    /// `fdb show --json`: learned and static entries, then the flood list under the all-zero MAC
    /// (as `bridge fdb show` prints a kernel vxlan device's default destinations).
    fn fdb_json(&self) -> Value {
        let vni = self.net.vni;
        let mut out: Vec<Value> = self
            .net
            .fdb
            .snapshot()
            .into_iter()
            .map(|e| {
                json!({"mac": e.mac.to_string(), "dst": e.dst.ip().to_string(), "port": e.dst.port(),
                       "vni": vni, "kind": e.kind, "age_secs": e.age_secs})
            })
            .collect();
        out.extend(self.net.fdb.flood_list().iter().map(|d| {
            json!({"mac": MacAddr::ZERO.to_string(), "dst": d.ip().to_string(), "port": d.port(),
                   "vni": vni, "kind": "flood", "age_secs": 0})
        }));
        Value::Array(out)
    }

    /// Frames the kernel dropped at the TAP since vxtap started (queue full: not read in time).
    fn tap_drops(&self) -> u64 {
        self.tap.kernel_drops().unwrap_or(self.tap_drops_at_start).saturating_sub(self.tap_drops_at_start)
    }

    /// `stats --json`: the network's counters plus those of the socket it shares, the kernel's
    /// drops at the TAP and at the socket, and the FDB's counters.
    fn stats_json(&self) -> Value {
        let s = self.net.counters.snapshot().merged(&self.demux.counters.snapshot());
        let mut map = serde_json::Map::new();
        for (k, v) in s.fields() {
            map.insert(k, v.into());
        }
        let f = self.net.fdb.counters();
        map.insert("drop_fdb_full".into(), f.refused_full.into());
        map.insert("drop_kernel_tap".into(), self.tap_drops().into());
        map.insert("drop_kernel_socket".into(), self.underlay.kernel_drops().into());
        map.insert("fdb_entries".into(), (self.net.fdb.len() as u64).into());
        map.insert("fdb_learned".into(), f.learned.into());
        map.insert("fdb_moved".into(), f.moved.into());
        map.insert("fdb_expired".into(), f.expired.into());
        Value::Object(map)
    }
}
