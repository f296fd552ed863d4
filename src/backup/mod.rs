//! Backups in etcd's own snapshot format: a bbolt database (`bbolt`) with
//! etcd's buckets (`etcd`), followed by a SHA-256 of the database.
//!
//! - `Maintenance.Snapshot` (`Server::snapshot`) streams a database made from a
//!   storage view of the applied state, so `etcdctl snapshot save` works and
//!   etcd's own tools restore what cairn saves.
//! - `restore` (behind `cairnctl snapshot restore`) makes a new member's data
//!   directory from a snapshot taken from cairn or from etcd, with the
//!   membership its flags name, as `etcdctl snapshot restore` does.
//! - `status` (behind `cairnctl snapshot status`) is etcdctl's.
//! - `progress`: the line cairnctl draws on a terminal while it saves,
//!   restores or defragments (`restore_observed` reports a restore's steps).
//!
//! Tests: `bbolt.rs`, `etcd.rs`, `tests/snapshot.rs` (etcd 3.4 on both sides).

pub mod bbolt;
pub mod etcd;
pub mod progress;

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::config::parse_args;
use crate::mvcc::MvccStore;

/// Length of the SHA-256 trailer `Maintenance.Snapshot` appends.
pub const SHA256_LEN: usize = 32;

/// Bytes a snapshot stream sends per message (etcd's 32 KiB).
pub const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// An opened snapshot file: the database and whether a hash trailer follows.
pub struct SnapshotFile {
    pub db: bbolt::Db<bbolt::FileReader>,
    pub has_hash: bool,
}

/// Opens a snapshot file; a file whose size is a multiple of 512 plus 32
/// carries a SHA-256 of the rest (etcd's rule), checked unless `skip_hash_check`.
pub fn open_snapshot(path: &Path, skip_hash_check: bool) -> Result<SnapshotFile, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len();
    let has_hash = len % 512 == SHA256_LEN as u64;
    let db_len = if has_hash {
        len - SHA256_LEN as u64
    } else {
        len
    };
    if !skip_hash_check {
        if !has_hash {
            return Err("snapshot missing hash but --skip-hash-check=false".into());
        }
        let (expected, got) = file_sha256(&file, db_len)?;
        if expected != got {
            return Err(format!(
                "expected sha256 {}, got {}",
                go_bytes(&expected),
                go_bytes(&got)
            ));
        }
    }
    let db = bbolt::Db::open(bbolt::FileReader { file, len: db_len })
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(SnapshotFile { db, has_hash })
}

/// Go's `%v` of a byte slice: `[1 2 3]`.
fn go_bytes(b: &[u8]) -> String {
    let inner: Vec<String> = b.iter().map(u8::to_string).collect();
    format!("[{}]", inner.join(" "))
}

/// The trailer of `file` and the SHA-256 of its first `db_len` bytes.
fn file_sha256(file: &std::fs::File, db_len: u64) -> Result<(Vec<u8>, Vec<u8>), String> {
    use std::os::unix::fs::FileExt;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < db_len {
        let n = buf.len().min((db_len - at) as usize);
        file.read_exact_at(&mut buf[..n], at)
            .map_err(|e| format!("read snapshot: {e}"))?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    let mut trailer = vec![0u8; SHA256_LEN];
    file.read_exact_at(&mut trailer, db_len)
        .map_err(|e| format!("read snapshot: {e}"))?;
    Ok((trailer, h.finalize().to_vec()))
}

/// A SHA-256 being computed over a stream (the snapshot's trailer).
#[derive(Default)]
pub struct StreamHash(Sha256);

impl StreamHash {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish(self) -> Vec<u8> {
        self.0.finalize().to_vec()
    }
}

/// `cairnctl snapshot restore`'s settings (etcdctl 3.4's flags).
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub snapshot: PathBuf,
    pub name: String,
    /// `None`: `<name>.cairn`, the server's default.
    pub data_dir: Option<PathBuf>,
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: String,
    pub skip_hash_check: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            snapshot: PathBuf::new(),
            name: "default".into(),
            data_dir: None,
            initial_cluster: "default=http://localhost:2380".into(),
            initial_cluster_token: "etcd-cluster".into(),
            initial_advertise_peer_urls: "http://localhost:2380".into(),
            skip_hash_check: false,
        }
    }
}

