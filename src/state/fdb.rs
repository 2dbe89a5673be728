//! The MAC-to-VTEP forwarding database (FDB) of one VNI.
//!
//! It plays the role of the kernel vxlan device's FDB: a unicast MAC maps to the remote VTEP
//! (outer IP and UDP port) behind which it lives, entries are either learned from decapsulated
//! frames or configured statically, and a per-VNI flood list receives broadcast, multicast and
//! unknown-unicast frames (what `bridge fdb append 00:00:00:00:00:00 dst IP` configures).
//! A cluster control plane adds entries of its own ([`EntryKind::Etcd`]) and a flood list of its
//! own ([`FloodSource::Etcd`]), kept apart from the operator's so that neither removes the other's.
//!
//! Concurrency model: many dataplane threads call [`Fdb::lookup`] and [`Fdb::learn`] at once.
//! Lookups and refreshes of an unchanged entry only take a shard *read* lock of the [`DashMap`];
//! the last-seen timestamp is an [`AtomicU64`] updated through that shared reference. The shard
//! write lock is taken only when an entry is created, moves to another VTEP, or is removed
//! (configuration, ageing). Neither lookup nor refresh allocates.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use crate::wire::mac::MacAddr;

/// Default cap on learned entries per VNI.
///
/// Learning is driven by remote, possibly hostile, traffic: without a bound a peer spraying
/// random source MACs would grow the table without limit. An entry costs roughly 64-80 bytes
/// including hash-table overhead, so 8192 entries is well under 1 MiB per VNI while leaving
/// ample room for a realistic L2 segment. Static entries are not counted.
pub const DEFAULT_MAX_LEARNED: usize = 8192;

/// Default idle time after which a learned entry expires; the kernel's vxlan default.
pub const DEFAULT_AGEING: Duration = Duration::from_secs(300);

/// Source of time for ageing, injectable so that tests can drive expiry without sleeping.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since an arbitrary, fixed origin; must never go backwards.
    fn now_ms(&self) -> u64;
}

/// The production clock: milliseconds since the clock was created, from [`Instant`]
/// (monotonic, so wall-clock steps cannot mass-expire or immortalise entries).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock { origin: Instant::now() }
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// A clock moved by hand, for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock { ms: AtomicU64::new(start_ms) }
    }

    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// How an entry got into the table, which decides whether learning may change it and whether
/// it ages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Learned from a decapsulated frame; may move, ages out, counts against the cap.
    Learned,
    /// Configured by the operator; never overwritten by learning, never ages.
    Static,
    /// A cluster member's TAP MAC, from the control plane (etcd): never overwritten by learning,
    /// never ages, replaced when the member's record changes, removed when it leaves. An
    /// operator's static entry for the same MAC wins over it.
    Etcd,
}

impl EntryKind {
    /// Learned entries move, age and count against the cap; the others are pinned.
    #[inline]
    fn is_pinned(self) -> bool {
        self != EntryKind::Learned
    }
}

/// Who put a remote on the flood list. Each source has its own list and the flood list is their
/// union, so a cluster member leaving never removes a remote the operator configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FloodSource {
    /// `--remote`, `remotes = [...]`, `fdb add 00:00:00:00:00:00`.
    Config,
    /// The members of a cluster control plane.
    Etcd,
}

/// Per-VNI FDB settings; a reload may change them while the table is in use
/// ([`Fdb::set_config`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbConfig {
    /// When false (`--no-learning`) [`Fdb::learn`] never creates or moves entries.
    pub learning: bool,
    /// Idle time after which a learned entry is removed by [`Fdb::expire`].
    /// `Duration::ZERO` disables ageing, as `ageing 0` does on a kernel vxlan device.
    pub ageing: Duration,
    /// Maximum number of learned entries; 0 means learning can never create an entry.
    pub max_learned: usize,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig { learning: true, ageing: DEFAULT_AGEING, max_learned: DEFAULT_MAX_LEARNED }
    }
}

/// What [`Fdb::learn`] did with a frame's source MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnOutcome {
    /// A new learned entry was created.
    Created,
    /// The MAC was already learned behind the same VTEP; its timestamp was refreshed.
    Refreshed,
    /// The MAC was learned behind another VTEP and now points to the sender.
    Moved,
    /// The MAC has a static entry, which learning never changes (whatever the sender).
    StaticKept,
    /// Broadcast, multicast or all-zero source: never learned.
    NotLearnable,
    /// The source is the local TAP's own MAC: the frame looped back and must be dropped.
    /// Reported whatever the learning mode.
    LocalMacLoop,
    /// The learned-entry cap is reached; nothing was created.
    Full,
    /// Learning is disabled in the configuration.
    Disabled,
}

