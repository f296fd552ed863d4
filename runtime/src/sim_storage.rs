//! `SimStorage`: an in-memory Storage with pending vs durable state and fault
//! hooks, for simulation and fast tests. Works inside and outside madsim.
//!
//! Model. A `SimDisk` is the machine's disk and outlives a node's process. It
//! holds the *durable* state: a checkpoint (one ordered map per column family)
//! plus a write-ahead log of checksummed batch records. A `SimStorage` is an
//! open handle: its *visible* state is the durable state plus every batch
//! written since the last sync (*pending*, in memory only). A sync appends the
//! pending batches to the log as records; a crash drops the pending batches.
//! Reopening replays the log into the checkpoint, verifying each record's
//! checksum: a torn record (the torn-write fault) is detected, discarded with
//! everything after it, and counted in `RecoveryReport`.
//!
//! Faults (set on the disk, so a fault scheduler can reach a running node):
//! - `fail_next_sync`: the next sync fails with `SyncFailed`; the handle then
//!   halts (every later write fails with `Halted`) — the node must stop.
//! - `set_sync_latency`: each sync takes this long (in madsim's time under
//!   madsim, tokio's otherwise).
//! - `set_no_space`: writes fail with `NoSpace` until cleared.
//! - `set_tear_on_crash`: at the next crash the last pending batch is written
//!   to the log partially (a torn record) instead of being dropped whole.
//! - `flip_stored_record`: bytes of one stored record flip silently, as a
//!   failing disk or cable does; the record's checksum (RocksDB's block
//!   checksums) no longer matches, so every later read of it — `get`, a scan
//!   reaching it, in any handle or snapshot — fails with `Corruption` until
//!   the record is written again or `repair_flips` models a re-read from a
//!   good copy. Nothing ever returns the flipped bytes.
//!
//! Invariants: a batch is never partially visible after recovery; a record is
//! in the log only if its sync began; the visible state equals checkpoint +
//! log + pending, applied in order. Tests: `runtime/tests/storage_contract.rs`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::storage::{
    check_cf, BatchOp, Direction, ScanIter, Storage, StorageError, StorageSnapshot, SyncFuture,
    WriteBatch,
};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;
/// Column family name → its ordered contents. Each map is shared with
/// snapshots and copied on write.
type Families = BTreeMap<String, Arc<Map>>;

/// One synced batch as it lies in the simulated log.
#[derive(Debug, Clone)]
struct Record {
    bytes: Vec<u8>,
    checksum: u32,
}

/// What recovery found when the disk was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records replayed from the log.
    pub records_replayed: usize,
    /// Torn records detected (bad checksum) and discarded.
    pub torn_records_discarded: usize,
}

/// Records whose bytes flipped: (column family, key).
type Damaged = std::collections::BTreeSet<(String, Vec<u8>)>;

#[derive(Debug, Default)]
struct DiskFaults {
    fail_next_sync: bool,
    sync_latency: Duration,
    no_space: bool,
    tear_on_crash: bool,
    /// Shared with the snapshots taken while it holds; copied on change.
    damaged: Arc<Damaged>,
}

#[derive(Debug, Default)]
struct DiskState {
    checkpoint: Families,
    log: Vec<Record>,
    faults: DiskFaults,
    /// Bumped by every crash; handles opened before it are dead.
    epoch: u64,
    /// The open handle's pending batches, not yet in the log. Kept on the disk
    /// (as the OS page cache would be) so `crash` can drop or tear them.
    pending: Vec<WriteBatch>,
    syncs: u64,
    /// Checked after every write (not a fault: `clear_faults` keeps it).
    write_check: CheckSlot,
}

#[derive(Default, Clone)]
struct CheckSlot(Option<WriteCheck>);

impl std::fmt::Debug for CheckSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(check)"
        } else {
            "None"
        })
    }
}

/// An invariant of the state on a disk, given a view of it. Any prefix of
/// the writes may be what survives a power loss (unsynced WAL pages may reach
/// the disk at any time, and recovery replays the WAL up to the first missing
/// record: `rocks_storage.rs`), so a state visible after any write must be
/// one the application can restart from: `SimDisk::set_write_check` checks
/// that after every write, and panics at the write that breaks it.
pub type WriteCheck = Arc<dyn Fn(&dyn StorageSnapshot) -> Result<(), String> + Send + Sync>;

