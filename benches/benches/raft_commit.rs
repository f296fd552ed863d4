//! Cost per commit of the Raft core alone: a 3-node in-memory cluster
//! (`cairn::raft::testkit`, no I/O) in which the leader proposes one entry and
//! the cluster runs Readys and delivers messages until it is committed and
//! applied everywhere. Also a batch variant: 64 proposals per round.
//!
//! Run: `cargo bench -p cairn-benches --bench raft_commit`.

use cairn::raft::testkit::Cluster;
use cairn::raft::Config;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn cluster() -> (Cluster, u64) {
    let mut c = Cluster::new(&[1, 2, 3], &[1, 2, 3], &[], 10, Config::new(1), 42);
    c.check_every_step = false; // measure Raft, not the test-only invariant checks
    c.node_mut(1).campaign();
    c.stabilize();
    let leader = c.leader().expect("node 1 wins the first election");
    (c, leader)
}

/// Keeps the retained log short so the measurement does not drift with it.
fn compact_all(c: &mut Cluster) {
    for id in c.ids() {
        c.compact(id);
    }
}

fn bench_commit(crit: &mut Criterion) {
    let mut group = crit.benchmark_group("raft_3_nodes");
    group.throughput(Throughput::Elements(1));
    group.bench_function("propose_commit_apply_1", |b| {
        let (mut c, leader) = cluster();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            c.node_mut(leader)
                .propose(n.to_be_bytes().to_vec())
                .expect("leader accepts");
            c.stabilize();
            if n % 1024 == 0 {
                compact_all(&mut c);
            }
        });
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("propose_commit_apply_64", |b| {
        b.iter_batched_ref(
            cluster,
            |(c, leader)| {
                for i in 0..64u64 {
                    c.node_mut(*leader)
                        .propose(i.to_be_bytes().to_vec())
                        .expect("leader accepts");
                }
                c.stabilize();
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_commit);
criterion_main!(benches);
