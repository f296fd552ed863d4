//! etcd's snapshot database: cairn's applied state as the buckets of etcd
//! 3.4's bbolt backend, and back.
//!
//! Export (`export_buckets`) maps a storage view, bucket by bucket:
//! - `key`: the `kv` family as is for keys (revision keys, `t` marking a
//!   tombstone are the same bytes in both), each value re-encoded as an
//!   `mvccpb.KeyValue` (a tombstone as a KeyValue with only its key, as etcd
//!   writes it);
//! - `meta`: `consistent_index` (the applied index, 8 bytes big-endian) and,
//!   once compacted, `scheduledCompactRev` / `finishedCompactRev` (the
//!   compact revision as a revision key);
//! - `lease`: the `lease` family (cairn's `LeaseRecord` has etcd's
//!   `leasepb.Lease` wire format);
//! - `members` (hex id → etcd's member JSON), `members_removed` (hex id →
//!   `removed`), `alarm` (`AlarmMember` bytes → empty);
//! - `cluster` (`clusterVersion` = `3.4.0`, so etcd 3.4 restores it);
//! - `auth` (`authEnabled`: one byte, 1 or 0; `authRevision`: u64
//!   big-endian), `authUsers` (name → `authpb.User`), `authRoles` (name →
//!   `authpb.Role`): the `auth` family read through the same view
//!   (`AuthStore::load_view`). Both systems store bcrypt hashes as the
//!   user's password bytes, so the records need no conversion.
//!
//! Import (`import`) writes a snapshot's `key`, `meta`, `lease` and auth
//! buckets into the state families of a new member; membership comes from
//! the restore's flags (as etcd's restore), and alarms of the old cluster
//! are dropped (they name its members). Auth comes over as etcd's own
//! restore keeps it: enabled or not, its revision, every user (password
//! hash, roles, options) and role (permissions); a missing `authRevision`
//! is etcd's fresh store, revision 1. A record that cairn could not load
//! back (undecodable, a key that is not its record's name, a name that is
//! not UTF-8, a revision not 8 bytes) refuses the snapshot.
//!
//! `status` is `etcdctl snapshot status`: a CRC-32C over bucket names, keys
//! and values, the newest revision, the number of keys and the size.
//!
//! Tests: `tests` below; `tests/snapshot.rs` (with etcd 3.4 itself).

use std::collections::VecDeque;
use std::sync::Arc;

use cairn_proto::authpb::{Role, User};
use cairn_proto::cairnpb::{LeaseRecord, MemberRecord};
use cairn_proto::etcdserverpb::AlarmMember;
use cairn_proto::mvccpb::KeyValue;
use cairn_runtime::{Direction, Storage, StorageSnapshot, WriteBatch};
use prost::Message as _;

use super::bbolt::{self, BoltError, BucketSource, Db, ReadAt, Record, RecordSource, VecSource};
use crate::auth::AuthStore;
use crate::lease::persist::CF_LEASE;
use crate::mvcc::{KeyRevision, Kv, Revision, CF_KV};
use crate::server::apply;

pub const BUCKET_KEY: &[u8] = b"key";
pub const BUCKET_META: &[u8] = b"meta";
pub const BUCKET_LEASE: &[u8] = b"lease";
pub const BUCKET_AUTH: &[u8] = b"auth";
pub const BUCKET_AUTH_USERS: &[u8] = b"authUsers";
pub const BUCKET_AUTH_ROLES: &[u8] = b"authRoles";
const KEY_CONSISTENT_INDEX: &[u8] = b"consistent_index";
const KEY_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
const KEY_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
const KEY_AUTH_ENABLED: &[u8] = b"authEnabled";
const KEY_AUTH_REVISION: &[u8] = b"authRevision";
/// The cluster version a snapshot names: the oldest etcd that restores it.
pub const SNAPSHOT_CLUSTER_VERSION: &str = "3.4.0";

/// Records scanned from storage per refill of a streaming source.
const SCAN_BATCH: usize = 512;

/// Maps a stored pair to its record in the snapshot (`None`: skip it).
type MapFn = fn(&[u8], &[u8]) -> Result<Option<Record>, BoltError>;

