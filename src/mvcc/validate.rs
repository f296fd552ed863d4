//! etcd's request checks made before a request is proposed (v3rpc `key.go`):
//! empty keys, `ignore_*` together with a value/lease, too many txn ops, and
//! txn writes that overlap (`duplicate key given in txn request`).
//!
//! They are pure functions of the request, so the API layer calls them before
//! proposing and MVCC's apply path does not repeat them.
//! Tests: `tests.rs` (`txn_duplicate_key_rules_follow_etcd`, …).

use std::collections::BTreeSet;

use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::MvccError;

/// etcd's `--max-txn-ops` default.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

pub fn check_range_request(r: &RangeRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

pub fn check_put_request(r: &PutRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_request(r: &DeleteRangeRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// All of etcd's checks on a txn: op counts and keys recursively, then
/// overlapping writes in either branch.
pub fn check_txn_request(r: &TxnRequest, max_txn_ops: usize) -> Result<(), MvccError> {
    check_txn_ops(r, max_txn_ops as i64)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// etcd's checkTxnRequest: nested txns get the budget minus this level's count.
fn check_txn_ops(r: &TxnRequest, max_txn_ops: i64) -> Result<(), MvccError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len()) as i64;
    if opc > max_txn_ops {
        return Err(MvccError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_request_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, max_txn_ops: i64) -> Result<(), MvccError> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range_request(r),
        Some(Request::RequestPut(r)) => check_put_request(r),
        Some(Request::RequestDeleteRange(r)) => check_delete_request(r),
        Some(Request::RequestTxn(t)) => check_txn_ops(t, max_txn_ops),
        // etcd answers an empty op with "key not found".
        None => Err(MvccError::KeyNotFound),
    }
}

/// A deleted interval `[begin, end)` as etcd's duplicate check sees it:
/// bytes compared literally, so a `"\0"` range end covers nothing (an etcd
/// quirk kept for compatibility); an empty range end is the single key.
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

impl Interval {
    fn of(d: &DeleteRangeRequest) -> Interval {
        let end = if d.range_end.is_empty() {
            let mut e = d.key.clone();
            e.push(0);
            e
        } else {
            d.range_end.clone()
        };
        Interval {
            begin: d.key.clone(),
            end,
        }
    }

    fn hits(&self, key: &[u8]) -> bool {
        self.begin.as_slice() <= key && key < self.end.as_slice()
    }
}

/// etcd's checkIntervals: no key is put twice on one path, and no put falls
/// in a range deleted on the same path; puts in the two branches of one
/// nested txn may repeat a key (only one branch runs). Returns the puts and
/// deletes of `ops` for the enclosing level.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<Interval>), MvccError> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Interval::of(d)),
            _ => None,
        })
        .collect();
    let hit = |dels: &[Interval], k: &[u8]| dels.iter().any(|d| d.hits(k));
    let mut puts = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (then_puts, then_dels) = check_intervals(&t.success)?;
        let (else_puts, else_dels) = check_intervals(&t.failure)?;
        for k in &then_puts {
            if puts.contains(k) || hit(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in else_puts {
            if (puts.contains(&k) && !then_puts.contains(&k)) || hit(&dels, &k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || hit(&dels, &p.key) {
            return Err(MvccError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}
