//! Unit tests of MVCC semantics against etcd 3.5's behaviour, each named after
//! the property it checks. Shared helpers are used by `model_tests.rs` too.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest,
};
use cairn_proto::mvccpb::event::EventType;
use cairn_runtime::{Direction, SimDisk, SimStorage, WriteBatch};

use super::*;

// ---- helpers ----

pub(super) fn open_on(disk: &SimDisk) -> MvccStore {
    let storage = SimStorage::open(disk, COLUMN_FAMILIES).expect("a sim disk opens");
    MvccStore::open(Arc::new(storage)).expect("an mvcc store opens on a sim disk")
}

pub(super) fn fresh() -> (SimDisk, MvccStore) {
    let disk = SimDisk::new();
    let store = open_on(&disk);
    (disk, store)
}

/// Drives a future that never waits (SimStorage syncs without latency).
pub(super) fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

pub(super) fn no_lease_check(_: i64) -> bool {
    true
}

pub(super) fn put_req(key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

pub(super) fn range_req(key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

fn put(s: &mut MvccStore, key: &[u8], value: &[u8]) -> Revision {
    s.put(&put_req(key, value), &no_lease_check, WriteBatch::new())
        .expect("put succeeds")
        .revision
}

fn put_lease(s: &mut MvccStore, key: &[u8], value: &[u8], lease: i64) -> Revision {
    let req = PutRequest {
        lease,
        ..put_req(key, value)
    };
    s.put(&req, &no_lease_check, WriteBatch::new())
        .expect("put succeeds")
        .revision
}

fn delete(s: &mut MvccStore, key: &[u8], range_end: &[u8]) -> (i64, Revision) {
    let req = DeleteRangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        prev_kv: false,
    };
    let out = s
        .delete_range(&req, WriteBatch::new())
        .expect("delete succeeds");
    (out.response.deleted, out.revision)
}

fn keys(resp: &RangeResponse) -> Vec<Vec<u8>> {
    resp.kvs.iter().map(|kv| kv.key.clone()).collect()
}

fn get(s: &MvccStore, key: &[u8]) -> RangeResponse {
    s.range(&range_req(key, b"")).expect("range succeeds")
}

fn op_put(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_req(key, value))),
    }
}

fn op_range(key: &[u8], range_end: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(range_req(key, range_end))),
    }
}

fn op_delete(key: &[u8], range_end: &[u8]) -> RequestOp {
    let req = DeleteRangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        prev_kv: false,
    };
    RequestOp {
        request: Some(Request::RequestDeleteRange(req)),
    }
}

fn op_txn(t: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(t)),
    }
}

fn cmp(key: &[u8], target: CompareTarget, result: CompareResult, union: TargetUnion) -> Compare {
    Compare {
        key: key.to_vec(),
        target: target as i32,
        result: result as i32,
        target_union: Some(union),
        range_end: Vec::new(),
    }
}

fn txn(s: &mut MvccStore, t: &TxnRequest) -> WriteOutcome<cairn_proto::etcdserverpb::TxnResponse> {
    s.txn(t, &no_lease_check, WriteBatch::new())
        .expect("txn succeeds")
}

/// a..e with values 5,4,3,2,1 and a written three times (version 3).
fn five_keys() -> MvccStore {
    let (_, mut s) = fresh();
    for (k, v) in [
        (b"a", b"5"),
        (b"b", b"4"),
        (b"c", b"3"),
        (b"d", b"2"),
        (b"e", b"1"),
    ] {
        put(&mut s, k, v);
    }
    put(&mut s, b"a", b"5");
    put(&mut s, b"a", b"5");
    s
}

// ---- revisions, versions ----

#[test]
fn first_write_gets_revision_two_like_etcd() {
    let (_, mut s) = fresh();
    assert_eq!(s.current_revision(), Revision(1));
    assert_eq!(put(&mut s, b"a", b"1"), Revision(2));
    assert_eq!(put(&mut s, b"b", b"1"), Revision(3));
}

