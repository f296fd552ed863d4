//! `/metrics`: the member's counters in Prometheus's text format, under
//! etcd's family names, types and labels — every family that etcd's
//! alerting rules and Grafana dashboard query (see `deploy/prometheus/`),
//! and more of etcd's where cairn has the same quantity. The counters are
//! kept by `crate::server::metrics` and `cairn_runtime::metrics`; this file
//! only names and writes them. `docs/operations.md` lists the families.
//! Tests: `tests/metrics.rs` (families against etcd 3.4's, values after a
//! session, a real Prometheus and the alerting rules).

use std::sync::atomic::Ordering;

use cairn_runtime::metrics::grpc::CODE_NAMES;
use cairn_runtime::metrics::{process, Exposition, Kind};

use crate::server::{Server, ETCD_API_VERSION};

/// The whole exposition of `server`.
pub fn render(server: &Server) -> String {
    let mut e = Exposition::new();
    server_families(&mut e, server);
    disk_families(&mut e, server);
    mvcc_families(&mut e, server);
    network_families(&mut e, server);
    grpc_families(&mut e, server);
    process_families(&mut e);
    e.finish()
}

fn flag(b: bool) -> u8 {
    u8::from(b)
}

fn server_families(e: &mut Exposition, server: &Server) {
    let m = server.metrics();
    let leader = server.leader();
    e.single(
        "etcd_server_has_leader",
        Kind::Gauge,
        "1 when this member knows a leader, 0 otherwise.",
        flag(leader.is_some()),
    );
    e.single(
        "etcd_server_is_leader",
        Kind::Gauge,
        "1 when this member is the leader, 0 otherwise.",
        flag(leader == Some(server.member_id())),
    );
    e.single(
        "etcd_server_is_learner",
        Kind::Gauge,
        "1 when this member is a learner, 0 otherwise.",
        flag(server.is_learner()),
    );
    e.single(
        "etcd_server_leader_changes_seen_total",
        Kind::Counter,
        "Leader changes this member has seen.",
        m.leader_changes.load(Ordering::Relaxed),
    );
    e.single(
        "etcd_server_proposals_committed_total",
        Kind::Gauge,
        "Index of the last Raft entry known committed.",
        server.commit_index(),
    );
    e.single(
        "etcd_server_proposals_applied_total",
        Kind::Gauge,
        "Raft entries applied by this member since it started.",
        m.proposals_applied.load(Ordering::Relaxed),
    );
    e.single(
        "etcd_server_proposals_pending",
        Kind::Gauge,
        "Proposals waiting to be committed.",
        m.proposals_pending.load(Ordering::Relaxed),
    );
    e.single(
        "etcd_server_proposals_failed_total",
        Kind::Counter,
        "Proposals that failed (lost to a leader change, timed out, or dropped).",
        m.proposals_failed.load(Ordering::Relaxed),
    );
    e.single(
        "etcd_server_slow_apply_total",
        Kind::Counter,
        "Applies of committed entries that took longer than 100 ms.",
        m.slow_applies.load(Ordering::Relaxed),
    );
    e.single(
        "etcd_server_read_indexes_failed_total",
        Kind::Counter,
        "Linearizable reads whose read index could not be obtained.",
        m.read_indexes_failed.load(Ordering::Relaxed),
    );
    e.single(
        "etcd_server_snapshot_apply_in_progress_total",
        Kind::Gauge,
        "1 while a snapshot from the leader is being installed.",
        m.snapshot_installing.load(Ordering::Relaxed),
    );
    e.single(
        "etcd_server_quota_backend_bytes",
        Kind::Gauge,
        "The backend quota in bytes (--quota-backend-bytes).",
        server.quota_backend_bytes(),
    );
    e.single(
        "etcd_server_health_success",
        Kind::Counter,
        "/health checks answered healthy.",
        m.health_success.load(Ordering::Relaxed),
    );
    e.single(
        "etcd_server_health_failures",
        Kind::Counter,
        "/health checks answered unhealthy.",
        m.health_failures.load(Ordering::Relaxed),
    );
    let id = format!("{:x}", server.member_id());
    e.family(
        "etcd_server_id",
        Kind::Gauge,
        "Always 1; the label is this member's id.",
    );
    e.sample("etcd_server_id", &[("server_id", &id)], 1);
    e.family(
        "etcd_server_version",
        Kind::Gauge,
        "Always 1; the label is the etcd API version served.",
    );
    e.sample(
        "etcd_server_version",
        &[("server_version", ETCD_API_VERSION)],
        1,
    );
    e.family(
        "etcd_cluster_version",
        Kind::Gauge,
        "Always 1; the label is the cluster's major.minor version.",
    );
    e.sample(
        "etcd_cluster_version",
        &[("cluster_version", super::http::cluster_version())],
        1,
    );
}

