//! The MAC-to-VTEP forwarding database (FDB) of one VNI.
//!
//! It plays the role of the kernel vxlan device's FDB: a unicast MAC maps to the remote VTEP
//! (outer IP and UDP port) behind which it lives, entries are either learned from decapsulated
//! frames or configured statically, and a per-VNI flood list receives broadcast, multicast and
//! unknown-unicast frames (what `bridge fdb append 00:00:00:00:00:00 dst IP` configures).
//!
//! Concurrency model: many dataplane threads call [`Fdb::lookup`] and [`Fdb::learn`] at once.
//! Lookups and refreshes of an unchanged entry only take a shard *read* lock of the [`DashMap`];
//! the last-seen timestamp is an [`AtomicU64`] updated through that shared reference. The shard
//! write lock is taken only when an entry is created, moves to another VTEP, or is removed
//! (configuration, ageing). Neither lookup nor refresh allocates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;

use crate::mac::MacAddr;

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
}

/// Per-VNI FDB settings.
#[derive(Clone, Debug)]
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
    config: FdbConfig,
    /// `config.ageing` in milliseconds, precomputed; 0 = no ageing.
    ageing_ms: u64,
    clock: Arc<dyn Clock>,
    /// The TAP's MAC as `mac_to_u64`, or `NO_LOCAL_MAC`; atomic because the TAP's MAC is only
    /// known after the device is open, while dataplane threads may already be running.
    local_mac: AtomicU64,
    map: DashMap<MacAddr, Slot>,
    /// Number of learned entries in `map`. Incremented *before* an insert (a reservation that
    /// can fail) and decremented *after* a removal, so it is never below the real count and
    /// concurrent learners can never push the real count over the cap.
    learned: AtomicUsize,
    flood: ArcSwap<Vec<SocketAddr>>,
    counters: AtomicCounters,
}

