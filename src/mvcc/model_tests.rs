//! quickcheck properties: random Put / Delete / Txn / Compact / Range
//! sequences over five keys, with syncs, clean restarts and crashes, checked
//! against a deliberately simple model — a per-key list of changes
//! `(main revision, Some((value, lease)) | None)`, from which every read is
//! recomputed from scratch (create revision, version, liveness).
//!
//! Properties:
//! - `store_matches_model_under_random_histories`: every response (kvs with
//!   create/mod revision and version, count, more, errors for compacted and
//!   future revisions, txn branches and in-txn reads) equals the model's;
//!   after each compaction Storage holds exactly what the model says survives;
//!   after a clean restart the state and HashKV are unchanged; after a crash
//!   the store equals the model at the last sync, including the server's
//!   `extra` (applied counter) — i.e. batches are atomic with `extra`.
//!   Each Range is also read through `range_read`, whole and in pieces,
//!   with every sort, keys_only, count_only and revision filters: the same
//!   response as `range`.
//! - `hash_kv_equals_pre_restart_hash_kv`: HashKV (every revision) and Hash
//!   are unchanged by a restart that rebuilds the index from Storage.

use std::collections::BTreeMap;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest,
};
use cairn_runtime::{Direction, SimDisk, WriteBatch};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

use super::tests::{block_on, fresh, no_lease_check, open_on};
use super::*;

const APPLIED_KEY: &[u8] = b"test/applied";

fn key(i: u8) -> Vec<u8> {
    vec![b'a' + i % 5]
}

/// `None`: single key; 5: `"\0"` (to the end); else a letter a..e.
fn range_end(e: Option<u8>) -> Vec<u8> {
    match e.map(|e| e % 6) {
        None => Vec::new(),
        Some(5) => vec![0],
        Some(e) => vec![b'a' + e],
    }
}

#[derive(Debug, Clone)]
enum SubOp {
    Put { key: u8, value: u8 },
    Delete { key: u8, end: Option<u8> },
    Range { key: u8, end: Option<u8> },
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        value: u8,
        lease: u8,
        ignore_value: bool,
        prev_kv: bool,
    },
    Delete {
        key: u8,
        end: Option<u8>,
        prev_kv: bool,
    },
    Txn {
        cmp_key: u8,
        cmp_version: u8,
        then: Vec<SubOp>,
        otherwise: Vec<SubOp>,
    },
    Range {
        key: u8,
        end: Option<u8>,
        rev: u8,
        limit: u8,
    },
    Compact {
        rev: u8,
    },
    Sync,
    Restart,
    Crash,
}

fn small_vec<T>(g: &mut Gen, f: impl Fn(&mut Gen) -> T) -> Vec<T> {
    let n = usize::arbitrary(g) % 4;
    (0..n).map(|_| f(g)).collect()
}

impl Arbitrary for SubOp {
    fn arbitrary(g: &mut Gen) -> Self {
        let k = u8::arbitrary(g);
        match u8::arbitrary(g) % 3 {
            0 => SubOp::Put {
                key: k,
                value: u8::arbitrary(g) % 4,
            },
            1 => SubOp::Delete {
                key: k,
                end: Option::arbitrary(g),
            },
            _ => SubOp::Range {
                key: k,
                end: Option::arbitrary(g),
            },
        }
    }
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let k = u8::arbitrary(g);
        match u8::arbitrary(g) % 20 {
            0..=5 => Op::Put {
                key: k,
                value: u8::arbitrary(g) % 4,
                lease: u8::arbitrary(g) % 3,
                ignore_value: u8::arbitrary(g) % 5 == 0,
                prev_kv: bool::arbitrary(g),
            },
            6..=8 => Op::Delete {
                key: k,
                end: Option::arbitrary(g),
                prev_kv: bool::arbitrary(g),
            },
            9..=11 => Op::Txn {
                cmp_key: k,
                cmp_version: u8::arbitrary(g) % 3,
                then: small_vec(g, SubOp::arbitrary),
                otherwise: small_vec(g, SubOp::arbitrary),
            },
            12..=14 => Op::Range {
                key: k,
                end: Option::arbitrary(g),
                rev: u8::arbitrary(g),
                limit: u8::arbitrary(g) % 4,
            },
            15 | 16 => Op::Compact {
                rev: u8::arbitrary(g),
            },
            17 => Op::Sync,
            18 => Op::Restart,
            _ => Op::Crash,
        }
    }
}

