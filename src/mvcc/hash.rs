//! etcd's consistency hashes of the store: `hash` (etcd's Hash, over
//! everything MVCC stores) and `hash_kv` (etcd 3.5's HashKV, over the `kv`
//! family up to a revision), both a CRC-32C (`Crc32c`) of the family names,
//! keys and values in storage order.
//!
//! HashKV skips the changes a compaction at its revision would remove, so
//! members that applied the same history agree whether or not they have
//! physically compacted.
//!
//! Tests: `crc_tests` below (the standard check value); `tests.rs`
//! (`restart_rebuilds_the_same_index_revision_and_hashes`,
//! `hash_kv_is_deterministic_across_stores_with_one_history`);
//! `model_tests.rs` (`hash_kv_equals_pre_restart_hash_kv`).

use cairn_runtime::Direction;

use super::revision::{start_key, Revision};
use super::store::{decode_key, MvccStore, CF_KV, CF_META, COMPACT_REVISION_KEY};
use super::MvccError;

/// The result of `hash_kv`, as etcd 3.5's HashKV reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    pub hash: u32,
    /// The compact revision when hashed; -1 if never compacted (as etcd).
    pub compact_revision: i64,
    /// The revision the hash covers (`hash_revision` in etcd 3.5.5+).
    pub hash_revision: Revision,
    /// The store's current revision (for the response header).
    pub revision: Revision,
}

/// A HashKV taken at one point (`MvccStore::hash_kv_job`), to run apart.
pub struct HashKvJob {
    snapshot: std::sync::Arc<dyn cairn_runtime::StorageSnapshot>,
    keep: std::collections::BTreeSet<super::revision::KeyRevision>,
    at: Revision,
    compact: i64,
    current: Revision,
}

impl HashKvJob {
    pub fn run(self) -> Result<HashKv, MvccError> {
        let mut h = Crc32c::new();
        h.update(CF_KV.as_bytes());
        let end = start_key(self.at.next());
        for item in self
            .snapshot
            .scan(CF_KV, &[], Some(&end), Direction::Forward)?
        {
            let (k, v) = item?;
            let (rev, _) = decode_key(&k)?;
            if rev.main.0 <= self.compact && !self.keep.is_empty() && !self.keep.contains(&rev) {
                continue;
            }
            h.update(&k);
            h.update(&v);
        }
        Ok(HashKv {
            hash: h.finish(),
            compact_revision: self.compact,
            hash_revision: self.at,
            revision: self.current,
        })
    }
}

impl MvccStore {
    /// etcd 3.5's HashKV: a crc32c over the stored changes with revision ≤
    /// `revision` (0 = current), skipping those at or below the compact
    /// revision that a compaction at `revision` would remove — so members
    /// agree whether or not they have physically compacted.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv, MvccError> {
        self.hash_kv_job(revision)?.run()
    }

    /// What `hash_kv` needs, taken now (a storage snapshot and the index's
    /// kept revisions): run it after releasing the store, so a long scan
    /// does not hold up writes.
    pub fn hash_kv_job(&self, revision: i64) -> Result<HashKvJob, MvccError> {
        let compact = self.compacted.map_or(-1, |c| c.0);
        if revision > 0 && revision <= compact {
            return Err(MvccError::Compacted);
        }
        if revision > self.current.0 {
            return Err(MvccError::FutureRevision);
        }
        let at = if revision <= 0 {
            self.current
        } else {
            Revision(revision)
        };
        Ok(HashKvJob {
            snapshot: self.storage.snapshot(),
            keep: self.index.keep(at),
            at,
            compact,
            current: self.current,
        })
    }

    /// etcd's Hash: a crc32c over everything MVCC stores.
    pub fn hash(&self) -> Result<u32, MvccError> {
        let mut h = Crc32c::new();
        h.update(CF_KV.as_bytes());
        for item in self.storage.scan(CF_KV, &[], None, Direction::Forward)? {
            let (k, v) = item?;
            h.update(&k);
            h.update(&v);
        }
        h.update(CF_META.as_bytes());
        if let Some(v) = self.storage.get(CF_META, COMPACT_REVISION_KEY)? {
            h.update(COMPACT_REVISION_KEY);
            h.update(&v);
        }
        Ok(h.finish())
    }
}

/// CRC-32C (Castagnoli), the checksum etcd's hashes use.
pub struct Crc32c(u32);

const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c::new()
    }
}

impl Crc32c {
    pub fn new() -> Self {
        Crc32c(!0)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = CRC32C_TABLE[((self.0 ^ *b as u32) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }

    pub fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod crc_tests {
    #[test]
    fn crc32c_matches_the_standard_check_value() {
        let mut h = super::Crc32c::new();
        h.update(b"123456789");
        assert_eq!(h.finish(), 0xE306_9283);
    }
}