/// The simulated disk of one node. Cheap to clone; clones share the disk.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    inner: Arc<Mutex<DiskState>>,
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.inner.lock().expect("sim disk lock poisoned")
    }

    /// Power loss: everything not synced is gone (or, with the torn-write fault
    /// armed, the last unsynced batch is left half-written in the log). Every
    /// handle open on this disk stops working; reopen with `SimStorage::open`.
    pub fn crash(&self) {
        let mut st = self.lock();
        let pending = std::mem::take(&mut st.pending);
        if st.faults.tear_on_crash {
            st.faults.tear_on_crash = false;
            if let Some(last) = pending.last() {
                push_torn(&mut st.log, last);
            }
        }
        st.epoch += 1;
    }

    /// Power loss after the page cache wrote out part of what was not
    /// synced: the first `share` (0 to 1) of the unsynced batches reach the
    /// log whole, in order (the cut may fall after any write), the rest are
    /// gone — the next one half-written with the torn-write fault armed.
    /// Returns how many were kept. `share` 0 is `crash`, but for tearing the
    /// first lost batch rather than the last.
    pub fn crash_keeping(&self, share: f64) -> usize {
        let mut st = self.lock();
        let pending = std::mem::take(&mut st.pending);
        let keep =
            ((share.clamp(0.0, 1.0) * (pending.len() + 1) as f64) as usize).min(pending.len());
        for batch in &pending[..keep] {
            let bytes = encode_batch(batch);
            let checksum = checksum(&bytes);
            st.log.push(Record { bytes, checksum });
        }
        if st.faults.tear_on_crash {
            st.faults.tear_on_crash = false;
            if let Some(next) = pending.get(keep) {
                push_torn(&mut st.log, next);
            }
        }
        st.epoch += 1;
        keep
    }

    /// The next sync fails (EIO); the storage halts.
    pub fn fail_next_sync(&self) {
        self.lock().faults.fail_next_sync = true;
    }

    /// Disarms every fault (a replaced disk, or the end of a fault phase).
    pub fn clear_faults(&self) {
        self.lock().faults = DiskFaults::default();
    }

    pub fn set_sync_latency(&self, latency: Duration) {
        self.lock().faults.sync_latency = latency;
    }

    pub fn set_no_space(&self, no_space: bool) {
        self.lock().faults.no_space = no_space;
    }

    /// Checks `check` after every write to this disk from now on (see
    /// `WriteCheck`); a violation panics, naming the invariant broken.
    pub fn set_write_check(&self, check: WriteCheck) {
        self.lock().write_check = CheckSlot(Some(check));
    }

    /// Arms the torn-write fault for the next crash.
    pub fn set_tear_on_crash(&self, tear: bool) {
        self.lock().faults.tear_on_crash = tear;
    }

    /// Flips bytes of one stored record of column family `cf`: the
    /// `pick`-th from the last (modulo their number, in key order) of the
    /// keys stored durably or written since — small picks hit the newest
    /// records of revision-keyed families, the ones reads meet most. Returns
    /// its key; `None` when the family is empty.
    pub fn flip_stored_record(&self, cf: &str, pick: u64) -> Option<Vec<u8>> {
        let mut st = self.lock();
        let mut keys: std::collections::BTreeSet<Vec<u8>> = st
            .checkpoint
            .get(cf)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let logged = st.log.iter().filter_map(|r| decode_batch(&r.bytes).ok());
        for batch in logged.chain(st.pending.iter().cloned()) {
            for op in batch.ops() {
                match op {
                    BatchOp::Put { cf: c, key, .. } if *c == cf => {
                        keys.insert(key.clone());
                    }
                    BatchOp::Delete { cf: c, key } if *c == cf => {
                        keys.remove(key);
                    }
                    BatchOp::DeleteRange { cf: c, start, end } if *c == cf => {
                        keys.retain(|k| k < start || k >= end);
                    }
                    _ => {}
                }
            }
        }
        if keys.is_empty() {
            return None;
        }
        let key = keys
            .iter()
            .nth_back((pick % keys.len() as u64) as usize)?
            .clone();
        Arc::make_mut(&mut st.faults.damaged).insert((cf.to_owned(), key.clone()));
        Some(key)
    }

    /// Forgets every flipped record (a re-read from a good copy, or a disk
    /// the operator replaced with one holding the same data).
    pub fn repair_flips(&self) {
        self.lock().faults.damaged = Arc::default();
    }

    /// Number of syncs that reached the disk (for tests of group commit).
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }
}

struct Handle {
    disk: SimDisk,
    families: Vec<String>,
    /// The visible state: durable + pending.
    visible: Families,
    epoch: u64,
    halted: bool,
    report: RecoveryReport,
}

