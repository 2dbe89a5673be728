//! The sockets of one (local address, port), the threads that serve them, and the networks on
//! them as a snapshot that a reload replaces while packets flow.
//!
//! Each queue thread serves the TAP queues of every network on its socket and a receive socket,
//! and keeps per-network state built from the snapshot ([`Members`]: the demultiplexer and the
//! TAPs, in the same order). A reload publishes a new snapshot and bumps the group's generation;
//! each thread compares the generation once per poll turn (one relaxed load, no lock), and an
//! eventfd in its poll set wakes it when it is idle. Between two poll turns a thread holds no
//! frame of its own (every batch is sent and every write flushed before it polls again), so it
//! rebuilds its state from the new snapshot without losing a packet: frames that arrive
//! meanwhile wait in the TAP queues and the socket buffers. Once a thread is on the new
//! generation it says so ([`SocketGroup::publish`] waits for every thread), and a TAP that left
//! the snapshot is then held by no thread: it closes when its last handle goes.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;

use super::sys::EventFd;
use super::tap::Tap;
use super::udp::Underlay;
use crate::config::{AllowFrom, NetworkConfig};
use crate::packet::pipeline::{Demux, Network, SocketCounters};
use crate::packet::pmtu::PathMtus;
use crate::state::allow::Allowlist;
use crate::wire::{vxlan, Proto, RxPolicy};

/// How long [`SocketGroup::publish`] waits for every thread to take a new snapshot: a thread
/// takes it within one poll turn (a bounded budget of frames), so this is only ever reached by
/// a thread stuck in a send.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The networks on a socket as its threads see them.
pub(super) struct Members {
    pub(super) demux: Demux,
    /// The TAP of each network of `demux.networks()`, in the same order.
    pub(super) taps: Vec<Arc<Tap>>,
}

impl Members {
    /// The snapshot of `members` (configuration, packet-path state, TAP) on a socket of
    /// protocol `proto`, counting the socket's own drops on `counters`: the receive policy (strict
    /// if any network asks for it) and the allowlist (everyone if any network says `any`, else
    /// the union of their `allow_from` and their known VTEPs).
    pub(super) fn build<'a>(
        proto: Proto,
        members: impl IntoIterator<Item = (&'a NetworkConfig, &'a Arc<Network>, &'a Arc<Tap>)>,
        counters: &SocketCounters,
    ) -> Members {
        let (mut configs, mut nets, mut taps) = (Vec::new(), Vec::new(), Vec::new());
        for (c, n, t) in members {
            configs.push(c);
            nets.push(n.clone());
            taps.push(t.clone());
        }
        let policy = match proto {
            Proto::Vxlan => RxPolicy::Vxlan(vxlan::RxPolicy {
                strict_reserved: configs.iter().any(|c| c.strict_reserved),
            }),
            Proto::Geneve => RxPolicy::for_proto(Proto::Geneve),
        };
        let demux = Demux::with_counters(policy, nets, allowlist(configs.iter().copied()), counters.clone());
        Members { demux, taps }
    }
}

