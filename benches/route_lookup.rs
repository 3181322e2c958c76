//! Route lookup cost against table size: it should not grow with the number of routes.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gateway_proxy::{Route, RouteStore, RouteTable, Upstream};

fn table(size: usize) -> RouteTable {
    let upstream = Upstream::from_host_port("10.0.0.1", 8000).expect("a valid upstream");
    RouteTable::new((0..size).map(|i| {
        let key = format!("{i:032x}");
        Route::new(&key, upstream.clone()).expect("a valid route key")
    }))
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for size in [1usize, 1_000, 100_000] {
        let store = RouteStore::new(table(size));
        let key = format!("{:032x}", size / 2);
        group.bench_with_input(BenchmarkId::from_parameter(size), &key, |b, key| {
            b.iter(|| black_box(store.lookup(black_box(key))));
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
