//! Persistence adapter: turns a `Ready` (and compactions) into `WriteBatch`es
//! over the `Storage` seam, and reloads the durable Raft state on restart.
//!
//! Column families (both must be opened by the server):
//! - `raft_log`: key = entry index as 8 bytes big-endian (so scans walk the
//!   log in order), value = the prost-encoded `Entry`.
//! - `raft_state`: key `hard_state` = prost `HardState`; key `snapshot` =
//!   prost `Snapshot` (metadata: index, term and the conf state at that
//!   index; `data`: the application's small description of its snapshot).
//!
//! The current membership is not stored separately: it is the snapshot's conf
//! state plus the conf-change entries of the log up to the application's
//! applied index, which `RawNode::new` replays (`Config::applied`). So the
//! membership can never disagree with the applied state after a crash.
//!
//! Duties of the caller: write `ready_batch` for each Ready as the `Ready`
//! docs say (synced when `rd.must_sync`); write `compaction_batch(&snap)`
//! after `RawNode::compact`.
//! Every batch is atomic, so a crash leaves either the old or the new state.
//! Invariant of the durable log: contiguous from `snapshot.index + 1`.
//! Tests: at the bottom of this file, on `SimStorage` with crashes.

use cairn_proto::raftpb::{Entry, HardState, Snapshot};
use cairn_runtime::{Direction, Storage, StorageError, StorageSnapshot, WriteBatch};
use prost::Message as _;

use super::log::snapshot_index_term;
use super::{RaftState, Ready};

pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_STATE: &str = "raft_state";
/// Every column family this adapter uses.
pub const COLUMN_FAMILIES: [&str; 2] = [CF_RAFT_LOG, CF_RAFT_STATE];

const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftStorageError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("raft storage corrupt: {0}")]
    Corrupt(String),
}

pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// `persisted_last` when the caller does not know the last written index:
/// conflicting-suffix deletions are then unbounded.
pub const UNKNOWN_LAST_INDEX: u64 = u64::MAX;

/// Deletes the log entries in `[from, through]` (through `UNKNOWN_LAST_INDEX`: all from `from`).
fn delete_log(batch: &mut WriteBatch, from: u64, through: u64) {
    let end = match through.checked_add(1) {
        Some(end) => log_key(end).to_vec(),
        // 9 bytes of 0xff sort after every 8-byte key.
        None => vec![0xff; 9],
    };
    batch.delete_range(CF_RAFT_LOG, log_key(from).to_vec(), end);
}

/// The writes that persist a Ready on a log whose last written index is
/// `persisted_last`: snapshot metadata (replacing the whole log), entries
/// (replacing the suffix they conflict with), hard state.
///
/// A range deletion is written only when entries really replace written
/// ones (a conflict, or a snapshot), and bounded to them: RocksDB keeps
/// every range tombstone in the memtable and fragments them all at flush,
/// so one per Ready (appends included) made flushes quadratic and stalled
/// the node (found by the benchmarks; regression test
/// `appends_write_no_range_deletion_and_conflicts_a_bounded_one`).
pub fn ready_batch(rd: &Ready, persisted_last: u64) -> WriteBatch {
    let mut batch = WriteBatch::new();
    let mut last = persisted_last;
    if let Some(snap) = &rd.snapshot {
        batch.put(CF_RAFT_STATE, KEY_SNAPSHOT, snap.encode_to_vec());
        delete_log(&mut batch, 0, last);
        last = 0;
    }
    if let Some(first) = rd.entries.first() {
        if first.index <= last {
            delete_log(&mut batch, first.index, last);
        }
        for e in &rd.entries {
            batch.put(CF_RAFT_LOG, log_key(e.index).to_vec(), e.encode_to_vec());
        }
    }
    if let Some(hs) = &rd.hard_state {
        batch.put(CF_RAFT_STATE, KEY_HARD_STATE, hs.encode_to_vec());
    }
    batch
}

/// The last written log index once `rd` is persisted on top of `persisted_last`.
pub fn last_index_after(rd: &Ready, persisted_last: u64) -> u64 {
    match (rd.entries.last(), &rd.snapshot) {
        (Some(e), _) => e.index,
        (None, Some(snap)) => snapshot_index_term(snap).0,
        (None, None) => persisted_last,
    }
}

