//! The apply path: how committed entries change a member's applied state
//! (MVCC plus cairn's own records: applied index, members, leases), and the
//! durable layout a restart needs (`check_restartable`).
//!
//! Exactly-once apply: every entry's effects and the new applied index are
//! written in one Storage batch (`extra` of the MVCC write), so after a crash
//! the persisted applied index says precisely which entries are in the state;
//! entries at or below it are skipped when Raft replays them.
//!
//! State-machine column families: MVCC's, `lease` (one record per lease)
//! and `server` (applied index, member id, members). A follower that falls
//! behind a compaction receives all of them as a `StateSnapshot` and replaces
//! its own (`install_state_snapshot_batch`).
//!
//! Leases: grants, revokes and checkpoints are applied here, each in one
//! batch with the applied index; a revoke deletes the lease's keys as one
//! MVCC txn (one revision) whose `extra` also deletes the lease record. Puts
//! and txns attach and detach keys from the changes they made (`events`).
//! The lessor's replicated state is rebuilt from storage by `load_lessor`.
//! Tests: `src/server/tests.rs` and the integration tests in `tests/`.

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::cairnpb::{
    internal_request::Request, InternalRequest, MemberAttributes, MemberRecord, StatePair,
    StateSnapshot,
};
use cairn_proto::etcdserverpb::{
    request_op, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutResponse, RangeRequest,
    RequestOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::Event;
use cairn_runtime::{Direction, MonoTime, ScanIter, Storage, StorageError, WriteBatch};
use prost::Message as _;

use super::ServerError;
use crate::auth::tokens::SimpleTokens;
use crate::auth::{AuthError, AuthStore};
use crate::lease::{self, LeaseId, Lessor, LessorConfig};
use crate::mvcc::{self, MvccError, MvccStore, Revision};
use crate::v2store;

pub const CF_SERVER: &str = "server";
const KEY_APPLIED: &[u8] = b"applied_index";
const KEY_MEMBER_ID: &[u8] = b"member_id";
/// The cluster's id (the same on every member, so a snapshot may carry it).
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
const MEMBER_PREFIX: &[u8] = b"member/";
/// Members removed from the cluster: their ids can never be used again.
const REMOVED_PREFIX: &[u8] = b"removed/";
/// Active alarms: `alarm/` + member id (8 bytes) + alarm type (4 bytes).
const ALARM_PREFIX: &[u8] = b"alarm/";
/// Member-local (beside the Raft state, never replaced by a snapshot): a
/// peer refused this member because the cluster removed it.
const KEY_REMOVED_SELF: &[u8] = b"removed_self";

/// Every column family of the applied state (what a state snapshot carries).
pub fn state_column_families() -> Vec<&'static str> {
    let mut cfs: Vec<&'static str> = mvcc::COLUMN_FAMILIES.to_vec();
    cfs.push(lease::persist::CF_LEASE);
    cfs.push(CF_SERVER);
    cfs.push(crate::auth::CF_AUTH);
    cfs.push(crate::v2store::CF_V2);
    cfs
}

/// Every column family a member's storage is opened with.
pub fn all_column_families() -> Vec<&'static str> {
    let mut cfs = state_column_families();
    cfs.extend(crate::raft::storage::COLUMN_FAMILIES);
    cfs
}

/// The result of applying one client request.
#[derive(Debug, Clone)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse, bool),
    Published,
    /// A membership change (conf change or peer-URL update) took effect.
    MembersChanged,
    /// An alarm was raised or cleared; the alarms it changed.
    Alarm(cairn_proto::etcdserverpb::AlarmResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseCheckpoint,
    /// An auth change took effect; a login answers its simple token (empty
    /// with JWT tokens) and the auth revision it was granted at.
    Auth(Option<(String, u64)>),
    /// A v2 keys write: its event, or etcd's v2 error.
    V2(Result<Box<v2store::Event>, v2store::Error>),
    /// The leader's v2 expiry sweep was applied.
    V2Swept,
}

