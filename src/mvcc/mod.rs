//! MVCC: the revisioned key-value store the server applies Raft-committed
//! requests to and serves reads from (etcd's `mvcc` package, DESIGN §5).
//!
//! - `revision`: `Revision` (main) and `KeyRevision` (main, sub), encoded so
//!   byte order is revision order.
//! - `index`: the in-memory key index (key → generations of revisions).
//! - `kv`: the stored record and its encoding.
//! - `store`: `MvccStore` — its state, open/rebuild, the public entry points
//!   (Range, Put, DeleteRange, Txn, Compact, history for watchers), over the
//!   Storage seam.
//! - `read`: `View` — Range (filters, sort, limit), txn compares and branches,
//!   over the committed state plus a write's pending overlay;
//!   `is_read_only_txn`.
//! - `read_large`: `MvccStore::range_read` — a Range whose response may be
//!   large, planned under the store's lock as revisions only and read
//!   afterwards, kv by kv, from a storage snapshot (`RangePieces`).
//! - `write`: `Exec`, `Pending`, `Change` — executing Put, DeleteRange and
//!   Txn, then `commit` in one atomic Storage write.
//! - `hash`: Hash and HashKV, and the CRC-32C they use.
//! - `validate`: etcd's request checks done before proposing (duplicate keys
//!   in a txn, too many ops, empty keys).
//!
//! Storage layout (families in `COLUMN_FAMILIES`):
//! - `kv`: `KeyRevision` (17 bytes, +`t` for a tombstone) → encoded `Kv`.
//! - `meta`: `mvcc/compact_revision` → the last compact revision (i64 BE).
//!
//! Invariants (checked by `MvccStore::check_invariants`): the key index
//! mirrors the `kv` family exactly; `compact revision <= current revision`;
//! every revision in the index is `<= current revision`.
//!
//! Exactly-once apply: each write entry point takes the server's `extra`
//! batch and writes it together with MVCC's changes in one atomic
//! `Storage::write`, also when the request fails with an expected error.
//!
//! Tests: unit tests at the bottom of `revision.rs`, `index.rs`, `kv.rs` and
//! `hash.rs`, store-level ones in `tests.rs`; quickcheck properties
//! against a simple model, including restarts, in `model_tests.rs`.
//! Run: `cargo test -p cairn --lib mvcc`.

mod hash;
mod index;
mod kv;
mod read;
mod read_large;
mod revision;
mod store;
mod validate;
mod write;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use hash::{Crc32c, HashKv, HashKvJob};
pub use index::KeyRange;
pub use kv::Kv;
pub use read::is_read_only_txn;
pub use read_large::{RangePieces, RangeRead};
pub use revision::{KeyRevision, Revision};
pub use store::{MvccStore, CF_KV, CF_META, COLUMN_FAMILIES, COMPACT_REVISION_KEY};
pub use validate::{
    check_delete_request, check_put_request, check_range_request, check_txn_request,
    DEFAULT_MAX_TXN_OPS,
};
pub use write::WriteOutcome;

use cairn_runtime::StorageError;

/// Everything that can go wrong in MVCC. Display strings are etcd's; the gRPC
/// mapping (done in `api/`) is noted per variant. Over gRPC etcd prefixes the
/// `mvcc:` messages with `etcdserver: ` (e.g. `etcdserver: mvcc: required
/// revision has been compacted`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// The requested revision is older than the compact revision. gRPC: OutOfRange.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the current one. gRPC: OutOfRange.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// `ignore_value` / `ignore_lease` on a key that does not exist. gRPC: InvalidArgument.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put names a lease the lessor does not know. gRPC: NotFound.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// Two writes of one txn touch the same key. gRPC: InvalidArgument.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// More than `--max-txn-ops` operations in one txn. gRPC: InvalidArgument.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A request or compare without a key. gRPC: InvalidArgument.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` together with a value. gRPC: InvalidArgument.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease. gRPC: InvalidArgument.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// `MvccStore::read_txn` was given a txn that writes. A server bug. gRPC: Internal.
    #[error("mvcc: read-only txn expected")]
    NotReadOnly,
    /// The storage failed; fatal for the node. gRPC: Internal (or Unavailable).
    #[error("mvcc: storage: {0}")]
    Storage(#[from] StorageError),
    /// Stored data cannot be decoded or contradicts the index. gRPC: DataLoss.
    #[error("mvcc: corrupt data: {0}")]
    Corrupt(String),
}