/// A bucket streamed from a column family of a storage view, a batch of
/// records at a time (each batch a fresh scan from where the last ended).
struct ScanSource {
    view: Arc<dyn StorageSnapshot>,
    cf: &'static str,
    next: Option<Vec<u8>>,
    buf: VecDeque<Record>,
    map: MapFn,
}

impl ScanSource {
    fn new(view: Arc<dyn StorageSnapshot>, cf: &'static str, map: MapFn) -> ScanSource {
        ScanSource {
            view,
            cf,
            next: Some(Vec::new()),
            buf: VecDeque::new(),
            map,
        }
    }

    fn refill(&mut self) -> Result<(), BoltError> {
        let Some(start) = self.next.take() else {
            return Ok(());
        };
        let storage = |e: cairn_runtime::StorageError| BoltError::Source(e.to_string());
        let mut scanned = 0;
        let mut last = None;
        for item in self
            .view
            .scan(self.cf, &start, None, Direction::Forward)
            .map_err(storage)?
            .take(SCAN_BATCH)
        {
            let (k, v) = item.map_err(storage)?;
            scanned += 1;
            if let Some(r) = (self.map)(&k, &v)? {
                self.buf.push_back(r);
            }
            last = Some(k);
        }
        if scanned == SCAN_BATCH {
            let mut next = last.unwrap_or_default();
            next.push(0);
            self.next = Some(next);
        }
        Ok(())
    }
}

impl RecordSource for ScanSource {
    fn next_record(&mut self) -> Result<Option<Record>, BoltError> {
        while self.buf.is_empty() && self.next.is_some() {
            self.refill()?;
        }
        Ok(self.buf.pop_front())
    }
}

fn corrupt(what: impl std::fmt::Display) -> BoltError {
    BoltError::Source(format!("corrupt state: {what}"))
}

/// A `kv` family pair as a `key` bucket record.
fn key_record(k: &[u8], v: &[u8]) -> Result<Option<Record>, BoltError> {
    let (_, tombstone) =
        KeyRevision::from_key(k).ok_or_else(|| corrupt(format!("revision key {k:?}")))?;
    let kv = Kv::decode(v).map_err(corrupt)?;
    let out = if tombstone {
        KeyValue {
            key: kv.key,
            ..KeyValue::default()
        }
    } else {
        KeyValue {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
            lease: kv.lease,
        }
    };
    Ok(Some((k.to_vec(), out.encode_to_vec())))
}

/// A `lease` family pair as is: cairn's `LeaseRecord` is etcd's
/// `leasepb.Lease` on the wire (checked to decode).
fn lease_record(k: &[u8], v: &[u8]) -> Result<Option<Record>, BoltError> {
    LeaseRecord::decode(v).map_err(corrupt)?;
    Ok(Some((k.to_vec(), v.to_vec())))
}

/// etcd's revision key of main revision `main` (sub 0).
fn revision_bytes(main: i64) -> Vec<u8> {
    KeyRevision::new(Revision(main), 0).to_key(false)
}

/// etcd's member id text: lowercase hex, no padding.
fn hex_id(id: u64) -> Vec<u8> {
    format!("{id:x}").into_bytes()
}

/// etcd's JSON of a member in its backend.
fn member_json(m: &MemberRecord) -> Vec<u8> {
    let mut o = serde_json::Map::new();
    o.insert("id".into(), serde_json::Value::from(m.id));
    o.insert(
        "peerURLs".into(),
        serde_json::Value::from(m.peer_urls.clone()),
    );
    if m.is_learner {
        o.insert("isLearner".into(), serde_json::Value::from(true));
    }
    if !m.name.is_empty() {
        o.insert("name".into(), serde_json::Value::from(m.name.clone()));
    }
    if !m.client_urls.is_empty() {
        o.insert(
            "clientURLs".into(),
            serde_json::Value::from(m.client_urls.clone()),
        );
    }
    serde_json::Value::Object(o).to_string().into_bytes()
}