/// What applying an entry produced for the waiting client, if any.
pub struct ApplyOutcome {
    pub result: Result<Applied, ServerError>,
    /// The store revision after the apply (for the response header).
    pub revision: Revision,
    /// The changes the apply made, in revision order (for the watch hub);
    /// empty when nothing changed.
    pub events: Vec<Event>,
    /// The v2 store's changes (for its watchers).
    pub v2_events: Vec<v2store::Event>,
}

fn member_key(id: u64) -> Vec<u8> {
    let mut k = MEMBER_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn removed_key(id: u64) -> Vec<u8> {
    let mut k = REMOVED_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(super) fn applied_batch(index: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(CF_SERVER, KEY_APPLIED, index.to_be_bytes().to_vec());
    b
}

/// A big-endian u64 stored under `key` (`None`: absent or not 8 bytes).
fn read_u64(storage: &dyn Storage, cf: &str, key: &[u8]) -> Result<Option<u64>, StorageError> {
    Ok(storage.get(cf, key)?.as_deref().and_then(decode_u64))
}

/// A stored u64 (8 bytes, big-endian); `None` for anything else.
fn decode_u64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

pub fn read_applied_index(storage: &dyn Storage) -> Result<u64, StorageError> {
    Ok(read_u64(storage, CF_SERVER, KEY_APPLIED)?.unwrap_or(0))
}

/// What a restart needs of the durable state, checked against a view of it:
/// the log starts right after its snapshot, the commit index is within the
/// log, and — the one a restart cannot repair — the applied state is not
/// ahead of the log (entries it applied must still be there, or in the
/// snapshot). Every prefix of the writes must satisfy it, since a power loss
/// may keep any prefix: the simulation checks it after every write.
pub fn check_restartable(view: &dyn cairn_runtime::StorageSnapshot) -> Result<(), String> {
    let log = crate::raft::storage::log_bounds(view).map_err(|e| e.to_string())?;
    let applied = view
        .get(CF_SERVER, KEY_APPLIED)
        .map_err(|e| e.to_string())?
        .as_deref()
        .and_then(decode_u64)
        .unwrap_or(0);
    if let Some(first) = log.first_entry {
        if first != log.snapshot_index + 1 {
            return Err(format!(
                "the log starts at {first}, not right after its snapshot at {}",
                log.snapshot_index
            ));
        }
    }
    if log.commit > log.last_index {
        return Err(format!(
            "commit {} beyond last index {}",
            log.commit, log.last_index
        ));
    }
    if applied > log.last_index {
        return Err(format!(
            "applied {applied} beyond last index {} (snapshot at {})",
            log.last_index, log.snapshot_index
        ));
    }
    Ok(())
}

/// Member-local, beside the Raft state (a state snapshot replaces
/// `CF_SERVER`, never this): how many times this member has started.
const KEY_INCARNATION: &[u8] = b"incarnation";

/// Counts this start and returns its number (1 for the first). The write is
/// not synced here: the node loop syncs before it handles any proposal.
pub fn next_incarnation(storage: &dyn Storage) -> Result<u64, StorageError> {
    let cf = crate::raft::storage::CF_RAFT_STATE;
    let n = read_u64(storage, cf, KEY_INCARNATION)?.unwrap_or(0) + 1;
    let mut b = WriteBatch::new();
    b.put(cf, KEY_INCARNATION, n.to_be_bytes().to_vec());
    storage.write(b)?;
    Ok(n)
}

/// The first request id of start number `incarnation`: ids carry the start
/// in their top 24 bits, so no start reuses an id of an earlier one (entries
/// an earlier start proposed may still be applied after a restart, and
/// proposals find their waiters by id). Id 0 stays reserved.
pub fn first_request_id(incarnation: u64) -> u64 {
    ((incarnation & 0xff_ffff) << 40) | 1
}

pub fn read_member_id(storage: &dyn Storage) -> Result<Option<u64>, StorageError> {
    read_u64(storage, CF_SERVER, KEY_MEMBER_ID)
}

pub fn read_cluster_id(storage: &dyn Storage) -> Result<Option<u64>, StorageError> {
    read_u64(storage, CF_SERVER, KEY_CLUSTER_ID)
}

/// The writes that found a member's applied state: its id, the cluster's and
/// the members it starts with (the founding members, or the cluster's
/// members as a joining member found them).
pub fn bootstrap_batch(member_id: u64, cluster_id: u64, members: &[MemberRecord]) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(CF_SERVER, KEY_MEMBER_ID, member_id.to_be_bytes().to_vec());
    b.put(CF_SERVER, KEY_CLUSTER_ID, cluster_id.to_be_bytes().to_vec());
    for m in members {
        b.put(CF_SERVER, member_key(m.id), m.encode_to_vec());
    }
    b
}

/// The end of the key range of `prefix` (its last byte plus one).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

/// The pairs under `prefix` in the `server` family (keys without the prefix).
fn server_records(
    scan: ScanIter<'_>,
    prefix: &[u8],
) -> Result<Vec<cairn_runtime::KvPair>, StorageError> {
    scan.map(|item| item.map(|(k, v)| (k[prefix.len()..].to_vec(), v)))
        .collect()
}

fn scan_server(
    storage: &dyn Storage,
    prefix: &[u8],
) -> Result<Vec<cairn_runtime::KvPair>, StorageError> {
    let end = prefix_end(prefix);
    server_records(
        storage.scan(CF_SERVER, prefix, Some(&end), Direction::Forward)?,
        prefix,
    )
}

fn decode_member(v: &[u8]) -> Result<MemberRecord, StorageError> {
    MemberRecord::decode(v).map_err(|e| StorageError::Corruption(format!("member record: {e}")))
}

/// An alarm key (without its prefix): member id (8 bytes), type (4 bytes).
fn decode_alarm(k: &[u8]) -> Option<(u64, i32)> {
    let member = decode_u64(k.get(..8)?)?;
    let alarm = <[u8; 4]>::try_from(k.get(8..)?).ok()?;
    Some((member, i32::from_be_bytes(alarm)))
}

pub fn load_members(storage: &dyn Storage) -> Result<BTreeMap<u64, MemberRecord>, StorageError> {
    let mut members = BTreeMap::new();
    for (_, v) in scan_server(storage, MEMBER_PREFIX)? {
        let m = decode_member(&v)?;
        members.insert(m.id, m);
    }
    Ok(members)
}

/// The ids removed from the cluster, as applied.
pub fn load_removed(storage: &dyn Storage) -> Result<BTreeSet<u64>, StorageError> {
    Ok(scan_server(storage, REMOVED_PREFIX)?
        .iter()
        .filter_map(|(k, _)| decode_u64(k))
        .collect())
}

/// Whether this member knows it was removed from the cluster: it applied
/// its own removal, or a peer refused it as removed (`removed_self_batch`).
pub fn is_removed_self(storage: &dyn Storage, member_id: u64) -> Result<bool, StorageError> {
    let local = storage
        .get(crate::raft::storage::CF_RAFT_STATE, KEY_REMOVED_SELF)?
        .is_some();
    Ok(local || storage.get(CF_SERVER, &removed_key(member_id))?.is_some())
}

/// The member-local record that a peer refused this member as removed.
pub fn removed_self_batch() -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(
        crate::raft::storage::CF_RAFT_STATE,
        KEY_REMOVED_SELF,
        b"1".to_vec(),
    );
    b
}