/// What a restore made.
#[derive(Debug, Clone)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub member_id: u64,
    pub cluster_id: u64,
    pub imported: etcd::Imported,
}

/// Makes a new member's data directory from a snapshot (cairn's or
/// etcd's): its key-value history, compaction, leases and auth state, and the new
/// membership `options` names — every member restored from one snapshot
/// with the same flags starts from the same state. Refuses an existing
/// data directory; removes what it made when it fails.
pub async fn restore(options: &RestoreOptions) -> Result<Restored, String> {
    restore_observed(options, &mut |_| {}).await
}

/// Where a restore is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreStep {
    /// Checking the snapshot's hash and structure, before writing anything.
    Checking,
    /// Revision records written so far, and the bytes of their keys and values.
    Importing { keys: u64, bytes: u64 },
    /// Leases, membership and the final sync.
    Finishing,
}

/// [`restore`], telling `observe` where it is: `Checking` first, then
/// `Importing` as the records start and every thousand or so records, then
/// `Finishing`.
pub async fn restore_observed(
    options: &RestoreOptions,
    observe: &mut (dyn FnMut(RestoreStep) + Send),
) -> Result<Restored, String> {
    observe(RestoreStep::Checking);
    let snap = open_snapshot(&options.snapshot, options.skip_hash_check)?;
    let mut args = vec![
        "--name".to_string(),
        options.name.clone(),
        "--initial-cluster".into(),
        options.initial_cluster.clone(),
        "--initial-cluster-token".into(),
        options.initial_cluster_token.clone(),
        "--initial-advertise-peer-urls".into(),
        options.initial_advertise_peer_urls.clone(),
    ];
    if let Some(d) = &options.data_dir {
        args.push("--data-dir".into());
        args.push(d.display().to_string());
    }
    let config = parse_args(args, &|_| None).map_err(|e| e.to_string())?;
    let data_dir = config.data_dir.clone();
    if data_dir.exists() {
        return Err(format!(
            "data-dir {:?} exists",
            data_dir.display().to_string()
        ));
    }
    let problems = snap.db.check().map_err(|e| e.to_string())?;
    if !problems.is_empty() {
        return Err(format!(
            "snapshot file integrity check failed. {} errors found.\n{}",
            problems.len(),
            problems.join("\n")
        ));
    }
    let result = restore_into(&snap.db, &config, observe).await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    result
}

async fn restore_into(
    db: &bbolt::Db<bbolt::FileReader>,
    config: &crate::config::Config,
    observe: &mut (dyn FnMut(RestoreStep) + Send),
) -> Result<Restored, String> {
    let storage = cairn_runtime::client_port::open_storage_for_tool(
        &config.data_dir,
        &crate::server::apply::all_column_families(),
    )
    .map_err(|e| format!("cannot create data dir {}: {e}", config.data_dir.display()))?;
    let imported = etcd::import_observed(db, storage.as_ref(), &mut |keys, bytes| {
        observe(RestoreStep::Importing { keys, bytes })
    })
    .map_err(|e| e.to_string())?;
    observe(RestoreStep::Finishing);
    let sc = crate::process::server_config(config, 0);
    crate::server::node::bootstrap(&sc, storage.as_ref()).map_err(|e| e.to_string())?;
    if let Some(rev) = imported.scheduled_compact {
        // The snapshot was taken while a compaction ran: finish it.
        let mut store = MvccStore::open(storage.clone()).map_err(|e| e.to_string())?;
        let req = cairn_proto::etcdserverpb::CompactionRequest {
            revision: rev,
            physical: true,
        };
        store
            .compact(&req, cairn_runtime::WriteBatch::new())
            .map_err(|e| e.to_string())?;
    }
    storage.sync().await.map_err(|e| e.to_string())?;
    Ok(Restored {
        data_dir: config.data_dir.clone(),
        member_id: sc.member_id,
        cluster_id: sc.cluster_id,
        imported,
    })
}
