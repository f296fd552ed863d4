//! Corruption checks, on by default (etcd ships them off).
//!
//! - **At start** (`--experimental-initial-corrupt-check`, default true): a
//!   member that restarts on its data computes its HashKV at its current
//!   revision and asks every peer (their client URLs, Maintenance.HashKV at
//!   that revision). A peer with the same compact revision and another hash
//!   means this member's data differs from the cluster's: it refuses to start
//!   with etcd's words, `<id> found data inconsistency with peers`. A peer
//!   that does not answer, is behind, or has compacted differently is skipped
//!   (as etcd).
//! - **Periodically** (`--experimental-corrupt-check-time`, default 1 m): the
//!   leader compares every voter's HashKV at its own revision (those that
//!   compacted alike); the hash most of them share is the cluster's (a tie
//!   goes to the leader's), and each member with another hash — the leader
//!   itself when the others agree on another — gets the CORRUPT alarm
//!   through Raft. While it is active every member's apply
//!   refuses writes with `etcdserver: corrupt cluster` (`apply::corrupt`);
//!   reads go on and `etcdctl alarm list` names the member.
//!
//! The hash is computed on a storage snapshot (`MvccStore::hash_kv_job`),
//! not holding the store, so checks do not hold up writes.
//! Tests: `tests/corruption.rs` (the real binary, a member's data altered
//! on disk).

use std::time::Duration;

use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{AlarmType, HashKvRequest, HashKvResponse};
use cairn_runtime::NodeId;

use super::Server;

/// How long a peer has to answer a HashKV.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// A peer's HashKV at `revision`, through its client URL.
async fn peer_hash_kv(
    dialer: &cairn_runtime::tls::Dialer,
    url: &str,
    revision: i64,
) -> Result<HashKvResponse, String> {
    let call = async {
        let channel = dialer
            .connect(url, PEER_TIMEOUT)
            .await
            .map_err(|e| format!("connect {url}: {e}"))?;
        let mut client = MaintenanceClient::new(channel);
        client
            .hash_kv(HashKvRequest { revision })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("{url}: {}", s.message()))
    };
    cairn_runtime::timer::timeout(PEER_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer within {PEER_TIMEOUT:?}")))
}

impl Server {
    /// The voters other than this member, with a client URL to ask.
    fn peers_to_check(&self) -> Vec<(u64, String)> {
        let me = self.shared.config.member_id;
        self.shared
            .members()
            .values()
            .filter(|m| m.id != me && !m.is_learner)
            .filter_map(|m| m.client_urls.first().map(|u| (m.id, u.clone())))
            .collect()
    }

    /// Every peer's HashKV at `revision`, asked all at once (so a check
    /// waits at most one `PEER_TIMEOUT`).
    async fn peer_hashes(&self, revision: i64) -> Vec<(u64, Result<HashKvResponse, String>)> {
        let dialer = &self.shared.config.client_dialer;
        let asks = self
            .peers_to_check()
            .into_iter()
            .map(|(id, url)| async move { (id, peer_hash_kv(dialer, &url, revision).await) });
        futures::future::join_all(asks).await
    }

    /// This member's HashKV now: (hash, revision, compact revision).
    fn own_hash(&self) -> Result<(u32, i64, i64), String> {
        let job = self
            .shared
            .mvcc()
            .hash_kv_job(0)
            .map_err(|e| e.to_string())?;
        let h = job.run().map_err(|e| e.to_string())?;
        Ok((h.hash, h.hash_revision.0, h.compact_revision))
    }

    /// etcd's initial corruption check: Err (etcd's message) when a peer's
    /// hash at this member's revision differs under the same compaction.
    pub async fn initial_corruption_check(&self) -> Result<(), String> {
        let (hash, revision, compact) = self.own_hash()?;
        let me = NodeId(self.shared.config.member_id);
        let mut mismatched = Vec::new();
        for (id, answer) in self.peer_hashes(revision).await {
            match answer {
                Ok(p) if p.compact_revision == compact && p.hash != hash => {
                    tracing::error!(
                        peer = %NodeId(id), revision, ours = hash, theirs = p.hash,
                        "the HashKV of this member's data differs from a peer's"
                    );
                    mismatched.push(id);
                }
                Ok(p) if p.compact_revision != compact => tracing::warn!(
                    peer = %NodeId(id), revision, ours = compact, theirs = p.compact_revision,
                    "initial corruption check: the peer compacted differently; skipped"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(peer = %NodeId(id), error = %e, "initial corruption check: cannot ask the peer; skipped")
                }
            }
        }
        if mismatched.is_empty() {
            tracing::info!(revision, hash, "initial corruption check passed");
            Ok(())
        } else {
            Err(format!("{me} found data inconsistency with peers"))
        }
    }

    /// Starts the leader's periodic check (every `interval`), until the
    /// member stops.
    pub fn spawn_corruption_checker(&self, interval: Duration) {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                server.shared.clock.sleep(interval).await;
                if server.is_stopped() {
                    return;
                }
                if server.leader() == Some(server.shared.config.member_id) {
                    server.periodic_corruption_check().await;
                }
            }
        });
    }

    async fn periodic_corruption_check(&self) {
        let (hash, revision, compact) = match self.own_hash() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "corruption check: cannot hash this member");
                return;
            }
        };
        let corrupt = AlarmType::Corrupt as i32;
        let me = self.shared.config.member_id;
        // Every member's hash at the leader's revision, among those that
        // compacted alike; the hash most members share is the cluster's (a
        // tie goes to the leader's), and every member whose hash differs is
        // the corrupt one — the leader too, when the others agree on another.
        let mut hashes = vec![(me, hash)];
        for (id, answer) in self.peer_hashes(revision).await {
            match answer {
                Ok(p) if p.compact_revision == compact => hashes.push((id, p.hash)),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(peer = %NodeId(id), error = %e, "corruption check: peer skipped")
                }
            }
        }
        let votes = |h: u32| hashes.iter().filter(|(_, x)| *x == h).count();
        let majority = hashes
            .iter()
            .map(|(_, h)| *h)
            .filter(|h| votes(*h) > votes(hash))
            .max_by_key(|h| votes(*h))
            .unwrap_or(hash);
        for &(id, h) in &hashes {
            if h == majority || self.shared.alarms().contains(&(id, corrupt)) {
                continue;
            }
            tracing::error!(
                member = %NodeId(id), revision, cluster = majority, theirs = h,
                "corruption check: a member's HashKV differs from the cluster's; raising CORRUPT"
            );
            self.raise_alarm(id, AlarmType::Corrupt).await;
        }
    }
}