/// The cluster's active alarms: (member id, alarm type).
pub type Alarms = BTreeSet<(u64, i32)>;

fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut k = ALARM_PREFIX.to_vec();
    k.extend_from_slice(&member.to_be_bytes());
    k.extend_from_slice(&alarm.to_be_bytes());
    k
}

/// The active alarms, as applied.
pub fn load_alarms(storage: &dyn Storage) -> Result<Alarms, StorageError> {
    Ok(scan_server(storage, ALARM_PREFIX)?
        .iter()
        .filter_map(|(k, _)| decode_alarm(k))
        .collect())
}

/// The replicated server state in a storage view, for a backup: the
/// applied index, the members, the removed ids and the active alarms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerState {
    pub applied_index: u64,
    pub members: Vec<MemberRecord>,
    pub removed: Vec<u64>,
    pub alarms: Vec<(u64, i32)>,
}

pub fn read_server_state(
    view: &dyn cairn_runtime::StorageSnapshot,
) -> Result<ServerState, StorageError> {
    let scan = |prefix: &[u8]| {
        let end = prefix_end(prefix);
        server_records(
            view.scan(CF_SERVER, prefix, Some(&end), Direction::Forward)?,
            prefix,
        )
    };
    Ok(ServerState {
        applied_index: view
            .get(CF_SERVER, KEY_APPLIED)?
            .as_deref()
            .and_then(decode_u64)
            .unwrap_or(0),
        members: scan(MEMBER_PREFIX)?
            .iter()
            .map(|(_, v)| decode_member(v))
            .collect::<Result<_, _>>()?,
        removed: scan(REMOVED_PREFIX)?
            .iter()
            .filter_map(|(k, _)| decode_u64(k))
            .collect(),
        alarms: scan(ALARM_PREFIX)?
            .iter()
            .filter_map(|(k, _)| decode_alarm(k))
            .collect(),
    })
}