#[test]
fn version_counts_puts_and_resets_after_delete() {
    let (_, mut s) = fresh();
    put(&mut s, b"k", b"1");
    put(&mut s, b"k", b"2");
    let kv = get(&s, b"k").kvs[0].clone();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    delete(&mut s, b"k", b"");
    put(&mut s, b"k", b"3");
    let kv = get(&s, b"k").kvs[0].clone();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

// ---- range ----

#[test]
fn range_end_rules_single_span_and_nul() {
    let mut s = five_keys();
    put(&mut s, b"\0x", b"nul");
    assert_eq!(
        keys(&s.range(&range_req(b"b", b"")).expect("range")),
        vec![b"b".to_vec()]
    );
    assert_eq!(
        keys(&s.range(&range_req(b"b", b"d")).expect("range")),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        keys(&s.range(&range_req(b"c", b"\0")).expect("range")),
        vec![b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]
    );
    assert_eq!(s.range(&range_req(b"\0", b"\0")).expect("range").count, 6);
    assert_eq!(s.range(&range_req(b"d", b"b")).expect("range").count, 0);
    assert_eq!(s.range(&range_req(b"zz", b"")).expect("range").count, 0);
}

#[test]
fn range_none_order_with_key_target_keeps_key_order() {
    let s = five_keys();
    let req = RangeRequest {
        sort_target: SortTarget::Key as i32,
        ..range_req(b"a", b"\0")
    };
    assert_eq!(
        keys(&s.range(&req).expect("range")),
        [b"a", b"b", b"c", b"d", b"e"]
            .iter()
            .map(|k| k.to_vec())
            .collect::<Vec<_>>()
    );
}

#[test]
fn range_none_order_with_other_target_sorts_ascending() {
    let s = five_keys();
    let req = RangeRequest {
        sort_target: SortTarget::Value as i32,
        ..range_req(b"a", b"\0")
    };
    assert_eq!(
        keys(&s.range(&req).expect("range")),
        [b"e", b"d", b"c", b"b", b"a"]
            .iter()
            .map(|k| k.to_vec())
            .collect::<Vec<_>>()
    );
}

#[test]
fn range_sorts_by_each_target_and_order() {
    let s = five_keys();
    let sorted = |order: SortOrder, target: SortTarget| {
        let req = RangeRequest {
            sort_order: order as i32,
            sort_target: target as i32,
            ..range_req(b"a", b"\0")
        };
        keys(&s.range(&req).expect("range")).concat()
    };
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Key), b"edcba");
    assert_eq!(sorted(SortOrder::Ascend, SortTarget::Value), b"edcba");
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Mod), b"aedcb");
    assert_eq!(sorted(SortOrder::Ascend, SortTarget::Create), b"abcde");
    // Ties keep key order: b..e all have version 1.
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Version), b"abcde");
    assert_eq!(sorted(SortOrder::Ascend, SortTarget::Version), b"bcdea");
}

#[test]
fn range_limit_sets_more_and_count_ignores_limit() {
    let s = five_keys();
    let resp = s
        .range(&RangeRequest {
            limit: 2,
            ..range_req(b"a", b"\0")
        })
        .expect("range");
    assert_eq!(
        (keys(&resp).concat(), resp.more, resp.count),
        (b"ab".to_vec(), true, 5)
    );
    let resp = s
        .range(&RangeRequest {
            limit: 5,
            ..range_req(b"a", b"\0")
        })
        .expect("range");
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (5, false, 5));
    let resp = s
        .range(&RangeRequest {
            limit: 2,
            sort_order: SortOrder::Descend as i32,
            ..range_req(b"a", b"\0")
        })
        .expect("range");
    assert_eq!((keys(&resp).concat(), resp.more), (b"ed".to_vec(), true));
}

#[test]
fn range_count_only_and_keys_only() {
    let s = five_keys();
    let resp = s
        .range(&RangeRequest {
            count_only: true,
            ..range_req(b"a", b"\0")
        })
        .expect("range");
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (0, 5, false));
    let resp = s
        .range(&RangeRequest {
            keys_only: true,
            ..range_req(b"a", b"c")
        })
        .expect("range");
    assert_eq!(keys(&resp), vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(resp
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version > 0));
}

#[test]
fn range_min_max_filters_prune_kvs_but_not_count() {
    let s = five_keys(); // a created 2 mod 8; b..e created and modified at 3..6
    let run = |req: RangeRequest| {
        let resp = s
            .range(&RangeRequest {
                key: b"a".to_vec(),
                range_end: b"\0".to_vec(),
                ..req
            })
            .expect("range");
        (keys(&resp).concat(), resp.count)
    };
    assert_eq!(
        run(RangeRequest {
            min_mod_revision: 5,
            ..Default::default()
        }),
        (b"ade".to_vec(), 5)
    );
    assert_eq!(
        run(RangeRequest {
            max_mod_revision: 4,
            ..Default::default()
        }),
        (b"bc".to_vec(), 5)
    );
    assert_eq!(
        run(RangeRequest {
            min_create_revision: 4,
            ..Default::default()
        }),
        (b"cde".to_vec(), 5)
    );
    assert_eq!(
        run(RangeRequest {
            max_create_revision: 3,
            ..Default::default()
        }),
        (b"ab".to_vec(), 5)
    );
    let resp = s
        .range(&RangeRequest {
            min_mod_revision: 4,
            limit: 1,
            ..range_req(b"a", b"\0")
        })
        .expect("range");
    assert_eq!((keys(&resp).concat(), resp.more), (b"a".to_vec(), true));
}