/// An open `SimStorage`. Cheap to clone; clones share the handle.
#[derive(Clone)]
pub struct SimStorage {
    inner: Arc<Mutex<Handle>>,
}

impl SimStorage {
    /// A fresh storage on a new, empty disk.
    pub fn new(families: &[&str]) -> SimStorage {
        Self::open(&SimDisk::new(), families).expect("opening an empty disk cannot fail")
    }

    /// Opens `disk` (after a crash or a clean close), replaying its log.
    pub fn open(disk: &SimDisk, families: &[&str]) -> Result<SimStorage, StorageError> {
        let mut st = disk.lock();
        st.pending.clear();
        let report = recover(&mut st)?;
        for cf in families {
            st.checkpoint.entry((*cf).to_owned()).or_default();
        }
        let handle = Handle {
            disk: disk.clone(),
            families: families.iter().map(|s| (*s).to_owned()).collect(),
            visible: st.checkpoint.clone(),
            epoch: st.epoch,
            halted: false,
            report,
        };
        Ok(SimStorage {
            inner: Arc::new(Mutex::new(handle)),
        })
    }

    /// What recovery found when this handle was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.lock().report
    }

    pub fn disk(&self) -> SimDisk {
        self.lock().disk.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Handle> {
        self.inner.lock().expect("sim storage lock poisoned")
    }
}

/// Appends the first half of `batch`'s record to the log (its checksum
/// that of the whole): a write the power loss cut.
fn push_torn(log: &mut Vec<Record>, batch: &WriteBatch) {
    let full = encode_batch(batch);
    let torn = full[..full.len() / 2].to_vec();
    log.push(Record {
        bytes: torn,
        checksum: checksum(&full),
    });
}

/// Replays the log into the checkpoint, stopping at the first torn record.
fn recover(st: &mut DiskState) -> Result<RecoveryReport, StorageError> {
    let mut report = RecoveryReport::default();
    let log = std::mem::take(&mut st.log);
    for (i, record) in log.iter().enumerate() {
        if checksum(&record.bytes) != record.checksum {
            // A torn tail: its batch never completed, so it and anything after
            // it (nothing, in a sequential log) are discarded.
            report.torn_records_discarded = log.len() - i;
            break;
        }
        let batch = decode_batch(&record.bytes)?;
        apply_batch(&mut st.checkpoint, &batch);
        report.records_replayed += 1;
    }
    Ok(report)
}

impl Handle {
    fn check_alive(&self, disk: &DiskState) -> Result<(), StorageError> {
        if self.halted {
            return Err(StorageError::Halted);
        }
        if self.epoch != disk.epoch {
            return Err(StorageError::Closed);
        }
        Ok(())
    }

    fn check_batch(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        for op in batch.ops() {
            check_cf(&self.families, op_cf(op))?;
        }
        Ok(())
    }
}

impl Storage for SimStorage {
    fn column_families(&self) -> Vec<String> {
        self.lock().families.clone()
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let h = self.lock();
        let cf = check_cf(&h.families, cf)?;
        let damaged = h.disk.lock().faults.damaged.clone();
        check_damage(&damaged, cf, key)?;
        Ok(h.visible.get(cf).and_then(|m| m.get(key)).cloned())
    }