/// Whether a NOSPACE alarm is active: the cluster then refuses what adds
/// data (etcd's capped applier).
pub fn no_space(alarms: &Alarms) -> bool {
    let nospace = cairn_proto::etcdserverpb::AlarmType::Nospace as i32;
    alarms.iter().any(|(_, a)| *a == nospace)
}

/// Whether a CORRUPT alarm is active: the cluster then refuses every write
/// (etcd's corrupt applier); reads go on.
pub fn corrupt(alarms: &Alarms) -> bool {
    let corrupt = cairn_proto::etcdserverpb::AlarmType::Corrupt as i32;
    alarms.iter().any(|(_, a)| *a == corrupt)
}

/// Whether a txn would write a put on some branch (etcd's non-zero cost).
pub fn txn_puts(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(&r.failure)
        .any(|op| match &op.request {
            Some(request_op::Request::RequestPut(_)) => true,
            Some(request_op::Request::RequestTxn(t)) => txn_puts(t),
            _ => false,
        })
}

fn alarm(
    store: &MvccStore,
    alarms: &mut Alarms,
    r: &cairn_proto::etcdserverpb::AlarmRequest,
    mut extra: WriteBatch,
) -> Result<Effects, ServerError> {
    use cairn_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmMember, AlarmResponse};
    let key = (r.member_id, r.alarm);
    let changed = match r.action() {
        AlarmAction::Activate if r.alarm != 0 => {
            extra.put(CF_SERVER, alarm_key(r.member_id, r.alarm), b"1".to_vec());
            alarms.insert(key);
            true
        }
        AlarmAction::Deactivate if alarms.contains(&key) => {
            extra.delete(CF_SERVER, alarm_key(r.member_id, r.alarm));
            alarms.remove(&key);
            true
        }
        _ => false,
    };
    write_extra(store, extra)?;
    let resp = AlarmResponse {
        header: None,
        alarms: if changed {
            vec![AlarmMember {
                member_id: r.member_id,
                alarm: r.alarm,
            }]
        } else {
            Vec::new()
        },
    };
    Ok((Applied::Alarm(resp), store.current_revision(), Vec::new()))
}

