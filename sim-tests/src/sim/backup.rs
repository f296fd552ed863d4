//! The backup operator: in a share of the seeds (drawn from a stream of
//! their own, `draw_backups`), an operator on a node of its own runs etcd's
//! `snapshot save` — Maintenance.Snapshot on a random current member — every
//! 0.5–3 s under the faults, and keeps every image whose stream completed (a
//! stream cut by a crash, a pause or a partition is counted, not checked).
//!
//! `check` then holds each complete image to the state at its own applied
//! index, as the raft oracle knows it (`Oracle::expected_image`):
//! - the last message is the SHA-256 of the bytes before it, and the first
//!   message's `remaining_bytes` plus its blob is exactly that many bytes
//!   (as etcd, `remaining_bytes` counts the database, not the trailer);
//! - the bytes open as a bbolt database with no consistency problem
//!   (`Db::check`) and etcd 3.4's buckets;
//! - `meta`'s `consistent_index` is an index some member applied, and the
//!   `key` bucket is exactly, record for record, the committed changes up
//!   to the store revision after that index, compacted as at that index
//!   (per key the newest change at or below the compact revision if it is a
//!   put, and every later change); `finishedCompactRev` is that compact
//!   revision (absent when none);
//! - the response header's revision is that store revision.
//!
//! Tests: exercised by the simulation runs that draw backups (`tests/sim.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::backup::bbolt::Db;
use cairn::backup::etcd::{BUCKET_KEY, BUCKET_META};
use cairn::mvcc::KeyRevision;
use cairn_proto::etcdserverpb::SnapshotRequest;
use cairn_proto::mvccpb::KeyValue;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::Rng;
use sha2::{Digest as _, Sha256};

use super::faults::Timeline;
use super::membership::maintenance_client;
use super::oracle::Oracle;
use super::workload::Endpoints;

/// A whole stream must arrive within this (images are tens of KiB).
const STREAM_DEADLINE: Duration = Duration::from_secs(5);

/// A snapshot stream that ended normally.
#[derive(Debug, Clone)]
pub struct Image {
    pub url: String,
    /// Simulated time the request was sent (since the operator started).
    pub sent: Duration,
    /// The first message's header revision (`None`: no header).
    pub header_revision: Option<i64>,
    /// The first message's `remaining_bytes` plus its blob's length.
    pub announced: u64,
    /// Every blob but the last, concatenated: the database.
    pub db: Vec<u8>,
    /// The last blob: the SHA-256 of `db`.
    pub trailer: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct BackupReport {
    pub images: Vec<Image>,
    /// Streams that failed or were cut (not checked).
    pub cut: u64,
}

/// Whether this seed runs the backup operator: 30 % of the seeds, drawn
/// from `rng` (its own stream, so the seed's other draws do not move).
pub fn draw_backups(rng: &mut StdRng) -> bool {
    rng.random_bool(0.3)
}

/// Runs until `stop`: a snapshot save of a random current member every
/// 0.5–3 s.
pub async fn run(
    urls: Endpoints,
    timeline: Timeline,
    mut rng: StdRng,
    stop: Arc<AtomicBool>,
) -> BackupReport {
    let start = tokio::time::Instant::now();
    let mut report = BackupReport::default();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3000))).await;
        let url = urls.pick(&mut rng);
        let sent = start.elapsed();
        match tokio::time::timeout(STREAM_DEADLINE, save(&url)).await {
            Ok(Ok((header_revision, announced, mut blobs))) => {
                let trailer = blobs.pop().unwrap_or_default();
                let db = blobs.concat();
                timeline.backup(format!(
                    "snapshot of {url} sent at {:.3}s: {} bytes",
                    sent.as_secs_f64(),
                    db.len()
                ));
                report.images.push(Image {
                    url,
                    sent,
                    header_revision,
                    announced,
                    db,
                    trailer,
                });
            }
            Ok(Err(e)) => {
                tracing::debug!(target: "cairn_sim::backup", "snapshot of {url}: {e}");
                report.cut += 1;
            }
            Err(_) => {
                tracing::debug!(target: "cairn_sim::backup", "snapshot of {url}: deadline");
                report.cut += 1;
            }
        }
    }
    report
}

/// One whole stream: the first header's revision, the announced size and
/// every blob in order.
async fn save(url: &str) -> Result<(Option<i64>, u64, Vec<Vec<u8>>), tonic::Status> {
    let mut stream = maintenance_client(url)
        .await?
        .snapshot(SnapshotRequest {})
        .await?
        .into_inner();
    let (mut header, mut announced, mut blobs) = (None, None, Vec::new());
    while let Some(msg) = stream.message().await? {
        if announced.is_none() {
            header = msg.header.as_ref().map(|h| h.revision);
            announced = Some(msg.remaining_bytes + msg.blob.len() as u64);
        }
        blobs.push(msg.blob);
    }
    Ok((header, announced.unwrap_or(0), blobs))
}