/// Why a configuration change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FdbError {
    #[error("{0} is a multicast, broadcast or all-zero MAC: it cannot have a unicast FDB entry (use the flood list for BUM traffic)")]
    NotUnicast(MacAddr),
    #[error("{0} is the local interface's own MAC: an FDB entry for it would send our own traffic away")]
    LocalMac(MacAddr),
    #[error("invalid remote VTEP {0}: the IP must not be unspecified and the UDP port must not be 0")]
    InvalidDst(SocketAddr),
}

/// One row of `fdb show`.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct FdbEntry {
    #[serde(serialize_with = "serialize_display")]
    pub mac: MacAddr,
    pub dst: SocketAddr,
    pub vni: u32,
    pub kind: EntryKind,
    /// Seconds since the entry was last refreshed by a frame (learned) or configured (static).
    pub age_secs: u64,
    /// Seconds since a frame from this MAC last came from the entry's VTEP: a learned entry's
    /// age; for a static or etcd entry, None until one has (`peers` shows it as last seen).
    #[serde(skip)]
    pub heard_secs: Option<u64>,
}

impl FdbEntry {
    /// The remote VTEP's IP, for outputs that show IP and port separately.
    pub fn dst_ip(&self) -> std::net::IpAddr {
        self.dst.ip()
    }

    /// The remote VTEP's UDP port.
    pub fn dst_port(&self) -> u16 {
        self.dst.port()
    }
}

fn serialize_display<S: serde::Serializer>(mac: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(mac)
}

/// A plain snapshot of an [`Fdb`]'s event counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FdbCounters {
    /// Entries created by learning.
    pub learned: u64,
    /// Learned entries that moved to another VTEP.
    pub moved: u64,
    /// Learns refused because the cap was reached.
    pub refused_full: u64,
    /// Learned entries removed by ageing.
    pub expired: u64,
    /// Frames whose source was the local MAC.
    pub local_mac_loops: u64,
}

#[derive(Default)]
struct AtomicCounters {
    learned: AtomicU64,
    moved: AtomicU64,
    refused_full: AtomicU64,
    expired: AtomicU64,
    local_mac_loops: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Slot {
    dst: SocketAddr,
    kind: EntryKind,
    /// Last refresh (learned) or configuration (static) time, in [`Clock`] milliseconds.
    /// Atomic so a refresh needs only a shared reference, i.e. a shard read lock.
    last_seen: AtomicU64,
    /// Static and etcd entries: when a frame from the MAC last came from the entry's VTEP
    /// address ([`NEVER`]: not yet), for `peers`. Learned entries use `last_seen`.
    heard: AtomicU64,
}

/// `Slot::heard` before any frame (a frame at clock 0 is recorded as 1).
const NEVER: u64 = 0;

impl Slot {
    fn new(dst: SocketAddr, kind: EntryKind, now: u64) -> Slot {
        Slot { dst, kind, last_seen: AtomicU64::new(now), heard: AtomicU64::new(NEVER) }
    }

