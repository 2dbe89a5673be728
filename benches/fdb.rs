//! Hot-path costs of the FDB: what every received (learn) and sent (lookup) frame pays.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use vxtap::state::fdb::{Fdb, FdbConfig, LearnOutcome, MonotonicClock};
use vxtap::MacAddr;

const ENTRIES: u32 = 1000;

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

fn vtep(n: u32) -> SocketAddr {
    SocketAddr::from(([10, 0, (n >> 8) as u8, n as u8], 4789))
}

/// A table of `ENTRIES` learned MACs spread over 16 VTEPs.
fn table() -> Fdb {
    let fdb = Fdb::new(
        100,
        Some(MacAddr([0x02, 0, 0, 0, 0, 1])),
        FdbConfig::default(),
        Arc::new(MonotonicClock::default()),
    );
    for i in 0..ENTRIES {
        assert_eq!(fdb.learn(mac(i), vtep(i % 16)), LearnOutcome::Created);
    }
    fdb
}

fn bench(c: &mut Criterion) {
    let fdb = table();
    let mut g = c.benchmark_group("fdb");

    let mut i = 0u32;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = (i + 1) % ENTRIES;
            black_box(fdb.lookup(black_box(&mac(i))))
        })
    });

    let mut i = 0u32;
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            i = (i + 1) % ENTRIES;
            black_box(fdb.lookup(black_box(&mac(ENTRIES + i))))
        })
    });

    let mut i = 0u32;
    g.bench_function("learn_refresh", |b| {
        b.iter(|| {
            i = (i + 1) % ENTRIES;
            black_box(fdb.learn(black_box(mac(i)), black_box(vtep(i % 16))))
        })
    });

    g.bench_function("flood_list", |b| b.iter(|| black_box(fdb.flood_list().len())));

    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