/// The `auth`, `authRoles` and `authUsers` buckets of `auth`'s state, in
/// etcd 3.4's layout (its `auth/store.go`).
fn auth_buckets(auth: &AuthStore) -> [(&'static [u8], Vec<Record>); 3] {
    let flags = vec![
        (KEY_AUTH_ENABLED.to_vec(), vec![u8::from(auth.is_enabled())]),
        (
            KEY_AUTH_REVISION.to_vec(),
            auth.revision().to_be_bytes().to_vec(),
        ),
    ];
    let roles = auth
        .roles()
        .map(|r| (r.name.clone(), r.encode_to_vec()))
        .collect();
    let users = auth
        .users()
        .map(|u| (u.name.clone(), u.encode_to_vec()))
        .collect();
    [
        (BUCKET_AUTH, flags),
        (BUCKET_AUTH_ROLES, roles),
        (BUCKET_AUTH_USERS, users),
    ]
}

fn vec_bucket(name: &[u8], records: Vec<Record>) -> BucketSource {
    BucketSource {
        name: name.to_vec(),
        records: Box::new(VecSource::new(records)),
    }
}

/// The buckets of etcd's backend holding the applied state in `view`, in
/// name order; streamed (big buckets are scanned as they are written).
pub fn export_buckets(view: &Arc<dyn StorageSnapshot>) -> Result<Vec<BucketSource>, BoltError> {
    let state =
        apply::read_server_state(view.as_ref()).map_err(|e| BoltError::Source(e.to_string()))?;
    let compacted = view
        .get(crate::mvcc::CF_META, crate::mvcc::COMPACT_REVISION_KEY)
        .map_err(|e| BoltError::Source(e.to_string()))?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(i64::from_be_bytes);
    let mut meta = vec![(
        KEY_CONSISTENT_INDEX.to_vec(),
        state.applied_index.to_be_bytes().to_vec(),
    )];
    if let Some(c) = compacted {
        meta.push((KEY_SCHEDULED_COMPACT.to_vec(), revision_bytes(c)));
        meta.push((KEY_FINISHED_COMPACT.to_vec(), revision_bytes(c)));
    }
    let alarms = state
        .alarms
        .iter()
        .map(|(member, alarm)| {
            let m = AlarmMember {
                member_id: *member,
                alarm: *alarm,
            };
            (m.encode_to_vec(), Vec::new())
        })
        .collect();
    let members = state
        .members
        .iter()
        .map(|m| (hex_id(m.id), member_json(m)))
        .collect();
    let removed = state
        .removed
        .iter()
        .map(|id| (hex_id(*id), b"removed".to_vec()))
        .collect();
    let auth = AuthStore::load_view(view.as_ref()).map_err(|e| BoltError::Source(e.to_string()))?;
    let [auth, auth_roles, auth_users] = auth_buckets(&auth).map(|(n, r)| vec_bucket(n, r));
    Ok(vec![
        vec_bucket(b"alarm", alarms),
        auth,
        auth_roles,
        auth_users,
        vec_bucket(
            b"cluster",
            vec![(
                b"clusterVersion".to_vec(),
                SNAPSHOT_CLUSTER_VERSION.as_bytes().to_vec(),
            )],
        ),
        BucketSource {
            name: BUCKET_KEY.to_vec(),
            records: Box::new(ScanSource::new(view.clone(), CF_KV, key_record)),
        },
        BucketSource {
            name: BUCKET_LEASE.to_vec(),
            records: Box::new(ScanSource::new(view.clone(), CF_LEASE, lease_record)),
        },
        vec_bucket(b"members", members),
        vec_bucket(b"members_removed", removed),
        vec_bucket(BUCKET_META, meta),
    ])
}

/// A snapshot database being produced from a storage view.
pub struct Export {
    writer: bbolt::Writer,
}

impl Export {
    /// Plans the database over `view` (a full pass over the state: run it
    /// off the async workers) and readies the writer.
    pub fn new(view: Arc<dyn StorageSnapshot>) -> Result<Export, BoltError> {
        let plan = bbolt::plan(export_buckets(&view)?)?;
        let writer = bbolt::Writer::new(plan, export_buckets(&view)?)?;
        Ok(Export { writer })
    }

    pub fn size_bytes(&self) -> u64 {
        self.writer.size_bytes()
    }

    /// Appends pages to `out` until it holds at least `want` bytes or the
    /// database ends; `false` once it has ended.
    pub fn fill(&mut self, out: &mut Vec<u8>, want: usize) -> Result<bool, BoltError> {
        while out.len() < want {
            match self.writer.next_page()? {
                Some(p) => out.extend_from_slice(&p),
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

/// What `etcdctl snapshot status` reports of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub hash: u32,
    pub revision: i64,
    pub total_key: u64,
    pub total_size: u64,
}

/// `etcdctl snapshot status`: bbolt's consistency check, then the hash.
pub fn status<R: ReadAt>(db: &Db<R>) -> Result<Status, BoltError> {
    let problems = db.check()?;
    if !problems.is_empty() {
        return Err(BoltError::Invalid(format!(
            "snapshot file integrity check failed. {} errors found.\n{}",
            problems.len(),
            problems.join("\n")
        )));
    }
    let mut h = crate::mvcc::Crc32c::new();
    let mut revision = 0;
    let mut total_key = 0;
    for name in db.buckets()? {
        h.update(&name);
        let is_key = name == BUCKET_KEY;
        db.for_each(&name, &mut |k, v| {
            h.update(k);
            h.update(v);
            if is_key {
                if let Some((r, _)) = KeyRevision::from_key(k) {
                    revision = r.main.0;
                }
            }
            total_key += 1;
            Ok(())
        })?;
    }
    Ok(Status {
        hash: h.finish(),
        revision,
        total_key,
        total_size: db.size_bytes(),
    })
}

/// What an import found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Imported {
    pub revision: i64,
    pub keys: u64,
    pub leases: u64,
    /// The compact revision the snapshot had finished.
    pub finished_compact: Option<i64>,
    /// A compaction the snapshot had scheduled but not finished (to redo).
    pub scheduled_compact: Option<i64>,
    /// Whether the snapshot's auth was enabled (and so is the member's).
    pub auth_enabled: bool,
    /// Users and roles the snapshot held.
    pub users: u64,
    pub roles: u64,
}

/// Bytes written per storage batch during an import.
const IMPORT_BATCH_BYTES: usize = 4 << 20;

fn compact_rev(db_meta: &[(Vec<u8>, Vec<u8>)], key: &[u8]) -> Result<Option<i64>, BoltError> {
    match db_meta.iter().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, v)) => KeyRevision::from_key(v)
            .map(|(r, _)| Some(r.main.0))
            .ok_or_else(|| BoltError::Invalid(format!("meta {key:?}: not a revision"))),
    }
}