/// Applies one normal entry's request at `index` to `store` and `lessor`.
/// `now` is the member's clock (a grant on the primary expires from it).
#[allow(clippy::too_many_arguments)]
pub fn apply_request(
    store: &mut MvccStore,
    members: &mut BTreeMap<u64, MemberRecord>,
    lessor: &mut Lessor,
    alarms: &mut Alarms,
    (auth, tokens): (&mut AuthStore, &mut SimpleTokens),
    v2: &mut v2store::Store,
    req: &InternalRequest,
    index: u64,
    (now, unix_nanos): (MonoTime, i64),
) -> ApplyOutcome {
    let mut extra = applied_batch(index);
    // A client's request is checked against the auth state in force now.
    let denied = match (&req.caller, &req.request) {
        (Some(caller), Some(r)) => {
            super::auth::check_request(auth, lessor, super::caller_of(caller).as_ref(), r).err()
        }
        _ => None,
    };
    // v2 writes (proposed by the member itself: no caller) go to the v2
    // store, outside v3's auth and alarms, as in etcd 3.4.
    if let Some(Request::V2(r)) = &req.request {
        return apply_v2(store, v2, r, extra, unix_nanos);
    }
    let capped = no_space(alarms)
        && match &req.request {
            Some(Request::Put(_)) | Some(Request::LeaseGrant(_)) => true,
            Some(Request::Txn(t)) => txn_puts(t),
            _ => false,
        };
    let refused_corrupt = corrupt(alarms)
        && matches!(
            &req.request,
            Some(Request::Put(_))
                | Some(Request::DeleteRange(_))
                | Some(Request::Txn(_))
                | Some(Request::Compaction(_))
                | Some(Request::LeaseGrant(_))
                | Some(Request::LeaseRevoke(_))
        );
    let result = match &req.request {
        _ if refused_corrupt => refuse(store, extra, ServerError::Corrupt),
        _ if denied.is_some() => auth_outcome(store, extra, denied, None),
        Some(r) if super::auth::is_auth_change(r) => {
            let change = super::auth::apply_change(auth, tokens, r, index, now, &mut extra);
            auth_outcome(store, extra, None, Some(change))
        }
        _ if capped => refuse(store, extra, ServerError::NoSpace),
        Some(Request::Alarm(r)) => alarm(store, alarms, r, extra),
        Some(Request::Put(r)) => {
            let exists = |id: i64| lessor.contains(LeaseId(id));
            store
                .put(r, &exists, extra)
                .map(|o| (Applied::Put(o.response), o.revision, o.events))
                .map_err(ServerError::from)
        }
        Some(Request::DeleteRange(r)) => store
            .delete_range(r, extra)
            .map(|o| (Applied::DeleteRange(o.response), o.revision, o.events))
            .map_err(ServerError::from),
        Some(Request::Txn(r)) => {
            let exists = |id: i64| lessor.contains(LeaseId(id));
            store
                .txn(r, &exists, extra)
                .map(|o| (Applied::Txn(o.response), o.revision, o.events))
                .map_err(ServerError::from)
        }
        Some(Request::Compaction(r)) => store
            .compact(r, extra)
            .map(|o| {
                let applied = Applied::Compaction(o.response, r.physical);
                (applied, o.revision, o.events)
            })
            .map_err(ServerError::from),
        Some(Request::Publish(attrs)) => publish(store, members, attrs, extra)
            .map(|()| (Applied::Published, store.current_revision(), Vec::new()))
            .map_err(ServerError::from),
        Some(Request::MemberUpdate(r)) => member_update(store, members, r, extra),
        Some(Request::LeaseGrant(r)) => lease_grant(store, lessor, r, extra, now),
        Some(Request::LeaseRevoke(r)) => lease_revoke(store, lessor, r, extra),
        Some(Request::LeaseCheckpoint(c)) => {
            lease_checkpoint(store, lessor, &c.checkpoints, extra, now)
        }
        // No request (and the auth changes, taken above).
        _ => write_extra(store, extra)
            .map(|()| (Applied::Published, store.current_revision(), Vec::new()))
            .map_err(ServerError::from),
    };
    if let Ok((_, _, events)) = &result {
        // Puts attach their keys, overwrites and deletes detach them.
        lessor.apply_events(events);
    }
    match result {
        Ok((applied, revision, events)) => ApplyOutcome {
            result: Ok(applied),
            revision,
            events,
            v2_events: Vec::new(),
        },
        Err(e) => ApplyOutcome {
            result: Err(e),
            revision: store.current_revision(),
            events: Vec::new(),
            v2_events: Vec::new(),
        },
    }
}

