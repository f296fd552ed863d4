//! `RocksStorage`: the production Storage, on RocksDB (never built under madsim).
//!
//! Writes are applied on the caller's thread without fsync (`write`), so the
//! order of visibility is the order of calls. `write_sync` does the same and
//! then asks a dedicated writer thread to sync the write-ahead log; the thread
//! drains every sync request queued meanwhile and serves them all with one
//! `FlushWAL(sync)` — group commit. A batch is durable once its sync resolves,
//! and so is everything written before it (one WAL, written in order). The WAL
//! is flushed by hand (`manual_wal_flush`): a `write` only appends to RocksDB's
//! WAL buffer, and the sync writes the buffer out in one system call before it
//! syncs, so unsynced writes reach the file with the next sync (or when the
//! buffer fills, or the storage is dropped) — after a process crash, as after a
//! power loss, a suffix of the unsynced writes may be missing.
//!
//! What survives a power loss is a prefix of the writes, in call order, and
//! never part of a batch — the property cairn's restart relies on (the
//! applied state never ahead of the Raft log: `cairn::server::apply::
//! check_restartable`, which the simulation checks after every write of
//! `SimStorage`, whose crash keeps such a prefix). Why RocksDB gives it:
//! - every write of every column family goes to the one WAL, in call order,
//!   a batch as one record (nothing here disables the WAL);
//! - recovery is `PointInTime` (set below; RocksDB's default too): replay
//!   stops at the first missing or torn record, so the OS writing the WAL's
//!   pages back out of order can lose a suffix, never a middle;
//! - a memtable flushed to an SST could hold data of a write whose other
//!   column families' data is only in the WAL: with more than one column
//!   family RocksDB syncs the closed WALs before such a flush (`SyncClosedWals`
//!   in `db_impl_compaction_flush.cc`), so an SST is never newer than the
//!   durable WAL.
//! - WAL files are reused (`recycle_log_file_num`, "WAL files" below): a
//!   reused file's records carry the number of the log they belong to, so
//!   replay stops at the first record left from the file's earlier use, as it
//!   stops at a torn one.
//! `runtime/tests/rocks_kill9.rs` checks the process-crash half (kill -9),
//! also with the WAL in reused files; a power loss needs a machine to pull
//! the plug on.
//!
//! WAL files: on ext4 (and most file systems) a sync of a write that grows the
//! file commits the file system's journal as well as the data; a sync inside
//! the file's size flushes the data alone. Measured here: 140 µs per 16 KiB
//! write and `fdatasync` appended, 93 µs overwriting; RocksDB's WAL sync
//! averaged 159–175 µs for one sequential client, 125–131 µs with reuse
//! (docs/benchmarks.md, "WAL files reused"). So closed WAL files are kept for
//! reuse instead of deleted, and every open writes one of 64 MiB and closes
//! it (`precreate_wal`) so the first writes after a start overwrite too —
//! etcd preallocates its 64 MB WAL segments for the same reason. The cost:
//! up to one closed WAL file more on disk, and 64 MiB written at each open.
//!
//! A failed sync halts the storage: every later write fails with `Halted`.
//! The writer thread owns no state but the DB handle; dropping the storage
//! stops and joins it, so the same path can be reopened at once.
//! Tests: `runtime/tests/storage_contract.rs` (the contract shared with
//! `SimStorage`) and `runtime/tests/rocks_kill9.rs` (durability across kill -9).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBRecoveryMode, IteratorMode, Options,
    ReadOptions, WriteOptions, DB,
};

use crate::storage::{
    check_cf, BatchOp, Direction, ScanIter, Storage, StorageError, StorageSnapshot, SyncFuture,
    WriteBatch,
};

type SyncReply = futures::channel::oneshot::Sender<Result<(), StorageError>>;

pub struct RocksStorage {
    db: Arc<DB>,
    families: Vec<String>,
    halted: Arc<AtomicBool>,
    /// Sync requests for the writer thread. `None` only while dropping.
    sync_tx: Option<mpsc::Sender<SyncReply>>,
    writer: Option<JoinHandle<()>>,
}

fn io_err(e: rocksdb::Error) -> StorageError {
    let corrupt = e.kind() == rocksdb::ErrorKind::Corruption;
    let msg = e.into_string();
    if msg.contains("No space left") {
        StorageError::NoSpace
    } else if corrupt {
        // A block checksum failed, or a file is not what RocksDB wrote.
        StorageError::Corruption(msg)
    } else {
        StorageError::Io(msg)
    }
}

