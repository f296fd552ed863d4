//! Pins etcd v3.5 field numbers on the wire: each message is encoded with
//! prost and compared with protobuf bytes written out by hand (tag byte =
//! field_number << 3 | wire_type; 0 = varint, 2 = length-delimited).
//! A typo in a `.proto` field number breaks one of these.

use cairn_proto::authpb;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use cairn_proto::v3electionpb;
use cairn_proto::v3lockpb;
use prost::Message;

fn enc<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

#[test]
fn response_header() {
    let h = pb::ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: 3,
        raft_term: 4,
    };
    assert_eq!(enc(&h), [0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4]);
}

#[test]
fn range_request() {
    let r = pb::RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 5,
        revision: 7,
        ..Default::default()
    };
    assert_eq!(enc(&r), [0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 5, 0x20, 7]);

    let r = pb::RangeRequest {
        sort_order: pb::range_request::SortOrder::Descend as i32,
        sort_target: pb::range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
        ..Default::default()
    };
    assert_eq!(
        enc(&r),
        [
            0x28, 2, 0x30, 3, 0x38, 1, 0x40, 1, 0x48, 1, // 5..9
            0x50, 1, 0x58, 2, 0x60, 3, 0x68, 4, // 10..13
        ]
    );
}

#[test]
fn range_response() {
    let r = pb::RangeResponse {
        header: None,
        kvs: vec![mvccpb::KeyValue {
            key: b"k".to_vec(),
            ..Default::default()
        }],
        more: true,
        count: 9,
    };
    assert_eq!(enc(&r), [0x12, 3, 0x0a, 1, b'k', 0x18, 1, 0x20, 9]);
}

#[test]
fn put_request() {
    let p = pb::PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 300,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    assert_eq!(
        enc(&p),
        [0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 0xac, 0x02, 0x20, 1, 0x28, 1, 0x30, 1]
    );
}

#[test]
fn delete_range() {
    let d = pb::DeleteRangeRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        prev_kv: true,
    };
    assert_eq!(enc(&d), [0x0a, 1, b'a', 0x12, 1, 0, 0x18, 1]);
    let d = pb::DeleteRangeResponse {
        header: None,
        deleted: 2,
        prev_kvs: vec![mvccpb::KeyValue::default()],
    };
    assert_eq!(enc(&d), [0x10, 2, 0x1a, 0]);
}

#[test]
fn key_value_and_event() {
    let kv = mvccpb::KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 4,
        value: b"v".to_vec(),
        lease: 6,
    };
    assert_eq!(
        enc(&kv),
        [0x0a, 1, b'k', 0x10, 2, 0x18, 3, 0x20, 4, 0x2a, 1, b'v', 0x30, 6]
    );

    let ev = mvccpb::Event {
        r#type: mvccpb::event::EventType::Delete as i32,
        kv: Some(mvccpb::KeyValue {
            lease: 1,
            ..Default::default()
        }),
        prev_kv: Some(mvccpb::KeyValue {
            version: 1,
            ..Default::default()
        }),
    };
    assert_eq!(enc(&ev), [0x08, 1, 0x12, 2, 0x30, 1, 0x1a, 2, 0x20, 1]);
}

#[test]
fn compare() {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let c = pb::Compare {
        result: CompareResult::NotEqual as i32,
        target: CompareTarget::Value as i32,
        key: b"k".to_vec(),
        target_union: Some(TargetUnion::Value(b"v".to_vec())),
        range_end: Vec::new(),
    };
    assert_eq!(enc(&c), [0x08, 3, 0x10, 3, 0x1a, 1, b'k', 0x3a, 1, b'v']);

    // Each target_union member: version 4, create_revision 5, mod_revision 6, lease 8.
    for (u, tag) in [
        (TargetUnion::Version(1), 0x20),
        (TargetUnion::CreateRevision(1), 0x28),
        (TargetUnion::ModRevision(1), 0x30),
        (TargetUnion::Lease(1), 0x40),
    ] {
        let c = pb::Compare {
            target_union: Some(u),
            ..Default::default()
        };
        assert_eq!(enc(&c), [tag, 1]);
    }

    // range_end is field 64: tag 64 << 3 | 2 = 514 = varint [0x82, 0x04].
    let c = pb::Compare {
        range_end: b"z".to_vec(),
        ..Default::default()
    };
    assert_eq!(enc(&c), [0x82, 0x04, 1, b'z']);
    assert_eq!(CompareTarget::Lease as i32, 4);
}

