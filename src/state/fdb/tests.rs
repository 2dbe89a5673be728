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
fn settings_change_while_the_table_is_in_use() {
    let (fdb, clock) = fdb();
    fdb.learn(mac(1), vtep(1));
    fdb.learn(mac(2), vtep(1));
    let tight = FdbConfig { learning: true, ageing: Duration::from_secs(1), max_learned: 1 };
    fdb.set_config(&tight);
    assert_eq!(fdb.config(), tight);
    assert_eq!(fdb.len(), 2, "entries over a lowered cap stay");
    assert_eq!(fdb.learn(mac(3), vtep(1)), LearnOutcome::Full);
    clock.advance(1_000);
    assert_eq!(fdb.expire(), 2, "the shorter ageing applies at once");
    fdb.set_config(&FdbConfig { learning: false, ..tight });
    assert_eq!(fdb.learn(mac(3), vtep(1)), LearnOutcome::Disabled);
    fdb.set_config(&FdbConfig::default());
    assert_eq!(fdb.learn(mac(3), vtep(1)), LearnOutcome::Created);
    fdb.set_config(&FdbConfig { ageing: Duration::ZERO, ..FdbConfig::default() });
    clock.advance(10_000_000);
    assert_eq!(fdb.expire(), 0, "ageing 0 never expires");
}

#[test]
fn remove_static_takes_only_the_entry_the_configuration_made() {
    let (fdb, _) = fdb();
    fdb.add_static(mac(1), vtep(1)).unwrap();
    assert!(!fdb.remove_static(&mac(1), vtep(2)), "moved since (fdb add): not the configuration's");
    assert!(fdb.remove_static(&mac(1), vtep(1)));
    assert_eq!(fdb.lookup(&mac(1)), None);
    fdb.learn(mac(2), vtep(1));
    assert!(!fdb.remove_static(&mac(2), vtep(1)), "a learned entry is never removed as a static one");
    assert_eq!(fdb.learned_len(), 1);
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
        FdbEntry {
            mac: mac(1),
            dst: vtep(2),
            vni: 42,
            kind: EntryKind::Static,
            age_secs: 11,
            heard_secs: None,
        },
        FdbEntry {
            mac: mac(2),
            dst: vtep(3),
            vni: 42,
            kind: EntryKind::Learned,
            age_secs: 10,
            heard_secs: Some(10),
        },
        FdbEntry {
            mac: mac(3),
            dst: vtep(1),
            vni: 42,
            kind: EntryKind::Learned,
            age_secs: 13,
            heard_secs: Some(13),
        },
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
                            let to = if (round + t + i).is_multiple_of(2) { 1 } else { 2 };
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
            // When a pinned entry last heard its MAC is not modelled here.
            let snap: Vec<FdbEntry> = fdb
                .snapshot()
                .into_iter()
                .map(|e| if e.kind == EntryKind::Learned { e } else { FdbEntry { heard_secs: None, ..e } })
                .collect();
            let learned = snap.iter().filter(|e| e.kind == EntryKind::Learned).count();
            prop_assert_eq!(fdb.learned_len(), learned);
            prop_assert!(learned <= CAP);
            let now = clock.now_ms();
            let want: Vec<FdbEntry> = model
                .iter()
                .map(|(m, e)| {
                    let age_secs = (now - e.2) / 1000;
                    let heard_secs = (e.1 == EntryKind::Learned).then_some(age_secs);
                    FdbEntry { mac: *m, dst: e.0, vni: 42, kind: e.1, age_secs, heard_secs }
                })
                .collect();
            prop_assert_eq!(snap, want);
        }
    }
}

#[test]
fn etcd_entries_are_pinned_and_yield_to_statics() {
    let (fdb, clock) = fdb_with(FdbConfig { ageing: Duration::from_secs(10), ..FdbConfig::default() });
    assert_eq!(fdb.learn(mac(1), vtep(1)), LearnOutcome::Created);
    assert_eq!(fdb.set_etcd(mac(1), vtep(2)), Ok(true), "replaces a learned entry");
    assert_eq!(fdb.learned_len(), 0, "its slot in the cap is freed");
    assert_eq!(entry(&fdb, mac(1)).kind, EntryKind::Etcd);
    assert_eq!(fdb.learn(mac(1), vtep(3)), LearnOutcome::StaticKept, "learning never moves it");
    assert_eq!(fdb.lookup(&mac(1)), Some(vtep(2)));
    clock.advance(60_000);
    assert_eq!(fdb.expire(), 0, "never aged");
    assert_eq!(fdb.set_etcd(mac(1), vtep(4)), Ok(true), "replaced when the member changes");
    assert_eq!(fdb.lookup(&mac(1)), Some(vtep(4)));
    fdb.add_static(mac(2), vtep(5)).unwrap();
    assert_eq!(fdb.set_etcd(mac(2), vtep(6)), Ok(false), "the operator's static entry wins");
    assert_eq!((fdb.lookup(&mac(2)), entry(&fdb, mac(2)).kind), (Some(vtep(5)), EntryKind::Static));
    assert!(!fdb.remove_etcd(&mac(2)), "remove_etcd leaves a static entry alone");
    assert!(fdb.remove_etcd(&mac(1)));
    assert_eq!(fdb.lookup(&mac(1)), None);
    assert!(fdb.flush_learned() == 0 && fdb.len() == 1);
    assert_eq!(fdb.set_etcd(LOCAL, vtep(1)), Err(FdbError::LocalMac(LOCAL)));
    assert_eq!(fdb.set_etcd(MacAddr::BROADCAST, vtep(1)), Err(FdbError::NotUnicast(MacAddr::BROADCAST)));
    assert!(fdb.set_etcd(mac(3), SocketAddr::from(([0, 0, 0, 0], 4789))).is_err());
}

