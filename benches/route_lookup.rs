//! Route lookup cost against table size, and while 100 000-route tables are being replaced:
//! neither should move the cost of a request's lookup.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway_proxy::{Route, RouteStore, RouteTable, Upstream};

fn table(size: usize, generation: usize) -> RouteTable {
    let upstream = Upstream::from_host_port("10.0.0.1", 8000).expect("a valid upstream");
    RouteTable::new((0..size).map(|i| {
        // Every generation keeps the looked-up key, as a live route survives a sync.
        let key = if i == size / 2 {
            format!("{i:032x}")
        } else {
            format!("{generation:04x}{i:028x}")
        };
        Route::new(&key, upstream.clone()).expect("a valid route key")
    }))
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for size in [1usize, 1_000, 100_000] {
        let store = RouteStore::new(table(size, 0));
        let key = format!("{:032x}", size / 2);
        group.bench_with_input(BenchmarkId::from_parameter(size), &key, |b, key| {
            b.iter(|| black_box(store.lookup(black_box(key))));
        });
    }
    group.finish();
}

/// Lookups on this thread while another thread replaces the 100 000-route table over and
/// over (building each new table off to the side, as the sync does).
fn lookup_during_swaps(c: &mut Criterion) {
    let size = 100_000;
    let store = Arc::new(RouteStore::new(table(size, 0)));
    let key = format!("{:032x}", size / 2);
    let running = Arc::new(AtomicBool::new(true));
    let swapper = {
        let store = Arc::clone(&store);
        let running = Arc::clone(&running);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the swapper");
            let mut generation = 1;
            let mut swaps = 0u64;
            while running.load(Ordering::Relaxed) {
                runtime.block_on(store.replace(table(size, generation)));
                generation = generation % 0xffff + 1;
                swaps += 1;
            }
            swaps
        })
    };
    c.bench_function("route_lookup/100000_while_swapping", |b| {
        b.iter(|| {
            let route = store.lookup(black_box(&key));
            assert!(route.is_some(), "a route that stays is never missing");
            black_box(route)
        });
    });
    running.store(false, Ordering::Relaxed);
    let swaps = swapper.join().expect("the swapper thread");
    eprintln!(
        "route_lookup/100000_while_swapping: {swaps} tables of {size} routes replaced meanwhile"
    );
}

criterion_group!(benches, lookup, lookup_during_swaps);
criterion_main!(benches);