/// A record of `authUsers` / `authRoles` (`what`), keyed by its name.
fn auth_record<M: prost::Message + Default>(
    what: &str,
    k: &[u8],
    v: &[u8],
    name: impl Fn(&M) -> &[u8],
) -> Result<M, BoltError> {
    let text = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
    let bad = |why: String| BoltError::Invalid(format!("{what} record {}: {why}", text(k)));
    let m = M::decode(v).map_err(|e| bad(e.to_string()))?;
    if name(&m) != k {
        return Err(bad(format!("holds the {what} {}", text(name(&m)))));
    }
    std::str::from_utf8(k).map_err(|_| bad("the name is not UTF-8".into()))?;
    Ok(m)
}

/// The auth state of the snapshot `db` (module docs).
fn read_auth<R: ReadAt>(db: &Db<R>) -> Result<AuthStore, BoltError> {
    let (mut enabled, mut revision) = (false, 0);
    db.for_each(BUCKET_AUTH, &mut |k, v| {
        if k == KEY_AUTH_ENABLED {
            enabled = v == [1];
        } else if k == KEY_AUTH_REVISION {
            let b = <[u8; 8]>::try_from(v).map_err(|_| {
                BoltError::Invalid(format!("auth bucket: authRevision {v:?} is not 8 bytes"))
            })?;
            revision = u64::from_be_bytes(b);
        }
        Ok(())
    })?;
    let mut users = Vec::new();
    db.for_each(BUCKET_AUTH_USERS, &mut |k, v| {
        users.push(auth_record("user", k, v, |u: &User| &u.name)?);
        Ok(())
    })?;
    let mut roles = Vec::new();
    db.for_each(BUCKET_AUTH_ROLES, &mut |k, v| {
        roles.push(auth_record("role", k, v, |r: &Role| &r.name)?);
        Ok(())
    })?;
    Ok(AuthStore::from_parts(enabled, revision, users, roles))
}