#[test]
fn range_at_past_revision_sees_old_values() {
    let (_, mut s) = fresh();
    put(&mut s, b"k", b"1");
    put(&mut s, b"k", b"2");
    delete(&mut s, b"k", b"");
    let at = |rev| {
        s.range(&RangeRequest {
            revision: rev,
            ..range_req(b"k", b"")
        })
        .expect("range")
    };
    assert_eq!(at(1).count, 0);
    assert_eq!(at(2).kvs[0].value, b"1");
    assert_eq!(at(3).kvs[0].value, b"2");
    assert_eq!(at(4).count, 0);
}

#[test]
fn range_read_pieces_survive_a_later_compaction_and_overwrite() {
    let (_, mut s) = fresh();
    for i in 0..20u8 {
        put(&mut s, &[b'k', i], &[i; 100]);
    }
    let req = range_req(b"k", b"l");
    let want = s.range(&req).expect("range");
    let RangeRead::Pieces(pieces) = s.range_read(&req, 1000).expect("range_read") else {
        panic!("20 kvs of 100 bytes are more than 1000 bytes");
    };
    // Overwrite and delete everything, then compact the planned revisions away.
    for i in 0..20u8 {
        put(&mut s, &[b'k', i], b"new");
    }
    delete(&mut s, b"k", b"l");
    let rev = s.current_revision().0;
    s.compact(
        &CompactionRequest {
            revision: rev,
            physical: true,
        },
        WriteBatch::new(),
    )
    .expect("compact");
    let got: Vec<_> = (0..pieces.len())
        .map(|i| pieces.kv(i).expect("kv"))
        .collect();
    assert_eq!(got, want.kvs);
    assert_eq!((pieces.count, pieces.more), (20, false));
    let RangeRead::Whole(small) = s.range_read(&req, usize::MAX).expect("range_read") else {
        panic!("an empty range is answered whole");
    };
    assert_eq!(small.count, 0);
}

#[test]
fn range_at_future_revision_fails() {
    let (_, mut s) = fresh();
    put(&mut s, b"k", b"1");
    let err = s
        .range(&RangeRequest {
            revision: 3,
            ..range_req(b"k", b"")
        })
        .unwrap_err();
    assert_eq!(err, MvccError::FutureRevision);
    assert_eq!(
        err.to_string(),
        "mvcc: required revision is a future revision"
    );
}

// ---- put / delete ----

#[test]
fn put_prev_kv_returns_the_previous_value() {
    let (_, mut s) = fresh();
    let req = PutRequest {
        prev_kv: true,
        ..put_req(b"k", b"1")
    };
    assert_eq!(
        s.put(&req, &no_lease_check, WriteBatch::new())
            .expect("put")
            .response
            .prev_kv,
        None
    );
    let req = PutRequest {
        prev_kv: true,
        ..put_req(b"k", b"2")
    };
    let prev = s
        .put(&req, &no_lease_check, WriteBatch::new())
        .expect("put")
        .response
        .prev_kv
        .expect("prev kv");
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision, prev.version),
        (b"1".as_slice(), 2, 1)
    );
}

#[test]
fn put_ignore_value_and_ignore_lease_need_an_existing_key() {
    let (_, mut s) = fresh();
    for req in [
        PutRequest {
            ignore_value: true,
            ..put_req(b"k", b"")
        },
        PutRequest {
            ignore_lease: true,
            ..put_req(b"k", b"v")
        },
    ] {
        let err = s.put(&req, &no_lease_check, WriteBatch::new()).unwrap_err();
        assert_eq!(
            (err.clone(), err.to_string()),
            (
                MvccError::KeyNotFound,
                "etcdserver: key not found".to_owned()
            )
        );
    }
    assert_eq!(s.current_revision(), Revision(1));
    put_lease(&mut s, b"k", b"v1", 7);
    let req = PutRequest {
        ignore_value: true,
        lease: 8,
        ..put_req(b"k", b"")
    };
    s.put(&req, &no_lease_check, WriteBatch::new())
        .expect("ignore_value put");
    let kv = get(&s, b"k").kvs[0].clone();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (b"v1".as_slice(), 8, 2)
    );
    let req = PutRequest {
        ignore_lease: true,
        ..put_req(b"k", b"v2")
    };
    s.put(&req, &no_lease_check, WriteBatch::new())
        .expect("ignore_lease put");
    let kv = get(&s, b"k").kvs[0].clone();
    assert_eq!((kv.value.as_slice(), kv.lease), (b"v2".as_slice(), 8));
}

#[test]
fn put_with_unknown_lease_fails_without_writing() {
    let (_, mut s) = fresh();
    let req = PutRequest {
        lease: 9,
        ..put_req(b"k", b"v")
    };
    assert_eq!(
        s.put(&req, &|id| id != 9, WriteBatch::new()).unwrap_err(),
        MvccError::LeaseNotFound
    );
    assert_eq!(s.current_revision(), Revision(1));
}