/// A kv as the model computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MKv {
    key: Vec<u8>,
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

type Change = (i64, Option<(Vec<u8>, i64)>);

#[derive(Debug, Clone)]
struct Model {
    /// Key → its changes in order: put `(value, lease)` or delete (`None`).
    hist: BTreeMap<Vec<u8>, Vec<Change>>,
    current: i64,
    /// -1 before any compaction (as etcd).
    compacted: i64,
    /// Write requests applied (what the server's `extra` records).
    applied: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            hist: BTreeMap::new(),
            current: 1,
            compacted: -1,
            applied: 0,
        }
    }

    fn state(&self, key: &[u8], at: i64) -> Option<MKv> {
        let mut state: Option<MKv> = None;
        for (rev, change) in self
            .hist
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(r, _)| *r <= at)
        {
            state = change.as_ref().map(|(value, lease)| {
                let (create_revision, version) = state
                    .as_ref()
                    .map_or((*rev, 1), |s| (s.create_revision, s.version + 1));
                MKv {
                    key: key.to_vec(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: *rev,
                    version,
                    lease: *lease,
                }
            });
        }
        state
    }

    fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
        match end {
            [] => k == key,
            [0] => k >= key,
            end => k >= key && k < end,
        }
    }

    fn range_at(&self, key: &[u8], end: &[u8], at: i64) -> Vec<MKv> {
        self.hist
            .keys()
            .filter(|k| Self::in_range(k, key, end))
            .filter_map(|k| self.state(k, at))
            .collect()
    }

    fn read(&self, key: &[u8], end: &[u8], rev: i64) -> Result<Vec<MKv>, MvccError> {
        if rev > self.current {
            return Err(MvccError::FutureRevision);
        }
        let at = if rev <= 0 { self.current } else { rev };
        if at < self.compacted {
            return Err(MvccError::Compacted);
        }
        Ok(self.range_at(key, end, at))
    }

    fn record(&mut self, key: &[u8], rev: i64, change: Option<(Vec<u8>, i64)>) {
        self.hist
            .entry(key.to_vec())
            .or_default()
            .push((rev, change));
    }

    /// Deletes the live keys of a range at `rev`; returns how many.
    fn delete(&mut self, key: &[u8], end: &[u8], rev: i64) -> usize {
        let live: Vec<_> = self
            .range_at(key, end, rev)
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        for k in &live {
            self.record(k, rev, None);
        }
        live.len()
    }

    /// How many changes survive physical compaction at `compacted`.
    fn expected_stored(&self) -> usize {
        let c = self.compacted;
        self.hist
            .values()
            .map(|changes| {
                let later = changes.iter().filter(|(r, _)| *r > c).count();
                let kept = changes
                    .iter()
                    .rfind(|(r, _)| *r <= c)
                    .is_some_and(|(_, ch)| ch.is_some());
                later + usize::from(kept)
            })
            .sum()
    }
}