impl RocksStorage {
    /// Opens (creating if needed) a RocksDB at `path` with `families`, for
    /// a member: a WAL file is written for reuse (module docs, "WAL files").
    pub fn open(path: &Path, families: &[&str]) -> Result<RocksStorage, StorageError> {
        Self::open_with(path, families, true)
    }

    /// `open` for a tool that fills a data dir and closes it (`cairnctl
    /// snapshot restore`): no WAL file is written for reuse, since the
    /// member that opens the dir later writes its own and this one would
    /// only be deleted (64 MiB of writes and ~0.3 s saved per restore).
    pub fn open_for_tool(path: &Path, families: &[&str]) -> Result<RocksStorage, StorageError> {
        Self::open_with(path, families, false)
    }

    fn open_with(
        path: &Path,
        families: &[&str],
        precreate: bool,
    ) -> Result<RocksStorage, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // cairn batches its own writes; a few background threads are enough on
        // small machines and keep compaction from starving the node loop.
        opts.increase_parallelism(2);
        // A crash keeps a prefix of the writes (module docs).
        opts.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
        // Unsynced writes (the applied state, one batch per entry) stay in
        // RocksDB's WAL buffer until the next sync writes them with the Raft
        // log in one `write` (`flush_wal` below): a put cost two system calls
        // of its own before. A crash loses them either way until a sync — the
        // applied index in each batch and the Raft log replay them (module docs).
        opts.set_manual_wal_flush(true);
        // Closed WAL files are reused (overwritten in place), not deleted
        // (module docs, "WAL files").
        opts.set_recycle_log_file_num(WAL_RECYCLE_FILES);
        tune_db(&mut opts);
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let descriptors = families
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(*cf, family_options(cf, &cache)));
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, descriptors).map_err(io_err)?);
        if precreate {
            precreate_wal(&db)?;
        }
        let halted = Arc::new(AtomicBool::new(false));
        let (sync_tx, sync_rx) = mpsc::channel::<SyncReply>();
        let writer = {
            let (db, halted) = (db.clone(), halted.clone());
            std::thread::Builder::new()
                .name("cairn-rocks-sync".into())
                .spawn(move || sync_loop(&db, &halted, &sync_rx))
                .map_err(|e| StorageError::Io(format!("spawning the sync thread: {e}")))?
        };
        Ok(RocksStorage {
            db,
            families: families.iter().map(|s| (*s).to_owned()).collect(),
            halted,
            sync_tx: Some(sync_tx),
            writer: Some(writer),
        })
    }

    fn to_rocks_batch(&self, batch: &WriteBatch) -> Result<rocksdb::WriteBatch, StorageError> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                BatchOp::Put { cf, key, value } => wb.put_cf(self.cf(cf)?, key, value),
                BatchOp::Delete { cf, key } => wb.delete_cf(self.cf(cf)?, key),
                BatchOp::DeleteRange { cf, start, end } => {
                    if start < end {
                        wb.delete_range_cf(self.cf(cf)?, start, end)
                    }
                }
            }
        }
        Ok(wb)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        check_cf(&self.families, name)?;
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::UnknownColumnFamily(name.to_owned()))
    }
}

// ---- sizing -------------------------------------------------------------------
//
// RocksDB's defaults suit a database that owns the machine: 64 MiB of memtable
// per column family (two of them), a block cache per column family, write-ahead
// log files kept until every column family has flushed what they hold. cairn
// opens ten column families, most of them small (meta, lease, auth, ...), so the
// defaults cost memory nobody uses and, worse, disk: a small family that rarely
// flushes pins every WAL file written since its last flush, so a load of 1 M
// keys kept hundreds of MiB of logs (docs/benchmarks.md, "Memory and disk").

/// All memtables together: RocksDB flushes the largest family when they
/// exceed it (its write buffer manager), whatever each family's own size.
const DB_WRITE_BUFFER_BYTES: usize = 64 << 20;
/// One memtable of a large family (kv, raft_log); the small ones get less.
const LARGE_FAMILY_WRITE_BUFFER_BYTES: usize = 32 << 20;
const SMALL_FAMILY_WRITE_BUFFER_BYTES: usize = 4 << 20;
/// Write-ahead logs beyond this force a flush of the families that pin the
/// oldest log, so the logs on disk stay near this size.
const MAX_TOTAL_WAL_BYTES: u64 = 96 << 20;
/// One block cache shared by every family (RocksDB makes one per family
/// otherwise). Reads of recent data are answered from memtables and the OS
/// page cache; this holds index and hot data blocks.
const BLOCK_CACHE_BYTES: usize = 16 << 20;

/// The families that hold the bulk of the data: the MVCC store and the Raft
/// log (cairn's `CF_KV` and `CF_RAFT_LOG`; a test there keeps the names equal).
pub const LARGE_FAMILIES: &[&str] = &["kv", "raft_log"];