/// The writes that persist a compaction (`RawNode::compact`): the new
/// snapshot, and the removal of the entries it covers.
pub fn compaction_batch(snapshot: &Snapshot) -> WriteBatch {
    let (index, _) = snapshot_index_term(snapshot);
    let mut batch = WriteBatch::new();
    batch.put(CF_RAFT_STATE, KEY_SNAPSHOT, snapshot.encode_to_vec());
    batch.delete_range(
        CF_RAFT_LOG,
        log_key(0).to_vec(),
        log_key(index + 1).to_vec(),
    );
    batch
}

/// The writes that bootstrap a new member from `state` (e.g. the initial
/// snapshot carrying the founding membership).
pub fn bootstrap_batch(state: &RaftState) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(CF_RAFT_STATE, KEY_SNAPSHOT, state.snapshot.encode_to_vec());
    batch.put(
        CF_RAFT_STATE,
        KEY_HARD_STATE,
        state.hard_state.encode_to_vec(),
    );
    for e in &state.entries {
        batch.put(CF_RAFT_LOG, log_key(e.index).to_vec(), e.encode_to_vec());
    }
    batch
}

fn decode<M: prost::Message + Default>(what: &str, bytes: &[u8]) -> Result<M, RaftStorageError> {
    M::decode(bytes).map_err(|e| RaftStorageError::Corrupt(format!("{what}: {e}")))
}

/// Reloads the durable Raft state: what `RawNode::new` is built from.
pub fn load(storage: &dyn Storage) -> Result<RaftState, RaftStorageError> {
    let hard_state: HardState = match storage.get(CF_RAFT_STATE, KEY_HARD_STATE)? {
        Some(b) => decode("hard state", &b)?,
        None => HardState::default(),
    };
    let snapshot: Snapshot = match storage.get(CF_RAFT_STATE, KEY_SNAPSHOT)? {
        Some(b) => decode("snapshot", &b)?,
        None => Snapshot::default(),
    };
    let (snap_index, _) = snapshot_index_term(&snapshot);
    let mut entries = Vec::new();
    for kv in storage.scan(
        CF_RAFT_LOG,
        &log_key(snap_index + 1),
        None,
        Direction::Forward,
    )? {
        let (key, value) = kv?;
        let e: Entry = decode("entry", &value)?;
        let expected = snap_index + 1 + entries.len() as u64;
        if key.as_slice() != log_key(e.index) || e.index != expected {
            return Err(RaftStorageError::Corrupt(format!(
                "log hole: expected index {expected}, found {}",
                e.index
            )));
        }
        entries.push(e);
    }
    let last = snap_index + entries.len() as u64;
    if hard_state.commit > last {
        return Err(RaftStorageError::Corrupt(format!(
            "commit {} beyond last index {last}",
            hard_state.commit
        )));
    }
    Ok(RaftState {
        hard_state,
        snapshot,
        entries,
    })
}

/// The shape of the durable log, read without decoding any entry: what a
/// restart will find (`load` reads the same keys, and more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub snapshot_index: u64,
    /// The first entry's index, if the log holds any entry.
    pub first_entry: Option<u64>,
    /// The last index the log covers: its last entry, or the snapshot's.
    pub last_index: u64,
    pub commit: u64,
}