/// Applies a v2 keys write (or the leader's expiry sweep) to the v2 store:
/// its changed nodes and the store index go in one batch with the applied
/// index. The v2 store is not the MVCC key space: a v2 write makes no
/// revision, and auth and alarms (v3's) do not apply to it, as in etcd 3.4.
fn apply_v2(
    store: &MvccStore,
    v2: &mut v2store::Store,
    r: &cairn_proto::cairnpb::V2Request,
    extra: WriteBatch,
    unix_nanos: i64,
) -> ApplyOutcome {
    let ttl = v2store::Ttl {
        expire: (r.expiration != 0).then_some(r.expiration),
        refresh: r.refresh,
    };
    let compare = r.prev_index > 0 || !r.prev_value.is_empty();
    if r.method == "SYNC" {
        let swept = v2.delete_expired(r.time, unix_nanos);
        return persist_v2(store, v2, extra, Applied::V2Swept, swept);
    }
    let result = match (r.method.as_str(), r.prev_exist) {
        ("POST", _) => v2.create(&r.path, r.dir, &r.val, true, ttl.expire, unix_nanos),
        ("PUT", Some(true)) if !compare => v2.update(&r.path, &r.val, ttl, unix_nanos),
        ("PUT", Some(false)) => v2.create(&r.path, r.dir, &r.val, false, ttl.expire, unix_nanos),
        ("PUT", _) if compare => v2.compare_and_swap(
            &r.path,
            &r.prev_value,
            r.prev_index,
            &r.val,
            ttl,
            unix_nanos,
        ),
        ("PUT", _) => v2.set(&r.path, r.dir, &r.val, ttl, unix_nanos),
        ("DELETE", _) if compare => {
            v2.compare_and_delete(&r.path, &r.prev_value, r.prev_index, unix_nanos)
        }
        ("DELETE", _) => v2.delete(&r.path, r.dir, r.recursive, unix_nanos),
        (m, _) => Err(v2store::Error::new(
            v2store::ECODE_INVALID_FIELD,
            format!("unknown method {m}"),
            v2.index(),
        )),
    };
    let events = result.as_ref().map(|e| vec![e.clone()]).unwrap_or_default();
    let applied = Applied::V2(result.map(Box::new));
    persist_v2(store, v2, extra, applied, events)
}

/// Writes the v2 store's changed nodes and index with the applied index.
fn persist_v2(
    store: &MvccStore,
    v2: &mut v2store::Store,
    mut extra: WriteBatch,
    applied: Applied,
    v2_events: Vec<v2store::Event>,
) -> ApplyOutcome {
    for path in v2.take_dirty() {
        match v2.encode_node(&path) {
            Some(record) => extra.put(v2store::CF_V2, path.into_bytes(), record),
            None => extra.delete(v2store::CF_V2, path.into_bytes()),
        }
    }
    let (k, v) = v2.index_record();
    extra.put(v2store::CF_V2, k.to_vec(), v);
    if let Err(e) = write_extra(store, extra) {
        return ApplyOutcome {
            result: Err(e.into()),
            revision: store.current_revision(),
            events: Vec::new(),
            v2_events: Vec::new(),
        };
    }
    ApplyOutcome {
        result: Ok(applied),
        revision: store.current_revision(),
        events: Vec::new(),
        v2_events,
    }
}

/// Rebuilds the v2 store from storage.
pub fn load_v2(storage: &dyn Storage) -> Result<v2store::Store, StorageError> {
    let records = storage
        .scan(v2store::CF_V2, b"", None, Direction::Forward)?
        .collect::<Result<Vec<_>, _>>()?;
    v2store::Store::load(records).map_err(StorageError::Corruption)
}

/// Records that an entry without client effects (a leader's empty entry, a
/// conf change) was applied at `index`, with the member changes it made.
pub fn apply_marker(
    store: &MvccStore,
    index: u64,
    member_changes: WriteBatch,
) -> Result<(), StorageError> {
    let mut b = member_changes;
    b.extend(applied_batch(index));
    store.storage().write(b)
}

/// The result of an entry the auth checks refused, or of an auth change.
fn auth_outcome(
    store: &MvccStore,
    extra: WriteBatch,
    denied: Option<AuthError>,
    change: Option<Result<Option<(String, u64)>, AuthError>>,
) -> Result<Effects, ServerError> {
    match (denied, change) {
        (Some(e), _) | (None, Some(Err(e))) => refuse(store, extra, ServerError::Auth(e)),
        (None, token) => write_extra(store, extra)
            .map(|()| {
                let token = token.and_then(Result::ok).flatten();
                (Applied::Auth(token), store.current_revision(), Vec::new())
            })
            .map_err(ServerError::from),
    }
}

fn write_extra(store: &MvccStore, extra: WriteBatch) -> Result<(), MvccError> {
    store.storage().write(extra).map_err(MvccError::from)
}