fn is_large_family(cf: &str) -> bool {
    LARGE_FAMILIES.contains(&cf)
}

fn tune_db(opts: &mut Options) {
    // The "default" family RocksDB always has (cairn writes nothing there).
    opts.set_write_buffer_size(SMALL_FAMILY_WRITE_BUFFER_BYTES);
    opts.set_db_write_buffer_size(DB_WRITE_BUFFER_BYTES);
    opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    // RocksDB's own info log: a few small files, not up to a thousand.
    opts.set_keep_log_file_num(3);
    opts.set_max_log_file_size(8 << 20);
}

fn family_options(cf: &str, cache: &Cache) -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(if is_large_family(cf) {
        LARGE_FAMILY_WRITE_BUFFER_BYTES
    } else {
        SMALL_FAMILY_WRITE_BUFFER_BYTES
    });
    o.set_max_write_buffer_number(2);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    o.set_block_based_table_factory(&table);
    o
}

/// WAL files kept for reuse once RocksDB is done with them.
const WAL_RECYCLE_FILES: usize = 1;
/// The size of the WAL file written at open for reuse.
const PRECREATED_WAL_BYTES: usize = 64 << 20;

/// Writes a WAL file of `PRECREATED_WAL_BYTES` and closes it, so that the
/// WAL RocksDB writes next reuses it: the first writes after an open
/// overwrite allocated blocks instead of growing a new file. RocksDB reuses
/// only files it wrote since this open, so this runs at every open. The
/// filler is WAL-only data (`put_log_data`: no memtable, no SST); a key in
/// the default family, which cairn does not use, lets a flush switch files.
fn precreate_wal(db: &DB) -> Result<(), StorageError> {
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..PRECREATED_WAL_BYTES / chunk.len() {
        let mut wb = rocksdb::WriteBatch::default();
        wb.put_log_data(&chunk);
        db.write(wb).map_err(io_err)?;
    }
    // The first flush closes the filled file and opens a new one (the filled
    // one is reusable only once that flush is done); the second opens the
    // file after that, which is the filled one, reused.
    for _ in 0..2 {
        db.put(b"cairn-wal-precreated", b"").map_err(io_err)?;
        db.flush_wal(true).map_err(io_err)?;
        db.flush().map_err(io_err)?;
    }
    Ok(())
}

/// The writer thread: one WAL sync per run of queued requests.
fn sync_loop(db: &DB, halted: &AtomicBool, rx: &mpsc::Receiver<SyncReply>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let result = if halted.load(Ordering::SeqCst) {
            Err(StorageError::Halted)
        } else {
            db.flush_wal(true).map_err(|e| {
                halted.store(true, Ordering::SeqCst);
                StorageError::SyncFailed(e.into_string())
            })
        };
        for w in waiters {
            // The waiter may have given up (its future dropped); nothing to do.
            let _ = w.send(result.clone());
        }
    }
}

impl RocksStorage {
    /// The sum of integer properties `props` over `families` (all when empty).
    fn sum_properties(&self, families: &[&str], props: &[&str]) -> u64 {
        let mut total = 0;
        for name in &self.families {
            if !families.is_empty() && !families.contains(&name.as_str()) {
                continue;
            }
            let Some(cf) = self.db.cf_handle(name) else {
                continue;
            };
            for p in props {
                total += self
                    .db
                    .property_int_value_cf(cf, *p)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
            }
        }
        total
    }
}

impl Drop for RocksStorage {
    fn drop(&mut self) {
        self.sync_tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        // What the last sync did not carry (the WAL is flushed by hand), so a
        // member stopped cleanly restarts with everything it applied.
        if !self.halted.load(Ordering::SeqCst) {
            let _ = self.db.flush_wal(true);
        }
    }
}

fn read_opts(start: &[u8], end: Option<&[u8]>) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(start.to_vec());
    if let Some(end) = end {
        ro.set_iterate_upper_bound(end.to_vec());
    }
    ro
}

fn mode(dir: Direction) -> IteratorMode<'static> {
    match dir {
        Direction::Forward => IteratorMode::Start,
        Direction::Reverse => IteratorMode::End,
    }
}

fn empty_range(start: &[u8], end: Option<&[u8]>) -> bool {
    end.is_some_and(|e| e <= start)
}

fn map_iter<'a, I>(it: I) -> ScanIter<'a>
where
    I: Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> + Send + 'a,
{
    Box::new(it.map(|r| r.map(|(k, v)| (k.into_vec(), v.into_vec())).map_err(io_err)))
}