/// The sources a socket accepts: everyone if any of its networks says `any`, else the union of
/// their `--allow-from` networks (the known VTEPs are added by the demultiplexer).
pub(super) fn allowlist<'a>(configs: impl Iterator<Item = &'a NetworkConfig>) -> Allowlist {
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

/// One thread's end of the group: what wakes it, and the generation it serves.
struct Link {
    wake: EventFd,
    seen: AtomicU64,
}

/// The sockets of one (local address, port) and their networks.
pub(crate) struct SocketGroup {
    pub(super) bind: SocketAddr,
    pub(super) underlay: Arc<Underlay>,
    /// Drops before a datagram belongs to a network; they outlive the snapshots.
    pub(super) counters: SocketCounters,
    /// Path MTUs learned towards the VTEPs reached from this socket, shared by its networks.
    pub(super) path_mtus: Arc<PathMtus>,
    /// The WireGuard device its datagrams go through, in WireGuard mode: then nothing is sent
    /// from its own sockets, and what arrives on them in clear is dropped.
    pub(super) wg: Option<Arc<super::wg::WgDevice>>,
    members: ArcSwap<Members>,
    /// Bumped by every [`SocketGroup::publish`] (and by [`SocketGroup::stop`]).
    generation: AtomicU64,
    closed: AtomicBool,
    /// One per receive socket, so one per thread.
    links: Vec<Link>,
}

impl super::wg::Receiver for SocketGroup {
    fn port(&self) -> u16 {
        self.bind.port()
    }

    /// Checks and demultiplexes the datagram as one received in clear would be (the tunnel
    /// address its source VTEP), carries a CE mark into the frame and clamps its MSS as the
    /// receive loop does, and writes it to queue 0 of its TAP.
    fn deliver(&self, src: std::net::IpAddr, datagram: &mut [u8], ce: bool) {
        use crate::packet::dsfield;
        use crate::state::stats::DropReason;
        use crate::wire::frame::Frame;
        let members = self.current();
        let demux = &members.demux;
        let Some((index, frame)) = demux.decapsulate_at(datagram, src, demux.now_ms()) else { return };
        // The frame is the datagram's tail.
        let at = datagram.len() - frame.len();
        let net = &demux.networks()[index];
        let clamp = net.policies().mss_clamp;
        if ce || clamp.is_some() {
            let frame = &mut datagram[at..];
            let Some(view) = Frame::parse(frame) else { return };
            if ce && dsfield::decap(dsfield::ECN_CE, frame, &view) == dsfield::Decap::Drop {
                net.counters.drop(DropReason::EcnNotEct);
                return;
            }
            if let Some(clamp) = clamp {
                net.clamp_mss(clamp, frame, &view, &[SocketAddr::new(src, net.peer_port)]);
            }
        }
        let mut writer = super::tap_writer::TapWriter::new(&members.taps[index], 0, &net.counters);
        writer.write(&datagram[at..]);
        writer.flush();
    }
}

impl SocketGroup {
    pub(super) fn new(
        bind: SocketAddr,
        underlay: Arc<Underlay>,
        path_mtus: Arc<PathMtus>,
        counters: SocketCounters,
        members: Members,
        wg: Option<Arc<super::wg::WgDevice>>,
    ) -> Result<SocketGroup> {
        let links = (0..underlay.recv.len())
            .map(|_| {
                Ok(Link { wake: EventFd::new().context("creating an eventfd")?, seen: AtomicU64::new(0) })
            })
            .collect::<Result<_>>()?;
        Ok(SocketGroup {
            bind,
            underlay,
            counters,
            path_mtus,
            wg,
            members: ArcSwap::from_pointee(members),
            generation: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            links,
        })
    }

    /// The networks on the socket now.
    pub(super) fn current(&self) -> Arc<Members> {
        self.members.load_full()
    }

    /// Re-reads the known VTEPs of the socket's networks after their FDBs changed.
    pub(super) fn refresh_allowlist(&self) {
        self.members.load().demux.refresh_allowlist();
    }

    /// Replaces the networks on the socket and waits until every thread serves the new set (and
    /// so holds nothing of the old one). Err if a thread did not switch within the time allowed.
    pub(super) fn publish(&self, members: Members) -> Result<(), String> {
        self.members.store(Arc::new(members));
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.links.iter().for_each(|l| l.wake.notify());
        let deadline = Instant::now() + SWITCH_TIMEOUT;
        while self.links.iter().any(|l| l.seen.load(Ordering::Acquire) < generation) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the threads of socket {} did not take the new networks within {SWITCH_TIMEOUT:?}",
                    self.bind
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    /// Tells the threads to end; the caller joins them.
    pub(super) fn stop(&self) {
        self.closed.store(true, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.links.iter().for_each(|l| l.wake.notify());
    }

    // The threads' side.

    /// Thread `t` starts on the current generation: returns it with the networks to serve, or
    /// None when the group is closed. The thread holds nothing of an older generation by now.
    pub(super) fn enter(&self, t: usize) -> Option<(u64, Arc<Members>)> {
        let generation = self.generation.load(Ordering::Acquire);
        let members = (!self.closed.load(Ordering::Acquire)).then(|| self.members.load_full());
        self.links[t].seen.store(generation, Ordering::Release);
        Some(generation).zip(members)
    }

    /// Whether the networks changed since `generation`: once per poll turn.
    #[inline]
    pub(super) fn changed(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Relaxed) != generation
    }

    /// The descriptor that wakes thread `t`.
    pub(super) fn wake_fd(&self, t: usize) -> RawFd {
        self.links[t].wake.as_raw_fd()
    }

    /// Thread `t` was woken: the next poll waits again.
    pub(super) fn woken(&self, t: usize) {
        let _ = self.links[t].wake.clear();
    }
}

/// A running group: what the dataplane keeps to change or close it.
pub(super) struct GroupEntry {
    pub(super) group: Arc<SocketGroup>,
    /// How its sockets were built (which networks they can serve).
    pub(super) shape: crate::config::reload::SocketShape,
    pub(super) threads: Vec<JoinHandle<()>>,
}

impl GroupEntry {
    /// Stops the threads and waits for them: the sockets close with the last handle.
    pub(super) fn close(self) {
        self.group.stop();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eventfd_wakes_a_poll_until_cleared() {
        let e = EventFd::new().unwrap();
        assert!(!e.clear(), "clear from the start, and clearing does not block");
        e.notify();
        e.notify();
        let mut ready = [false];
        super::super::sys::wait_any(&[e.as_raw_fd()], &mut ready).unwrap();
        assert!(ready[0], "readable once notified");
        assert!(e.clear(), "one clear takes every notification");
        assert!(!e.clear());
    }
}