/// Reads `LogBounds` from a view of the storage (cheap: two point reads and
/// two one-key scans). For invariant checks after every write in simulation.
pub fn log_bounds(view: &dyn StorageSnapshot) -> Result<LogBounds, RaftStorageError> {
    let commit = match view.get(CF_RAFT_STATE, KEY_HARD_STATE)? {
        Some(b) => decode::<HardState>("hard state", &b)?.commit,
        None => 0,
    };
    let snapshot_index = match view.get(CF_RAFT_STATE, KEY_SNAPSHOT)? {
        Some(b) => snapshot_index_term(&decode::<Snapshot>("snapshot", &b)?).0,
        None => 0,
    };
    let index_of = |dir| -> Result<Option<u64>, RaftStorageError> {
        match view.scan(CF_RAFT_LOG, &[], None, dir)?.next() {
            None => Ok(None),
            Some(kv) => {
                let (key, _) = kv?;
                let key: [u8; 8] = key.as_slice().try_into().map_err(|_| {
                    RaftStorageError::Corrupt(format!("log key of {} bytes", key.len()))
                })?;
                Ok(Some(u64::from_be_bytes(key)))
            }
        }
    };
    let first_entry = index_of(Direction::Forward)?;
    let last_entry = index_of(Direction::Reverse)?;
    Ok(LogBounds {
        snapshot_index,
        first_entry,
        last_index: last_entry.unwrap_or(0).max(snapshot_index),
        commit,
    })
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use cairn_proto::raftpb::{ConfState, SnapshotMetadata};
    use cairn_runtime::{SimDisk, SimStorage};

    use super::*;

    /// SimStorage without latency completes a synced write on the first poll.
    fn sync(storage: &SimStorage, batch: WriteBatch) {
        let mut fut = storage.write_sync(batch);
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => r.expect("sim sync succeeds"),
            Poll::Pending => panic!("sim sync without latency must complete at once"),
        }
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            data: format!("e{index}").into_bytes(),
            ..Default::default()
        }
    }

    fn bootstrap() -> RaftState {
        let meta = SnapshotMetadata {
            conf_state: Some(ConfState {
                voters: vec![1, 2, 3],
                learners: vec![],
            }),
            index: 10,
            term: 1,
        };
        RaftState {
            hard_state: HardState {
                term: 1,
                vote: 0,
                commit: 10,
            },
            snapshot: Snapshot {
                metadata: Some(meta),
                data: vec![],
            },
            entries: vec![],
        }
    }

    #[test]
    fn restart_recovers_exactly_what_was_synced() {
        let disk = SimDisk::new();
        let storage = SimStorage::open(&disk, &COLUMN_FAMILIES).expect("open");
        sync(&storage, bootstrap_batch(&bootstrap()));
        let synced = Ready {
            hard_state: Some(HardState {
                term: 2,
                vote: 1,
                commit: 11,
            }),
            entries: vec![entry(2, 11), entry(2, 12)],
            ..Default::default()
        };
        sync(&storage, ready_batch(&synced, UNKNOWN_LAST_INDEX));
        // Written but not synced: must not survive a crash.
        let unsynced = Ready {
            hard_state: Some(HardState {
                term: 3,
                vote: 2,
                commit: 12,
            }),
            entries: vec![entry(3, 13)],
            ..Default::default()
        };
        storage
            .write(ready_batch(&unsynced, UNKNOWN_LAST_INDEX))
            .expect("write");
        assert_eq!(
            load(&storage).expect("load").entries.len(),
            3,
            "unsynced write is visible before the crash"
        );
        disk.crash();
        let reopened = SimStorage::open(&disk, &COLUMN_FAMILIES).expect("reopen");
        let state = load(&reopened).expect("load");
        assert_eq!(
            state.hard_state,
            HardState {
                term: 2,
                vote: 1,
                commit: 11
            }
        );
        assert_eq!(state.entries, vec![entry(2, 11), entry(2, 12)]);
        assert_eq!(state.snapshot, bootstrap().snapshot);
    }

    #[test]
    fn appends_write_no_range_deletion_and_conflicts_a_bounded_one() {
        let ranges = |b: &WriteBatch| -> Vec<(Vec<u8>, Vec<u8>)> {
            b.ops()
                .iter()
                .filter_map(|op| match op {
                    cairn_runtime::BatchOp::DeleteRange { start, end, .. } => {
                        Some((start.clone(), end.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        let append = Ready {
            entries: (6..=8).map(|i| entry(2, i)).collect(),
            ..Default::default()
        };
        assert!(
            ranges(&ready_batch(&append, 5)).is_empty(),
            "a pure append deletes nothing"
        );
        assert_eq!(last_index_after(&append, 5), 8);
        let conflict = Ready {
            entries: vec![entry(3, 4)],
            ..Default::default()
        };
        assert_eq!(
            ranges(&ready_batch(&conflict, 8)),
            vec![(log_key(4).to_vec(), log_key(9).to_vec())],
            "a conflict deletes exactly the replaced suffix"
        );
        assert_eq!(last_index_after(&conflict, 8), 4);
    }

    #[test]
    fn conflicting_entries_replace_the_durable_suffix() {
        let storage = SimStorage::new(&COLUMN_FAMILIES);
        sync(&storage, bootstrap_batch(&bootstrap()));
        let first = Ready {
            entries: (11..=14).map(|i| entry(2, i)).collect(),
            ..Default::default()
        };
        sync(&storage, ready_batch(&first, UNKNOWN_LAST_INDEX));
        let overwrite = Ready {
            entries: vec![entry(3, 12)],
            ..Default::default()
        };
        sync(&storage, ready_batch(&overwrite, UNKNOWN_LAST_INDEX));
        let state = load(&storage).expect("load");
        assert_eq!(state.entries, vec![entry(2, 11), entry(3, 12)]);
    }

    #[test]
    fn compaction_and_snapshot_install_truncate_the_log() {
        let storage = SimStorage::new(&COLUMN_FAMILIES);
        sync(&storage, bootstrap_batch(&bootstrap()));
        sync(
            &storage,
            ready_batch(
                &Ready {
                    entries: (11..=15).map(|i| entry(2, i)).collect(),
                    ..Default::default()
                },
                UNKNOWN_LAST_INDEX,
            ),
        );
        let meta = |index, term| SnapshotMetadata {
            conf_state: Some(ConfState {
                voters: vec![1, 2, 3],
                learners: vec![],
            }),
            index,
            term,
        };
        let snap = Snapshot {
            metadata: Some(meta(13, 2)),
            data: b"app@13".to_vec(),
        };
        sync(&storage, compaction_batch(&snap));
        let state = load(&storage).expect("load");
        assert_eq!(state.snapshot, snap);
        assert_eq!(state.entries, vec![entry(2, 14), entry(2, 15)]);
        // A snapshot received from a leader replaces the whole log.
        let installed = Snapshot {
            metadata: Some(meta(20, 3)),
            data: b"app@20".to_vec(),
        };
        let rd = Ready {
            snapshot: Some(installed.clone()),
            hard_state: Some(HardState {
                term: 3,
                vote: 0,
                commit: 20,
            }),
            ..Default::default()
        };
        sync(&storage, ready_batch(&rd, UNKNOWN_LAST_INDEX));
        let state = load(&storage).expect("load");
        assert_eq!(state.snapshot, installed);
        assert!(state.entries.is_empty());
        assert_eq!(state.hard_state.commit, 20);
    }

    #[test]
    fn raw_node_restarts_from_recovered_state() {
        use super::super::{Config, RawNode};
        use rand::SeedableRng;
        let storage = SimStorage::new(&COLUMN_FAMILIES);
        let mut boot = bootstrap();
        boot.snapshot.metadata.as_mut().expect("set").conf_state = Some(ConfState {
            voters: vec![1],
            learners: vec![],
        });
        sync(&storage, bootstrap_batch(&boot));
        let cfg = Config::new(1);
        let mut node = RawNode::new(
            &cfg,
            load(&storage).expect("load"),
            rand::rngs::StdRng::seed_from_u64(1),
        )
        .expect("node");
        node.campaign();
        for _ in 0..4 {
            while node.has_ready() {
                let rd = node.ready();
                sync(&storage, ready_batch(&rd, UNKNOWN_LAST_INDEX));
                node.advance(rd);
            }
            node.propose(b"x".to_vec()).expect("leader accepts");
        }
        while node.has_ready() {
            let rd = node.ready();
            sync(&storage, ready_batch(&rd, UNKNOWN_LAST_INDEX));
            node.advance(rd);
        }
        let before = node.status();
        let cfg = Config {
            applied: before.applied,
            ..Config::new(1)
        };
        let restarted = RawNode::new(
            &cfg,
            load(&storage).expect("load"),
            rand::rngs::StdRng::seed_from_u64(2),
        )
        .expect("node");
        restarted.check_invariants();
        let after = restarted.status();
        assert_eq!(after.hard_state, before.hard_state);
        assert_eq!(after.last_index, before.last_index);
        assert_eq!(after.last_index, 15, "no-op at 11 plus four proposals");
    }
}