#[test]
fn delete_counts_deleted_keys_and_returns_prev_kvs() {
    let mut s = five_keys();
    let req = DeleteRangeRequest {
        key: b"b".to_vec(),
        range_end: b"e".to_vec(),
        prev_kv: true,
    };
    let out = s.delete_range(&req, WriteBatch::new()).expect("delete");
    assert_eq!(out.response.deleted, 3);
    assert_eq!(
        out.response
            .prev_kvs
            .iter()
            .map(|kv| kv.value.clone())
            .collect::<Vec<_>>()
            .concat(),
        b"432"
    );
    assert_eq!(out.revision, Revision(9));
    assert_eq!(s.range(&range_req(b"a", b"\0")).expect("range").count, 2);
}

#[test]
fn a_lone_delete_range_holds_one_exactly_sized_pending_list() {
    // Memory of a large DeleteRange (issue 24, item 3): the tombstones come
    // straight from the index into a list sized by counting first.
    let mut s = fresh().1;
    for i in 0..1000 {
        put(&mut s, format!("k{i:04}").as_bytes(), b"v");
    }
    let req = DeleteRangeRequest {
        key: b"k0".to_vec(),
        range_end: b"k1".to_vec(),
        prev_kv: false,
    };
    let mut exec = write::Exec::single(&s);
    let resp = exec.delete_range(&req).expect("delete executes");
    assert_eq!(resp.deleted, 1000);
    assert_eq!(exec.p.changes.len(), 1000);
    assert_eq!(exec.p.changes.capacity(), 1000);
    assert!(exec.p.changes.iter().all(|c| c.tombstone));
    assert!(exec.p.overlay.is_empty(), "a lone delete keeps no overlay");
}

#[test]
fn a_txn_deleting_before_and_after_its_puts_sees_each_step() {
    // The first delete of a txn takes the index's keys directly; a later one
    // must see the txn's own puts (the overlay).
    let mut s = five_keys();
    let t = TxnRequest {
        success: vec![
            op_delete(b"a", b"c"),
            op_put(b"b", b"new"),
            op_range(b"a", b"z"),
            op_delete(b"a", b"d"),
            op_range(b"a", b"z"),
        ],
        ..Default::default()
    };
    let out = txn(&mut s, &t);
    let r = &out.response.responses;
    let deleted = |i: usize| match &r[i].response {
        Some(Response::ResponseDeleteRange(d)) => d.deleted,
        other => panic!("not a delete: {other:?}"),
    };
    let count = |i: usize| match &r[i].response {
        Some(Response::ResponseRange(g)) => g.count,
        other => panic!("not a range: {other:?}"),
    };
    assert_eq!((deleted(0), count(2), deleted(3), count(4)), (2, 4, 2, 2));
    assert_eq!(s.range(&range_req(b"a", b"z")).expect("range").count, 2);
}

#[test]
fn deleting_nothing_does_not_bump_the_revision() {
    let mut s = five_keys();
    let before = s.current_revision();
    assert_eq!(delete(&mut s, b"x", b"z"), (0, before));
    assert_eq!(s.current_revision(), before);
}

// ---- events and exactly-once ----

#[test]
fn writes_return_events_with_revisions_and_optional_prev_kv() {
    let (_, mut s) = fresh();
    let out = s
        .put(&put_req(b"k", b"1"), &no_lease_check, WriteBatch::new())
        .expect("put");
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].r#type, EventType::Put as i32);
    assert_eq!(out.events[0].kv.as_ref().map(|kv| kv.mod_revision), Some(2));
    s.set_events_prev_kv(true);
    let out = s
        .delete_range(
            &DeleteRangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            },
            WriteBatch::new(),
        )
        .expect("delete");
    let ev = &out.events[0];
    assert_eq!(ev.r#type, EventType::Delete as i32);
    let kv = ev.kv.clone().expect("tombstone kv");
    assert_eq!(
        (
            kv.key.as_slice(),
            kv.mod_revision,
            kv.create_revision,
            kv.version
        ),
        (b"k".as_slice(), 3, 0, 0)
    );
    assert_eq!(
        ev.prev_kv.as_ref().map(|p| p.value.clone()),
        Some(b"1".to_vec())
    );
    assert_eq!(
        s.events_between(Revision(2), Revision(3), true)
            .expect("history")
            .len(),
        2
    );
}

