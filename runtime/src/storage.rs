//! The Storage seam: an ordered key-value engine with named column families.
//!
//! Everything cairn keeps on disk — the Raft log and hard state, MVCC data,
//! leases, membership — lives behind this trait. Two implementations:
//! `RocksStorage` (production, `cfg(not(madsim))`) and `SimStorage`
//! (simulation and fast tests, both worlds).
//!
//! Contract (checked for both by `runtime/tests/storage_contract.rs`):
//! - A `WriteBatch` is atomic: after any crash either all of it is visible or none.
//! - `write` applies a batch and makes it visible before returning, but does not
//!   make it durable: a crash (power loss) may drop it.
//! - `write_sync` returns a future that resolves once the batch *and every batch
//!   written before it* are durable. The batch is visible no later than that.
//!   A failed sync is fatal: the storage refuses every later write with
//!   `StorageError::Halted`, and the caller must stop the node.
//! - `scan` walks `[start, end)` in key order (or reverse order), bytewise.
//! - A `snapshot` is a consistent, immutable view: writes after it are not seen.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A key/value pair as returned by scans.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// The result of a scan: pairs in the requested order. Lazily evaluated.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<KvPair, StorageError>> + Send + 'a>;

/// Future of a synced write.
pub type SyncFuture = Pin<Box<dyn Future<Output = Result<(), StorageError>> + Send + 'static>>;

/// Everything that can go wrong at the storage seam.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("unknown column family {0:?}")]
    UnknownColumnFamily(String),
    /// An fsync failed. Fatal: the node must halt (what was written may or may
    /// not be on disk, so nothing after it can be trusted).
    #[error("sync failed: {0}")]
    SyncFailed(String),
    /// A previous sync failed; the storage accepts no more writes.
    #[error("storage halted after a failed sync")]
    Halted,
    #[error("no space left on device")]
    NoSpace,
    #[error("storage corruption: {0}")]
    Corruption(String),
    #[error("storage closed")]
    Closed,
    #[error("storage i/o error: {0}")]
    Io(String),
}

/// Scan direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
}

/// One operation of a write batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Put {
        cf: Cow<'static, str>,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cow<'static, str>,
        key: Vec<u8>,
    },
    /// Deletes every key in `[start, end)`.
    DeleteRange {
        cf: Cow<'static, str>,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// An atomic group of writes, applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
    /// Sum of key and value lengths; lets callers bound batch sizes cheaply.
    size_bytes: usize,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `ops` operations (a large batch then
    /// holds no slack from growing).
    pub fn with_capacity(ops: usize) -> Self {
        WriteBatch {
            ops: Vec::with_capacity(ops),
            size_bytes: 0,
        }
    }

    pub fn put(
        &mut self,
        cf: impl Into<Cow<'static, str>>,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) {
        let (key, value) = (key.into(), value.into());
        self.size_bytes += key.len() + value.len();
        self.ops.push(BatchOp::Put {
            cf: cf.into(),
            key,
            value,
        });
    }

    pub fn delete(&mut self, cf: impl Into<Cow<'static, str>>, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.size_bytes += key.len();
        self.ops.push(BatchOp::Delete { cf: cf.into(), key });
    }

    pub fn delete_range(
        &mut self,
        cf: impl Into<Cow<'static, str>>,
        start: impl Into<Vec<u8>>,
        end: impl Into<Vec<u8>>,
    ) {
        let (start, end) = (start.into(), end.into());
        self.size_bytes += start.len() + end.len();
        self.ops.push(BatchOp::DeleteRange {
            cf: cf.into(),
            start,
            end,
        });
    }

    /// Appends every operation of `other` after this batch's own.
    pub fn extend(&mut self, other: WriteBatch) {
        self.size_bytes += other.size_bytes;
        self.ops.extend(other.ops);
    }

    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }
}

/// A consistent, read-only view of the storage at one point in time.
pub trait StorageSnapshot: Send + Sync {
    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Pairs with `start <= key < end` (`end = None`: to the end of the family).
    fn scan(
        &self,
        cf: &str,
        start: &[u8],
        end: Option<&[u8]>,
        dir: Direction,
    ) -> Result<ScanIter<'_>, StorageError>;
}

/// The storage seam. See the module documentation for the contract.
pub trait Storage: Send + Sync + 'static {
    /// The column families this storage was opened with.
    fn column_families(&self) -> Vec<String>;

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Pairs with `start <= key < end` (`end = None`: to the end of the family),
    /// in the order `dir`. The view is consistent for the whole iteration.
    fn scan(
        &self,
        cf: &str,
        start: &[u8],
        end: Option<&[u8]>,
        dir: Direction,
    ) -> Result<ScanIter<'_>, StorageError>;

    /// Applies `batch` atomically and makes it visible before returning. Not
    /// durable until a later `write_sync` (or `sync`) completes.
    fn write(&self, batch: WriteBatch) -> Result<(), StorageError>;

    /// Applies `batch` atomically; the future resolves once it and everything
    /// written before it are durable. Concurrent synced writers may share one
    /// fsync (group commit). An `Err` is fatal for the node.
    fn write_sync(&self, batch: WriteBatch) -> SyncFuture;

    /// Makes everything written so far durable.
    fn sync(&self) -> SyncFuture {
        self.write_sync(WriteBatch::new())
    }

    /// A consistent read-only view, usable while writes continue.
    fn snapshot(&self) -> Arc<dyn StorageSnapshot>;

    /// Approximate bytes used on disk (or in memory, for `SimStorage`) by
    /// the column families `families` (all of them when empty).
    fn approximate_size(&self, families: &[&str]) -> u64;

    /// Approximate bytes of live data in `families` (all when empty): what
    /// `approximate_size` counts less what deleted and overwritten data
    /// still takes until it is reclaimed (etcd's size in use). Storage that
    /// cannot tell answers `approximate_size`.
    fn live_data_size(&self, families: &[&str]) -> u64 {
        self.approximate_size(families)
    }

    /// Reclaims the space of deleted data (etcd's defragment) in the
    /// background: reads and writes go on meanwhile; resolves when done.
    /// Storage that holds nothing dead (the in-memory simulation) has
    /// nothing to do.
    fn reclaim_space(&self) -> SyncFuture {
        Box::pin(async { Ok(()) })
    }
}

/// Errors if `cf` is not one of `families`.
pub(crate) fn check_cf<'a>(families: &'a [String], cf: &str) -> Result<&'a str, StorageError> {
    families
        .iter()
        .find(|f| f.as_str() == cf)
        .map(String::as_str)
        .ok_or_else(|| StorageError::UnknownColumnFamily(cf.to_owned()))
}