fn from_store(resp: &RangeResponse) -> Vec<MKv> {
    resp.kvs
        .iter()
        .map(|kv| MKv {
            key: kv.key.clone(),
            value: kv.value.clone(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        })
        .collect()
}

fn sub_op_request(op: &SubOp) -> RequestOp {
    let request = match op {
        SubOp::Put { key: k, value } => Request::RequestPut(PutRequest {
            key: key(*k),
            value: vec![*value],
            ..Default::default()
        }),
        SubOp::Delete { key: k, end } => Request::RequestDeleteRange(DeleteRangeRequest {
            key: key(*k),
            range_end: range_end(*end),
            prev_kv: false,
        }),
        SubOp::Range { key: k, end } => Request::RequestRange(RangeRequest {
            key: key(*k),
            range_end: range_end(*end),
            ..Default::default()
        }),
    };
    RequestOp {
        request: Some(request),
    }
}

struct Harness {
    disk: SimDisk,
    store: MvccStore,
    model: Model,
    /// The model and HashKV as of the last sync: what a crash returns to.
    synced: (Model, HashKv),
}

impl Harness {
    fn new() -> Self {
        let (disk, store) = fresh();
        let hash = store.hash_kv(0).expect("hash of an empty store");
        Harness {
            disk,
            store,
            model: Model::new(),
            synced: (Model::new(), hash),
        }
    }

    /// The server's `extra`: the applied counter, advanced by every write request.
    fn extra(&mut self) -> WriteBatch {
        self.model.applied += 1;
        let mut b = WriteBatch::new();
        b.put(
            CF_META,
            APPLIED_KEY.to_vec(),
            self.model.applied.to_be_bytes().to_vec(),
        );
        b
    }

    fn stored_applied(&self) -> u64 {
        let raw = self
            .store
            .storage()
            .get(CF_META, APPLIED_KEY)
            .expect("meta readable");
        raw.map_or(0, |b| {
            u64::from_be_bytes(b.as_slice().try_into().expect("applied counter is 8 bytes"))
        })
    }

    fn run(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Put {
                key,
                value,
                lease,
                ignore_value,
                prev_kv,
            } => self.put(key, value, lease, *ignore_value, *prev_kv),
            Op::Delete {
                key: k,
                end,
                prev_kv,
            } => self.delete(&key(*k), &range_end(*end), *prev_kv),
            Op::Txn {
                cmp_key,
                cmp_version,
                then,
                otherwise,
            } => self.txn(*cmp_key, *cmp_version, then, otherwise),
            Op::Range {
                key: k,
                end,
                rev,
                limit,
            } => self.range(&key(*k), &range_end(*end), *rev, *limit),
            Op::Compact { rev } => self.compact(*rev),
            Op::Sync => {
                block_on(self.store.storage().sync()).map_err(|e| format!("sync: {e}"))?;
                self.synced = (
                    self.model.clone(),
                    self.store.hash_kv(0).map_err(|e| e.to_string())?,
                );
                Ok(())
            }
            Op::Restart => self.restart(),
            Op::Crash => self.crash(),
        }?;
        self.check_state()
    }

    fn put(
        &mut self,
        k: &u8,
        value: &u8,
        lease: &u8,
        ignore_value: bool,
        prev_kv: bool,
    ) -> Result<(), String> {
        let k = key(*k);
        let value = if ignore_value {
            Vec::new()
        } else {
            vec![*value]
        };
        let req = PutRequest {
            key: k.clone(),
            value: value.clone(),
            lease: *lease as i64,
            prev_kv,
            ignore_value,
            ignore_lease: false,
        };
        let extra = self.extra();
        let got = self.store.put(&req, &no_lease_check, extra);
        let rev = self.model.current + 1;
        let prev = self.model.state(&k, self.model.current);
        let want = match (&prev, ignore_value) {
            (None, true) => Err(MvccError::KeyNotFound),
            _ => Ok(()),
        };
        match (got, want) {
            (Err(e), Err(w)) if e == w => Ok(()),
            (Ok(out), Ok(())) => {
                let value = if ignore_value {
                    prev.clone().map(|p| p.value).unwrap_or_default()
                } else {
                    value
                };
                self.model.record(&k, rev, Some((value, *lease as i64)));
                self.model.current = rev;
                let got_prev = out.response.prev_kv.map(|kv| {
                    from_store(&RangeResponse {
                        kvs: vec![kv],
                        ..Default::default()
                    })
                });
                let want_prev = if prev_kv { prev.map(|p| vec![p]) } else { None };
                check(
                    out.revision.0 == rev && out.events.len() == 1,
                    "put outcome",
                    &out.revision,
                    &rev,
                )?;
                check(got_prev == want_prev, "put prev_kv", &got_prev, &want_prev)
            }
            (got, want) => Err(format!("put {req:?}: got {got:?}, model {want:?}")),
        }
    }

    fn delete(&mut self, k: &[u8], end: &[u8], prev_kv: bool) -> Result<(), String> {
        let req = DeleteRangeRequest {
            key: k.to_vec(),
            range_end: end.to_vec(),
            prev_kv,
        };
        let extra = self.extra();
        let out = self
            .store
            .delete_range(&req, extra)
            .map_err(|e| format!("delete {req:?}: {e}"))?;
        let prevs = self.model.range_at(k, end, self.model.current);
        let rev = self.model.current + 1;
        let deleted = self.model.delete(k, end, rev);
        if deleted > 0 {
            self.model.current = rev;
        }
        let got_prev = from_store(&RangeResponse {
            kvs: out.response.prev_kvs.clone(),
            ..Default::default()
        });
        let want_prev = if prev_kv { prevs } else { Vec::new() };
        check(
            out.response.deleted as usize == deleted,
            "deleted count",
            &out.response.deleted,
            &deleted,
        )?;
        check(
            out.revision.0 == self.model.current,
            "delete revision",
            &out.revision,
            &self.model.current,
        )?;
        check(
            out.events.len() == deleted,
            "delete events",
            &out.events.len(),
            &deleted,
        )?;
        check(
            got_prev == want_prev,
            "delete prev_kvs",
            &got_prev,
            &want_prev,
        )
    }

    fn txn(
        &mut self,
        cmp_key: u8,
        cmp_version: u8,
        then: &[SubOp],
        otherwise: &[SubOp],
    ) -> Result<(), String> {
        let req = TxnRequest {
            compare: vec![Compare {
                key: key(cmp_key),
                target: CompareTarget::Version as i32,
                result: CompareResult::Equal as i32,
                target_union: Some(TargetUnion::Version(cmp_version as i64)),
                range_end: Vec::new(),
            }],
            success: then.iter().map(sub_op_request).collect(),
            failure: otherwise.iter().map(sub_op_request).collect(),
        };
        if check_txn_request(&req, DEFAULT_MAX_TXN_OPS).is_err() {
            return Ok(()); // the API layer refuses it; it is never applied
        }
        let extra = self.extra();
        let out = self
            .store
            .txn(&req, &no_lease_check, extra)
            .map_err(|e| format!("txn {req:?}: {e}"))?;
        let version = self
            .model
            .state(&key(cmp_key), self.model.current)
            .map_or(0, |kv| kv.version);
        let succeeded = version == cmp_version as i64;
        check(
            out.response.succeeded == succeeded,
            "txn branch",
            &out.response.succeeded,
            &succeeded,
        )?;
        let ops = if succeeded { then } else { otherwise };
        let rev = self.model.current + 1;
        let mut changed = false;
        for (op, resp) in ops.iter().zip(&out.response.responses) {
            let head = if changed { rev } else { self.model.current };
            match (op, &resp.response) {
                (SubOp::Put { key: k, value }, Some(Response::ResponsePut(_))) => {
                    self.model.record(&key(*k), rev, Some((vec![*value], 0)));
                    changed = true;
                }
                (SubOp::Delete { key: k, end }, Some(Response::ResponseDeleteRange(d))) => {
                    let n = self.model.delete(&key(*k), &range_end(*end), rev);
                    changed |= n > 0;
                    check(d.deleted as usize == n, "txn deleted count", &d.deleted, &n)?;
                }
                (SubOp::Range { key: k, end }, Some(Response::ResponseRange(r))) => {
                    let want = self.model.range_at(&key(*k), &range_end(*end), head);
                    check(from_store(r) == want, "txn range", &from_store(r), &want)?;
                }
                (op, resp) => {
                    return Err(format!("txn response {resp:?} does not match op {op:?}"))
                }
            }
        }
        if changed {
            self.model.current = rev;
        }
        check(
            out.revision.0 == self.model.current,
            "txn revision",
            &out.revision,
            &self.model.current,
        )
    }

    fn range(&mut self, k: &[u8], end: &[u8], rev: u8, limit: u8) -> Result<(), String> {
        let rev = rev as i64 % (self.model.current + 2);
        let req = RangeRequest {
            key: k.to_vec(),
            range_end: end.to_vec(),
            revision: rev,
            limit: limit as i64,
            ..Default::default()
        };
        let got = self
            .store
            .range(&req)
            .map(|r| (from_store(&r), r.count, r.more));
        let want = self.model.read(k, end, rev).map(|all| {
            let count = all.len() as i64;
            let more = limit > 0 && all.len() > limit as usize;
            let kvs = if limit > 0 {
                all.into_iter().take(limit as usize).collect()
            } else {
                all
            };
            (kvs, count, more)
        });
        check(got == want, "range", &got, &want)?;
        self.range_read_matches_range(&req)
    }

    /// `range_read`, whole or in pieces, answers as `range` does, for every
    /// sort, with and without keys_only, count_only and a revision filter.
    fn range_read_matches_range(&self, base: &RangeRequest) -> Result<(), String> {
        use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
        let targets = [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ];
        for order in [SortOrder::None, SortOrder::Ascend, SortOrder::Descend] {
            for target in targets {
                for variant in 0..4 {
                    let mut req = base.clone();
                    req.set_sort_order(order);
                    req.set_sort_target(target);
                    req.keys_only = variant == 1;
                    req.count_only = variant == 2;
                    if variant == 3 {
                        req.min_mod_revision = base.revision / 2;
                        req.max_create_revision = base.revision;
                    }
                    let want = self.store.range(&req);
                    for whole_up_to in [0, 20, usize::MAX] {
                        let got = self
                            .store
                            .range_read(&req, whole_up_to)
                            .and_then(|r| match r {
                                RangeRead::Whole(resp) => Ok(resp),
                                RangeRead::Pieces(p) => Ok(RangeResponse {
                                    header: None,
                                    kvs: (0..p.len()).map(|i| p.kv(i)).collect::<Result<_, _>>()?,
                                    more: p.more,
                                    count: p.count,
                                }),
                            });
                        check(got == want, "range_read", &(&req, whole_up_to, &got), &want)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn compact(&mut self, rev: u8) -> Result<(), String> {
        let rev = rev as i64 % (self.model.current + 2);
        let extra = self.extra();
        let got = self
            .store
            .compact(
                &CompactionRequest {
                    revision: rev,
                    physical: true,
                },
                extra,
            )
            .map(|o| o.revision.0);
        let want = if rev <= self.model.compacted {
            Err(MvccError::Compacted)
        } else if rev > self.model.current {
            Err(MvccError::FutureRevision)
        } else {
            self.model.compacted = rev;
            Ok(self.model.current)
        };
        check(got == want, "compact", &got, &want)?;
        let stored = self
            .store
            .storage()
            .scan(CF_KV, &[], None, Direction::Forward)
            .map_err(|e| e.to_string())?
            .count();
        let expected = self.model.expected_stored();
        check(
            stored == expected,
            "stored changes after compaction",
            &stored,
            &expected,
        )
    }

    fn restart(&mut self) -> Result<(), String> {
        block_on(self.store.storage().sync()).map_err(|e| format!("sync: {e}"))?;
        let before = (
            self.store.hash_kv(0).map_err(|e| e.to_string())?,
            self.store.hash().map_err(|e| e.to_string())?,
        );
        self.store = open_on(&self.disk);
        let after = (
            self.store.hash_kv(0).map_err(|e| e.to_string())?,
            self.store.hash().map_err(|e| e.to_string())?,
        );
        check(before == after, "hashes across restart", &before, &after)?;
        self.synced = (self.model.clone(), after.0);
        Ok(())
    }

    fn crash(&mut self) -> Result<(), String> {
        self.disk.crash();
        self.store = open_on(&self.disk);
        self.model = self.synced.0.clone();
        let hash = self.store.hash_kv(0).map_err(|e| e.to_string())?;
        check(
            hash == self.synced.1,
            "HashKV after crash equals HashKV at the last sync",
            &hash,
            &self.synced.1,
        )
    }

    /// Current revision, compact revision, applied counter and the whole
    /// keyspace agree with the model.
    fn check_state(&self) -> Result<(), String> {
        let m = &self.model;
        let compacted = self.store.compact_revision().map_or(-1, |c| c.0);
        let got = (
            self.store.current_revision().0,
            compacted,
            self.stored_applied(),
        );
        let want = (m.current, m.compacted, m.applied);
        check(
            got == want,
            "revision, compact revision, applied",
            &got,
            &want,
        )?;
        let all = self.store.range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        });
        let all = all.map(|r| from_store(&r)).map_err(|e| e.to_string())?;
        let want = m.range_at(&[0], &[0], m.current);
        check(all == want, "whole keyspace", &all, &want)?;
        let live = self.store.live_keys();
        check(
            live == want.len(),
            "live key count equals the keys in the keyspace",
            &live,
            &want.len(),
        )
    }

    /// Every revision from 1 to one past current reads as the model says.
    fn check_history(&self) -> Result<(), String> {
        for rev in 1..=self.model.current + 1 {
            let got = self.store.range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: rev,
                ..Default::default()
            });
            let got = got.map(|r| from_store(&r));
            let want = self.model.read(&[0], &[0], rev);
            check(
                got == want,
                &format!("history at revision {rev}"),
                &got,
                &want,
            )?;
        }
        Ok(())
    }
}

fn check<T: std::fmt::Debug, U: std::fmt::Debug>(
    ok: bool,
    what: &str,
    got: &T,
    want: &U,
) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: store {got:?}, model {want:?}"))
    }
}