type Effects = (Applied, Revision, Vec<Event>);

/// An expected failure still records the applied index.
fn refuse(store: &MvccStore, extra: WriteBatch, e: ServerError) -> Result<Effects, ServerError> {
    write_extra(store, extra)?;
    Err(e)
}

fn lease_grant(
    store: &MvccStore,
    lessor: &mut Lessor,
    r: &LeaseGrantRequest,
    mut extra: WriteBatch,
    now: MonoTime,
) -> Result<Effects, ServerError> {
    let id = LeaseId(r.id);
    let ttl = match lessor.check_grant(id, r.ttl) {
        Ok(ttl) => ttl,
        Err(e) => return refuse(store, extra, e.into()),
    };
    lease::persist::put_record(&mut extra, id, ttl, 0);
    write_extra(store, extra)?;
    let granted = lessor.grant(id, r.ttl, now).expect("checked just above");
    let resp = LeaseGrantResponse {
        header: None,
        id: r.id,
        ttl: granted,
        error: String::new(),
    };
    Ok((
        Applied::LeaseGrant(resp),
        store.current_revision(),
        Vec::new(),
    ))
}

/// Deletes the lease's keys in one revision (a txn of single-key deletes,
/// sorted so every member writes the same changes) together with the lease
/// record and the applied index.
fn lease_revoke(
    store: &mut MvccStore,
    lessor: &mut Lessor,
    r: &LeaseRevokeRequest,
    mut extra: WriteBatch,
) -> Result<Effects, ServerError> {
    let id = LeaseId(r.id);
    let keys = match lessor.keys(id) {
        Ok(keys) => keys,
        Err(e) => return refuse(store, extra, e.into()),
    };
    lease::persist::delete_record(&mut extra, id);
    let deletes = TxnRequest {
        success: keys
            .into_iter()
            .map(|key| RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key,
                        ..Default::default()
                    },
                )),
            })
            .collect(),
        ..Default::default()
    };
    let out = store.txn(&deletes, &|_| true, extra)?;
    lessor.revoke(id).expect("the lease existed above");
    let resp = LeaseRevokeResponse { header: None };
    Ok((Applied::LeaseRevoke(resp), out.revision, out.events))
}

fn lease_checkpoint(
    store: &MvccStore,
    lessor: &mut Lessor,
    checkpoints: &[cairn_proto::etcdserverpb::LeaseCheckpoint],
    mut extra: WriteBatch,
    now: MonoTime,
) -> Result<Effects, ServerError> {
    for cp in checkpoints {
        let id = LeaseId(cp.id);
        if lessor.checkpoint(id, cp.remaining_ttl, now) {
            lease::persist::write_record(&mut extra, lessor, id);
        }
    }
    write_extra(store, extra)?;
    Ok((
        Applied::LeaseCheckpoint,
        store.current_revision(),
        Vec::new(),
    ))
}

/// Rebuilds the lessor's replicated state from storage: the lease records,
/// then every live key that names a lease is attached to it.
pub fn load_lessor(store: &MvccStore, config: LessorConfig) -> Result<Lessor, MvccError> {
    let mut lessor = Lessor::new(config);
    for r in lease::persist::load(store.storage().as_ref())? {
        lessor.restore(LeaseId(r.id), r.ttl_secs, r.remaining_ttl_secs);
    }
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        keys_only: true,
        ..Default::default()
    };
    for kv in store.range(&all)?.kvs {
        if kv.lease != 0 {
            lessor.attach(&kv.key, LeaseId(kv.lease));
        }
    }
    Ok(lessor)
}

fn publish(
    store: &MvccStore,
    members: &mut BTreeMap<u64, MemberRecord>,
    attrs: &MemberAttributes,
    mut extra: WriteBatch,
) -> Result<(), MvccError> {
    if let Some(m) = members.get_mut(&attrs.id) {
        m.name.clone_from(&attrs.name);
        m.client_urls.clone_from(&attrs.client_urls);
        extra.put(CF_SERVER, member_key(m.id), m.encode_to_vec());
    }
    write_extra(store, extra)
}