fn disk_families(e: &mut Exposition, server: &Server) {
    let m = server.metrics();
    let name = "etcd_disk_wal_fsync_duration_seconds";
    e.family(
        name,
        Kind::Histogram,
        "Durations of the syncs that make Raft log entries and hard state durable.",
    );
    e.histogram(name, &[], &m.wal_fsync);
    let name = "etcd_disk_backend_commit_duration_seconds";
    e.family(
        name,
        Kind::Histogram,
        "Durations of writing a batch of applied entries to the state store.",
    );
    e.histogram(name, &[], &m.backend_commit);
}

fn mvcc_families(e: &mut Exposition, server: &Server) {
    let m = server.metrics();
    let size = server.db_size();
    e.single(
        "etcd_mvcc_db_total_size_in_bytes",
        Kind::Gauge,
        "Bytes the state store takes, dead data included until reclaimed.",
        size,
    );
    e.single(
        "etcd_debugging_mvcc_db_total_size_in_bytes",
        Kind::Gauge,
        "Same as etcd_mvcc_db_total_size_in_bytes (etcd 3.4's older name).",
        size,
    );
    e.single(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        Kind::Gauge,
        "Bytes of live data in the state store.",
        server.db_size_in_use(),
    );
    for (name, help, v) in [
        (
            "etcd_mvcc_range_total",
            "Ranges done: Range requests, ranges and compares in txns.",
            &m.mvcc.range,
        ),
        (
            "etcd_mvcc_put_total",
            "Puts applied, in txns too.",
            &m.mvcc.put,
        ),
        (
            "etcd_mvcc_delete_total",
            "Deletes applied, in txns too.",
            &m.mvcc.delete,
        ),
        (
            "etcd_mvcc_txn_total",
            "Txns done that ranged, put or deleted more than once.",
            &m.mvcc.txn,
        ),
    ] {
        e.single(name, Kind::Counter, help, v.load(Ordering::Relaxed));
    }
    let (keys, compacted) = server.key_stats();
    e.single(
        "etcd_debugging_mvcc_keys_total",
        Kind::Gauge,
        "Keys alive at the current revision.",
        keys,
    );
    e.single(
        "etcd_debugging_mvcc_current_revision",
        Kind::Gauge,
        "The store's current revision.",
        server.revision(),
    );
    e.single(
        "etcd_debugging_mvcc_compact_revision",
        Kind::Gauge,
        "The revision of the last compaction (0 before any).",
        compacted,
    );
    let w = server.watch_counts();
    for (name, help, v) in [
        (
            "etcd_debugging_mvcc_watch_stream_total",
            "Watch streams open.",
            w.streams,
        ),
        (
            "etcd_debugging_mvcc_watcher_total",
            "Watchers open.",
            w.watchers,
        ),
        (
            "etcd_debugging_mvcc_slow_watcher_total",
            "Watchers behind the current revision (unsynced).",
            w.unsynced,
        ),
    ] {
        e.single(name, Kind::Gauge, help, v);
    }
}