#[test]
fn extra_batch_is_written_with_the_changes_and_on_expected_errors() {
    let (_, mut s) = fresh();
    let extra = |n: u8| {
        let mut b = WriteBatch::new();
        b.put(CF_META, b"server/applied".to_vec(), vec![n]);
        b
    };
    let applied = |s: &MvccStore| s.storage().get(CF_META, b"server/applied").expect("get");
    s.put(&put_req(b"k", b"1"), &no_lease_check, extra(1))
        .expect("put");
    assert_eq!(applied(&s), Some(vec![1]));
    let req = PutRequest {
        ignore_value: true,
        ..put_req(b"missing", b"")
    };
    assert!(s.put(&req, &no_lease_check, extra(2)).is_err());
    assert_eq!(applied(&s), Some(vec![2]));
    s.delete_range(
        &DeleteRangeRequest {
            key: b"none".to_vec(),
            ..Default::default()
        },
        extra(3),
    )
    .expect("delete");
    assert_eq!(applied(&s), Some(vec![3]));
    assert!(s
        .compact(
            &CompactionRequest {
                revision: 99,
                physical: false
            },
            extra(4)
        )
        .is_err());
    assert_eq!(applied(&s), Some(vec![4]));
}

// ---- txn ----

#[test]
fn txn_compare_results_for_every_target() {
    let (_, mut s) = fresh();
    put_lease(&mut s, b"k", b"m", 5); // create 2, mod 2, version 1, lease 5
    use CompareResult::*;
    use CompareTarget as T;
    let cases = [
        (
            T::Value,
            TargetUnion::Value(b"m".to_vec()),
            [true, false, false, false],
        ),
        (
            T::Value,
            TargetUnion::Value(b"a".to_vec()),
            [false, true, false, true],
        ),
        (
            T::Version,
            TargetUnion::Version(2),
            [false, false, true, true],
        ),
        (
            T::Create,
            TargetUnion::CreateRevision(2),
            [true, false, false, false],
        ),
        (
            T::Mod,
            TargetUnion::ModRevision(1),
            [false, true, false, true],
        ),
        (T::Lease, TargetUnion::Lease(5), [true, false, false, false]),
    ];
    for (target, union, want) in cases {
        for (result, want) in [Equal, Greater, Less, NotEqual].into_iter().zip(want) {
            let t = TxnRequest {
                compare: vec![cmp(b"k", target, result, union.clone())],
                ..Default::default()
            };
            assert_eq!(
                txn(&mut s, &t).response.succeeded,
                want,
                "{target:?} {result:?} {union:?}"
            );
        }
    }
}