/// A revision key and its record, readable.
fn describe(k: &[u8], v: &[u8]) -> String {
    let rev = match KeyRevision::from_key(k) {
        Some((r, tomb)) => format!(
            "{}_{}{}",
            r.main.0,
            r.sub,
            if tomb { " (tombstone)" } else { "" }
        ),
        None => format!("{k:?}"),
    };
    match KeyValue::decode(v) {
        Ok(kv) => format!(
            "{rev} {}={:?} create {} mod {} version {} lease {}",
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease
        ),
        Err(_) => format!("{rev} (undecodable value {} bytes)", v.len()),
    }
}

fn compact_rev_of(bytes: &[u8]) -> Option<i64> {
    KeyRevision::from_key(bytes).map(|(r, _)| r.main.0)
}

/// The failures of one image (empty: it is the state at its index).
fn check_image(oracle: &Oracle, img: &Image) -> Result<(), String> {
    let digest = Sha256::digest(&img.db);
    if img.trailer.as_slice() != digest.as_slice() {
        return Err(format!(
            "the trailer ({} bytes) is not the SHA-256 of the {} database bytes",
            img.trailer.len(),
            img.db.len()
        ));
    }
    if img.announced != img.db.len() as u64 {
        return Err(format!(
            "the first message announced a {} byte database but {} bytes came",
            img.announced,
            img.db.len()
        ));
    }
    let db = Db::open(img.db.clone()).map_err(|e| format!("does not open: {e}"))?;
    let problems = db.check().map_err(|e| format!("check failed: {e}"))?;
    if !problems.is_empty() {
        return Err(format!("bbolt check: {}", problems.join("; ")));
    }
    let buckets = db.buckets().map_err(|e| format!("buckets: {e}"))?;
    for want in [BUCKET_KEY, BUCKET_META, b"lease", b"members", b"cluster"] {
        if !buckets.iter().any(|b| b == want) {
            return Err(format!("no bucket {:?}", String::from_utf8_lossy(want)));
        }
    }
    let mut meta = Vec::new();
    db.for_each(BUCKET_META, &mut |k, v| {
        meta.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .map_err(|e| format!("meta: {e}"))?;
    let meta_get = |name: &[u8]| meta.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let index = meta_get(b"consistent_index")
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes)
        .ok_or("meta has no 8-byte consistent_index")?;
    let expected = oracle
        .expected_image(index)
        .map_err(|e| format!("consistent_index {index}: {e}"))?;
    let at = format!(
        "consistent_index {index}, revision {}, compacted at {:?}",
        expected.revision, expected.compacted
    );
    if img.header_revision != Some(expected.revision) {
        return Err(format!(
            "{at}: the header names revision {:?}",
            img.header_revision
        ));
    }
    let finished = meta_get(b"finishedCompactRev").and_then(|v| compact_rev_of(v));
    if finished != expected.compacted {
        return Err(format!("{at}: finishedCompactRev is {finished:?}"));
    }
    let mut records = Vec::new();
    db.for_each(BUCKET_KEY, &mut |k, v| {
        records.push((k.to_vec(), v.to_vec()));
        Ok(())
    })
    .map_err(|e| format!("key bucket: {e}"))?;
    let mismatch = records
        .iter()
        .zip(&expected.records)
        .position(|(a, b)| a != b);
    let first = match mismatch {
        Some(i) => i,
        None if records.len() == expected.records.len() => return Ok(()),
        None => records.len().min(expected.records.len()),
    };
    let show = |r: Option<&(Vec<u8>, Vec<u8>)>| r.map_or("nothing".into(), |(k, v)| describe(k, v));
    Err(format!(
        "{at}: the key bucket is not the committed history there ({} records, {} expected): record #{first} is {} where the history has {}",
        records.len(),
        expected.records.len(),
        show(records.get(first)),
        show(expected.records.get(first)),
    ))
}

/// Checks every complete image: failures, and a note.
pub fn check(oracle: &Oracle, report: &BackupReport) -> (Vec<String>, String) {
    let mut failures = Vec::new();
    let mut bytes = 0;
    for img in &report.images {
        bytes += img.db.len();
        if let Err(e) = check_image(oracle, img) {
            failures.push(format!(
                "backup: the snapshot of {} sent at {:.3}s: {e}",
                img.url,
                img.sent.as_secs_f64()
            ));
        }
    }
    let note = format!(
        "backup: {} snapshots checked ({} bytes in all), {} streams cut",
        report.images.len(),
        bytes,
        report.cut
    );
    (failures, note)
}