#[test]
fn learned_entries_behind_a_vtep_are_removed_with_it() {
    let (fdb, _) = fdb();
    for i in 0..5 {
        fdb.learn(mac(i), vtep(1));
    }
    fdb.learn(mac(10), vtep(2));
    fdb.set_etcd(mac(11), vtep(1)).unwrap();
    fdb.add_static(mac(12), vtep(1)).unwrap();
    let other_port = SocketAddr::from(([192, 0, 2, 1], 8472));
    fdb.learn(mac(13), other_port);
    assert_eq!(fdb.remove_learned_at("::ffff:192.0.2.1".parse().unwrap()), 6, "any port, canonical form");
    assert_eq!(fdb.learned_len(), 1);
    assert_eq!(fdb.lookup(&mac(10)), Some(vtep(2)));
    assert!(fdb.lookup(&mac(11)).is_some() && fdb.lookup(&mac(12)).is_some(), "pinned entries stay");
}

#[test]
fn flood_sources_are_kept_apart() {
    let (fdb, _) = fdb();
    fdb.set_flood_list(vec![vtep(1), vtep(2), vtep(1)]);
    fdb.set_flood(FloodSource::Etcd, vec![vtep(2), vtep(3)]);
    assert_eq!(**fdb.flood_list(), vec![vtep(1), vtep(2), vtep(3)], "union, each once, operator's first");
    fdb.set_flood(FloodSource::Etcd, vec![]);
    assert_eq!(**fdb.flood_list(), vec![vtep(1), vtep(2)], "a member leaving keeps configured remotes");
    fdb.set_flood(FloodSource::Etcd, vec![vtep(3)]);
    assert!(!fdb.remove_flood(&vtep(3)), "the operator cannot remove a member's entry by accident");
    assert!(fdb.remove_flood(&vtep(1)));
    assert!(fdb.add_flood(vtep(4)) && !fdb.add_flood(vtep(4)));
    assert_eq!(**fdb.flood_list(), vec![vtep(2), vtep(4), vtep(3)]);
    assert_eq!(fdb.flood_of(FloodSource::Etcd), vec![vtep(3)]);
    assert_eq!(fdb.flood_of(FloodSource::Config), vec![vtep(2), vtep(4)]);
}

#[test]
fn a_pinned_entry_hears_its_mac_only_from_its_vtep() {
    let (fdb, clock) = fdb();
    clock.advance(1_000);
    fdb.add_static(mac(1), vtep(2)).unwrap();
    fdb.set_etcd(mac(2), vtep(3)).unwrap();
    assert_eq!((entry(&fdb, mac(1)).heard_secs, entry(&fdb, mac(2)).heard_secs), (None, None));
    clock.advance(2_000);
    // From another VTEP: the entry stays and has not heard from its own.
    assert_eq!(fdb.learn(mac(1), vtep(3)), LearnOutcome::StaticKept);
    assert_eq!(entry(&fdb, mac(1)).heard_secs, None);
    // From its VTEP's address, whatever the datagram's source port.
    let from = SocketAddr::new(vtep(2).ip(), 50_000);
    assert_eq!(fdb.learn(mac(1), from), LearnOutcome::StaticKept);
    fdb.learn(mac(2), vtep(3));
    clock.advance(4_000);
    assert_eq!(entry(&fdb, mac(1)).heard_secs, Some(4));
    assert_eq!(entry(&fdb, mac(1)).age_secs, 6, "the age of a static entry stays its configuration's");
    // A member's record put again at the same VTEP keeps what was heard; at another, it does not.
    fdb.set_etcd(mac(2), vtep(3)).unwrap();
    assert_eq!(entry(&fdb, mac(2)).heard_secs, Some(4));
    fdb.set_etcd(mac(2), vtep(1)).unwrap();
    assert_eq!(entry(&fdb, mac(2)).heard_secs, None);
}