    /// A pinned entry hears a frame from its MAC: recorded if it came from the entry's VTEP
    /// (the source port of a datagram is not the VTEP's port, so the address decides).
    #[inline]
    fn heard_from(&self, from: SocketAddr, now: u64) {
        if self.dst.ip() == from.ip() {
            touch(&self.heard, now.max(1));
        }
    }
}

/// `local_mac` value meaning "not known yet": MACs are 48 bits, so it cannot collide.
const NO_LOCAL_MAC: u64 = u64::MAX;

fn mac_to_u64(mac: MacAddr) -> u64 {
    let b = mac.0;
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The forwarding table of one VNI. `Send + Sync`; share it behind an `Arc`.
pub struct Fdb {
    vni: u32,
    /// [`FdbConfig::learning`], read on the packet path with a relaxed load.
    learning: AtomicBool,
    /// [`FdbConfig::ageing`] in milliseconds; 0 = no ageing.
    ageing_ms: AtomicU64,
    /// [`FdbConfig::max_learned`].
    max_learned: AtomicUsize,
    clock: Arc<dyn Clock>,
    /// The TAP's MAC as `mac_to_u64`, or `NO_LOCAL_MAC`; atomic because the TAP's MAC is only
    /// known after the device is open, while dataplane threads may already be running.
    local_mac: AtomicU64,
    /// Keyed by MAC with foldhash (randomly seeded per process) rather than SipHash: the hash
    /// is most of a lookup's cost, and the learned entries are capped.
    map: DashMap<MacAddr, Slot, foldhash::fast::RandomState>,
    /// Number of learned entries in `map`. Incremented *before* an insert (a reservation that
    /// can fail) and decremented *after* a removal, so it is never below the real count and
    /// concurrent learners can never push the real count over the cap.
    learned: AtomicUsize,
    /// The union of `flood_sources`, read on the packet path without a lock.
    flood: ArcSwap<Vec<SocketAddr>>,
    /// Each source's own list ([`FloodSource`] order); only configuration changes take the lock.
    flood_sources: std::sync::Mutex<[Vec<SocketAddr>; 2]>,
    counters: AtomicCounters,
}

impl std::fmt::Debug for Fdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fdb")
            .field("vni", &self.vni)
            .field("config", &self.config())
            .field("entries", &self.map.len())
            .field("learned", &self.learned_len())
            .field("flood", &**self.flood.load())
            .finish()
    }
}

/// What the read-locked fast path of `learn` decided; the read guard is dropped before the
/// write path runs (taking a shard write lock while holding its read lock would deadlock).
enum Fast {
    Done(LearnOutcome),
    NeedWrite,
}

impl Fdb {
    pub fn new(vni: u32, local_mac: Option<MacAddr>, config: FdbConfig, clock: Arc<dyn Clock>) -> Fdb {
        // Pre-size for the learned cap (bounded so a huge cap does not allocate up front) so
        // that creating entries rarely has to grow a shard on the dataplane path.
        let capacity = config.max_learned.min(DEFAULT_MAX_LEARNED);
        Fdb {
            vni,
            learning: AtomicBool::new(config.learning),
            ageing_ms: AtomicU64::new(ageing_ms(config.ageing)),
            max_learned: AtomicUsize::new(config.max_learned),
            clock,
            local_mac: AtomicU64::new(local_mac.map_or(NO_LOCAL_MAC, mac_to_u64)),
            map: DashMap::with_capacity_and_hasher(capacity, foldhash::fast::RandomState::default()),
            learned: AtomicUsize::new(0),
            flood: ArcSwap::from_pointee(Vec::new()),
            flood_sources: std::sync::Mutex::new([Vec::new(), Vec::new()]),
            counters: AtomicCounters::default(),
        }
    }