impl std::fmt::Debug for Fdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fdb")
            .field("vni", &self.vni)
            .field("config", &self.config)
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
        let ageing_ms = u64::try_from(config.ageing.as_millis()).unwrap_or(u64::MAX);
        // Pre-size for the learned cap (bounded so a huge cap does not allocate up front) so
        // that creating entries rarely has to grow a shard on the dataplane path.
        let capacity = config.max_learned.min(DEFAULT_MAX_LEARNED);
        Fdb {
            vni,
            ageing_ms,
            clock,
            local_mac: AtomicU64::new(local_mac.map_or(NO_LOCAL_MAC, mac_to_u64)),
            map: DashMap::with_capacity(capacity),
            learned: AtomicUsize::new(0),
            flood: ArcSwap::from_pointee(Vec::new()),
            counters: AtomicCounters::default(),
            config,
        }
    }

    pub fn vni(&self) -> u32 {
        self.vni
    }

    pub fn config(&self) -> &FdbConfig {
        &self.config
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
        if self.is_local(src) {
            bump(&self.counters.local_mac_loops);
            return LearnOutcome::LocalMacLoop;
        }
        if !src.is_learnable() {
            return LearnOutcome::NotLearnable;
        }
        if !self.config.learning {
            return LearnOutcome::Disabled;
        }
        let now = self.clock.now_ms();
        let fast = match self.map.get(&src) {
            Some(slot) if slot.kind == EntryKind::Static => Fast::Done(LearnOutcome::StaticKept),
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
                if slot.kind == EntryKind::Static {
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
                v.insert(Slot { dst: from, kind: EntryKind::Learned, last_seen: AtomicU64::new(now) });
                bump(&self.counters.learned);
                LearnOutcome::Created
            }
        }
    }

    /// Takes one unit of the learned-entry budget, or fails if the cap is reached. A CAS loop
    /// rather than fetch_add-then-undo, so a learner at the edge is never refused because of
    /// another learner's transient over-reservation.
    fn reserve_learned_slot(&self) -> bool {
        let cap = self.config.max_learned;
        self.learned.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1)).is_ok()
    }

    /// Adds or replaces a static entry. A learned entry of the same MAC is replaced and its slot
    /// in the learned cap freed.
    pub fn add_static(&self, mac: MacAddr, dst: SocketAddr) -> Result<(), FdbError> {
        if !mac.is_learnable() {
            return Err(FdbError::NotUnicast(mac));
        }
        if self.is_local(mac) {
            return Err(FdbError::LocalMac(mac));
        }
        if dst.ip().is_unspecified() || dst.port() == 0 {
            return Err(FdbError::InvalidDst(dst));
        }
        let slot = Slot { dst, kind: EntryKind::Static, last_seen: AtomicU64::new(self.clock.now_ms()) };
        if let Some(old) = self.map.insert(mac, slot) {
            if old.kind == EntryKind::Learned {
                self.learned.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Removes the entry of `mac`, learned or static; false if there was none.
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
            let keep = s.kind == EntryKind::Static;
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

    /// Replaces the flood list; duplicates are dropped (first occurrence kept) so a remote never
    /// receives a frame twice.
    pub fn set_flood_list(&self, remotes: Vec<SocketAddr>) {
        let mut list = Vec::with_capacity(remotes.len());
        for r in remotes {
            if !list.contains(&r) {
                list.push(r);
            }
        }
        self.flood.store(Arc::new(list));
    }

    /// Appends a remote to the flood list; false if already present.
    pub fn add_flood(&self, remote: SocketAddr) -> bool {
        let mut added = false;
        // rcu retries the closure if another writer raced us, so `added` reflects the final run.
        self.flood.rcu(|cur| {
            added = !cur.contains(&remote);
            let mut next = Vec::clone(cur);
            if added {
                next.push(remote);
            }
            next
        });
        added
    }

    /// Removes a remote from the flood list; false if it was not there.
    pub fn remove_flood(&self, remote: &SocketAddr) -> bool {
        let mut removed = false;
        self.flood.rcu(|cur| {
            let mut next = Vec::clone(cur);
            let before = next.len();
            next.retain(|r| r != remote);
            removed = next.len() != before;
            next
        });
        removed
    }

    /// Removes learned entries idle for at least the ageing time, returning how many. Meant to be
    /// called periodically by a timer, off the hot path (it write-locks each shard in turn).
    pub fn expire(&self) -> usize {
        if self.ageing_ms == 0 {
            return 0;
        }
        let now = self.clock.now_ms();
        let mut removed = 0;
        self.map.retain(|_, s| {
            let idle = now.saturating_sub(*s.last_seen.get_mut());
            let keep = s.kind == EntryKind::Static || idle < self.ageing_ms;
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
                FdbEntry {
                    mac: *r.key(),
                    dst: s.dst,
                    vni: self.vni,
                    kind: s.kind,
                    age_secs: now.saturating_sub(s.last_seen.load(Ordering::Relaxed)) / 1000,
                }
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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;

    const LOCAL: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
    }

    fn vtep(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 4789))
    }

    fn fdb_with(config: FdbConfig) -> (Fdb, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let fdb = Fdb::new(42, Some(LOCAL), config, clock.clone());
        (fdb, clock)
    }

    fn fdb() -> (Fdb, Arc<ManualClock>) {
        fdb_with(FdbConfig::default())
    }

    fn entry(fdb: &Fdb, m: MacAddr) -> FdbEntry {
        fdb.snapshot().into_iter().find(|e| e.mac == m).expect("entry present")
    }

    #[test]
    fn fdb_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Fdb>();
    }

    #[test]
    fn defaults() {
        let c = FdbConfig::default();
        assert!(c.learning);
        assert_eq!(c.ageing, Duration::from_secs(300));
        assert_eq!(c.max_learned, DEFAULT_MAX_LEARNED);
    }

    #[test]
    fn learn_creates_entry() {
        let (fdb, _) = fdb();
        assert_eq!(fdb.lookup(&mac(1)), None);
        assert_eq!(fdb.learn(mac(1), vtep(1)), LearnOutcome::Created);
        assert_eq!(fdb.lookup(&mac(1)), Some(vtep(1)));
        assert_eq!(fdb.learned_len(), 1);
        assert_eq!(fdb.counters().learned, 1);
        assert_eq!(entry(&fdb, mac(1)).kind, EntryKind::Learned);
    }

    #[test]
    fn learn_refresh_resets_age() {
        let (fdb, clock) = fdb();
        fdb.learn(mac(1), vtep(1));
        clock.advance(7_500);
        assert_eq!(entry(&fdb, mac(1)).age_secs, 7);
        assert_eq!(fdb.learn(mac(1), vtep(1)), LearnOutcome::Refreshed);
        assert_eq!(entry(&fdb, mac(1)).age_secs, 0);
        assert_eq!(fdb.learned_len(), 1);
        assert_eq!(fdb.counters().learned, 1, "a refresh is not a creation");
        assert_eq!(fdb.counters().moved, 0);
    }

    #[test]
    fn learn_moves_to_new_vtep() {
        let (fdb, clock) = fdb();
        fdb.learn(mac(1), vtep(1));
        clock.advance(5_000);
        assert_eq!(fdb.learn(mac(1), vtep(2)), LearnOutcome::Moved);
        assert_eq!(fdb.lookup(&mac(1)), Some(vtep(2)));
        assert_eq!(fdb.counters().moved, 1);
        assert_eq!(fdb.learned_len(), 1);
        let e = entry(&fdb, mac(1));
        assert_eq!((e.dst, e.age_secs), (vtep(2), 0), "a move also refreshes");
        // After the move, the new location is the one refreshed and kept.
        clock.advance(1_000);
        assert_eq!(fdb.learn(mac(1), vtep(2)), LearnOutcome::Refreshed);
        assert_eq!(fdb.lookup(&mac(1)), Some(vtep(2)));
        assert_eq!(fdb.counters().moved, 1);
    }

    #[test]
    fn lookup_does_not_refresh() {
        let (fdb, clock) = fdb();
        fdb.learn(mac(1), vtep(1));
        clock.advance(299_000);
        assert_eq!(fdb.lookup(&mac(1)), Some(vtep(1)));
        clock.advance(1_000);
        assert_eq!(fdb.expire(), 1);
        assert_eq!(fdb.lookup(&mac(1)), None);
    }

    #[test]
    fn ageing_expires_only_idle_learned_entries() {
        let (fdb, clock) = fdb_with(FdbConfig { ageing: Duration::from_secs(10), ..FdbConfig::default() });
        fdb.learn(mac(1), vtep(1)); // will go idle
        fdb.learn(mac(2), vtep(1)); // kept alive by refreshes
        fdb.add_static(mac(3), vtep(3)).unwrap();
        clock.advance(6_000);
        fdb.learn(mac(4), vtep(1)); // younger
        assert_eq!(fdb.learn(mac(2), vtep(1)), LearnOutcome::Refreshed);
        clock.advance(3_999);
        assert_eq!(fdb.expire(), 0, "nothing idle for 10 s yet");
        clock.advance(1);
        assert_eq!(fdb.expire(), 1);
        assert_eq!(fdb.lookup(&mac(1)), None);
        assert_eq!(fdb.lookup(&mac(2)), Some(vtep(1)));
        assert_eq!(fdb.lookup(&mac(4)), Some(vtep(1)));
        assert_eq!(fdb.learned_len(), 2);
        assert_eq!(fdb.counters().expired, 1);
        clock.advance(1_000_000);
        assert_eq!(fdb.expire(), 2);
        assert_eq!(fdb.learned_len(), 0);
        assert_eq!(fdb.lookup(&mac(3)), Some(vtep(3)), "statics never age");
        assert_eq!(fdb.counters().expired, 3);
        assert_eq!(fdb.snapshot().len(), 1);
    }

    #[test]
    fn ageing_zero_disables_expiry() {
        let (fdb, clock) = fdb_with(FdbConfig { ageing: Duration::ZERO, ..FdbConfig::default() });
        fdb.learn(mac(1), vtep(1));
        clock.advance(u64::MAX / 2);
        assert_eq!(fdb.expire(), 0);
        assert_eq!(fdb.lookup(&mac(1)), Some(vtep(1)));
    }

    #[test]
    fn static_is_never_overwritten_by_learning() {
        let (fdb, clock) = fdb();
        fdb.add_static(mac(1), vtep(1)).unwrap();
        clock.advance(3_000);
        assert_eq!(fdb.learn(mac(1), vtep(2)), LearnOutcome::StaticKept);
        assert_eq!(fdb.learn(mac(1), vtep(1)), LearnOutcome::StaticKept);
        let e = entry(&fdb, mac(1));
        assert_eq!((e.dst, e.kind, e.age_secs), (vtep(1), EntryKind::Static, 3));
        assert_eq!(fdb.learned_len(), 0);
        assert_eq!(fdb.counters(), FdbCounters::default());
    }

    #[test]
    fn add_static_replaces_learned_and_frees_its_slot() {
        let (fdb, _) = fdb_with(FdbConfig { max_learned: 2, ..FdbConfig::default() });
        assert_eq!(fdb.learn(mac(1), vtep(1)), LearnOutcome::Created);
        assert_eq!(fdb.learn(mac(2), vtep(1)), LearnOutcome::Created);
        assert_eq!(fdb.learn(mac(3), vtep(1)), LearnOutcome::Full);
        fdb.add_static(mac(1), vtep(9)).unwrap();
        assert_eq!(fdb.lookup(&mac(1)), Some(vtep(9)));
        assert_eq!(entry(&fdb, mac(1)).kind, EntryKind::Static);
        assert_eq!(fdb.learned_len(), 1);
        assert_eq!(fdb.learn(mac(3), vtep(1)), LearnOutcome::Created);
        // Replacing a static with a static changes the dst and does not touch the count.
        fdb.add_static(mac(1), vtep(8)).unwrap();
        assert_eq!(fdb.lookup(&mac(1)), Some(vtep(8)));
        assert_eq!(fdb.learned_len(), 2);
    }

    #[test]
    fn add_static_rejects_invalid() {
        let (fdb, _) = fdb();
        for m in [
            MacAddr::BROADCAST,
            MacAddr::ZERO,
            MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
            MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        ] {
            assert_eq!(fdb.add_static(m, vtep(1)), Err(FdbError::NotUnicast(m)));
        }
        assert_eq!(fdb.add_static(LOCAL, vtep(1)), Err(FdbError::LocalMac(LOCAL)));
        let bad: SocketAddr = "0.0.0.0:4789".parse().unwrap();
        assert_eq!(fdb.add_static(mac(1), bad), Err(FdbError::InvalidDst(bad)));
        let bad: SocketAddr = "192.0.2.1:0".parse().unwrap();
        assert_eq!(fdb.add_static(mac(1), bad), Err(FdbError::InvalidDst(bad)));
        assert!(fdb.is_empty());
        let msg = FdbError::NotUnicast(MacAddr::BROADCAST).to_string();
        assert!(msg.contains("ff:ff:ff:ff:ff:ff"), "{msg}");
    }

    #[test]
    fn remove_either_kind_and_keep_count() {
        let (fdb, _) = fdb();
        fdb.learn(mac(1), vtep(1));
        fdb.add_static(mac(2), vtep(2)).unwrap();
        assert!(fdb.remove(&mac(1)));
        assert_eq!(fdb.learned_len(), 0);
        assert!(!fdb.remove(&mac(1)));
        assert!(fdb.remove(&mac(2)));
        assert_eq!(fdb.learned_len(), 0);
        assert!(fdb.is_empty());
    }

    #[test]
    fn cap_refuses_and_counts_then_frees_after_expire() {
        let (fdb, clock) = fdb_with(FdbConfig { max_learned: 3, ..FdbConfig::default() });
        fdb.add_static(mac(100), vtep(1)).unwrap(); // statics do not count
        for i in 0..3 {
            assert_eq!(fdb.learn(mac(i), vtep(1)), LearnOutcome::Created);
        }
        assert_eq!(fdb.learn(mac(3), vtep(1)), LearnOutcome::Full);
        assert_eq!(fdb.learn(mac(4), vtep(1)), LearnOutcome::Full);
        assert_eq!(fdb.lookup(&mac(3)), None);
        assert_eq!(fdb.learned_len(), 3);
        assert_eq!(fdb.counters().refused_full, 2);
        // Existing entries can still refresh and move at the cap.
        assert_eq!(fdb.learn(mac(0), vtep(1)), LearnOutcome::Refreshed);
        assert_eq!(fdb.learn(mac(1), vtep(2)), LearnOutcome::Moved);
        clock.advance(300_000);
        assert_eq!(fdb.expire(), 3);
        assert_eq!(fdb.learn(mac(3), vtep(1)), LearnOutcome::Created);
        assert_eq!(fdb.learned_len(), 1);
        // Removing a learned entry frees room too.
        let (fdb, _) = fdb_with(FdbConfig { max_learned: 1, ..FdbConfig::default() });
        fdb.learn(mac(0), vtep(1));
        assert_eq!(fdb.learn(mac(1), vtep(1)), LearnOutcome::Full);
        assert!(fdb.remove(&mac(0)));
        assert_eq!(fdb.learn(mac(1), vtep(1)), LearnOutcome::Created);
    }

    #[test]
    fn zero_cap_never_learns() {
        let (fdb, _) = fdb_with(FdbConfig { max_learned: 0, ..FdbConfig::default() });
        assert_eq!(fdb.learn(mac(1), vtep(1)), LearnOutcome::Full);
        assert_eq!(fdb.learned_len(), 0);
    }

    #[test]
    fn not_learnable_sources() {
        let (fdb, _) = fdb();
        for m in [
            MacAddr::BROADCAST,
            MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]),
            MacAddr([0x33, 0x33, 0x00, 0x00, 0x00, 0x01]),
            MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x00]),
            MacAddr::ZERO,
        ] {
            assert_eq!(fdb.learn(m, vtep(1)), LearnOutcome::NotLearnable, "{m}");
            assert_eq!(fdb.lookup(&m), None);
        }
        assert!(fdb.is_empty());
        assert_eq!(fdb.learned_len(), 0);
        assert_eq!(fdb.counters(), FdbCounters::default());
    }

    #[test]
    fn local_mac_is_a_loop() {
        let (fdb, _) = fdb();
        assert_eq!(fdb.learn(LOCAL, vtep(1)), LearnOutcome::LocalMacLoop);
        assert_eq!(fdb.learn(LOCAL, vtep(2)), LearnOutcome::LocalMacLoop);
        assert_eq!(fdb.lookup(&LOCAL), None);
        assert_eq!(fdb.counters().local_mac_loops, 2);
        assert_eq!(fdb.learned_len(), 0);
    }

    #[test]
    fn local_mac_set_later() {
        let clock = Arc::new(ManualClock::new(0));
        let fdb = Fdb::new(7, None, FdbConfig::default(), clock);
        assert_eq!(fdb.local_mac(), None);
        // Learned before the TAP's MAC was known: dropped once it is.
        assert_eq!(fdb.learn(LOCAL, vtep(1)), LearnOutcome::Created);
        fdb.set_local_mac(LOCAL);
        assert_eq!(fdb.local_mac(), Some(LOCAL));
        assert_eq!(fdb.lookup(&LOCAL), None);
        assert_eq!(fdb.learned_len(), 0);
        assert_eq!(fdb.learn(LOCAL, vtep(1)), LearnOutcome::LocalMacLoop);
        assert_eq!(fdb.counters().local_mac_loops, 1);
    }

    #[test]
    fn learning_disabled() {
        let (fdb, _) = fdb_with(FdbConfig { learning: false, ..FdbConfig::default() });
        assert_eq!(fdb.learn(mac(1), vtep(1)), LearnOutcome::Disabled);
        assert_eq!(fdb.lookup(&mac(1)), None);
        fdb.add_static(mac(2), vtep(2)).unwrap();
        assert_eq!(fdb.learn(mac(2), vtep(3)), LearnOutcome::Disabled);
        assert_eq!(fdb.lookup(&mac(2)), Some(vtep(2)));
        // The loop check still applies.
        assert_eq!(fdb.learn(LOCAL, vtep(1)), LearnOutcome::LocalMacLoop);
        assert_eq!(fdb.counters().local_mac_loops, 1);
        assert_eq!(fdb.learned_len(), 0);
        assert_eq!(fdb.counters().learned, 0);
    }

    #[test]
    fn flood_list_add_remove_dedupe() {
        let (fdb, _) = fdb();
        assert!(fdb.flood_list().is_empty());
        assert!(fdb.add_flood(vtep(1)));
        assert!(fdb.add_flood(vtep(2)));
        assert!(!fdb.add_flood(vtep(1)));
        assert_eq!(**fdb.flood_list(), vec![vtep(1), vtep(2)]);
        // Same IP, other port: a different remote.
        let other_port = SocketAddr::from(([192, 0, 2, 1], 8472));
        assert!(fdb.add_flood(other_port));
        assert!(fdb.remove_flood(&vtep(1)));
        assert!(!fdb.remove_flood(&vtep(1)));
        assert_eq!(**fdb.flood_list(), vec![vtep(2), other_port]);
        fdb.set_flood_list(vec![vtep(3), vtep(4), vtep(3)]);
        assert_eq!(**fdb.flood_list(), vec![vtep(3), vtep(4)]);
        // A guard taken before a change keeps seeing its version.
        let old = fdb.flood_list();
        fdb.set_flood_list(Vec::new());
        assert_eq!(old.len(), 2);
        assert!(fdb.flood_list().is_empty());
    }

    #[test]
    fn concurrent_flood_adds_are_not_lost() {
        let (fdb, _) = fdb();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let fdb = &fdb;
                s.spawn(move || {
                    for i in 0..50u8 {
                        fdb.add_flood(SocketAddr::from(([10, t, 0, i], 4789)));
                    }
                });
            }
        });
        assert_eq!(fdb.flood_list().len(), 200);
    }

    #[test]
    fn snapshot_contents_and_ages() {
        let (fdb, clock) = fdb();
        fdb.learn(mac(3), vtep(1));
        clock.advance(2_000);
        fdb.add_static(mac(1), vtep(2)).unwrap();
        clock.advance(1_500);
        fdb.learn(mac(2), vtep(3));
        clock.advance(10_000);
        let snap = fdb.snapshot();
        let expect = vec![
            FdbEntry { mac: mac(1), dst: vtep(2), vni: 42, kind: EntryKind::Static, age_secs: 11 },
            FdbEntry { mac: mac(2), dst: vtep(3), vni: 42, kind: EntryKind::Learned, age_secs: 10 },
            FdbEntry { mac: mac(3), dst: vtep(1), vni: 42, kind: EntryKind::Learned, age_secs: 13 },
        ];
        assert_eq!(snap, expect);
        assert_eq!(snap[0].dst_ip().to_string(), "192.0.2.2");
        assert_eq!(snap[0].dst_port(), 4789);
        let json = serde_json::to_value(&snap[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"mac": "02:42:00:00:00:01", "dst": "192.0.2.2:4789", "vni": 42, "kind": "static", "age_secs": 11})
        );
    }

    #[test]
    fn flush_learned_keeps_statics() {
        let (fdb, _) = fdb();
        fdb.learn(mac(1), vtep(1));
        fdb.learn(mac(2), vtep(1));
        fdb.add_static(mac(3), vtep(1)).unwrap();
        assert_eq!(fdb.flush_learned(), 2);
        assert_eq!(fdb.learned_len(), 0);
        assert_eq!(fdb.snapshot().len(), 1);
    }

    #[test]
    fn monotonic_clock_advances() {
        let c = MonotonicClock::default();
        let a = c.now_ms();
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.now_ms() >= a + 5);
    }

    #[test]
    fn manual_clock() {
        let c = ManualClock::new(10);
        assert_eq!(c.now_ms(), 10);
        c.advance(5);
        assert_eq!(c.now_ms(), 15);
        c.set(3);
        assert_eq!(c.now_ms(), 3);
    }

    /// 4 readers look up known MACs while 2 learners move those MACs between two VTEPs and race
    /// to create more new MACs than the cap allows.
    #[test]
    fn concurrent_lookup_and_learn() {
        const CAP: usize = 64;
        const KNOWN: u32 = 16;
        const NEW: u32 = 500;
        let (fdb, _) = fdb_with(FdbConfig { max_learned: CAP, ..FdbConfig::default() });
        for i in 0..KNOWN {
            assert_eq!(fdb.learn(mac(i), vtep(1)), LearnOutcome::Created);
        }
        let stop = AtomicBool::new(false);
        let (created, moved, full) = std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) || n < 1000 {
                        for i in 0..KNOWN {
                            let d = fdb.lookup(&mac(i));
                            assert!(d == Some(vtep(1)) || d == Some(vtep(2)), "{d:?}");
                        }
                        assert!(fdb.learned_len() <= CAP);
                        n += 1;
                    }
                });
            }
            let learners: Vec<_> = (0..2u32)
                .map(|t| {
                    let fdb = &fdb;
                    s.spawn(move || {
                        let (mut created, mut moved, mut full) = (0u64, 0u64, 0u64);
                        let mut tally = |o| match o {
                            LearnOutcome::Created => created += 1,
                            LearnOutcome::Moved => moved += 1,
                            LearnOutcome::Full => full += 1,
                            LearnOutcome::Refreshed => {}
                            other => panic!("unexpected {other:?}"),
                        };
                        for round in 0..200u32 {
                            for i in 0..KNOWN {
                                let to = if (round + t + i) % 2 == 0 { 1 } else { 2 };
                                tally(fdb.learn(mac(i), vtep(to)));
                            }
                            for k in 0..NEW / 200 {
                                let m = mac(1000 + round * (NEW / 200) + k);
                                tally(fdb.learn(m, vtep(t as u8 + 1)));
                            }
                        }
                        (created, moved, full)
                    })
                })
                .collect();
            let totals = learners
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
            stop.store(true, Ordering::Relaxed);
            totals
        });
        let c = fdb.counters();
        let snap = fdb.snapshot();
        let learned_in_snap = snap.iter().filter(|e| e.kind == EntryKind::Learned).count();
        assert_eq!(fdb.learned_len(), CAP, "cap filled exactly, never exceeded");
        assert_eq!(learned_in_snap, CAP);
        assert_eq!(snap.len(), CAP);
        assert_eq!(c.learned, created + KNOWN as u64);
        assert_eq!(c.learned as usize, CAP);
        assert_eq!(c.moved, moved);
        assert!(moved > 0);
        assert_eq!(c.refused_full, full);
        for i in 0..KNOWN {
            assert!(matches!(fdb.lookup(&mac(i)), Some(d) if d == vtep(1) || d == vtep(2)));
        }
    }

    /// The learned count stays exact under concurrent creation, removal and expiry.
    #[test]
    fn concurrent_churn_keeps_count_exact() {
        const CAP: usize = 32;
        let (fdb, clock) =
            fdb_with(FdbConfig { max_learned: CAP, ageing: Duration::from_secs(1), ..FdbConfig::default() });
        std::thread::scope(|s| {
            for t in 0..3u32 {
                let fdb = &fdb;
                s.spawn(move || {
                    for i in 0..3000u32 {
                        let m = mac((i * 7 + t) % 100);
                        match i % 5 {
                            0 => {
                                fdb.remove(&m);
                            }
                            1 => {
                                let _ = fdb.add_static(m, vtep(9));
                            }
                            _ => {
                                fdb.learn(m, vtep(t as u8 + 1));
                            }
                        }
                        assert!(fdb.learned_len() <= CAP);
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..300 {
                    clock.advance(500);
                    fdb.expire();
                }
            });
        });
        let learned = fdb.snapshot().iter().filter(|e| e.kind == EntryKind::Learned).count();
        assert_eq!(fdb.learned_len(), learned);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Learn(u8, u8),
        Remove(u8),
        AddStatic(u8, u8),
        Advance(u16),
        Expire,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..12, 1u8..4).prop_map(|(m, d)| Op::Learn(m, d)),
            2 => (0u8..12).prop_map(Op::Remove),
            1 => (0u8..12, 1u8..4).prop_map(|(m, d)| Op::AddStatic(m, d)),
            2 => (0u16..6000).prop_map(Op::Advance),
            1 => Just(Op::Expire),
        ]
    }

    proptest! {
        /// Against a simple model: the table's contents, the learned count and the outcomes
        /// agree, and the count never exceeds the cap.
        #[test]
        fn learned_len_matches_snapshot_and_cap(ops in proptest::collection::vec(op(), 1..200)) {
            const CAP: usize = 5;
            const AGE_MS: u64 = 10_000;
            let (fdb, clock) = fdb_with(FdbConfig {
                max_learned: CAP,
                ageing: Duration::from_millis(AGE_MS),
                ..FdbConfig::default()
            });
            // mac -> (dst, kind, last_seen)
            let mut model: BTreeMap<MacAddr, (SocketAddr, EntryKind, u64)> = BTreeMap::new();
            for op in ops {
                let now = clock.now_ms();
                match op {
                    Op::Learn(m, d) => {
                        let (m, d) = (mac(m.into()), vtep(d));
                        let n_learned = model.values().filter(|e| e.1 == EntryKind::Learned).count();
                        let expect = match model.get_mut(&m) {
                            Some(e) if e.1 == EntryKind::Static => LearnOutcome::StaticKept,
                            Some(e) if e.0 == d => { e.2 = now; LearnOutcome::Refreshed }
                            Some(e) => { e.0 = d; e.2 = now; LearnOutcome::Moved }
                            None if n_learned >= CAP => LearnOutcome::Full,
                            None => { model.insert(m, (d, EntryKind::Learned, now)); LearnOutcome::Created }
                        };
                        prop_assert_eq!(fdb.learn(m, d), expect);
                    }
                    Op::Remove(m) => {
                        let m = mac(m.into());
                        prop_assert_eq!(fdb.remove(&m), model.remove(&m).is_some());
                    }
                    Op::AddStatic(m, d) => {
                        let (m, d) = (mac(m.into()), vtep(d));
                        fdb.add_static(m, d).unwrap();
                        model.insert(m, (d, EntryKind::Static, now));
                    }
                    Op::Advance(ms) => clock.advance(ms.into()),
                    Op::Expire => {
                        let before = model.len();
                        model.retain(|_, e| e.1 == EntryKind::Static || now - e.2 < AGE_MS);
                        prop_assert_eq!(fdb.expire(), before - model.len());
                    }
                }
                let snap = fdb.snapshot();
                let learned = snap.iter().filter(|e| e.kind == EntryKind::Learned).count();
                prop_assert_eq!(fdb.learned_len(), learned);
                prop_assert!(learned <= CAP);
                let now = clock.now_ms();
                let want: Vec<FdbEntry> = model
                    .iter()
                    .map(|(m, e)| FdbEntry { mac: *m, dst: e.0, vni: 42, kind: e.1, age_secs: (now - e.2) / 1000 })
                    .collect();
                prop_assert_eq!(snap, want);
            }
        }
    }
}