    fn scan(
        &self,
        cf: &str,
        start: &[u8],
        end: Option<&[u8]>,
        dir: Direction,
    ) -> Result<ScanIter<'_>, StorageError> {
        let (map, damaged, cf) = {
            let h = self.lock();
            let cf = check_cf(&h.families, cf)?;
            let damaged = h.disk.lock().faults.damaged.clone();
            (
                h.visible.get(cf).cloned().unwrap_or_default(),
                damaged,
                cf.to_owned(),
            )
        };
        Ok(with_damage(scan_map(map, start, end, dir), damaged, cf))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut h = self.lock();
        let mut disk = h.disk.lock();
        h.check_alive(&disk)?;
        h.check_batch(&batch)?;
        if disk.faults.no_space {
            return Err(StorageError::NoSpace);
        }
        if batch.is_empty() {
            return Ok(());
        }
        disk.pending.push(batch.clone());
        if !disk.faults.damaged.is_empty() {
            // A record written again is whole again.
            let damaged = Arc::make_mut(&mut disk.faults.damaged);
            for op in batch.ops() {
                match op {
                    BatchOp::Put { cf, key, .. } | BatchOp::Delete { cf, key } => {
                        damaged.remove(&(cf.to_string(), key.clone()));
                    }
                    BatchOp::DeleteRange { cf, start, end } => {
                        damaged.retain(|(c, k)| c != cf || k < start || k >= end);
                    }
                }
            }
        }
        let check = disk.write_check.0.clone();
        drop(disk);
        apply_batch(&mut h.visible, &batch);
        if let Some(check) = check {
            let view = SimSnapshot {
                families: h.families.clone(),
                maps: h.visible.clone(),
                damaged: Arc::default(),
            };
            drop(h);
            if let Err(e) = check(&view) {
                panic!("a write left a state on disk that a restart cannot recover from: {e}");
            }
        }
        Ok(())
    }

    fn write_sync(&self, batch: WriteBatch) -> SyncFuture {
        let this = self.clone();
        Box::pin(async move {
            this.write(batch)?;
            let (disk, latency) = {
                let h = this.lock();
                let latency = h.disk.lock().faults.sync_latency;
                (h.disk.clone(), latency)
            };
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut h = this.lock();
            let mut st = disk.lock();
            h.check_alive(&st)?;
            if std::mem::take(&mut st.faults.fail_next_sync) {
                h.halted = true;
                return Err(StorageError::SyncFailed("injected EIO on fsync".into()));
            }
            let pending = std::mem::take(&mut st.pending);
            for b in &pending {
                let bytes = encode_batch(b);
                st.log.push(Record {
                    checksum: checksum(&bytes),
                    bytes,
                });
            }
            st.syncs += 1;
            Ok(())
        })
    }

    fn snapshot(&self) -> Arc<dyn StorageSnapshot> {
        let h = self.lock();
        let damaged = h.disk.lock().faults.damaged.clone();
        Arc::new(SimSnapshot {
            families: h.families.clone(),
            maps: h.visible.clone(),
            damaged,
        })
    }

    fn approximate_size(&self, families: &[&str]) -> u64 {
        let h = self.lock();
        h.visible
            .iter()
            .filter(|(cf, _)| families.is_empty() || families.contains(&cf.as_str()))
            .flat_map(|(_, m)| m.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}

struct SimSnapshot {
    families: Vec<String>,
    maps: Families,
    /// The records flipped when the snapshot was taken.
    damaged: Arc<Damaged>,
}

impl StorageSnapshot for SimSnapshot {
    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let cf = check_cf(&self.families, cf)?;
        check_damage(&self.damaged, cf, key)?;
        Ok(self.maps.get(cf).and_then(|m| m.get(key)).cloned())
    }

    fn scan(
        &self,
        cf: &str,
        start: &[u8],
        end: Option<&[u8]>,
        dir: Direction,
    ) -> Result<ScanIter<'_>, StorageError> {
        let cf = check_cf(&self.families, cf)?;
        Ok(with_damage(
            scan_map(
                self.maps.get(cf).cloned().unwrap_or_default(),
                start,
                end,
                dir,
            ),
            self.damaged.clone(),
            cf.to_owned(),
        ))
    }
}

fn check_damage(damaged: &Damaged, cf: &str, key: &[u8]) -> Result<(), StorageError> {
    if !damaged.is_empty() && damaged.contains(&(cf.to_owned(), key.to_vec())) {
        return Err(StorageError::Corruption(format!(
            "block checksum mismatch in {cf} (a record flipped on disk)"
        )));
    }
    Ok(())
}

/// A scan that fails with `Corruption` at a flipped record (and ends there).
fn with_damage(scan: ScanIter<'static>, damaged: Arc<Damaged>, cf: String) -> ScanIter<'static> {
    if damaged.iter().all(|(c, _)| *c != cf) {
        return scan;
    }
    let mut failed = false;
    Box::new(scan.map_while(move |item| {
        if failed {
            return None;
        }
        Some(match item {
            Ok((k, v)) => match check_damage(&damaged, &cf, &k) {
                Ok(()) => Ok((k, v)),
                Err(e) => {
                    failed = true;
                    Err(e)
                }
            },
            Err(e) => Err(e),
        })
    }))
}

/// Iterates a shared map lazily: each step looks up the next key after the
/// cursor, so the iterator owns only the `Arc` and a cursor.
fn scan_map(map: Arc<Map>, start: &[u8], end: Option<&[u8]>, dir: Direction) -> ScanIter<'static> {
    let lower = start.to_vec();
    let upper = end.map(<[u8]>::to_vec);
    if upper.as_ref().is_some_and(|u| *u <= lower) {
        return Box::new(std::iter::empty());
    }
    let mut cursor: Option<Vec<u8>> = None;
    Box::new(std::iter::from_fn(move || {
        let next = match dir {
            Direction::Forward => {
                let from = match &cursor {
                    Some(c) => Bound::Excluded(c.clone()),
                    None => Bound::Included(lower.clone()),
                };
                let to = upper.clone().map_or(Bound::Unbounded, Bound::Excluded);
                map.range::<Vec<u8>, _>((from, to)).next()
            }
            Direction::Reverse => {
                let to = match &cursor {
                    Some(c) => Bound::Excluded(c.clone()),
                    None => upper.clone().map_or(Bound::Unbounded, Bound::Excluded),
                };
                map.range::<Vec<u8>, _>((Bound::Included(lower.clone()), to))
                    .next_back()
            }
        };
        let (k, v) = next?;
        cursor = Some(k.clone());
        Some(Ok((k.clone(), v.clone())))
    }))
}