#[test]
fn txn() {
    use pb::request_op::Request;
    use pb::response_op::Response;
    let t = pb::TxnRequest {
        compare: vec![pb::Compare::default()],
        success: vec![pb::RequestOp {
            request: Some(Request::RequestTxn(pb::TxnRequest::default())),
        }],
        failure: vec![pb::RequestOp {
            request: Some(Request::RequestDeleteRange(
                pb::DeleteRangeRequest::default(),
            )),
        }],
    };
    assert_eq!(enc(&t), [0x0a, 0, 0x12, 2, 0x22, 0, 0x1a, 2, 0x1a, 0]);

    let r = pb::TxnResponse {
        header: None,
        succeeded: true,
        responses: vec![
            pb::ResponseOp {
                response: Some(Response::ResponseRange(Default::default())),
            },
            pb::ResponseOp {
                response: Some(Response::ResponsePut(Default::default())),
            },
        ],
    };
    assert_eq!(enc(&r), [0x10, 1, 0x1a, 2, 0x0a, 0, 0x1a, 2, 0x12, 0]);
}

#[test]
fn watch_create_request() {
    use pb::watch_create_request::FilterType;
    let w = pb::WatchCreateRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        start_revision: 9,
        progress_notify: true,
        filters: vec![FilterType::Nodelete as i32],
        prev_kv: true,
        watch_id: 42,
        fragment: true,
    };
    let body = [
        0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 9, 0x20,
        1, // key, range_end, start_revision, progress_notify
        0x2a, 1, 1, // filters: packed repeated enum, field 5
        0x30, 1, 0x38, 42, 0x40, 1, // prev_kv 6, watch_id 7, fragment 8
    ];
    assert_eq!(enc(&w), body);

    let req = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(w)),
    };
    let mut expected = vec![0x0a, body.len() as u8];
    expected.extend_from_slice(&body);
    assert_eq!(enc(&req), expected);
}

#[test]
fn watch_cancel_and_progress() {
    use pb::watch_request::RequestUnion;
    let c = pb::WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: 42,
        })),
    };
    assert_eq!(enc(&c), [0x12, 2, 0x08, 42]);
    let p = pb::WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
    };
    assert_eq!(enc(&p), [0x1a, 0]);
}

#[test]
fn watch_response() {
    let w = pb::WatchResponse {
        header: None,
        watch_id: 3,
        created: true,
        canceled: true,
        compact_revision: 5,
        cancel_reason: "x".into(),
        fragment: true,
        events: vec![mvccpb::Event::default()],
    };
    assert_eq!(
        enc(&w),
        [0x10, 3, 0x18, 1, 0x20, 1, 0x28, 5, 0x32, 1, b'x', 0x38, 1, 0x5a, 0]
    );
}

#[test]
fn lease() {
    let g = pb::LeaseGrantRequest { ttl: 10, id: 7 };
    assert_eq!(enc(&g), [0x08, 10, 0x10, 7]);
    let g = pb::LeaseGrantResponse {
        header: None,
        id: 7,
        ttl: 10,
        error: "e".into(),
    };
    assert_eq!(enc(&g), [0x10, 7, 0x18, 10, 0x22, 1, b'e']);
    let k = pb::LeaseKeepAliveResponse {
        header: None,
        id: 7,
        ttl: 10,
    };
    assert_eq!(enc(&k), [0x10, 7, 0x18, 10]);
    let t = pb::LeaseTimeToLiveRequest { id: 7, keys: true };
    assert_eq!(enc(&t), [0x08, 7, 0x10, 1]);
    let t = pb::LeaseTimeToLiveResponse {
        header: None,
        id: 7,
        ttl: 5,
        granted_ttl: 10,
        keys: vec![b"k".to_vec()],
    };
    assert_eq!(enc(&t), [0x10, 7, 0x18, 5, 0x20, 10, 0x2a, 1, b'k']);
    let c = pb::LeaseCheckpoint {
        id: 7,
        remaining_ttl: 3,
    };
    assert_eq!(enc(&c), [0x08, 7, 0x10, 3]);
    let l = pb::LeaseLeasesResponse {
        header: None,
        leases: vec![pb::LeaseStatus { id: 1 }],
    };
    assert_eq!(enc(&l), [0x12, 2, 0x08, 1]);
}