fn network_families(e: &mut Exposition, server: &Server) {
    let m = server.metrics();
    e.single(
        "etcd_network_client_grpc_received_bytes_total",
        Kind::Counter,
        "Payload bytes of the gRPC messages clients sent.",
        m.grpc.received_bytes.load(Ordering::Relaxed),
    );
    e.single(
        "etcd_network_client_grpc_sent_bytes_total",
        Kind::Counter,
        "Payload bytes of the gRPC messages sent to clients.",
        m.grpc.sent_bytes.load(Ordering::Relaxed),
    );
    let peers: Vec<(String, _)> = m
        .peer
        .snapshot()
        .into_iter()
        .map(|(id, c)| (format!("{id:x}"), c))
        .collect();
    let counter =
        |e: &mut Exposition,
         name: &str,
         help: &str,
         label: &str,
         only_if_nonzero: bool,
         get: &dyn Fn(&cairn_runtime::metrics::peer::PeerCounters) -> u64| {
            let values: Vec<(&str, u64)> = peers
                .iter()
                .map(|(id, c)| (id.as_str(), get(c)))
                .filter(|(_, v)| !only_if_nonzero || *v > 0)
                .collect();
            if values.is_empty() {
                return;
            }
            e.family(name, Kind::Counter, help);
            for (id, v) in values {
                e.sample(name, &[(label, id)], v);
            }
        };
    counter(
        e,
        "etcd_network_peer_sent_bytes_total",
        "Bytes of Raft messages and snapshots sent to each peer.",
        "To",
        false,
        &|c| c.sent_bytes.load(Ordering::Relaxed),
    );
    counter(
        e,
        "etcd_network_peer_received_bytes_total",
        "Bytes of Raft messages and snapshots received from each peer.",
        "From",
        false,
        &|c| c.received_bytes.load(Ordering::Relaxed),
    );
    counter(
        e,
        "etcd_network_peer_sent_failures_total",
        "Raft messages and snapshots that could not be sent to each peer.",
        "To",
        true,
        &|c| c.sent_failures.load(Ordering::Relaxed),
    );
    counter(
        e,
        "etcd_network_peer_received_failures_total",
        "Raft message batches from each peer that were refused.",
        "From",
        true,
        &|c| c.received_failures.load(Ordering::Relaxed),
    );
    let name = "etcd_network_peer_round_trip_time_seconds";
    let measured: Vec<_> = peers
        .iter()
        .filter(|(_, c)| c.round_trip.count() > 0)
        .collect();
    if !measured.is_empty() {
        e.family(
            name,
            Kind::Histogram,
            "Round-trip times of small Raft calls (no entries) to each peer.",
        );
        for (id, c) in measured {
            e.histogram(name, &[("To", id)], &c.round_trip);
        }
    }
}

fn grpc_families(e: &mut Exposition, server: &Server) {
    let stats = &server.metrics().grpc;
    let methods = stats.methods();
    let labels = |m: &cairn_runtime::metrics::grpc::MethodStats| {
        [
            ("grpc_method", m.spec.method),
            ("grpc_service", m.spec.service),
            ("grpc_type", m.spec.kind.label()),
        ]
    };
    let name = "grpc_server_started_total";
    e.family(name, Kind::Counter, "RPCs started, by method.");
    for m in methods {
        e.sample(name, &labels(m), m.started.load(Ordering::Relaxed));
    }
    let name = "grpc_server_handled_total";
    e.family(
        name,
        Kind::Counter,
        "RPCs finished, by method and status code.",
    );
    for m in methods {
        let [method, service, kind] = labels(m);
        for (code, count) in CODE_NAMES.iter().zip(&m.handled) {
            e.sample(
                name,
                &[("grpc_code", code), method, service, kind],
                count.load(Ordering::Relaxed),
            );
        }
    }
    let name = "grpc_server_msg_received_total";
    e.family(
        name,
        Kind::Counter,
        "Messages received from clients, by method.",
    );
    for m in methods {
        e.sample(name, &labels(m), m.msg_received.load(Ordering::Relaxed));
    }
    let name = "grpc_server_msg_sent_total";
    e.family(name, Kind::Counter, "Messages sent to clients, by method.");
    for m in methods {
        e.sample(name, &labels(m), m.msg_sent.load(Ordering::Relaxed));
    }
    if stats.handling_times() {
        let name = "grpc_server_handling_seconds";
        e.family(
            name,
            Kind::Histogram,
            "Time from an RPC's start to its status, by method (--metrics extensive).",
        );
        for m in methods {
            if let Some(h) = &m.handling {
                e.histogram(name, &labels(m), h);
            }
        }
    }
}

fn process_families(e: &mut Exposition) {
    let Some(p) = process::read() else {
        return;
    };
    e.single(
        "process_cpu_seconds_total",
        Kind::Counter,
        "User and system CPU time of the process, seconds.",
        p.cpu_seconds,
    );
    e.single(
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of the process, bytes.",
        p.resident_bytes,
    );
    e.single(
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory of the process, bytes.",
        p.virtual_bytes,
    );
    e.single(
        "process_open_fds",
        Kind::Gauge,
        "Open file descriptors.",
        p.open_fds,
    );
    e.single(
        "process_max_fds",
        Kind::Gauge,
        "The limit on open file descriptors.",
        p.max_fds,
    );
    e.single(
        "process_start_time_seconds",
        Kind::Gauge,
        "When the process started, seconds since the Unix epoch.",
        p.start_time_seconds,
    );
    e.single(
        "os_fd_used",
        Kind::Gauge,
        "Open file descriptors (etcd's name).",
        p.open_fds,
    );
    e.single(
        "os_fd_limit",
        Kind::Gauge,
        "The limit on open file descriptors (etcd's name).",
        p.max_fds,
    );
}