fn op_cf(op: &BatchOp) -> &str {
    match op {
        BatchOp::Put { cf, .. } | BatchOp::Delete { cf, .. } | BatchOp::DeleteRange { cf, .. } => {
            cf
        }
    }
}

fn apply_batch(families: &mut Families, batch: &WriteBatch) {
    for op in batch.ops() {
        let map = Arc::make_mut(families.entry(op_cf(op).to_owned()).or_default());
        match op {
            BatchOp::Put { key, value, .. } => {
                map.insert(key.clone(), value.clone());
            }
            BatchOp::Delete { key, .. } => {
                map.remove(key);
            }
            BatchOp::DeleteRange { start, end, .. } => {
                if start < end {
                    let doomed: Vec<Vec<u8>> = map
                        .range(start.clone()..end.clone())
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        map.remove(&k);
                    }
                }
            }
        }
    }
}

// ---- record encoding: tag byte, then length-prefixed fields ------------------

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn encode_batch(batch: &WriteBatch) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.size_bytes() + 32 * batch.len());
    for op in batch.ops() {
        match op {
            BatchOp::Put { cf, key, value } => {
                out.push(0);
                put_bytes(&mut out, cf.as_bytes());
                put_bytes(&mut out, key);
                put_bytes(&mut out, value);
            }
            BatchOp::Delete { cf, key } => {
                out.push(1);
                put_bytes(&mut out, cf.as_bytes());
                put_bytes(&mut out, key);
            }
            BatchOp::DeleteRange { cf, start, end } => {
                out.push(2);
                put_bytes(&mut out, cf.as_bytes());
                put_bytes(&mut out, start);
                put_bytes(&mut out, end);
            }
        }
    }
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&mut self) -> Result<Vec<u8>, StorageError> {
        let corrupt = || StorageError::Corruption("truncated log record".into());
        let len_bytes: [u8; 8] = self
            .0
            .get(..8)
            .ok_or_else(corrupt)?
            .try_into()
            .expect("slice of 8");
        let len = u64::from_le_bytes(len_bytes) as usize;
        let body = self.0.get(8..8 + len).ok_or_else(corrupt)?.to_vec();
        self.0 = &self.0[8 + len..];
        Ok(body)
    }

    fn string(&mut self) -> Result<String, StorageError> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| StorageError::Corruption("column family name".into()))
    }
}

fn decode_batch(bytes: &[u8]) -> Result<WriteBatch, StorageError> {
    let mut r = Reader(bytes);
    let mut batch = WriteBatch::new();
    while let Some((&tag, rest)) = r.0.split_first() {
        r.0 = rest;
        let cf = r.string()?;
        match tag {
            0 => {
                let (k, v) = (r.bytes()?, r.bytes()?);
                batch.put(cf, k, v);
            }
            1 => batch.delete(cf, r.bytes()?),
            2 => {
                let (s, e) = (r.bytes()?, r.bytes()?);
                batch.delete_range(cf, s, e);
            }
            t => return Err(StorageError::Corruption(format!("unknown op tag {t}"))),
        }
    }
    Ok(batch)
}

/// FNV-1a, 32 bits: enough to detect a torn record in simulation.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_encoding_round_trips() {
        let mut b = WriteBatch::new();
        b.put("a", b"k".to_vec(), b"v".to_vec());
        b.delete("b", b"".to_vec());
        b.delete_range("a", b"x".to_vec(), b"z".to_vec());
        assert_eq!(decode_batch(&encode_batch(&b)).expect("decodes"), b);
    }
}