    /// The table's clock, in milliseconds: for the packet path's other timers.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn vni(&self) -> u32 {
        self.vni
    }

    /// The settings in force now.
    pub fn config(&self) -> FdbConfig {
        FdbConfig {
            learning: self.learning.load(Ordering::Relaxed),
            ageing: Duration::from_millis(self.ageing_ms.load(Ordering::Relaxed)),
            max_learned: self.max_learned.load(Ordering::Relaxed),
        }
    }

    /// Changes the settings while the table is in use (a reload). What was learned stays: with
    /// learning off, learned entries age out as usual; under a lower cap, entries beyond it stay
    /// until they age out, and nothing new is learned until the table is below the cap.
    pub fn set_config(&self, config: &FdbConfig) {
        self.learning.store(config.learning, Ordering::Relaxed);
        self.ageing_ms.store(ageing_ms(config.ageing), Ordering::Relaxed);
        self.max_learned.store(config.max_learned, Ordering::Relaxed);
    }

    /// The local TAP's MAC, if known.
    pub fn local_mac(&self) -> Option<MacAddr> {
        let v = self.local_mac.load(Ordering::Acquire);
        (v != NO_LOCAL_MAC).then(|| {
            let b = v.to_be_bytes();
            MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
        })
    }

    /// Records the TAP's MAC once known. A learned entry for that MAC (learned before the MAC was
    /// known) is dropped: it would send our own traffic to a remote.
    pub fn set_local_mac(&self, mac: MacAddr) {
        self.local_mac.store(mac_to_u64(mac), Ordering::Release);
        if self.map.remove_if(&mac, |_, s| s.kind == EntryKind::Learned).is_some() {
            self.learned.fetch_sub(1, Ordering::AcqRel);
        }
    }

    #[inline]
    fn is_local(&self, mac: MacAddr) -> bool {
        self.local_mac.load(Ordering::Relaxed) == mac_to_u64(mac)
    }

    /// The remote VTEP of a unicast MAC, if known. Shard read lock only; does not refresh the
    /// entry (ageing tracks what a MAC *sends*, as in a learning bridge).
    #[inline]
    pub fn lookup(&self, mac: &MacAddr) -> Option<SocketAddr> {
        self.map.get(mac).map(|s| s.dst)
    }

    /// Learns that `src` lives behind the VTEP `from` (the outer source address of a
    /// decapsulated frame). Hot path: an unchanged entry is refreshed under a read lock without
    /// allocating.
    ///
    /// Checks in order: local-MAC loop (always), learnability, learning enabled, then the table.
    pub fn learn(&self, src: MacAddr, from: SocketAddr) -> LearnOutcome {
        self.learn_at(src, from, self.clock.now_ms())
    }

    /// [`Fdb::learn`] at time `now` (the table clock's milliseconds), read once per batch of
    /// datagrams by the receive path rather than once per frame.
    #[inline]
    pub fn learn_at(&self, src: MacAddr, from: SocketAddr, now: u64) -> LearnOutcome {
        if self.is_local(src) {
            bump(&self.counters.local_mac_loops);
            return LearnOutcome::LocalMacLoop;
        }
        if !src.is_learnable() {
            return LearnOutcome::NotLearnable;
        }
        if !self.learning.load(Ordering::Relaxed) {
            return LearnOutcome::Disabled;
        }
        let fast = match self.map.get(&src) {
            Some(slot) if slot.kind.is_pinned() => {
                slot.heard_from(from, now);
                Fast::Done(LearnOutcome::StaticKept)
            }
            Some(slot) if slot.dst == from => {
                touch(&slot.last_seen, now);
                Fast::Done(LearnOutcome::Refreshed)
            }
            _ => Fast::NeedWrite,
        };
        match fast {
            Fast::Done(outcome) => outcome,
            Fast::NeedWrite => self.learn_slow(src, from, now),
        }
    }

    /// Creation or move, under the shard write lock. Re-examines the entry, since another thread
    /// may have changed it between the read and write locks.
    #[cold]
    fn learn_slow(&self, src: MacAddr, from: SocketAddr, now: u64) -> LearnOutcome {
        match self.map.entry(src) {
            MapEntry::Occupied(mut o) => {
                let slot = o.get_mut();
                if slot.kind.is_pinned() {
                    slot.heard_from(from, now);
                    LearnOutcome::StaticKept
                } else if slot.dst == from {
                    touch(&slot.last_seen, now);
                    LearnOutcome::Refreshed
                } else {
                    slot.dst = from;
                    *slot.last_seen.get_mut() = now;
                    bump(&self.counters.moved);
                    LearnOutcome::Moved
                }
            }
            MapEntry::Vacant(v) => {
                if !self.reserve_learned_slot() {
                    bump(&self.counters.refused_full);
                    return LearnOutcome::Full;
                }
                v.insert(Slot::new(from, EntryKind::Learned, now));
                bump(&self.counters.learned);
                LearnOutcome::Created
            }
        }
    }

    /// Takes one unit of the learned-entry budget, or fails if the cap is reached. A CAS loop
    /// rather than fetch_add-then-undo, so a learner at the edge is never refused because of
    /// another learner's transient over-reservation.
    fn reserve_learned_slot(&self) -> bool {
        let cap = self.max_learned.load(Ordering::Relaxed);
        self.learned.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1)).is_ok()
    }

    /// Whether `mac` -> `dst` may be configured: a unicast MAC that is not the TAP's own, and a
    /// real address and port.
    fn check_entry(&self, mac: MacAddr, dst: SocketAddr) -> Result<(), FdbError> {
        if !mac.is_learnable() {
            return Err(FdbError::NotUnicast(mac));
        }
        if self.is_local(mac) {
            return Err(FdbError::LocalMac(mac));
        }
        if dst.ip().is_unspecified() || dst.port() == 0 {
            return Err(FdbError::InvalidDst(dst));
        }
        Ok(())
    }

    /// Adds or replaces a static entry. A learned entry of the same MAC is replaced and its slot
    /// in the learned cap freed.
    pub fn add_static(&self, mac: MacAddr, dst: SocketAddr) -> Result<(), FdbError> {
        self.check_entry(mac, dst)?;
        let slot = Slot::new(dst, EntryKind::Static, self.clock.now_ms());
        if let Some(old) = self.map.insert(mac, slot) {
            if old.kind == EntryKind::Learned {
                self.learned.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Adds or replaces the entry of a cluster member's MAC ([`EntryKind::Etcd`]); a learned entry
    /// is replaced (its slot in the cap freed), an operator's static entry is kept. Ok(false)
    /// when a static entry kept it out.
    pub fn set_etcd(&self, mac: MacAddr, dst: SocketAddr) -> Result<bool, FdbError> {
        self.check_entry(mac, dst)?;
        let now = self.clock.now_ms();
        match self.map.entry(mac) {
            MapEntry::Occupied(mut o) => {
                let slot = o.get_mut();
                match slot.kind {
                    EntryKind::Static => return Ok(false),
                    EntryKind::Learned => {
                        self.learned.fetch_sub(1, Ordering::AcqRel);
                    }
                    EntryKind::Etcd => {}
                }
                let new = Slot::new(dst, EntryKind::Etcd, now);
                if slot.dst.ip() == dst.ip() {
                    // The same VTEP (a record put again): what was heard from it still holds.
                    new.heard.store(*slot.heard.get_mut(), Ordering::Relaxed);
                }
                *slot = new;
            }
            MapEntry::Vacant(v) => {
                v.insert(Slot::new(dst, EntryKind::Etcd, now));
            }
        }
        Ok(true)
    }

    /// Removes the entry of `mac` if the control plane put it there; false otherwise.
    pub fn remove_etcd(&self, mac: &MacAddr) -> bool {
        self.map.remove_if(mac, |_, s| s.kind == EntryKind::Etcd).is_some()
    }

    /// Removes the learned entries pointing at a VTEP with address `ip` (a cluster member that
    /// left: the MACs behind it are gone with it), returning how many.
    pub fn remove_learned_at(&self, ip: IpAddr) -> usize {
        let ip = ip.to_canonical();
        let mut removed = 0;
        self.map.retain(|_, s| {
            let keep = s.kind != EntryKind::Learned || s.dst.ip().to_canonical() != ip;
            if !keep {
                removed += 1;
                self.learned.fetch_sub(1, Ordering::AcqRel);
            }
            keep
        });
        removed
    }

    /// Removes the static entry of `mac` if it still points at `dst` (a configured entry that a
    /// reload drops: one replaced since, by `fdb add` or learning, is not the configuration's
    /// any more); false if there was no such entry.
    pub fn remove_static(&self, mac: &MacAddr, dst: SocketAddr) -> bool {
        self.map.remove_if(mac, |_, s| s.kind == EntryKind::Static && s.dst == dst).is_some()
    }

    /// Removes the entry of `mac`, of any kind; false if there was none.
    pub fn remove(&self, mac: &MacAddr) -> bool {
        match self.map.remove(mac) {
            Some((_, old)) => {
                if old.kind == EntryKind::Learned {
                    self.learned.fetch_sub(1, Ordering::AcqRel);
                }
                true
            }
            None => false,
        }
    }

    /// Removes every learned entry (`fdb flush`), returning how many; statics stay.
    pub fn flush_learned(&self) -> usize {
        let mut removed = 0;
        self.map.retain(|_, s| {
            let keep = s.kind.is_pinned();
            if !keep {
                removed += 1;
                self.learned.fetch_sub(1, Ordering::AcqRel);
            }
            keep
        });
        removed
    }

    /// The remotes that receive broadcast, multicast and unknown-unicast frames. Lock-free.
    #[inline]
    pub fn flood_list(&self) -> Guard<Arc<Vec<SocketAddr>>> {
        self.flood.load()
    }

    /// Replaces the operator's flood list ([`FloodSource::Config`]); duplicates are dropped
    /// (first occurrence kept) so a remote never receives a frame twice.
    pub fn set_flood_list(&self, remotes: Vec<SocketAddr>) {
        self.set_flood(FloodSource::Config, remotes);
    }

    /// Replaces the flood list of one source; the flood list becomes the union of the sources'
    /// lists (the operator's first), each remote once.
    pub fn set_flood(&self, source: FloodSource, remotes: Vec<SocketAddr>) {
        self.change_flood(source, |list| *list = remotes);
    }

    /// The flood list of one source.
    pub fn flood_of(&self, source: FloodSource) -> Vec<SocketAddr> {
        self.flood_sources.lock().unwrap_or_else(|e| e.into_inner())[source as usize].clone()
    }

    /// Appends a remote to the operator's flood list; false if already there.
    pub fn add_flood(&self, remote: SocketAddr) -> bool {
        self.change_flood(FloodSource::Config, |list| {
            let added = !list.contains(&remote);
            if added {
                list.push(remote);
            }
            added
        })
    }

    /// Removes a remote from the operator's flood list; false if it was not there (a remote
    /// only a cluster member put there stays, as long as the member does).
    pub fn remove_flood(&self, remote: &SocketAddr) -> bool {
        self.change_flood(FloodSource::Config, |list| {
            let before = list.len();
            list.retain(|r| r != remote);
            list.len() != before
        })
    }

    /// Changes one source's list and publishes the new union, under the sources' lock so that
    /// concurrent changes cannot publish out of order.
    fn change_flood<R>(&self, source: FloodSource, f: impl FnOnce(&mut Vec<SocketAddr>) -> R) -> R {
        let mut sources = self.flood_sources.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut sources[source as usize]);
        let mut seen = std::collections::HashSet::new();
        let union: Vec<SocketAddr> = sources.iter().flatten().copied().filter(|r| seen.insert(*r)).collect();
        self.flood.store(Arc::new(union));
        r
    }

    /// Removes learned entries idle for at least the ageing time, returning how many. Meant to be
    /// called periodically by a timer, off the hot path (it write-locks each shard in turn).
    pub fn expire(&self) -> usize {
        let ageing_ms = self.ageing_ms.load(Ordering::Relaxed);
        if ageing_ms == 0 {
            return 0;
        }
        let now = self.clock.now_ms();
        let mut removed = 0;
        self.map.retain(|_, s| {
            let idle = now.saturating_sub(*s.last_seen.get_mut());
            let keep = s.kind.is_pinned() || idle < ageing_ms;
            if !keep {
                removed += 1;
                self.learned.fetch_sub(1, Ordering::AcqRel);
            }
            keep
        });
        self.counters.expired.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    /// All entries, sorted by MAC, for `fdb show`.
    pub fn snapshot(&self) -> Vec<FdbEntry> {
        let now = self.clock.now_ms();
        let mut out: Vec<FdbEntry> = self
            .map
            .iter()
            .map(|r| {
                let s = r.value();
                let age = |t: u64| now.saturating_sub(t) / 1000;
                let age_secs = age(s.last_seen.load(Ordering::Relaxed));
                let heard_secs = match (s.kind, s.heard.load(Ordering::Relaxed)) {
                    (EntryKind::Learned, _) => Some(age_secs),
                    (_, NEVER) => None,
                    (_, t) => Some(age(t)),
                };
                FdbEntry { mac: *r.key(), dst: s.dst, vni: self.vni, kind: s.kind, age_secs, heard_secs }
            })
            .collect();
        out.sort_unstable_by_key(|e| e.mac);
        out
    }

    /// Number of learned entries (statics excluded), the quantity bounded by `max_learned`.
    pub fn learned_len(&self) -> usize {
        self.learned.load(Ordering::Acquire)
    }

    /// Number of entries of either kind.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn counters(&self) -> FdbCounters {
        let c = &self.counters;
        FdbCounters {
            learned: c.learned.load(Ordering::Relaxed),
            moved: c.moved.load(Ordering::Relaxed),
            refused_full: c.refused_full.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            local_mac_loops: c.local_mac_loops.load(Ordering::Relaxed),
        }
    }
}

/// An ageing time in milliseconds, saturated.
fn ageing_ms(ageing: Duration) -> u64 {
    u64::try_from(ageing.as_millis()).unwrap_or(u64::MAX)
}

/// Refreshes a timestamp through a shared reference. Skips the write when the value is already
/// current (many frames per millisecond) so that threads seeing the same MAC do not bounce the
/// cache line; fetch_max keeps it monotonic if threads race with slightly different clocks.
#[inline]
fn touch(last_seen: &AtomicU64, now: u64) {
    if last_seen.load(Ordering::Relaxed) < now {
        last_seen.fetch_max(now, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