/// Writes the key-value history, compact revision, leases and auth state
/// of the snapshot `db` into `storage` (a new member's, state families
/// empty).
pub fn import<R: ReadAt>(db: &Db<R>, storage: &dyn Storage) -> Result<Imported, BoltError> {
    import_observed(db, storage, &mut |_, _| {})
}

/// Records, or bytes, between two calls of an import's observer.
const OBSERVE_EVERY: u64 = 1024;
const OBSERVE_BYTES: u64 = 1 << 20;

/// [`import`], calling `observe(keys, bytes)` with the revision records
/// imported so far and the bytes of their keys and values: when the key
/// bucket starts, every `OBSERVE_EVERY` records or `OBSERVE_BYTES` bytes
/// (large values), and when it ends.
pub fn import_observed<R: ReadAt>(
    db: &Db<R>,
    storage: &dyn Storage,
    observe: &mut dyn FnMut(u64, u64),
) -> Result<Imported, BoltError> {
    let store_err = |e: cairn_runtime::StorageError| BoltError::Io(e.to_string());
    let auth = read_auth(db)?;
    let mut meta = Vec::new();
    db.for_each(BUCKET_META, &mut |k, v| {
        meta.push((k.to_vec(), v.to_vec()));
        Ok(())
    })?;
    let mut out = Imported {
        finished_compact: compact_rev(&meta, KEY_FINISHED_COMPACT)?,
        scheduled_compact: compact_rev(&meta, KEY_SCHEDULED_COMPACT)?,
        ..Imported::default()
    };
    if out.scheduled_compact <= out.finished_compact {
        out.scheduled_compact = None;
    }
    out.auth_enabled = auth.is_enabled();
    out.users = auth.users().count() as u64;
    out.roles = auth.roles().count() as u64;
    let mut batch = WriteBatch::new();
    auth.write_all(&mut batch);
    if let Some(c) = out.finished_compact {
        batch.put(
            crate::mvcc::CF_META,
            crate::mvcc::COMPACT_REVISION_KEY,
            c.to_be_bytes().to_vec(),
        );
    }
    let mut failed = None;
    let mut bytes = 0u64;
    let mut observed = (0u64, 0u64);
    observe(0, 0);
    db.for_each(BUCKET_KEY, &mut |k, v| {
        bytes += (k.len() + v.len()) as u64;
        let (rev, tombstone) = KeyRevision::from_key(k)
            .ok_or_else(|| BoltError::Invalid(format!("key bucket: not a revision key {k:?}")))?;
        let kv = KeyValue::decode(v)
            .map_err(|e| BoltError::Invalid(format!("key bucket at {k:?}: {e}")))?;
        let record = if tombstone {
            Kv {
                key: kv.key,
                mod_revision: rev.main.0,
                ..Kv::default()
            }
        } else {
            Kv {
                key: kv.key,
                value: kv.value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                lease: kv.lease,
            }
        };
        batch.put(CF_KV, k.to_vec(), record.encode());
        out.revision = out.revision.max(rev.main.0);
        out.keys += 1;
        if out.keys - observed.0 >= OBSERVE_EVERY || bytes - observed.1 >= OBSERVE_BYTES {
            observed = (out.keys, bytes);
            observe(out.keys, bytes);
        }
        if batch.size_bytes() >= IMPORT_BATCH_BYTES {
            if let Err(e) = storage.write(std::mem::take(&mut batch)) {
                failed = Some(e);
                return Err(BoltError::Io("storage write failed".into()));
            }
        }
        Ok(())
    })
    .map_err(|e| failed.clone().map_or(e, store_err))?;
    observe(out.keys, bytes);
    db.for_each(BUCKET_LEASE, &mut |k, v| {
        let r = LeaseRecord::decode(v)
            .map_err(|e| BoltError::Invalid(format!("lease bucket at {k:?}: {e}")))?;
        crate::lease::persist::put_record(&mut batch, crate::lease::LeaseId(r.id), r.ttl_secs, 0);
        out.leases += 1;
        Ok(())
    })?;
    storage.write(batch).map_err(store_err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_runtime::SimStorage;

    #[test]
    fn member_json_has_etcds_field_names() {
        let m = MemberRecord {
            id: 0x8e9e05c52164694d,
            name: "m1".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec![],
            is_learner: true,
        };
        let v: serde_json::Value = serde_json::from_slice(&member_json(&m)).expect("valid json");
        assert_eq!(v["id"], serde_json::json!(0x8e9e05c52164694du64));
        assert_eq!(v["peerURLs"][0], "http://127.0.0.1:2380");
        assert_eq!(v["isLearner"], true);
        assert_eq!(v["name"], "m1");
        assert!(v.get("clientURLs").is_none());
        assert_eq!(hex_id(0x0a), b"a".to_vec());
    }

    /// An auth state as etcd 3.4 would hold it: on, root and a reader of
    /// `/p/` (a `$2a$` hash, as Go writes), a user without password.
    fn sample_auth() -> AuthStore {
        use cairn_proto::authpb::{permission::Type, Permission, UserAddOptions};
        let hash = bcrypt::hash_with_result("alicepw", 4)
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoA);
        let user = |name: &str, password: &[u8], roles: &[&str], no_password: bool| User {
            name: name.as_bytes().to_vec(),
            password: password.to_vec(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            options: Some(UserAddOptions { no_password }),
        };
        let reader = Role {
            name: b"reader".to_vec(),
            key_permission: vec![Permission {
                perm_type: Type::Read as i32,
                key: b"/p/".to_vec(),
                range_end: b"/p0".to_vec(),
            }],
        };
        let root = Role {
            name: b"root".to_vec(),
            key_permission: Vec::new(),
        };
        AuthStore::from_parts(
            true,
            7,
            vec![
                user("root", hash.as_bytes(), &["root"], false),
                user("alice", hash.as_bytes(), &["reader"], false),
                user("svc", b"", &["reader"], true),
            ],
            vec![reader, root],
        )
    }

    fn state_storage() -> SimStorage {
        SimStorage::new(&apply::all_column_families())
    }

    /// The snapshot database `export_buckets` makes of `storage`.
    fn export_db(storage: &SimStorage) -> Db<Vec<u8>> {
        let mut export = Export::new(storage.snapshot()).expect("export");
        let mut bytes = Vec::new();
        while export.fill(&mut bytes, 1 << 20).expect("fill") {}
        Db::open(bytes).expect("open")
    }

    fn bucket(db: &Db<Vec<u8>>, name: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        let found = db
            .for_each(name, &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .expect("for_each");
        assert!(found, "no bucket {:?}", String::from_utf8_lossy(name));
        out
    }

    /// (enabled, revision, users, roles) of a store, to compare two.
    fn contents(a: &AuthStore) -> (bool, u64, Vec<User>, Vec<Role>) {
        (
            a.is_enabled(),
            a.revision(),
            a.users().cloned().collect(),
            a.roles().cloned().collect(),
        )
    }

    /// Buckets by name, as a test gives them.
    type Buckets = Vec<(&'static [u8], Vec<Record>)>;

    /// A snapshot database of the given buckets only.
    fn db_of(buckets: Buckets) -> Db<Vec<u8>> {
        let sources = || {
            buckets
                .iter()
                .map(|(n, r)| vec_bucket(n, r.clone()))
                .collect::<Vec<_>>()
        };
        let plan = bbolt::plan(sources()).expect("plan");
        let mut w = bbolt::Writer::new(plan, sources()).expect("writer");
        let mut bytes = Vec::new();
        while let Some(p) = w.next_page().expect("page") {
            bytes.extend_from_slice(&p);
        }
        Db::open(bytes).expect("open")
    }

    #[test]
    fn the_auth_family_is_exported_in_etcds_auth_buckets() {
        let storage = state_storage();
        let auth = sample_auth();
        let mut b = WriteBatch::new();
        auth.write_all(&mut b);
        storage.write(b).expect("write");
        let db = export_db(&storage);
        assert_eq!(
            bucket(&db, b"auth"),
            vec![
                (b"authEnabled".to_vec(), vec![1]),
                (b"authRevision".to_vec(), 7u64.to_be_bytes().to_vec()),
            ]
        );
        let users = bucket(&db, b"authUsers");
        let names: Vec<&[u8]> = users.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(names, [&b"alice"[..], b"root", b"svc"]);
        for (k, v) in &users {
            let u = User::decode(v.as_slice()).expect("an authpb.User");
            assert_eq!(Some(&u), auth.user(std::str::from_utf8(k).expect("utf-8")));
        }
        let roles = bucket(&db, b"authRoles");
        let want: Vec<Record> = auth
            .roles()
            .map(|r| (r.name.clone(), r.encode_to_vec()))
            .collect();
        assert_eq!(roles, want);
        assert_eq!(roles[0].0, b"reader".to_vec());
    }

    #[test]
    fn a_store_without_auth_exports_etcds_fresh_auth_state() {
        let db = export_db(&state_storage());
        assert_eq!(
            bucket(&db, b"auth"),
            vec![
                (b"authEnabled".to_vec(), vec![0]),
                (b"authRevision".to_vec(), 1u64.to_be_bytes().to_vec()),
            ]
        );
        assert!(bucket(&db, b"authUsers").is_empty());
        assert!(bucket(&db, b"authRoles").is_empty());
    }

    #[test]
    fn auth_comes_back_from_an_export_equal_and_its_passwords_verify() {
        let storage = state_storage();
        let auth = sample_auth();
        let mut b = WriteBatch::new();
        auth.write_all(&mut b);
        storage.write(b).expect("write");
        let db = export_db(&storage);

        let restored = state_storage();
        let imported = import(&db, &restored).expect("import");
        assert!(imported.auth_enabled);
        assert_eq!((imported.users, imported.roles), (3, 2));
        let back = AuthStore::load(&restored).expect("load");
        assert_eq!(contents(&back), contents(&auth));
        let hash = back.password_hash("alice").expect("alice has a password");
        assert!(hash.starts_with(b"$2a$"));
        assert!(crate::auth::verify_password("alicepw", &hash));
        assert!(!crate::auth::verify_password("wrong", &hash));
        assert!(back
            .check(
                Some(&crate::auth::AuthInfo {
                    username: "alice".into(),
                    revision: back.revision(),
                }),
                b"/p/a",
                b"",
                crate::auth::Access::Read,
            )
            .is_ok());
    }

    #[test]
    fn auth_is_imported_from_etcds_buckets_as_etcd_keeps_them() {
        let auth = sample_auth();
        let users = auth
            .users()
            .map(|u| (u.name.clone(), u.encode_to_vec()))
            .collect();
        let roles = auth
            .roles()
            .map(|r| (r.name.clone(), r.encode_to_vec()))
            .collect();
        let db = db_of(vec![
            (
                BUCKET_AUTH,
                vec![
                    (b"authEnabled".to_vec(), vec![1]),
                    (b"authRevision".to_vec(), 7u64.to_be_bytes().to_vec()),
                ],
            ),
            (BUCKET_AUTH_ROLES, roles),
            (BUCKET_AUTH_USERS, users),
        ]);
        let storage = state_storage();
        import(&db, &storage).expect("import");
        let back = AuthStore::load(&storage).expect("load");
        assert_eq!(contents(&back), contents(&auth));

        // etcd after `auth disable` writes [0]; a fresh etcd has no
        // authEnabled and, before its first start, no authRevision.
        for flags in [vec![(b"authEnabled".to_vec(), vec![0])], Vec::new()] {
            let db = db_of(vec![(BUCKET_AUTH, flags)]);
            let storage = state_storage();
            let imported = import(&db, &storage).expect("import");
            assert!(!imported.auth_enabled);
            let back = AuthStore::load(&storage).expect("load");
            assert!(!back.is_enabled());
            assert_eq!(back.revision(), 1);
        }
    }

    #[test]
    fn auth_records_cairn_could_not_load_back_refuse_the_snapshot() {
        let alice = sample_auth().user("alice").expect("alice").clone();
        let cases: Vec<(&str, Buckets)> = vec![
            (
                "authRevision",
                vec![(BUCKET_AUTH, vec![(b"authRevision".to_vec(), vec![0, 1])])],
            ),
            (
                "holds the user",
                vec![(
                    BUCKET_AUTH_USERS,
                    vec![(b"bob".to_vec(), alice.encode_to_vec())],
                )],
            ),
            (
                "user record",
                vec![(BUCKET_AUTH_USERS, vec![(b"x".to_vec(), vec![0xff, 0xff])])],
            ),
            (
                "not UTF-8",
                vec![(
                    BUCKET_AUTH_ROLES,
                    vec![(
                        vec![0xc3],
                        Role {
                            name: vec![0xc3],
                            key_permission: Vec::new(),
                        }
                        .encode_to_vec(),
                    )],
                )],
            ),
        ];
        for (want, buckets) in cases {
            let err = import(&db_of(buckets), &state_storage()).expect_err(want);
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn an_import_reports_its_progress_in_keys_and_bytes() {
        let n = OBSERVE_EVERY * 2 + 300;
        let records: Vec<Record> = (1..=n as i64)
            .map(|rev| {
                let kv = KeyValue {
                    key: format!("k{rev:05}").into_bytes(),
                    value: vec![b'v'; 100],
                    create_revision: rev,
                    mod_revision: rev,
                    version: 1,
                    lease: 0,
                };
                (revision_bytes(rev), kv.encode_to_vec())
            })
            .collect();
        let bytes_of = |count: u64| -> u64 {
            records[..count as usize]
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum()
        };
        let every = OBSERVE_EVERY;
        let want = vec![
            (0, 0),
            (every, bytes_of(every)),
            (2 * every, bytes_of(2 * every)),
            (n, bytes_of(n)),
        ];
        let db = db_of(vec![(BUCKET_KEY, records)]);
        let mut seen = Vec::new();
        let imported = import_observed(&db, &state_storage(), &mut |keys, bytes| {
            seen.push((keys, bytes))
        })
        .expect("import");
        assert_eq!(imported.keys, n);
        assert_eq!(seen, want);

        // Large values: a call per MiB or so, whatever the record count.
        let big: Vec<Record> = (1..=10i64)
            .map(|rev| {
                let kv = KeyValue {
                    key: format!("big{rev:02}").into_bytes(),
                    value: vec![b'v'; 300 * 1024],
                    create_revision: rev,
                    mod_revision: rev,
                    version: 1,
                    lease: 0,
                };
                (revision_bytes(rev), kv.encode_to_vec())
            })
            .collect();
        let db = db_of(vec![(BUCKET_KEY, big)]);
        let mut seen = Vec::new();
        import_observed(&db, &state_storage(), &mut |keys, _| seen.push(keys)).expect("import");
        // 0, then each time a MiB more was read (4 records of 300 KiB), then the end.
        assert_eq!(seen, vec![0, 4, 8, 10]);
    }

    #[test]
    fn a_scan_source_resumes_across_batches_without_losing_or_repeating() {
        let storage = SimStorage::new(&[CF_LEASE]);
        let mut b = WriteBatch::new();
        let n = SCAN_BATCH as i64 * 2 + 7;
        for id in 1..=n {
            crate::lease::persist::put_record(&mut b, crate::lease::LeaseId(id), id, 0);
        }
        storage.write(b).expect("write");
        let view = storage.snapshot();
        let mut src = ScanSource::new(view, CF_LEASE, lease_record);
        let mut ids = Vec::new();
        while let Some((_, v)) = src.next_record().expect("record") {
            ids.push(LeaseRecord::decode(v.as_slice()).expect("lease").id);
        }
        assert_eq!(ids, (1..=n).collect::<Vec<_>>());
    }
}