impl Storage for RocksStorage {
    fn column_families(&self) -> Vec<String> {
        self.families.clone()
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.db.get_cf(self.cf(cf)?, key).map_err(io_err)
    }

    fn scan(
        &self,
        cf: &str,
        start: &[u8],
        end: Option<&[u8]>,
        dir: Direction,
    ) -> Result<ScanIter<'_>, StorageError> {
        let handle = self.cf(cf)?;
        if empty_range(start, end) {
            return Ok(Box::new(std::iter::empty()));
        }
        Ok(map_iter(self.db.iterator_cf_opt(
            handle,
            read_opts(start, end),
            mode(dir),
        )))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        if self.halted.load(Ordering::SeqCst) {
            return Err(StorageError::Halted);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let wb = self.to_rocks_batch(&batch)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        self.db.write_opt(wb, &wo).map_err(io_err)
    }

    fn write_sync(&self, batch: WriteBatch) -> SyncFuture {
        if let Err(e) = self.write(batch) {
            return Box::pin(async move { Err(e) });
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        let queued = self
            .sync_tx
            .as_ref()
            .map(|s| s.send(tx).is_ok())
            .unwrap_or(false);
        Box::pin(async move {
            if !queued {
                return Err(StorageError::Closed);
            }
            rx.await.unwrap_or(Err(StorageError::Closed))
        })
    }

    fn snapshot(&self) -> Arc<dyn StorageSnapshot> {
        let snap = self.db.snapshot();
        // SAFETY: the snapshot borrows the DB; `RocksSnapshot` owns an `Arc` of
        // that same DB and declares `snap` first, so the snapshot is released
        // before the last reference to the DB can go.
        let snap: rocksdb::SnapshotWithThreadMode<'static, DB> =
            unsafe { std::mem::transmute(snap) };
        Arc::new(RocksSnapshot {
            snap,
            db: self.db.clone(),
            families: self.families.clone(),
        })
    }

    /// A full manual compaction of every column family on a thread of its
    /// own: RocksDB rewrites the SST files without the deleted and
    /// overwritten data while reads and writes continue.
    fn reclaim_space(&self) -> SyncFuture {
        let (tx, rx) = futures::channel::oneshot::channel();
        let (db, families) = (self.db.clone(), self.families.clone());
        let spawned = std::thread::Builder::new()
            .name("rocksdb-reclaim".into())
            .spawn(move || {
                for name in &families {
                    if let Some(cf) = db.cf_handle(name) {
                        db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
                    }
                }
                let _ = tx.send(Ok(()));
            });
        Box::pin(async move {
            if spawned.is_err() {
                return Err(StorageError::Closed);
            }
            rx.await.unwrap_or(Err(StorageError::Closed))
        })
    }

    fn approximate_size(&self, families: &[&str]) -> u64 {
        // Files on disk, dead data included until compaction drops it (like
        // etcd's bbolt file, which keeps free pages until a defragment),
        // and what is still in memory.
        self.sum_properties(
            families,
            &[
                "rocksdb.total-sst-files-size",
                "rocksdb.cur-size-all-mem-tables",
            ],
        )
    }

    fn live_data_size(&self, families: &[&str]) -> u64 {
        // RocksDB's estimate of the files' live data, and the memory tables.
        self.sum_properties(
            families,
            &[
                "rocksdb.estimate-live-data-size",
                "rocksdb.cur-size-all-mem-tables",
            ],
        )
    }
}

struct RocksSnapshot {
    // Field order matters: `snap` must drop before `db`.
    snap: rocksdb::SnapshotWithThreadMode<'static, DB>,
    db: Arc<DB>,
    families: Vec<String>,
}

// SAFETY: a RocksDB snapshot is an immutable sequence number; reading through
// it from several threads is supported by RocksDB.
unsafe impl Send for RocksSnapshot {}
unsafe impl Sync for RocksSnapshot {}

impl RocksSnapshot {
    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        check_cf(&self.families, name)?;
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::UnknownColumnFamily(name.to_owned()))
    }
}

impl StorageSnapshot for RocksSnapshot {
    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.snap.get_cf(self.cf(cf)?, key).map_err(io_err)
    }

    fn scan(
        &self,
        cf: &str,
        start: &[u8],
        end: Option<&[u8]>,
        dir: Direction,
    ) -> Result<ScanIter<'_>, StorageError> {
        let handle = self.cf(cf)?;
        if empty_range(start, end) {
            return Ok(Box::new(std::iter::empty()));
        }
        Ok(map_iter(self.snap.iterator_cf_opt(
            handle,
            read_opts(start, end),
            mode(dir),
        )))
    }
}