/// A member's new peer URLs (etcd's MemberUpdate), refused with etcd's
/// errors if the id is not a member or another member has one of the URLs.
fn member_update(
    store: &MvccStore,
    members: &mut BTreeMap<u64, MemberRecord>,
    r: &cairn_proto::etcdserverpb::MemberUpdateRequest,
    mut extra: WriteBatch,
) -> Result<Effects, ServerError> {
    if !members.contains_key(&r.id) {
        return refuse(store, extra, ServerError::MemberNotFound);
    }
    let taken = members
        .values()
        .filter(|m| m.id != r.id)
        .any(|m| m.peer_urls.iter().any(|u| r.peer_ur_ls.contains(u)));
    if taken {
        return refuse(store, extra, ServerError::PeerUrlExists);
    }
    let m = members.get_mut(&r.id).expect("checked above");
    m.peer_urls.clone_from(&r.peer_ur_ls);
    extra.put(CF_SERVER, member_key(m.id), m.encode_to_vec());
    write_extra(store, extra)?;
    Ok((
        Applied::MembersChanged,
        store.current_revision(),
        Vec::new(),
    ))
}

/// Membership writes for an applied conf change: the member added or
/// changed, or the member removed (remembered as removed for good).
pub fn member_change_batch(added: Option<&MemberRecord>, removed: Option<u64>) -> WriteBatch {
    let mut b = WriteBatch::new();
    if let Some(m) = added {
        b.put(CF_SERVER, member_key(m.id), m.encode_to_vec());
    }
    if let Some(id) = removed {
        b.delete(CF_SERVER, member_key(id));
        b.put(CF_SERVER, removed_key(id), b"1".to_vec());
    }
    b
}

/// Encodes the applied state from a consistent storage snapshot.
pub fn encode_state_snapshot(
    snap: &dyn cairn_runtime::StorageSnapshot,
    applied_index: u64,
) -> Result<Vec<u8>, StorageError> {
    let mut out = StateSnapshot {
        applied_index,
        pairs: Vec::new(),
    };
    for cf in state_column_families() {
        for item in snap.scan(cf, b"", None, Direction::Forward)? {
            let (key, value) = item?;
            if cf == CF_SERVER && key == KEY_MEMBER_ID {
                continue; // the receiver keeps its own identity
            }
            out.pairs.push(StatePair {
                cf: cf.to_owned(),
                key,
                value,
            });
        }
    }
    Ok(out.encode_to_vec())
}

/// The writes that replace the applied state in `storage` with a received
/// snapshot whose Raft metadata is at `raft_index`. The caller writes them in
/// one batch with the Raft snapshot record (`raft::storage::ready_batch`), so
/// no prefix of the writes has the new applied index without the log that
/// covers it, and reopens the MVCC store afterwards.
///
/// A state applied at another index than the metadata says is refused: the
/// member would persist an applied index its log does not reach.
pub fn install_state_snapshot_batch(
    storage: &dyn Storage,
    data: &[u8],
    raft_index: u64,
) -> Result<WriteBatch, StorageError> {
    let snap = StateSnapshot::decode(data)
        .map_err(|e| StorageError::Corruption(format!("state snapshot: {e}")))?;
    if snap.applied_index != raft_index {
        return Err(StorageError::Corruption(format!(
            "state snapshot applied at {} under raft snapshot {raft_index}",
            snap.applied_index
        )));
    }
    let member_id = read_member_id(storage)?;
    let cluster_id = read_cluster_id(storage)?;
    let mut b = WriteBatch::new();
    for cf in state_column_families() {
        b.delete_range(cf, Vec::new(), vec![0xff; 64]);
    }
    for p in snap.pairs {
        b.put(p.cf, p.key, p.value);
    }
    if let Some(id) = member_id {
        b.put(CF_SERVER, KEY_MEMBER_ID, id.to_be_bytes().to_vec());
    }
    // A leader's state from before cluster ids were stored lacks it: keep ours.
    if let Some(id) = cluster_id {
        b.put(CF_SERVER, KEY_CLUSTER_ID, id.to_be_bytes().to_vec());
    }
    b.put(
        CF_SERVER,
        KEY_APPLIED,
        snap.applied_index.to_be_bytes().to_vec(),
    );
    Ok(b)
}
