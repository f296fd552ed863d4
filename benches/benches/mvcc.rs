//! MVCC micro-benchmarks: `MvccStore` put and range over the two Storage
//! implementations — `SimStorage` (in memory: the cost of MVCC itself) and
//! `RocksStorage` in a temp dir (writes without fsync, as the server's apply
//! path does; reads mostly from RocksDB's memtable and block cache).
//!
//! - `mvcc_put/{sim,rocks}`: one Put of a 256-byte value to a random key of
//!   10 000 (the store is rebuilt, untimed, every `REBUILD_EVERY` puts so its
//!   history does not grow without bound).
//! - `mvcc_range/{sim,rocks}/single_key`: Range of one key of 10 000.
//! - `mvcc_range/{sim,rocks}/prefix_100`: Range of a 100-key prefix.
//! - `key_index/count_only_single_key/{10k,100k}_keys`: a `count_only` Range
//!   of one key, which touches only the in-memory key index (the index type is
//!   private, so it is measured through Range).
//!
//! Watch event dispatch is measured in `watch.rs`.
//! Run: `cargo bench --workspace --bench mvcc`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::mvcc::{MvccStore, COLUMN_FAMILIES};
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
#[cfg(not(madsim))]
use cairn_runtime::RocksStorage;
use cairn_runtime::{SimStorage, Storage, WriteBatch};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const KEYS: u64 = 10_000;
const VALUE_SIZE: usize = 256;
const REBUILD_EVERY: u64 = 200_000;

fn key(n: u64) -> Vec<u8> {
    format!("key/{n:08}").into_bytes()
}

fn put_req(n: u64) -> PutRequest {
    PutRequest {
        key: key(n),
        value: vec![b'v'; VALUE_SIZE],
        ..Default::default()
    }
}

/// A deterministic, well-spread sequence of key numbers in `0..KEYS`.
fn scatter(i: u64, keys: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % keys
}

/// A store over a storage, and what keeps its files alive.
struct Fixture {
    store: MvccStore,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Clone, Copy)]
enum Backend {
    Sim,
    #[cfg(not(madsim))]
    Rocks,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sim => "sim",
            #[cfg(not(madsim))]
            Backend::Rocks => "rocks",
        }
    }

    fn all() -> Vec<Backend> {
        vec![
            Backend::Sim,
            #[cfg(not(madsim))]
            Backend::Rocks,
        ]
    }

    /// A store holding keys `0..keys`, one revision each.
    fn fixture(self, keys: u64) -> Fixture {
        let (storage, dir): (Arc<dyn Storage>, _) = match self {
            Backend::Sim => (Arc::new(SimStorage::new(COLUMN_FAMILIES)), None),
            #[cfg(not(madsim))]
            Backend::Rocks => {
                let dir = tempfile::tempdir().expect("temp dir");
                let s = RocksStorage::open(dir.path(), COLUMN_FAMILIES).expect("open rocksdb");
                (Arc::new(s), Some(dir))
            }
        };
        let mut store = MvccStore::open(storage).expect("open mvcc");
        for n in 0..keys {
            store
                .put(&put_req(n), &|_| true, WriteBatch::new())
                .expect("put");
        }
        Fixture { store, _dir: dir }
    }
}

fn bench_put(c: &mut Criterion) {
    let mut group = c.benchmark_group("mvcc_put");
    group.throughput(Throughput::Elements(1));
    for backend in Backend::all() {
        group.bench_function(backend.name(), |b| {
            let mut fx = backend.fixture(KEYS);
            let mut done = 0u64;
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    if done > 0 && done % REBUILD_EVERY == 0 {
                        fx = backend.fixture(KEYS);
                    }
                    let req = put_req(scatter(done, KEYS));
                    let t0 = Instant::now();
                    fx.store
                        .put(&req, &|_| true, WriteBatch::new())
                        .expect("put");
                    spent += t0.elapsed();
                    done += 1;
                }
                spent
            });
        });
    }
    group.finish();
}

fn bench_range(c: &mut Criterion) {
    let mut group = c.benchmark_group("mvcc_range");
    group.throughput(Throughput::Elements(1));
    for backend in Backend::all() {
        let fx = backend.fixture(KEYS);
        group.bench_function(BenchmarkId::new(backend.name(), "single_key"), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let req = RangeRequest {
                    key: key(scatter(i, KEYS)),
                    ..Default::default()
                };
                let resp = fx.store.range(&req).expect("range");
                assert_eq!(resp.kvs.len(), 1);
                resp
            });
        });
        group.bench_function(BenchmarkId::new(backend.name(), "prefix_100"), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                // key/0000NN00 .. key/0000NN99: 100 keys.
                let block = scatter(i, KEYS / 100);
                let prefix = format!("key/{:06}", block).into_bytes();
                let mut end = prefix.clone();
                *end.last_mut().expect("non-empty") += 1;
                let req = RangeRequest {
                    key: prefix,
                    range_end: end,
                    ..Default::default()
                };
                let resp = fx.store.range(&req).expect("range");
                assert_eq!(resp.kvs.len(), 100);
                resp
            });
        });
    }
    group.finish();
}

fn bench_key_index(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_index");
    group.throughput(Throughput::Elements(1));
    for keys in [10_000u64, 100_000] {
        let fx = Backend::Sim.fixture(keys);
        let id = BenchmarkId::new("count_only_single_key", format!("{}k_keys", keys / 1000));
        group.bench_function(id, |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let req = RangeRequest {
                    key: key(scatter(i, keys)),
                    count_only: true,
                    ..Default::default()
                };
                let resp = fx.store.range(&req).expect("range");
                assert_eq!(resp.count, 1);
                resp
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_put, bench_range, bench_key_index);
criterion_main!(benches);