#[test]
fn member_and_status() {
    let m = pb::Member {
        id: 1,
        name: "n".into(),
        is_learner: true,
        ..Default::default()
    };
    assert_eq!(enc(&m), [0x08, 1, 0x12, 1, b'n', 0x28, 1]);
    let a = pb::MemberAddRequest {
        is_learner: true,
        ..Default::default()
    };
    assert_eq!(enc(&a), [0x10, 1]);
    let l = pb::MemberListRequest { linearizable: true };
    assert_eq!(enc(&l), [0x08, 1]);
    let mv = pb::MoveLeaderRequest { target_id: 2 };
    assert_eq!(enc(&mv), [0x08, 2]);

    let s = pb::StatusResponse {
        header: None,
        version: "3.5.0".into(),
        db_size: 100,
        leader: 2,
        raft_index: 5,
        raft_term: 6,
        raft_applied_index: 7,
        errors: vec!["x".into()],
        db_size_in_use: 50,
        is_learner: true,
    };
    assert_eq!(
        enc(&s),
        [
            0x12, 5, b'3', b'.', b'5', b'.', b'0', // version 2
            0x18, 100, 0x20, 2, 0x28, 5, 0x30,
            6, // dbSize 3, leader 4, raftIndex 5, raftTerm 6
            0x38, 7, 0x42, 1, b'x', 0x48, 50, 0x50,
            1, // raftAppliedIndex 7, errors 8, dbSizeInUse 9, isLearner 10
        ]
    );
}

#[test]
fn maintenance_misc() {
    let a = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Deactivate as i32,
        member_id: 3,
        alarm: pb::AlarmType::Corrupt as i32,
    };
    assert_eq!(enc(&a), [0x08, 2, 0x10, 3, 0x18, 2]);
    let h = pb::HashKvResponse {
        header: None,
        hash: 9,
        compact_revision: 4,
    };
    assert_eq!(enc(&h), [0x10, 9, 0x18, 4]);
    let s = pb::SnapshotResponse {
        header: None,
        remaining_bytes: 1,
        blob: b"b".to_vec(),
    };
    assert_eq!(enc(&s), [0x10, 1, 0x1a, 1, b'b']);
    let c = pb::CompactionRequest {
        revision: 4,
        physical: true,
    };
    assert_eq!(enc(&c), [0x08, 4, 0x10, 1]);
    let d = pb::DowngradeRequest {
        action: pb::downgrade_request::DowngradeAction::Cancel as i32,
        version: "v".into(),
    };
    assert_eq!(enc(&d), [0x08, 2, 0x12, 1, b'v']);
}

#[test]
fn auth() {
    let p = authpb::Permission {
        perm_type: authpb::permission::Type::Readwrite as i32,
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
    };
    assert_eq!(enc(&p), [0x08, 2, 0x12, 1, b'a', 0x1a, 1, b'b']);
    let u = pb::AuthUserAddRequest {
        name: "n".into(),
        password: String::new(),
        options: Some(authpb::UserAddOptions { no_password: true }),
        hashed_password: "h".into(),
    };
    assert_eq!(enc(&u), [0x0a, 1, b'n', 0x1a, 2, 0x08, 1, 0x22, 1, b'h']);
    let s = pb::AuthStatusResponse {
        header: None,
        enabled: true,
        auth_revision: 8,
    };
    assert_eq!(enc(&s), [0x10, 1, 0x18, 8]);
    let g = pb::AuthRoleGrantPermissionRequest {
        name: "r".into(),
        perm: Some(p),
    };
    assert_eq!(enc(&g)[..3], [0x0a, 1, b'r']);
    assert_eq!(enc(&g)[3], 0x12);
}

#[test]
fn lock_and_election() {
    let l = v3lockpb::LockRequest {
        name: b"n".to_vec(),
        lease: 5,
    };
    assert_eq!(enc(&l), [0x0a, 1, b'n', 0x10, 5]);
    let k = v3electionpb::LeaderKey {
        name: b"n".to_vec(),
        key: b"k".to_vec(),
        rev: 3,
        lease: 4,
    };
    assert_eq!(enc(&k), [0x0a, 1, b'n', 0x12, 1, b'k', 0x18, 3, 0x20, 4]);
    let c = v3electionpb::CampaignRequest {
        name: b"n".to_vec(),
        lease: 5,
        value: b"v".to_vec(),
    };
    assert_eq!(enc(&c), [0x0a, 1, b'n', 0x10, 5, 0x1a, 1, b'v']);
    let p = v3electionpb::ProclaimRequest {
        leader: None,
        value: b"v".to_vec(),
    };
    assert_eq!(enc(&p), [0x12, 1, b'v']);
}
