//! The Raft transport's traffic per peer, as etcd's `etcd_network_peer_*`
//! families count it: bytes sent to and received from each member, messages
//! that could not be sent, and round-trip times. `GrpcTransport` and
//! `PeerService` (`crate::transport`) record into one shared `PeerStats`.
//! Round trips are timed on batches carrying no log entries or snapshot
//! (heartbeats, votes, acknowledgements): from handing the batch to the
//! peer's stream to the acknowledgement the peer sent the moment it took it
//! (a unary call's duration for a peer without streams) — the time to reach
//! the peer and back, not to ship data (etcd probes its peers with a small
//! request for the same figure).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Histogram, PEER_RTT_BUCKETS_SECS};

/// Batches that encode to at most this many bytes count as round trips.
pub const RTT_MAX_REQUEST_BYTES: usize = 4096;

/// Counters for one peer.
#[derive(Debug)]
pub struct PeerCounters {
    pub sent_bytes: AtomicU64,
    pub received_bytes: AtomicU64,
    pub sent_failures: AtomicU64,
    pub received_failures: AtomicU64,
    pub round_trip: Histogram,
}

impl PeerCounters {
    fn new() -> Self {
        PeerCounters {
            sent_bytes: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            sent_failures: AtomicU64::new(0),
            received_failures: AtomicU64::new(0),
            round_trip: Histogram::new(&PEER_RTT_BUCKETS_SECS),
        }
    }
}

/// What a member's transport has counted, per peer id. Peers stay listed
/// once seen (a counter must not go back to zero while the process lives).
#[derive(Debug, Default)]
pub struct PeerStats {
    peers: Mutex<BTreeMap<u64, Arc<PeerCounters>>>,
}

impl PeerStats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The counters of peer `id`, created on first use.
    pub fn peer(&self, id: u64) -> Arc<PeerCounters> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .entry(id)
            .or_insert_with(|| Arc::new(PeerCounters::new()))
            .clone()
    }

    /// Every peer seen so far, by id.
    pub fn snapshot(&self) -> Vec<(u64, Arc<PeerCounters>)> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.iter().map(|(id, c)| (*id, c.clone())).collect()
    }

    pub fn sent(&self, to: u64, bytes: usize, rtt: Option<Duration>) {
        let c = self.peer(to);
        c.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if let Some(d) = rtt {
            c.round_trip.observe(d);
        }
    }

    pub fn send_failed(&self, to: u64, messages: usize) {
        self.peer(to)
            .sent_failures
            .fetch_add(messages as u64, Ordering::Relaxed);
    }

    pub fn received(&self, from: u64, bytes: usize) {
        self.peer(from)
            .received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn receive_failed(&self, from: u64) {
        self.peer(from)
            .received_failures
            .fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_accumulate_per_peer() {
        let s = PeerStats::new();
        s.sent(2, 100, Some(Duration::from_micros(150)));
        s.sent(2, 50, None);
        s.send_failed(3, 4);
        s.received(2, 7);
        let snap = s.snapshot();
        assert_eq!(snap.len(), 2);
        let two = &snap[0].1;
        assert_eq!(snap[0].0, 2);
        assert_eq!(two.sent_bytes.load(Ordering::Relaxed), 150);
        assert_eq!(two.received_bytes.load(Ordering::Relaxed), 7);
        assert_eq!(two.round_trip.count(), 1);
        assert_eq!(snap[1].1.sent_failures.load(Ordering::Relaxed), 4);
    }
}
