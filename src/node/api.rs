//! The answers to control requests: the dataplane's side of [`crate::control`]. Runs on the
//! control thread and touches only shared state (FDB, counters, allowlist).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tracing::info;

use super::NetworkHandle;
use crate::control::NeighRow;
use crate::control::{FdbKind, FdbRow, PeerRow, PeerSource, Reply, Request, Stats, WgPeerRow};
use crate::state::fdb::{EntryKind, FloodSource};
use crate::wire::mac::MacAddr;

impl NetworkHandle {
    /// Answers one control request for this network.
    pub fn handle(&self, req: &Request) -> Result<Reply, String> {
        let fdb = &self.net.fdb;
        match req {
            Request::FdbShow => Ok(Reply::Fdb(self.fdb_rows())),
            Request::Stats => Ok(Reply::Stats(self.stats())),
            Request::Peers => Ok(Reply::Peers(self.peers())),
            Request::NeighShow => Ok(Reply::Neigh(self.neigh_rows())),
            Request::NeighAdd { ip, mac } => {
                self.net.neigh.add_static(*ip, *mac).map_err(|e| e.to_string())?;
                info!(dev = self.config.dev, %ip, %mac, "neighbour entry added");
                Ok(Reply::Done)
            }
            Request::NeighDel { ip } => {
                if self.net.neigh.remove_static(*ip) {
                    info!(dev = self.config.dev, %ip, "neighbour entry deleted");
                    Ok(Reply::Done)
                } else {
                    Err(format!("no static neighbour entry for {ip} on {}", self.config.dev))
                }
            }
            // The process re-reads its configuration file, not one network.
            Request::Reload => Err("reload is answered by the process, not by one network".into()),
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
                self.group.refresh_allowlist();
                info!(dev = self.config.dev, %mac, %dst, "fdb entry added");
                Ok(Reply::Done)
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
                    self.group.refresh_allowlist();
                    info!(dev = self.config.dev, %mac, "fdb entry deleted");
                    Ok(Reply::Done)
                } else {
                    Err(format!("no entry for {mac} on {}", self.config.dev))
                }
            }
        }
    }

    /// `fdb show`: learned and static entries, then the flood list under the all-zero MAC (as
    /// `bridge fdb show` prints a kernel vxlan device's default destinations).
    fn fdb_rows(&self) -> Vec<FdbRow> {
        let vni = self.net.vni;
        let mut rows: Vec<FdbRow> = self
            .net
            .fdb
            .snapshot()
            .into_iter()
            .map(|e| FdbRow {
                mac: e.mac,
                dst: e.dst.ip(),
                port: e.dst.port(),
                vni,
                kind: match e.kind {
                    EntryKind::Learned => FdbKind::Learned,
                    EntryKind::Static => FdbKind::Static,
                    EntryKind::Etcd => FdbKind::Etcd,
                },
                age_secs: e.age_secs,
            })
            .collect();
        let group = self.config.group;
        rows.extend(self.net.fdb.flood_list().iter().map(|d| FdbRow {
            mac: MacAddr::ZERO,
            dst: d.ip(),
            port: d.port(),
            vni,
            kind: if Some(d.ip()) == group { FdbKind::Group } else { FdbKind::Flood },
            age_secs: 0,
        }));
        rows
    }

    /// `peers`: every remote VTEP of this network (flood list, static entries, learned MACs),
    /// once, with how it is known, the path MTU towards it (asked from the kernel now) and when
    /// a frame from it was last seen.
    fn peers(&self) -> Vec<PeerRow> {
        let mut peers: BTreeMap<SocketAddr, (PeerSource, Option<u64>)> = BTreeMap::new();
        let mut note = |dst: SocketAddr, source: PeerSource, age: Option<u64>| {
            let e = peers.entry(dst).or_insert((source, age));
            e.0 = if source.rank() < e.0.rank() { source } else { e.0 };
            e.1 = match (e.1, age) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        };
        let group = self.config.group;
        for d in self.net.fdb.flood_of(FloodSource::Config).into_iter().filter(|d| Some(d.ip()) != group) {
            note(d, PeerSource::Remote, None);
        }
        // The control plane's entries: etcd members, or flannel's leases.
        let member = if self.flannel.get().is_some() { PeerSource::Flannel } else { PeerSource::Etcd };
        for d in self.net.fdb.flood_of(FloodSource::Etcd) {
            note(d, member, None);
        }
        // In group mode, VTEPs that were not configured were found through the group.
        let learned = if group.is_some() { PeerSource::Group } else { PeerSource::Learned };
        for e in self.net.fdb.snapshot() {
            let source = match e.kind {
                EntryKind::Static => PeerSource::Static,
                EntryKind::Etcd => member,
                EntryKind::Learned => learned,
            };
            note(e.dst, source, e.heard_secs);
        }
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let node = |dst: &SocketAddr| members.iter().find(|(v, _)| v == dst).map(|(_, n)| n.clone());
        peers
            .into_iter()
            .map(|(dst, (source, last_seen_secs))| PeerRow {
                dst: dst.ip(),
                port: dst.port(),
                vni: self.net.vni,
                source,
                node: node(&dst),
                pmtu: self.underlay.path_mtu(dst.ip()),
                last_seen_secs,
                wg: self.group.wg.as_ref().and_then(|wg| wg.peer_info(dst.ip())).map(|p| WgPeerRow {
                    public_key: p.public_key.to_string(),
                    endpoint: p.endpoint,
                    latest_handshake_secs: p.latest_handshake_secs,
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                }),
            })
            .collect()
    }

    /// `stats`: the network's counters plus those of the socket it shares, the kernel's drops at
    /// the TAP and at the socket, and the FDB's counters. `/metrics` shows the same.
    pub(crate) fn stats(&self) -> Stats {
        let s = self.net.counters.snapshot().merged(&self.group.counters.snapshot());
        let mut out = s.fields();
        let f = self.net.fdb.counters();
        out.extend([
            ("drop_fdb_full".to_string(), f.refused_full),
            ("drop_kernel_tap".to_string(), self.tap_drops()),
            ("drop_kernel_socket".to_string(), self.underlay.kernel_drops()),
            ("fdb_entries".to_string(), self.net.fdb.len() as u64),
            ("fdb_learned".to_string(), f.learned),
            ("fdb_moved".to_string(), f.moved),
            ("fdb_expired".to_string(), f.expired),
        ]);
        let (sockets, max) = self.underlay.send.sockets();
        out.extend([
            ("send_sockets".to_string(), sockets as u64),
            ("send_sockets_max".to_string(), max as u64),
        ]);
        if let Some(status) = self.cluster.get() {
            out.extend(
                status.fields(crate::control::cluster::NetKey {
                    proto: self.config.proto,
                    vni: self.config.vni,
                }),
            );
        }
        if let Some(status) = self.flannel.get() {
            out.extend(status.fields());
        }
        if let Some(wg) = &self.group.wg {
            out.extend(wg.counters.fields());
        }
        Stats(out)
    }

    /// `neigh show`: the neighbour table in use, by address.
    fn neigh_rows(&self) -> Vec<NeighRow> {
        let vni = self.net.vni;
        self.net
            .neigh
            .snapshot()
            .into_iter()
            .map(|n| NeighRow { ip: n.ip, mac: n.mac, vni, source: n.source })
            .collect()
    }
}
