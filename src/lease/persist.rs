//! The `lease` column family: one `LeaseRecord` per lease, keyed by its id
//! (8 bytes, big-endian). Written by the server's apply in the same batch as
//! the entry's other effects and the applied index; read back on startup and
//! after a snapshot install. Attached keys are not stored here: they are the
//! live MVCC keys whose `lease` names the lease (`Lessor::attach`).

use cairn_proto::cairnpb::LeaseRecord;
use cairn_runtime::{Direction, Storage, StorageError, WriteBatch};
use prost::Message as _;

use super::{LeaseId, Lessor};

/// The column family holding the lease records.
pub const CF_LEASE: &str = "lease";

fn key(id: LeaseId) -> Vec<u8> {
    id.0.to_be_bytes().to_vec()
}

/// Adds the record of a lease to `batch`.
pub fn put_record(batch: &mut WriteBatch, id: LeaseId, ttl_secs: i64, remaining_ttl_secs: i64) {
    let record = LeaseRecord {
        id: id.0,
        ttl_secs,
        remaining_ttl_secs,
    };
    batch.put(CF_LEASE, key(id), record.encode_to_vec());
}

/// Adds the deletion of a lease's record to `batch`.
pub fn delete_record(batch: &mut WriteBatch, id: LeaseId) {
    batch.delete(CF_LEASE, key(id));
}

/// Adds the current record of `id` in `lessor` (or its deletion when the
/// lease is gone) to `batch`.
pub fn write_record(batch: &mut WriteBatch, lessor: &Lessor, id: LeaseId) {
    match lessor.record(id) {
        Some((ttl_secs, remaining_ttl_secs)) => put_record(batch, id, ttl_secs, remaining_ttl_secs),
        None => delete_record(batch, id),
    }
}

/// Every stored lease record, in key order.
pub fn load(storage: &dyn Storage) -> Result<Vec<LeaseRecord>, StorageError> {
    let mut out = Vec::new();
    for item in storage.scan(CF_LEASE, b"", None, Direction::Forward)? {
        let (k, v) = item?;
        let record = LeaseRecord::decode(v.as_slice())
            .map_err(|e| StorageError::Corruption(format!("lease record {k:?}: {e}")))?;
        if k != key(LeaseId(record.id)) {
            return Err(StorageError::Corruption(format!(
                "lease record under key {k:?} names lease {:x}",
                record.id
            )));
        }
        out.push(record);
    }
    Ok(out)
}