#[test]
fn txn_compare_on_missing_key_fails_for_value_and_sees_zero_otherwise() {
    let (_, mut s) = fresh();
    let value = TxnRequest {
        compare: vec![cmp(
            b"x",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(Vec::new()),
        )],
        ..Default::default()
    };
    assert!(!txn(&mut s, &value).response.succeeded);
    let version = TxnRequest {
        compare: vec![cmp(
            b"x",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        ..Default::default()
    };
    assert!(txn(&mut s, &version).response.succeeded);
}

#[test]
fn txn_compare_with_range_end_needs_every_key() {
    let mut s = five_keys();
    let mut c = cmp(
        b"b",
        CompareTarget::Version,
        CompareResult::Equal,
        TargetUnion::Version(1),
    );
    c.range_end = b"e".to_vec();
    assert!(
        txn(
            &mut s,
            &TxnRequest {
                compare: vec![c.clone()],
                ..Default::default()
            }
        )
        .response
        .succeeded
    );
    c.range_end = b"\0".to_vec();
    c.key = b"a".to_vec();
    assert!(
        !txn(
            &mut s,
            &TxnRequest {
                compare: vec![c],
                ..Default::default()
            }
        )
        .response
        .succeeded
    );
}

#[test]
fn txn_writes_share_one_revision_and_reads_see_earlier_writes() {
    let (_, mut s) = fresh();
    put(&mut s, b"b", b"old");
    let t = TxnRequest {
        compare: vec![],
        success: vec![
            op_put(b"a", b"1"),
            op_range(b"a", b"c"),
            op_delete(b"b", b""),
            op_range(b"a", b"c"),
        ],
        failure: vec![],
    };
    let out = txn(&mut s, &t);
    assert_eq!(out.revision, Revision(3));
    assert_eq!(out.events.len(), 2);
    let ranges: Vec<_> = out
        .response
        .responses
        .iter()
        .filter_map(|r| match &r.response {
            Some(Response::ResponseRange(rr)) => Some(keys(rr).concat()),
            _ => None,
        })
        .collect();
    assert_eq!(ranges, vec![b"ab".to_vec(), b"a".to_vec()]);
    let kv = get(&s, b"a").kvs[0].clone();
    assert_eq!((kv.mod_revision, kv.create_revision), (3, 3));
    assert_eq!(s.current_revision(), Revision(3));
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let (_, mut s) = fresh();
    let inner = TxnRequest {
        compare: vec![cmp(
            b"a",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        success: vec![op_put(b"inner", b"then")],
        failure: vec![op_put(b"inner", b"else")],
    };
    let outer = TxnRequest {
        compare: vec![],
        success: vec![op_put(b"a", b"1"), op_txn(inner)],
        failure: vec![],
    };
    let out = txn(&mut s, &outer);
    match &out.response.responses[1].response {
        Some(Response::ResponseTxn(t)) => assert!(t.succeeded),
        other => panic!("expected a nested txn response, got {other:?}"),
    }
    assert_eq!(get(&s, b"inner").kvs[0].value, b"then");
    assert_eq!(out.revision, Revision(2));
}

#[test]
fn read_only_txn_does_not_bump_the_revision() {
    let mut s = five_keys();
    let t = TxnRequest {
        success: vec![op_range(b"a", b"\0")],
        ..Default::default()
    };
    let out = txn(&mut s, &t);
    assert_eq!(out.revision, Revision(8));
    assert_eq!(s.read_txn(&t).expect("read txn").responses.len(), 1);
    let w = TxnRequest {
        success: vec![op_put(b"a", b"1")],
        ..Default::default()
    };
    assert_eq!(s.read_txn(&w).unwrap_err(), MvccError::NotReadOnly);
}

#[test]
fn txn_ignore_value_on_missing_key_fails_whole_txn() {
    let (_, mut s) = fresh();
    let bad = PutRequest {
        ignore_value: true,
        ..put_req(b"missing", b"")
    };
    let t = TxnRequest {
        success: vec![
            op_put(b"a", b"1"),
            RequestOp {
                request: Some(Request::RequestPut(bad)),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        s.txn(&t, &no_lease_check, WriteBatch::new()).unwrap_err(),
        MvccError::KeyNotFound
    );
    assert_eq!(
        (s.current_revision(), get(&s, b"a").count),
        (Revision(1), 0)
    );
}

#[test]
fn txn_range_at_future_revision_fails_before_writing() {
    let (_, mut s) = fresh();
    let mut r = range_req(b"a", b"");
    r.revision = 2;
    let t = TxnRequest {
        success: vec![
            op_put(b"a", b"1"),
            RequestOp {
                request: Some(Request::RequestRange(r)),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        s.txn(&t, &no_lease_check, WriteBatch::new()).unwrap_err(),
        MvccError::FutureRevision
    );
    assert_eq!(s.current_revision(), Revision(1));
}

#[test]
fn txn_duplicate_key_rules_follow_etcd() {
    let check = |success: Vec<RequestOp>| {
        check_txn_request(
            &TxnRequest {
                success,
                ..Default::default()
            },
            DEFAULT_MAX_TXN_OPS,
        )
    };
    assert_eq!(
        check(vec![op_put(b"a", b"1"), op_put(b"a", b"2")]),
        Err(MvccError::DuplicateKey)
    );
    assert_eq!(
        check(vec![op_delete(b"a", b"c"), op_put(b"b", b"2")]),
        Err(MvccError::DuplicateKey)
    );
    assert_eq!(
        check(vec![op_put(b"a", b"1"), op_delete(b"a", b"")]),
        Err(MvccError::DuplicateKey)
    );
    assert_eq!(
        check(vec![op_delete(b"a", b"c"), op_delete(b"b", b"d")]),
        Ok(())
    );
    assert_eq!(check(vec![op_put(b"a", b"1"), op_put(b"b", b"1")]), Ok(()));
    // then/else of one nested txn may write the same key: only one runs.
    let branches = TxnRequest {
        success: vec![op_put(b"a", b"1")],
        failure: vec![op_put(b"a", b"2")],
        ..Default::default()
    };
    assert_eq!(check(vec![op_txn(branches.clone())]), Ok(()));
    assert_eq!(
        check(vec![op_txn(branches), op_put(b"a", b"3")]),
        Err(MvccError::DuplicateKey)
    );
    // etcd's interval check compares "\0" literally, so it covers nothing.
    assert_eq!(
        check(vec![op_delete(b"a", b"\0"), op_put(b"b", b"2")]),
        Ok(())
    );
    assert_eq!(
        MvccError::DuplicateKey.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
}

#[test]
fn txn_with_too_many_ops_or_empty_keys_is_rejected() {
    let many = TxnRequest {
        success: (0..129u8).map(|i| op_put(&[b'k', i], b"v")).collect(),
        ..Default::default()
    };
    assert_eq!(
        check_txn_request(&many, DEFAULT_MAX_TXN_OPS),
        Err(MvccError::TooManyOps)
    );
    let empty = TxnRequest {
        success: vec![op_put(b"", b"v")],
        ..Default::default()
    };
    assert_eq!(
        check_txn_request(&empty, DEFAULT_MAX_TXN_OPS),
        Err(MvccError::EmptyKey)
    );
    let provided = PutRequest {
        ignore_value: true,
        ..put_req(b"k", b"v")
    };
    assert_eq!(check_put_request(&provided), Err(MvccError::ValueProvided));
}

// ---- compaction ----

#[test]
fn compaction_keeps_the_latest_value_at_the_compact_revision() {
    let (_, mut s) = fresh();
    put(&mut s, b"a", b"1"); // 2
    put(&mut s, b"a", b"2"); // 3
    put(&mut s, b"b", b"1"); // 4
    delete(&mut s, b"b", b""); // 5
    put(&mut s, b"a", b"3"); // 6
    s.compact(
        &CompactionRequest {
            revision: 5,
            physical: true,
        },
        WriteBatch::new(),
    )
    .expect("compact");
    let at5 = s
        .range(&RangeRequest {
            revision: 5,
            ..range_req(b"a", b"\0")
        })
        .expect("range at compact revision");
    assert_eq!(
        at5.kvs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone(), kv.version))
            .collect::<Vec<_>>(),
        vec![(b"a".to_vec(), b"2".to_vec(), 2)]
    );
    // Storage holds only a@3 and a@6.
    let stored = s
        .storage()
        .scan(CF_KV, &[], None, Direction::Forward)
        .expect("scan")
        .count();
    assert_eq!(stored, 2);
    s.check_invariants();
}

#[test]
fn reads_below_the_compact_revision_fail_with_compacted() {
    let mut s = five_keys();
    s.compact(
        &CompactionRequest {
            revision: 5,
            physical: false,
        },
        WriteBatch::new(),
    )
    .expect("compact");
    let err = s
        .range(&RangeRequest {
            revision: 4,
            ..range_req(b"a", b"")
        })
        .unwrap_err();
    assert_eq!(
        (err.clone(), err.to_string()),
        (
            MvccError::Compacted,
            "mvcc: required revision has been compacted".to_owned()
        )
    );
    assert!(s
        .range(&RangeRequest {
            revision: 5,
            ..range_req(b"a", b"")
        })
        .is_ok());
    assert_eq!(s.hash_kv(5).unwrap_err(), MvccError::Compacted);
}

#[test]
fn compacting_twice_or_into_the_future_fails() {
    let mut s = five_keys();
    s.compact(
        &CompactionRequest {
            revision: 5,
            physical: false,
        },
        WriteBatch::new(),
    )
    .expect("compact");
    let again = s.compact(
        &CompactionRequest {
            revision: 5,
            physical: false,
        },
        WriteBatch::new(),
    );
    assert_eq!(again.unwrap_err(), MvccError::Compacted);
    let future = s.compact(
        &CompactionRequest {
            revision: 9,
            physical: false,
        },
        WriteBatch::new(),
    );
    assert_eq!(future.unwrap_err(), MvccError::FutureRevision);
    s.compact(
        &CompactionRequest {
            revision: 8,
            physical: false,
        },
        WriteBatch::new(),
    )
    .expect("compact to current");
}

#[test]
fn compaction_keeps_create_revision_and_version() {
    let (_, mut s) = fresh();
    put(&mut s, b"a", b"1");
    put(&mut s, b"a", b"2");
    put(&mut s, b"x", b"1");
    s.compact(
        &CompactionRequest {
            revision: 4,
            physical: false,
        },
        WriteBatch::new(),
    )
    .expect("compact");
    put(&mut s, b"a", b"3");
    let kv = get(&s, b"a").kvs[0].clone();
    assert_eq!((kv.create_revision, kv.version), (2, 3));
}

// ---- restart and hashes ----

#[test]
fn restart_rebuilds_the_same_index_revision_and_hashes() {
    let (disk, mut s) = fresh();
    for k in [b"a", b"b", b"c", b"d"] {
        put(&mut s, k, b"1");
    }
    put(&mut s, b"x", b"1");
    delete(&mut s, b"a", b"c");
    s.compact(
        &CompactionRequest {
            revision: 4,
            physical: false,
        },
        WriteBatch::new(),
    )
    .expect("compact");
    let before = (
        s.current_revision(),
        s.compact_revision(),
        s.hash_kv(0).expect("hash"),
        s.hash().expect("hash"),
    );
    let all = s.range(&range_req(b"\0", b"\0")).expect("range");
    block_on(s.storage().sync()).expect("sync");
    drop(s);
    let s = open_on(&disk);
    s.check_invariants();
    assert_eq!(
        (
            s.current_revision(),
            s.compact_revision(),
            s.hash_kv(0).expect("hash"),
            s.hash().expect("hash")
        ),
        before
    );
    assert_eq!(s.range(&range_req(b"\0", b"\0")).expect("range"), all);
}

#[test]
fn fully_compacted_history_restarts_at_the_compact_revision() {
    let (disk, mut s) = fresh();
    put(&mut s, b"a", b"1");
    delete(&mut s, b"a", b"");
    s.compact(
        &CompactionRequest {
            revision: 3,
            physical: true,
        },
        WriteBatch::new(),
    )
    .expect("compact");
    block_on(s.storage().sync()).expect("sync");
    drop(s);
    let s = open_on(&disk);
    assert_eq!(
        (s.current_revision(), s.compact_revision()),
        (Revision(3), Some(Revision(3)))
    );
}

#[test]
fn hash_kv_is_deterministic_across_stores_with_one_history() {
    let build = || {
        let mut s = five_keys();
        delete(&mut s, b"c", b"");
        s.compact(
            &CompactionRequest {
                revision: 6,
                physical: true,
            },
            WriteBatch::new(),
        )
        .expect("compact");
        put(&mut s, b"c", b"again");
        s
    };
    let (a, b) = (build(), build());
    for rev in [0, 7, 9, 10] {
        assert_eq!(a.hash_kv(rev), b.hash_kv(rev), "at {rev}");
    }
    let h = a.hash_kv(0).expect("hash");
    assert_eq!(
        (h.compact_revision, h.hash_revision, h.revision),
        (6, Revision(10), Revision(10))
    );
    assert_ne!(a.hash_kv(8).expect("hash").hash, h.hash);
    assert_eq!(a.hash_kv(11).unwrap_err(), MvccError::FutureRevision);
}

#[test]
fn txn_put_with_unknown_lease_fails_whole_txn() {
    let (_, mut s) = fresh();
    let leased = PutRequest {
        lease: 9,
        ..put_req(b"b", b"1")
    };
    let t = TxnRequest {
        success: vec![
            op_put(b"a", b"1"),
            RequestOp {
                request: Some(Request::RequestPut(leased)),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        s.txn(&t, &|id| id != 9, WriteBatch::new()).unwrap_err(),
        MvccError::LeaseNotFound
    );
    assert_eq!(s.current_revision(), Revision(1));
}

#[test]
fn events_between_replays_history_and_refuses_compacted_revisions() {
    let mut s = five_keys();
    delete(&mut s, b"b", b"d"); // revision 9: two deletes
    let events = s
        .events_between(Revision(8), Revision(20), false)
        .expect("history");
    let kinds: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.r#type,
                e.kv.as_ref().map(|kv| (kv.key.clone(), kv.mod_revision)),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventType::Put as i32, Some((b"a".to_vec(), 8))),
            (EventType::Delete as i32, Some((b"b".to_vec(), 9))),
            (EventType::Delete as i32, Some((b"c".to_vec(), 9))),
        ]
    );
    s.compact(
        &CompactionRequest {
            revision: 8,
            physical: false,
        },
        WriteBatch::new(),
    )
    .expect("compact");
    assert_eq!(
        s.events_between(Revision(7), Revision(9), false)
            .unwrap_err(),
        MvccError::Compacted
    );
    // At the compact revision: what compaction kept there (the put of `a`).
    assert_eq!(
        s.events_between(Revision(8), Revision(8), false)
            .expect("history at the compact revision")
            .len(),
        1
    );
    assert_eq!(
        s.events_between(Revision(9), Revision(9), false)
            .expect("history")
            .len(),
        2
    );
}

/// Found by the simulation (kv3 seed 93 with flipped-record faults): a txn
/// whose execution read a record that failed its checksum was treated like
/// an expected request error, so the server's `extra` (its applied index)
/// was written although nothing of the txn was; after the member restarted
/// the entry counted as applied and the member's state diverged from the
/// cluster's (a lost acknowledged append). A storage failure while
/// executing must write nothing.
#[test]
fn a_storage_failure_while_executing_a_write_writes_nothing_not_even_extra() {
    let (disk, mut s) = fresh();
    put(&mut s, b"a", b"1");
    put(&mut s, b"b", b"2");
    // The record of b's put (revision 3) flips on disk.
    let key = disk.flip_stored_record(CF_KV, 0).expect("b's record");
    assert_eq!(
        KeyRevision::from_key(&key).map(|(r, _)| r.main),
        Some(Revision(3))
    );
    let mut extra = WriteBatch::new();
    extra.put(CF_META, b"applied", b"7".to_vec());
    // A txn comparing b's value must read the flipped record.
    let txn = TxnRequest {
        compare: vec![Compare {
            key: b"b".to_vec(),
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            target_union: Some(TargetUnion::Value(b"2".to_vec())),
            ..Default::default()
        }],
        success: vec![op_put(b"c", b"3")],
        ..Default::default()
    };
    let err = s
        .txn(&txn, &no_lease_check, extra)
        .expect_err("the txn cannot execute over a corrupt record");
    assert!(
        matches!(err, MvccError::Storage(StorageError::Corruption(_))),
        "{err:?}"
    );
    disk.repair_flips();
    assert_eq!(
        s.storage().get(CF_META, b"applied").expect("get"),
        None,
        "the applied index moved past a request that was not applied"
    );
    assert_eq!(s.current_revision(), Revision(3));
}
