//! Watch event dispatch: the watcher hub (`cairn::watch::WatchHub`) matching
//! one applied revision against its synced watchers, queueing a response per
//! matching watcher, and the streams draining their queues — the work the
//! node loop and the Watch service do per revision, without gRPC.
//!
//! - `watch_dispatch/one_key/{1,100,1000,10000}`: N watchers (10 per
//!   stream) on the same key; one put to it per iteration, so every watcher
//!   gets an event (throughput = events delivered).
//! - `watch_dispatch/prefix/1000`: 1 000 watchers on one prefix, a put under it.
//! - `watch_dispatch/own_key/{1000,10000}`: each watcher on a key of its
//!   own; one put matches one watcher (the cost of finding it among N).
//! - `watch_dispatch/txn_10_events/1000`: 1 000 watchers on a prefix, one
//!   revision with 10 puts under it (one response of 10 events each).
//!
//! Run: `cargo bench --workspace --bench watch`.

use cairn::watch::{HubConfig, StreamId, WatchHub};
use cairn_proto::etcdserverpb::WatchCreateRequest;
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const WATCHERS_PER_STREAM: usize = 10;

fn put_event(key: &[u8], revision: i64) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(KeyValue {
            key: key.to_vec(),
            create_revision: 2,
            mod_revision: revision,
            version: revision - 1,
            value: vec![b'v'; 256],
            lease: 0,
        }),
        prev_kv: None,
    }
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

/// A hub at revision 1 with `n` synced watchers made by `range(i)`.
fn hub_with(n: usize, range: impl Fn(usize) -> (Vec<u8>, Vec<u8>)) -> (WatchHub, Vec<StreamId>) {
    let mut hub = WatchHub::new(HubConfig::new(1536 * 1024), 1);
    let mut streams = Vec::new();
    for i in 0..n {
        if i % WATCHERS_PER_STREAM == 0 {
            streams.push(hub.open_stream());
        }
        let (key, range_end) = range(i);
        let req = WatchCreateRequest {
            key,
            range_end,
            ..Default::default()
        };
        hub.create(*streams.last().expect("a stream"), &req)
            .expect("create");
    }
    // Drain the `created` responses.
    for s in &streams {
        hub.take(*s, usize::MAX);
    }
    (hub, streams)
}

/// One revision through the hub: notify, then every woken stream drains.
/// Returns the events delivered.
fn dispatch(hub: &mut WatchHub, revision: i64, events: &[Event]) -> usize {
    let woken = hub.notify(revision, events, true);
    woken
        .into_iter()
        .map(|s| {
            hub.take(s, usize::MAX)
                .iter()
                .map(|r| r.events.len())
                .sum::<usize>()
        })
        .sum()
}

fn bench_one_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("watch_dispatch/one_key");
    for n in [1usize, 100, 1000, 10_000] {
        let (mut hub, _streams) = hub_with(n, |_| (b"k".to_vec(), Vec::new()));
        let mut rev = 1;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                rev += 1;
                let delivered = dispatch(&mut hub, rev, &[put_event(b"k", rev)]);
                assert_eq!(delivered, n);
            })
        });
    }
    g.finish();
}

fn bench_prefix(c: &mut Criterion) {
    let mut g = c.benchmark_group("watch_dispatch/prefix");
    let n = 1000;
    let (mut hub, _streams) = hub_with(n, |_| (b"svc/".to_vec(), prefix_end(b"svc/")));
    let mut rev = 1;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            rev += 1;
            let key = format!("svc/instance-{}", rev % 100);
            let delivered = dispatch(&mut hub, rev, &[put_event(key.as_bytes(), rev)]);
            assert_eq!(delivered, n);
        })
    });
    g.finish();
}

fn bench_own_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("watch_dispatch/own_key");
    for n in [1000usize, 10_000] {
        let key = |i: usize| format!("key/{i:08}").into_bytes();
        let (mut hub, _streams) = hub_with(n, |i| (key(i), Vec::new()));
        let mut rev = 1;
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                rev += 1;
                let k = key((rev as usize).wrapping_mul(7919) % n);
                let delivered = dispatch(&mut hub, rev, &[put_event(&k, rev)]);
                assert_eq!(delivered, 1);
            })
        });
    }
    g.finish();
}

fn bench_txn(c: &mut Criterion) {
    let mut g = c.benchmark_group("watch_dispatch/txn_10_events");
    let n = 1000;
    let (mut hub, _streams) = hub_with(n, |_| (b"cfg/".to_vec(), prefix_end(b"cfg/")));
    let mut rev = 1;
    g.throughput(Throughput::Elements(10 * n as u64));
    g.bench_function(BenchmarkId::from_parameter(n), |b| {
        b.iter(|| {
            rev += 1;
            let events: Vec<Event> = (0..10)
                .map(|i| put_event(format!("cfg/{i}").as_bytes(), rev))
                .collect();
            let delivered = dispatch(&mut hub, rev, &events);
            assert_eq!(delivered, 10 * n);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_one_key,
    bench_prefix,
    bench_own_key,
    bench_txn
);
criterion_main!(benches);