fn store_matches_model(ops: Vec<Op>) -> TestResult {
    let mut h = Harness::new();
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = h.run(op) {
            return TestResult::error(format!("op {i} {op:?}: {e}"));
        }
    }
    if let Err(e) = h.check_history() {
        return TestResult::error(e);
    }
    h.store.check_invariants();
    TestResult::passed()
}

#[test]
fn store_matches_model_under_random_histories() {
    QuickCheck::new()
        .tests(1000)
        .rng(Gen::new(100))
        .quickcheck(store_matches_model as fn(Vec<Op>) -> TestResult);
}

/// HashKV at every hashable revision is the same before and after a restart
/// (the index rebuilt from Storage) — what members compare for consistency.
fn hash_kv_survives_restart(ops: Vec<Op>) -> TestResult {
    let mut h = Harness::new();
    for op in ops
        .iter()
        .filter(|op| !matches!(op, Op::Restart | Op::Crash))
    {
        if let Err(e) = h.run(op) {
            return TestResult::error(format!("{op:?}: {e}"));
        }
    }
    let hashes = |s: &MvccStore| -> Vec<Result<HashKv, MvccError>> {
        (0..=s.current_revision().0 + 1)
            .map(|r| s.hash_kv(r))
            .collect()
    };
    let before = (hashes(&h.store), h.store.hash());
    if let Err(e) = h.restart() {
        return TestResult::error(e);
    }
    let after = (hashes(&h.store), h.store.hash());
    if before != after {
        return TestResult::error(format!("hashes before restart {before:?}, after {after:?}"));
    }
    TestResult::passed()
}

#[test]
fn hash_kv_equals_pre_restart_hash_kv() {
    QuickCheck::new()
        .tests(300)
        .rng(Gen::new(100))
        .quickcheck(hash_kv_survives_restart as fn(Vec<Op>) -> TestResult);
}
