//! Auth against etcd 3.4, the oracle: the real etcdctl (Debian
//! `etcd-client`) runs the same session of users, roles, permissions and
//! `--user` requests against etcd and cairn, and every output must match once
//! ids and terms are masked; then every RPC is called as each kind of caller
//! (auth off, root, a reader of a prefix, a writer of a prefix, a user
//! without roles, a stale token, no token, a wrong password) on both servers
//! and must be answered alike (`permission_matrix_*`).
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_proto::authpb::{permission::Type as PermType, Permission};
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::*;
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3electionpb::{CampaignRequest, LeaderRequest, ResignRequest};
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use common::*;
use tonic::transport::Channel;

/// Drops etcdctl's own log lines and masks ids and terms.
fn mask(text: &str) -> String {
    let out: String = text
        .lines()
        .filter(|l| !l.starts_with("{\"level\":"))
        .map(
            |l| match l.strip_prefix("lease ").and_then(|r| r.split_once(' ')) {
                // Lease ids are the servers' own.
                Some((_, rest)) if rest.starts_with("granted") => format!("lease ID {rest}\n"),
                _ => format!("{l}\n"),
            },
        )
        .collect();
    mask_json_ids(&out)
}

/// One etcdctl call: its arguments (split on spaces) and standard input.
struct Step(&'static str, Option<&'static str>);

fn run_session(endpoint: &str, steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|Step(cmd, stdin)| {
            let args: Vec<&str> = cmd.split_whitespace().collect();
            let out = etcdctl(endpoint, &args, *stdin);
            format!(
                "$ etcdctl {cmd}\n[exit {}]\n{}{}",
                out.status.code().unwrap_or(-1),
                mask(&String::from_utf8_lossy(&out.stdout)),
                mask(&String::from_utf8_lossy(&out.stderr))
            )
        })
        .collect()
}

fn auth_session() -> Vec<Step> {
    vec![
        Step("auth enable", None),
        Step("user add root:rootpw", None),
        Step("auth enable", None),
        Step("user grant-role root root", None),
        Step("role add reader", None),
        Step("role add writer", None),
        Step("role add reader", None),
        Step("role grant-permission reader read /p/ --prefix", None),
        Step("role grant-permission reader read k1", None),
        Step("role grant-permission reader read /from --from-key", None),
        Step("role grant-permission writer readwrite /w/ --prefix", None),
        Step("role grant-permission writer write /wo/ --prefix", None),
        Step("role grant-permission nosuch read x", None),
        Step("role get reader", None),
        Step("role get writer -w json", None),
        Step("role list", None),
        Step("user add alice:alicepw", None),
        Step("user add bob:bobpw", None),
        Step("user add carol:carolpw", None),
        Step("user add alice:again", None),
        Step("user grant-role alice reader", None),
        Step("user grant-role bob writer", None),
        Step("user grant-role alice nosuch", None),
        Step("user grant-role nobody reader", None),
        Step("user get alice", None),
        Step("user get alice --detail", None),
        Step("user list", None),
        Step("auth enable", None),
        Step("--user=root:rootpw put /p/a 1", None),
        Step("--user=root:rootpw put /w/a 1", None),
        Step("--user=root:rootpw put k1 v1", None),
        Step("--user=root:rootpw put /fromz z", None),
        Step("--user=alice:alicepw get /p/a", None),
        Step("--user=alice:alicepw get /p/ --prefix", None),
        Step("--user=alice:alicepw get /from --from-key", None),
        Step("--user=alice:alicepw get /fro --from-key", None),
        Step("--user=alice:alicepw get k1", None),
        Step("--user=alice:alicepw get k2", None),
        Step("--user=alice:alicepw put /p/a 2", None),
        Step("--user=alice:wrong get /p/a", None),
        Step("--user=nobody:pw get /p/a", None),
        Step("get /p/a", None),
        Step("put /p/a 3", None),
        Step("--user=bob:bobpw put /w/x 1", None),
        Step("--user=bob:bobpw put /w/x 2 --prev-kv", None),
        Step("--user=bob:bobpw put /wo/x 1", None),
        Step("--user=bob:bobpw put /wo/x 2 --prev-kv", None),
        Step("--user=bob:bobpw get /w/ --prefix", None),
        Step("--user=bob:bobpw get /wo/x", None),
        Step("--user=bob:bobpw get /p/a", None),
        Step("--user=bob:bobpw del /w/x", None),
        Step("--user=bob:bobpw del /w/ --prefix", None),
        Step("--user=bob:bobpw del /wo/ --prefix --prev-kv", None),
        Step("--user=carol:carolpw get /p/a", None),
        Step("--user=alice:alicepw user list", None),
        Step("--user=alice:alicepw user get alice", None),
        Step("--user=alice:alicepw user get bob", None),
        Step("--user=alice:alicepw role get reader", None),
        Step("--user=alice:alicepw role get writer", None),
        Step("--user=alice:alicepw role list", None),
        Step("--user=alice:alicepw user add eve:evepw", None),
        Step("--user=alice:alicepw auth disable", None),
        Step(
            "--user=root:rootpw txn",
            Some("value(\"/p/a\") = \"1\"\n\nput /w/t yes\n\nput /w/t no\n\n"),
        ),
        Step(
            "--user=bob:bobpw txn",
            Some("value(\"/w/a\") = \"1\"\n\nput /w/t yes\n\nput /w/t no\n\n"),
        ),
        Step(
            "--user=bob:bobpw txn",
            Some("value(\"/p/a\") = \"1\"\n\nput /w/t yes\n\nput /w/t no\n\n"),
        ),
        Step(
            "--user=bob:bobpw txn",
            Some("value(\"/w/a\") = \"1\"\n\nput /w/t yes\n\nget /p/a\n\n"),
        ),
        Step(
            "--user=root:rootpw user passwd alice --interactive=false",
            Some("newpw\n"),
        ),
        Step("--user=alice:alicepw get /p/a", None),
        Step("--user=alice:newpw get /p/a", None),
        Step(
            "--user=root:rootpw role revoke-permission reader /p/ --prefix",
            None,
        ),
        Step("--user=root:rootpw role revoke-permission reader /p/", None),
        Step("--user=alice:newpw get /p/a", None),
        Step("--user=alice:newpw get k1", None),
        Step("--user=root:rootpw user revoke-role alice reader", None),
        Step("--user=root:rootpw user revoke-role alice reader", None),
        Step("--user=alice:newpw get k1", None),
        Step("--user=root:rootpw user delete root", None),
        Step("--user=root:rootpw user revoke-role root root", None),
        Step("--user=root:rootpw role delete root", None),
        Step("--user=root:rootpw role delete writer", None),
        Step("--user=root:rootpw user get bob", None),
        Step("--user=bob:bobpw put /w/x 3", None),
        Step("--user=root:rootpw user delete bob", None),
        Step("--user=root:rootpw user delete bob", None),
        Step("--user=bob:bobpw get /w/a", None),
        // Empty and inverted ranges: etcd allows one when its key is held.
        Step("--user=root:rootpw role add split", None),
        Step(
            "--user=root:rootpw role grant-permission split read a c",
            None,
        ),
        Step(
            "--user=root:rootpw role grant-permission split read b --from-key",
            None,
        ),
        Step("--user=root:rootpw user add dave:davepw", None),
        Step("--user=root:rootpw user grant-role dave split", None),
        Step("--user=dave:davepw get d b", None),
        Step("--user=dave:davepw get b0 b", None),
        Step("--user=dave:davepw get b b", None),
        Step("--user=dave:davepw get a z", None),
        Step("--user=dave:davepw get a", None),
        Step("--user=dave:davepw get 0 a", None),
        Step("--user=dave:davepw get c0 c", None),
        Step("--user=root:rootpw lease grant 100", None),
        Step("--user=root:rootpw auth disable", None),
        Step("get /p/a", None),
        Step("user list", None),
        Step("role list", None),
        Step("user get root", None),
        Step("auth enable", None),
        Step("--user=root:rootpw auth disable", None),
    ]
}

#[test]
fn etcdctl_auth_session_matches_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let want = run_session(&etcd.endpoint(), &auth_session());
    drop(etcd);
    let cairn = start_cairn(dir.path());
    let got = run_session(&cairn.endpoint(), &auth_session());
    let mut diffs = Vec::new();
    for (w, g) in want.iter().zip(&got) {
        if w != g {
            diffs.push(format!("--- etcd\n{w}--- cairn\n{g}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} steps differ:\n{}",
        diffs.len(),
        want.len(),
        diffs.join("\n")
    );
}

// ---- the permission matrix ----

async fn channel(endpoint: &str) -> Channel {
    Channel::from_shared(format!("http://{endpoint}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

fn with_token<T>(msg: T, token: &Option<String>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("token", t.parse().expect("ascii token"));
    }
    r.set_timeout(Duration::from_secs(10));
    r
}

/// A successful answer whose content does not matter.
fn ok<T>(_: T) -> String {
    String::new()
}

/// An answer as the matrix compares it: the gRPC code and message, or what
/// of the response does not depend on ids and times.
fn outcome<T>(
    r: Result<tonic::Response<T>, tonic::Status>,
    ok: impl FnOnce(T) -> String,
) -> String {
    match r {
        Ok(resp) => format!("OK {}", ok(resp.into_inner())),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    }
}

async fn login(
    auth: &mut AuthClient<Channel>,
    name: &str,
    password: &str,
) -> Result<String, String> {
    auth.authenticate(AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    })
    .await
    .map(|r| r.into_inner().token)
    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn perm(t: PermType, key: &str, end: &[u8]) -> Option<Permission> {
    Some(Permission {
        perm_type: t as i32,
        key: key.as_bytes().to_vec(),
        range_end: end.to_vec(),
    })
}

/// Users and roles of the matrix (made as root on a server with auth off).
async fn set_up_users(ch: &Channel) {
    let mut auth = AuthClient::new(ch.clone());
    let add = |n: &str| AuthUserAddRequest {
        name: n.into(),
        password: format!("{n}pw"),
        ..Default::default()
    };
    for u in ["root", "reader", "writer", "norole", "stale"] {
        auth.user_add(add(u)).await.expect("user add");
    }
    for r in ["reader", "writer"] {
        auth.role_add(AuthRoleAddRequest { name: r.into() })
            .await
            .expect("role add");
    }
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "reader".into(),
        perm: perm(PermType::Read, "/r/", b"/r0"),
    })
    .await
    .expect("grant");
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "writer".into(),
        perm: perm(PermType::Write, "/w/", b"/w0"),
    })
    .await
    .expect("grant");
    for (u, r) in [
        ("root", "root"),
        ("reader", "reader"),
        ("writer", "writer"),
        ("stale", "reader"),
    ] {
        auth.user_grant_role(AuthUserGrantRoleRequest {
            user: u.into(),
            role: r.into(),
        })
        .await
        .expect("grant role");
    }
}

/// Every RPC as one caller; one line per call.
async fn calls(ch: &Channel, who: &str, token: &Option<String>, lease_of_w: i64) -> Vec<String> {
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let mut maint = MaintenanceClient::new(ch.clone());
    let mut cluster = ClusterClient::new(ch.clone());
    let mut auth = AuthClient::new(ch.clone());
    let mut watch = WatchClient::new(ch.clone());
    let t = token;
    let mut out = Vec::new();
    let mut line = |name: &str, o: String| out.push(format!("{who:>8} {name:<28} {o}"));
    let count = |r: RangeResponse| format!("count={}", r.count);

    let range = |k: &str, e: &[u8]| RangeRequest {
        key: k.as_bytes().to_vec(),
        range_end: e.to_vec(),
        ..Default::default()
    };
    line(
        "range /r/a",
        outcome(kv.range(with_token(range("/r/a", b""), t)).await, count),
    );
    line(
        "range /r/ prefix",
        outcome(kv.range(with_token(range("/r/", b"/r0"), t)).await, count),
    );
    line(
        "range /r/ from-key",
        outcome(kv.range(with_token(range("/r/", b"\0"), t)).await, count),
    );
    line(
        "range /w/a",
        outcome(kv.range(with_token(range("/w/a", b""), t)).await, count),
    );
    let serializable = RangeRequest {
        serializable: true,
        ..range("/r/a", b"")
    };
    line(
        "range /r/a serializable",
        outcome(kv.range(with_token(serializable, t)).await, count),
    );
    let put = |k: &str, prev_kv: bool, lease: i64| PutRequest {
        key: k.as_bytes().to_vec(),
        value: b"v".to_vec(),
        prev_kv,
        lease,
        ..Default::default()
    };
    line(
        "put /w/x",
        outcome(kv.put(with_token(put("/w/x", false, 0), t)).await, ok),
    );
    line(
        "put /w/x prev_kv",
        outcome(kv.put(with_token(put("/w/x", true, 0), t)).await, ok),
    );
    line(
        "put /r/x",
        outcome(kv.put(with_token(put("/r/x", false, 0), t)).await, ok),
    );
    line(
        "put /w/y lease",
        outcome(
            kv.put(with_token(put("/w/y", false, lease_of_w), t)).await,
            ok,
        ),
    );
    let del = |k: &str, e: &[u8], prev_kv: bool| DeleteRangeRequest {
        key: k.as_bytes().to_vec(),
        range_end: e.to_vec(),
        prev_kv,
    };
    line(
        "delete /w/ prefix",
        outcome(
            kv.delete_range(with_token(del("/w/none", b"/w/nonf", false), t))
                .await,
            |r| format!("deleted={}", r.deleted),
        ),
    );
    line(
        "delete /w/ prefix prev_kv",
        outcome(
            kv.delete_range(with_token(del("/w/none", b"/w/nonf", true), t))
                .await,
            |r| format!("deleted={}", r.deleted),
        ),
    );
    line(
        "delete /r/a",
        outcome(
            kv.delete_range(with_token(del("/r/none", b"", false), t))
                .await,
            |r| format!("deleted={}", r.deleted),
        ),
    );
    let cmp = |k: &str| Compare {
        key: k.as_bytes().to_vec(),
        target: compare::CompareTarget::Version as i32,
        result: compare::CompareResult::Greater as i32,
        target_union: Some(compare::TargetUnion::Version(0)),
        ..Default::default()
    };
    let op_put = |k: &str| RequestOp {
        request: Some(request_op::Request::RequestPut(put(k, false, 0))),
    };
    let op_get = |k: &str| RequestOp {
        request: Some(request_op::Request::RequestRange(range(k, b""))),
    };
    let txn = |c: &str, s: RequestOp, f: RequestOp| TxnRequest {
        compare: vec![cmp(c)],
        success: vec![s],
        failure: vec![f],
    };
    let tok = |r: TxnResponse| format!("succeeded={}", r.succeeded);
    line(
        "txn cmp /r/ put /w/",
        outcome(
            kv.txn(with_token(txn("/r/a", op_put("/w/t"), op_put("/w/t")), t))
                .await,
            tok,
        ),
    );
    line(
        "txn cmp /w/ put /w/",
        outcome(
            kv.txn(with_token(txn("/w/a", op_put("/w/t"), op_put("/w/t")), t))
                .await,
            tok,
        ),
    );
    line(
        "txn failure get /r/",
        outcome(
            kv.txn(with_token(txn("/r/a", op_put("/w/t"), op_get("/r/a")), t))
                .await,
            tok,
        ),
    );
    line(
        "txn read-only /r/",
        outcome(
            kv.txn(with_token(txn("/r/a", op_get("/r/a"), op_get("/r/b")), t))
                .await,
            tok,
        ),
    );
    let nested = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestTxn(txn(
                "/r/a",
                op_put("/w/t"),
                op_put("/r/t"),
            ))),
        }],
        ..Default::default()
    };
    line(
        "txn nested put /r/",
        outcome(kv.txn(with_token(nested, t)).await, tok),
    );
    line(
        "compact 1",
        outcome(
            kv.compact(with_token(
                CompactionRequest {
                    revision: 1,
                    physical: false,
                },
                t,
            ))
            .await,
            ok,
        ),
    );

    let granted = lease
        .lease_grant(with_token(LeaseGrantRequest { ttl: 600, id: 0 }, t))
        .await;
    let id = granted.as_ref().map(|r| r.get_ref().id).unwrap_or(0);
    line(
        "lease grant",
        outcome(granted, |r| format!("ttl={}", r.ttl)),
    );
    line(
        "lease ttl with keys (w)",
        outcome(
            lease
                .lease_time_to_live(with_token(
                    LeaseTimeToLiveRequest {
                        id: lease_of_w,
                        keys: true,
                    },
                    t,
                ))
                .await,
            |r| format!("keys={}", r.keys.len()),
        ),
    );
    line(
        "lease ttl no keys (w)",
        outcome(
            lease
                .lease_time_to_live(with_token(
                    LeaseTimeToLiveRequest {
                        id: lease_of_w,
                        keys: false,
                    },
                    t,
                ))
                .await,
            |r| format!("granted={}", r.granted_ttl),
        ),
    );
    line(
        "lease leases",
        outcome(
            lease
                .lease_leases(with_token(LeaseLeasesRequest {}, t))
                .await,
            |_| String::new(),
        ),
    );
    let keep = tokio_stream::iter(vec![LeaseKeepAliveRequest { id: lease_of_w }]);
    let ka = match lease.lease_keep_alive(with_token(keep, t)).await {
        Ok(resp) => {
            let mut stream = resp.into_inner();
            match stream.message().await {
                Ok(Some(r)) => format!("OK ttl>0={}", r.ttl > 0),
                Ok(None) => "stream ended".to_owned(),
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            }
        }
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    };
    line("lease keep-alive (w)", ka);
    // Lock and Election act through their keys, with the caller's rights.
    let mut locks = LockClient::new(ch.clone());
    let mut elections = ElectionClient::new(ch.clone());
    for name in ["/w/lk", "/r/lk"] {
        let req = LockRequest {
            name: name.as_bytes().to_vec(),
            lease: id,
        };
        let got = locks.lock(with_token(req, t)).await;
        let key = got.as_ref().map(|r| r.get_ref().key.clone()).ok();
        line(&format!("lock {name}"), outcome(got, ok));
        // Always a line, so both servers' lists stay aligned.
        let unlocked = match key {
            Some(key) => outcome(locks.unlock(with_token(UnlockRequest { key }, t)).await, ok),
            None => "not locked".to_owned(),
        };
        line(&format!("unlock {name}"), unlocked);
    }
    for name in ["/w/el", "/r/el"] {
        let req = CampaignRequest {
            name: name.as_bytes().to_vec(),
            lease: id,
            value: b"me".to_vec(),
        };
        let got = elections.campaign(with_token(req, t)).await;
        let leader = got.as_ref().ok().and_then(|r| r.get_ref().leader.clone());
        line(&format!("campaign {name}"), outcome(got, ok));
        let asked = LeaderRequest {
            name: name.as_bytes().to_vec(),
        };
        line(
            &format!("leader {name}"),
            outcome(elections.leader(with_token(asked, t)).await, |r| {
                format!("has_leader={}", r.kv.is_some())
            }),
        );
        let resigned = match leader {
            Some(leader) => outcome(
                elections
                    .resign(with_token(
                        ResignRequest {
                            leader: Some(leader),
                        },
                        t,
                    ))
                    .await,
                ok,
            ),
            None => "not leading".to_owned(),
        };
        line(&format!("resign {name}"), resigned);
    }
    line(
        "lease revoke own",
        outcome(
            lease
                .lease_revoke(with_token(LeaseRevokeRequest { id }, t))
                .await,
            ok,
        ),
    );

    for (name, key, end) in [
        ("watch /r/", "/r/", &b"/r0"[..]),
        ("watch /w/", "/w/", b"/w0"),
    ] {
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: key.as_bytes().to_vec(),
                    range_end: end.to_vec(),
                    ..Default::default()
                },
            )),
        };
        let w = match watch
            .watch(with_token(tokio_stream::iter(vec![create]), t))
            .await
        {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                match stream.message().await {
                    Ok(Some(r)) => format!(
                        "created={} canceled={} watch_id_negative={} reason={:?}",
                        r.created,
                        r.canceled,
                        r.watch_id < 0,
                        r.cancel_reason
                    ),
                    Ok(None) => "stream ended".to_owned(),
                    Err(s) => format!("{:?}: {}", s.code(), s.message()),
                }
            }
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        };
        line(name, w);
    }

    line(
        "status",
        outcome(maint.status(with_token(StatusRequest {}, t)).await, ok),
    );
    line(
        "alarm get",
        outcome(
            maint
                .alarm(with_token(
                    AlarmRequest {
                        action: 0,
                        member_id: 0,
                        alarm: 0,
                    },
                    t,
                ))
                .await,
            |r| format!("alarms={}", r.alarms.len()),
        ),
    );
    line(
        "alarm deactivate",
        outcome(
            maint
                .alarm(with_token(
                    AlarmRequest {
                        action: 2,
                        member_id: 0,
                        alarm: 1,
                    },
                    t,
                ))
                .await,
            ok,
        ),
    );
    line(
        "hash",
        outcome(maint.hash(with_token(HashRequest {}, t)).await, ok),
    );
    line(
        "hash kv",
        outcome(
            maint
                .hash_kv(with_token(HashKvRequest { revision: 0 }, t))
                .await,
            ok,
        ),
    );
    line(
        "defragment",
        outcome(
            maint.defragment(with_token(DefragmentRequest {}, t)).await,
            ok,
        ),
    );
    let snap = match maint.snapshot(with_token(SnapshotRequest {}, t)).await {
        Ok(resp) => match resp.into_inner().message().await {
            Ok(Some(_)) => "OK first chunk".to_owned(),
            Ok(None) => "stream ended".to_owned(),
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        },
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    };
    line("snapshot", snap);

    line(
        "member list",
        outcome(
            cluster
                .member_list(with_token(MemberListRequest::default(), t))
                .await,
            |r| format!("members={}", r.members.len()),
        ),
    );
    line(
        "member remove unknown",
        outcome(
            cluster
                .member_remove(with_token(MemberRemoveRequest { id: 4242 }, t))
                .await,
            ok,
        ),
    );
    line(
        "member promote unknown",
        outcome(
            cluster
                .member_promote(with_token(MemberPromoteRequest { id: 4242 }, t))
                .await,
            ok,
        ),
    );

    line(
        "user list",
        outcome(
            auth.user_list(with_token(AuthUserListRequest {}, t)).await,
            |r| r.users.join(","),
        ),
    );
    line(
        "user get reader",
        outcome(
            auth.user_get(with_token(
                AuthUserGetRequest {
                    name: "reader".into(),
                },
                t,
            ))
            .await,
            |r| r.roles.join(","),
        ),
    );
    line(
        "user get writer",
        outcome(
            auth.user_get(with_token(
                AuthUserGetRequest {
                    name: "writer".into(),
                },
                t,
            ))
            .await,
            |r| r.roles.join(","),
        ),
    );
    line(
        "role list",
        outcome(
            auth.role_list(with_token(AuthRoleListRequest {}, t)).await,
            |r| r.roles.join(","),
        ),
    );
    line(
        "role get reader",
        outcome(
            auth.role_get(with_token(
                AuthRoleGetRequest {
                    role: "reader".into(),
                },
                t,
            ))
            .await,
            |r| format!("perms={}", r.perm.len()),
        ),
    );
    line(
        "role get writer",
        outcome(
            auth.role_get(with_token(
                AuthRoleGetRequest {
                    role: "writer".into(),
                },
                t,
            ))
            .await,
            |r| format!("perms={}", r.perm.len()),
        ),
    );
    line(
        "role add tmp",
        outcome(
            auth.role_add(with_token(AuthRoleAddRequest { name: "tmp".into() }, t))
                .await,
            ok,
        ),
    );
    line(
        "role delete tmp",
        outcome(
            auth.role_delete(with_token(AuthRoleDeleteRequest { role: "tmp".into() }, t))
                .await,
            ok,
        ),
    );
    line(
        "user delete nobody",
        outcome(
            auth.user_delete(with_token(
                AuthUserDeleteRequest {
                    name: "nobody".into(),
                },
                t,
            ))
            .await,
            ok,
        ),
    );
    line(
        "auth enable",
        outcome(
            auth.auth_enable(with_token(AuthEnableRequest {}, t)).await,
            ok,
        ),
    );
    out
}

async fn matrix(endpoint: &str) -> Vec<String> {
    let ch = channel(endpoint).await;
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let mut auth = AuthClient::new(ch.clone());
    for k in ["/r/a", "/r/b", "/w/a"] {
        kv.put(PutRequest {
            key: k.as_bytes().to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("put");
    }
    // A lease holding a key under /w/ (readers may not renew or revoke it).
    let lease_of_w = lease
        .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    kv.put(PutRequest {
        key: b"/w/leased".to_vec(),
        value: b"1".to_vec(),
        lease: lease_of_w,
        ..Default::default()
    })
    .await
    .expect("put leased");
    let mut out = Vec::new();
    out.extend(calls(&ch, "auth-off", &None, lease_of_w).await);
    set_up_users(&ch).await;
    auth.auth_enable(AuthEnableRequest {})
        .await
        .expect("enable");
    let mut tokens = BTreeMap::new();
    for u in ["root", "reader", "writer", "norole", "stale"] {
        tokens.insert(
            u,
            login(&mut auth, u, &format!("{u}pw")).await.expect("login"),
        );
    }
    out.push(format!(
        "wrong password: {:?}",
        login(&mut auth, "reader", "nope").await.err()
    ));
    out.push(format!(
        "unknown user: {:?}",
        login(&mut auth, "ghost", "x").await.err()
    ));
    out.push(format!(
        "empty user: {:?}",
        login(&mut auth, "", "x").await.err()
    ));
    // The stale token's user changes password: the token is void.
    let root = Some(tokens["root"].clone());
    auth.user_change_password(with_token(
        AuthUserChangePasswordRequest {
            name: "stale".into(),
            password: "other".into(),
            ..Default::default()
        },
        &root,
    ))
    .await
    .expect("change password");
    for u in ["root", "reader", "writer", "norole", "stale"] {
        out.extend(calls(&ch, u, &Some(tokens[u].clone()), lease_of_w).await);
    }
    out.extend(calls(&ch, "none", &None, lease_of_w).await);
    out.extend(calls(&ch, "garbage", &Some("not-a-token".into()), lease_of_w).await);
    // Revoking the lease as root ends it; disabling auth as root works.
    auth.auth_disable(with_token(AuthDisableRequest {}, &root))
        .await
        .expect("disable");
    out.extend(calls(&ch, "off", &None, lease_of_w).await);
    // That ended by enabling auth again (anyone may while it is off): log in
    // afresh and turn it off once more.
    let root = Some(login(&mut auth, "root", "rootpw").await.expect("login"));
    let reader = Some(login(&mut auth, "reader", "readerpw").await.expect("login"));
    auth.auth_disable(with_token(AuthDisableRequest {}, &root))
        .await
        .expect("disable");
    out.extend(calls(&ch, "disabled", &reader, lease_of_w).await);
    out
}

/// A matrix line: caller, call, answer (`calls` formats them at fixed widths).
fn split(line: &str) -> (&str, &str, &str) {
    if line.len() < 38 || !line.is_char_boundary(8) || !line.is_char_boundary(38) {
        return ("", "", line);
    }
    (line[..8].trim(), line[9..37].trim(), &line[38..])
}

/// What current etcd answers where etcd 3.4.23 — the oracle installed here —
/// predates its security fixes (etcd 3.4.26 / 3.5.9 and later: lease RPCs
/// need a user and rights on the lease's keys, nested txns are checked,
/// Status and alarm listing need a user, changing alarms needs root, and a
/// token is ignored once auth is off). cairn answers as current etcd does;
/// everything else must equal etcd 3.4.23's answer.
fn current_etcd(who: &str, call: &str, old: &str, off: &BTreeMap<String, String>) -> String {
    if who == "disabled" {
        // Auth is off: the token is ignored, as if there were none.
        return off.get(call).cloned().unwrap_or_default();
    }
    let token_err = match who {
        "stale" | "garbage" => Some("Unauthenticated: etcdserver: invalid auth token"),
        "none" => Some("InvalidArgument: etcdserver: user name is empty"),
        _ => None,
    };
    let denied = "PermissionDenied: etcdserver: permission denied";
    let user_without = |users: &[&str]| users.contains(&who);
    let answer = match call {
        "txn nested put /r/" if user_without(&["reader", "writer", "norole"]) => Some(denied),
        "txn nested put /r/" => token_err,
        "lease grant" | "lease revoke own" | "lease ttl no keys (w)" | "status" | "alarm get" => {
            token_err
        }
        "lease ttl with keys (w)" | "lease leases" | "alarm deactivate" => {
            token_err.or(user_without(&["reader", "writer", "norole"]).then_some(denied))
        }
        "lease keep-alive (w)" => {
            token_err.or(user_without(&["reader", "norole"]).then_some(denied))
        }
        _ => None,
    };
    answer.map_or_else(|| old.to_owned(), str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_answers_every_rpc_as_etcd_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let want = matrix(&etcd.endpoint()).await;
    drop(etcd);
    let cairn = start_cairn(dir.path());
    let got = matrix(&cairn.endpoint()).await;
    assert_eq!(want.len(), got.len());
    // The matrix means something: rights differ by caller where they must.
    let answer = |who: &str, call: &str| {
        got.iter()
            .map(|l| split(l))
            .find(|(w, c, _)| *w == who && *c == call)
            .map(|(_, _, a)| a.to_owned())
            .unwrap_or_default()
    };
    assert!(
        answer("root", "lock /w/lk").starts_with("OK"),
        "{}",
        answer("root", "lock /w/lk")
    );
    assert!(answer("writer", "lock /w/lk").contains("permission denied"));
    assert!(answer("reader", "range /r/a").starts_with("OK"));
    assert!(answer("reader", "put /r/x").contains("permission denied"));
    assert!(answer("writer", "put /w/x").starts_with("OK"));
    assert!(answer("none", "range /r/a").contains("user name is empty"));
    assert!(answer("stale", "range /r/a").contains("invalid auth token"));
    assert!(answer("root", "campaign /w/el").starts_with("OK"));
    let off: BTreeMap<String, String> = want
        .iter()
        .map(|l| split(l))
        .filter(|(who, _, _)| *who == "off")
        .map(|(_, call, answer)| (call.to_owned(), answer.to_owned()))
        .collect();
    let diffs: Vec<String> = want
        .iter()
        .zip(&got)
        .filter_map(|(w, g)| {
            let (who, call, old) = split(w);
            let expected = if who.is_empty() {
                w.clone()
            } else {
                format!("{}{}", &w[..38], current_etcd(who, call, old, &off))
            };
            (expected != *g)
                .then(|| format!("etcd 3.4.23: {w}\nexpected:    {expected}\ncairn:       {g}"))
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{} of {} answers differ:\n{}",
        diffs.len(),
        want.len(),
        diffs.join("\n")
    );
}

// ---- JWT tokens ----

/// A JWT session: log in, write, change auth (the token's revision goes
/// stale), write again with the old token, a garbage token, log in again.
/// `foreign` is a token another server issued for `alice` at the same point
/// (it must be accepted when the keys are the same). Returns one line per
/// step and alice's token from the point `foreign` stands for.
async fn jwt_session(endpoint: &str, foreign: Option<String>) -> (Vec<String>, String) {
    let ch = channel(endpoint).await;
    let mut auth = AuthClient::new(ch.clone());
    let mut kv = KvClient::new(ch.clone());
    let add = |n: &str| AuthUserAddRequest {
        name: n.into(),
        password: format!("{n}pw"),
        ..Default::default()
    };
    auth.user_add(add("root")).await.expect("root");
    auth.user_add(add("alice")).await.expect("alice");
    auth.role_add(AuthRoleAddRequest { name: "r".into() })
        .await
        .expect("role");
    auth.role_grant_permission(AuthRoleGrantPermissionRequest {
        name: "r".into(),
        perm: perm(PermType::Readwrite, "/a/", b"/a0"),
    })
    .await
    .expect("grant");
    for (u, r) in [("root", "root"), ("alice", "r")] {
        auth.user_grant_role(AuthUserGrantRoleRequest {
            user: u.into(),
            role: r.into(),
        })
        .await
        .expect("grant role");
    }
    auth.auth_enable(AuthEnableRequest {})
        .await
        .expect("enable");
    let root = Some(
        login(&mut auth, "root", "rootpw")
            .await
            .expect("root login"),
    );
    let alice = login(&mut auth, "alice", "alicepw")
        .await
        .expect("alice login");
    let mut out = Vec::new();
    let put = |k: &str| PutRequest {
        key: k.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    out.push(format!(
        "token has three parts: {}",
        alice.split('.').count() == 3
    ));
    let t = Some(alice.clone());
    out.push(format!(
        "put with token: {}",
        outcome(kv.put(with_token(put("/a/x"), &t)).await, ok)
    ));
    if let Some(f) = &foreign {
        let f = Some(f.clone());
        out.push(format!(
            "put with the other server's token: {}",
            outcome(kv.put(with_token(put("/a/f"), &f)).await, ok)
        ));
    }
    out.push(format!(
        "put outside: {}",
        outcome(kv.put(with_token(put("/b/x"), &t)).await, ok)
    ));
    auth.role_grant_permission(with_token(
        AuthRoleGrantPermissionRequest {
            name: "r".into(),
            perm: perm(PermType::Read, "/b/", b"/b0"),
        },
        &root,
    ))
    .await
    .expect("grant as root");
    out.push(format!(
        "put with the token from before the change: {}",
        outcome(kv.put(with_token(put("/a/y"), &t)).await, ok)
    ));
    let get = RangeRequest {
        key: b"/a/x".to_vec(),
        ..Default::default()
    };
    out.push(format!(
        "get with the token from before the change: {}",
        outcome(kv.range(with_token(get.clone(), &t)).await, |r| format!(
            "count={}",
            r.count
        ))
    ));
    let garbage = Some("eyJhbGciOiJFUzI1NiJ9.e30.c2ln".to_owned());
    out.push(format!(
        "get with a forged token: {}",
        outcome(
            kv.range(with_token(get.clone(), &garbage)).await,
            |r| format!("count={}", r.count)
        )
    ));
    let fresh = Some(
        login(&mut auth, "alice", "alicepw")
            .await
            .expect("login again"),
    );
    out.push(format!(
        "put after logging in again: {}",
        outcome(kv.put(with_token(put("/a/y"), &fresh)).await, ok)
    ));
    out.push(format!(
        "wrong password: {:?}",
        login(&mut auth, "alice", "nope").await.err()
    ));
    (out, alice)
}

fn jwt_flags(dir: &std::path::Path) -> Vec<String> {
    let key = rcgen::KeyPair::generate().expect("P-256 key");
    let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
    std::fs::write(&private, key.serialize_pem()).expect("write key");
    std::fs::write(&public, key.public_key_pem()).expect("write public key");
    vec![format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=ES256,ttl=10m",
        public.display(),
        private.display()
    )]
}

fn start_single(server: Server, dir: &std::path::Path, flags: &[String]) -> Proc {
    let (cp, pp) = (free_port(), free_port());
    let mut all = founding_flags(
        "j1",
        &format!("http://127.0.0.1:{pp}"),
        &format!("j1=http://127.0.0.1:{pp}"),
    );
    all.extend(flags.iter().cloned());
    let p = spawn_member(server, "j1", dir, cp, pp, &all, &[]);
    wait_healthy(&p);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_behave_as_etcds_and_each_server_accepts_the_others_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = jwt_flags(dir.path());
    let etcd_dir = dir.path().join("etcd");
    let cairn_dir = dir.path().join("cairn");
    std::fs::create_dir_all(&etcd_dir).expect("dir");
    std::fs::create_dir_all(&cairn_dir).expect("dir");
    let etcd = start_single(Server::Etcd, &etcd_dir, &flags);
    let (want, etcd_token) = jwt_session(&etcd.endpoint(), None).await;
    drop(etcd);
    let cairn = start_single(Server::Cairn, &cairn_dir, &flags);
    // etcd's token for alice, issued at the same auth revision, is valid here.
    let (mut got, cairn_token) = jwt_session(&cairn.endpoint(), Some(etcd_token)).await;
    let foreign = got.remove(2);
    assert_eq!(foreign, "put with the other server's token: OK ");
    drop(cairn);
    assert_eq!(want, got);
    // And the other way: etcd accepts the token cairn issued.
    let etcd_dir2 = dir.path().join("etcd2");
    std::fs::create_dir_all(&etcd_dir2).expect("dir");
    let etcd = start_single(Server::Etcd, &etcd_dir2, &flags);
    let (again, _) = jwt_session(&etcd.endpoint(), Some(cairn_token)).await;
    assert_eq!(again[2], "put with the other server's token: OK ");
}

/// A keep-alive stream merely marked as forwarded by a follower (a header
/// any client could send) gets nothing the client's own rights would not:
/// the leader checks every renewal again with the stream's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_stream_marked_forwarded_is_checked_by_the_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let ch = channel(&cairn.endpoint()).await;
    let mut auth = AuthClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let mut kv = KvClient::new(ch.clone());
    let id = lease
        .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    kv.put(PutRequest {
        key: b"/w/leased".to_vec(),
        value: b"1".to_vec(),
        lease: id,
        ..Default::default()
    })
    .await
    .expect("put");
    set_up_users(&ch).await;
    auth.auth_enable(AuthEnableRequest {})
        .await
        .expect("enable");
    let reader = Some(login(&mut auth, "reader", "readerpw").await.expect("login"));
    let writer = Some(login(&mut auth, "writer", "writerpw").await.expect("login"));
    let forged = |token: &Option<String>| {
        let mut r = with_token(
            tokio_stream::iter(vec![LeaseKeepAliveRequest { id }]),
            token,
        );
        r.metadata_mut().insert(
            cairn::server::LEASE_FORWARDED_HEADER,
            "1".parse().expect("ascii"),
        );
        r
    };
    let first = |r: Result<
        tonic::Response<tonic::Streaming<LeaseKeepAliveResponse>>,
        tonic::Status,
    >| async {
        match r {
            Ok(resp) => match resp.into_inner().message().await {
                Ok(Some(a)) => format!("OK ttl>0={}", a.ttl > 0),
                Ok(None) => "ended".to_owned(),
                Err(s) => format!("{:?}: {}", s.code(), s.message()),
            },
            Err(s) => format!("{:?}: {}", s.code(), s.message()),
        }
    };
    let none = first(lease.lease_keep_alive(forged(&None)).await).await;
    assert!(none.contains("user name is empty"), "{none}");
    let read_only = first(lease.lease_keep_alive(forged(&reader)).await).await;
    assert!(read_only.contains("permission denied"), "{read_only}");
    let garbage = first(lease.lease_keep_alive(forged(&Some("x.1".into()))).await).await;
    assert!(garbage.contains("invalid auth token"), "{garbage}");
    let allowed = first(lease.lease_keep_alive(forged(&writer)).await).await;
    assert_eq!(allowed, "OK ttl>0=true");
}

// ---- cairnctl: the same sessions, byte for byte etcdctl's ----

/// `mask`, and the ids of `-w fields` too.
fn mask_all(text: &str) -> String {
    ["\"ClusterID\" : ", "\"MemberID\" : ", "\"RaftTerm\" : "]
        .iter()
        .fold(mask(text), |out, pat| mask_digits_after(&out, pat))
}

/// `cmd` split on spaces (`''` is an empty argument), with `stdin`.
fn cli_step(cmd: &str, stdin: Option<&str>) -> common::sessions::Step {
    common::sessions::Step {
        args: cmd
            .split_whitespace()
            .map(|a| {
                if a == "''" {
                    String::new()
                } else {
                    a.to_owned()
                }
            })
            .collect(),
        stdin: stdin.map(str::to_owned),
    }
}

/// The session with the CLI of this thread: exit status, stdout, stderr.
fn run_cli_session(endpoint: &str, steps: &[common::sessions::Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| {
            let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
            let out = etcdctl(endpoint, &args, s.stdin.as_deref());
            format!(
                "$ etcdctl {:?} <<< {:?}\n[exit {}]\n{}--- stderr\n{}",
                s.args,
                s.stdin,
                out.status.code().unwrap_or(-1),
                mask_all(&String::from_utf8_lossy(&out.stdout)),
                mask_all(&String::from_utf8_lossy(&out.stderr))
            )
        })
        .collect()
}

/// The steps whose transcripts differ between etcdctl and cairnctl, each
/// run against a fresh server of each kind.
fn cairnctl_differences(steps: &[common::sessions::Step]) -> Vec<String> {
    let mut diffs = Vec::new();
    for server in [Server::Etcd, Server::Cairn] {
        let (d1, d2) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let start = |d: &std::path::Path| match server {
            Server::Etcd => start_etcd(d),
            Server::Cairn => start_cairn(d),
        };
        let (a, b) = (start(d1.path()), start(d2.path()));
        let want = run_cli_session(&a.endpoint(), steps);
        let got = with_ctl(cairnctl_bin(), || run_cli_session(&b.endpoint(), steps));
        assert_eq!(want.len(), got.len());
        diffs.extend(want.iter().zip(&got).filter(|(w, g)| w != g).map(|(w, g)| {
            let label = server.label();
            format!("--- etcdctl on {label}\n{w}\n+++ cairnctl on {label}\n{g}")
        }));
    }
    diffs
}

fn assert_no_differences(diffs: Vec<String>) {
    assert!(
        diffs.is_empty(),
        "{} step runs differ from etcdctl's:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// The auth session above (users, roles, permissions, `--user` requests)
/// run with cairnctl prints what etcdctl prints, on etcd and on cairn.
#[test]
fn cairnctl_auth_session_prints_what_etcdctl_prints() {
    let steps: Vec<_> = auth_session()
        .iter()
        .map(|Step(cmd, stdin)| cli_step(cmd, *stdin))
        .collect();
    assert_no_differences(cairnctl_differences(&steps));
}

/// Every output format of the auth, user and role commands, their
/// argument checks, password prompts (on a pipe: `stty` complains on
/// stderr, as it does for etcdctl), `--interactive=false`, and the
/// `--user` / `--password` rules.
fn auth_cli_session() -> Vec<common::sessions::Step> {
    let plain = [
        "role add r1 -w json",
        "role add r1 -w fields",
        "role add r2 -w table",
        "role add",
        "role add a b",
        "role add ''",
        "role delete",
        "role get",
        "role list x",
        "role grant-permission r1 read",
        "role grant-permission r1 bogus k",
        "role grant-permission r1 Read k",
        "role grant-permission r1 READWRITE /p/ --prefix",
        "role grant-permission r1 write k e -w json",
        "role grant-permission r1 read z --from-key -w fields",
        "role grant-permission r1 read k e --prefix",
        "role grant-permission r1 read k e --from-key",
        "role grant-permission r1 read k --from-key --prefix",
        "role grant-permission r1 read '' --from-key --prefix",
        "role grant-permission r1 read '' --prefix",
        "role grant-permission r1 write '' e",
        "role grant-permission r1 read x y z",
        "role grant-permission r1 read x --bogus",
        "role grant-permission nosuch read x",
        "role get r1",
        "role get r1 -w json",
        "role get r1 -w fields",
        "role get r1 -w table",
        "role get nosuch",
        "role list",
        "role list -w json",
        "role list -w fields",
        "role list -w table",
        "role revoke-permission r1",
        "role revoke-permission r1 k",
        "role revoke-permission r1 k e",
        "role revoke-permission r1 z --from-key -w json",
        "role revoke-permission r1 /p/ --prefix -w fields",
        "role revoke-permission r1 '' --prefix",
        "role revoke-permission r1 ''",
        "role revoke-permission r1 nope",
        "role revoke-permission nosuch k",
        "role delete nosuch",
        "role delete r2 -w json",
        "role get r1",
    ];
    let mut s: Vec<_> = plain.iter().map(|c| cli_step(c, None)).collect();
    let with_input: &[(&str, Option<&str>)] = &[
        ("user add u1 --interactive=false", Some("pw1\n")),
        ("user add u2 --interactive=false", Some("  pw2 rest\n")),
        ("user add u3", Some("pw3\npw3\n")),
        ("user add u4", Some("a\nb\n")),
        ("user add u5", Some("\n")),
        ("user add u6", None),
        ("user add u7 --new-user-password=np -w json", None),
        ("user add u8:colon --new-user-password=np", None),
        ("user add :x", None),
        ("user add u9 --no-password -w fields", None),
        ("user add u10:", None),
        ("user add u1:again", None),
        ("user add", None),
        ("user add a b", None),
        ("user add u11 --interactive=maybe", None),
        ("user ad u12:x", None),
        ("user get u1 -w json", None),
        ("user get u1 -w fields", None),
        ("user get u1 -w table", None),
        ("user get nosuch", None),
        ("user get", None),
        ("user list", None),
        ("user list -w json", None),
        ("user list -w fields", None),
        ("user list -w table", None),
        ("user list x", None),
        ("user grant-role u1 r1 -w json", None),
        ("user grant-role u1 r1 -w fields", None),
        ("user grant-role u1 nosuch", None),
        ("user grant-role nosuch r1", None),
        ("user grant-role a", None),
        ("user get u1", None),
        ("user get u1 --detail", None),
        ("user get u1 --detail -w json", None),
        ("user get u1 --detail -w fields", None),
        ("user get u1 --detail -w table", None),
        ("user get u9 --detail -w table", None),
        ("user revoke-role u1 r1 -w fields", None),
        ("user revoke-role u1 r1", None),
        ("user revoke-role a", None),
        ("user passwd u1 --interactive=false", Some("newpw\n")),
        ("user passwd u1", Some("x1\nx1\n")),
        ("user passwd u1", Some("x1\ny1\n")),
        ("user passwd u1 -w json", Some("\n")),
        ("user passwd", None),
        ("user passwd nosuch --interactive=false", Some("x\n")),
        ("user delete u2 -w json", None),
        ("user delete nosuch", None),
        ("user delete", None),
        ("user get --help", None),
        ("auth enable x", None),
        ("auth disable x", None),
        ("auth enable", None),
        ("user add root --new-user-password=rootpw", None),
        ("auth enable -w yaml", None),
        ("auth enable", None),
        ("role get root", None),
        ("user get root", None),
        ("user list", None),
        ("--user root user list", Some("rootpw\n")),
        ("--user root user list", Some("wrong\n")),
        ("--user root user list", None),
        ("--user root --password rootpw user list", None),
        ("--user root:rootpw --password rootpw user list", None),
        ("--password rootpw user list", None),
        ("--user :rootpw user list", None),
        ("--user root:rootpw user get u1 --detail", None),
        ("--user root user passwd u1", Some("p2\np2\nrootpw\n")),
        (
            "--user root user add u13 --interactive=false",
            Some("p13 rootpw\n"),
        ),
        ("--user u13:p13 get x", None),
        ("--user root:rootpw -w table auth disable", None),
        ("--user root:rootpw role list -w json", None),
    ];
    s.extend(with_input.iter().map(|(c, i)| cli_step(c, *i)));
    s
}

#[test]
fn cairnctl_auth_formats_prompts_and_errors_are_etcdctls() {
    assert_no_differences(cairnctl_differences(&auth_cli_session()));
}

/// `-w protobuf` (whose bytes hold the ids, so both CLIs ask the same
/// server): the same bytes from cairnctl as from etcdctl.
#[test]
fn cairnctl_auth_protobuf_output_is_etcdctls() {
    for server in [Server::Etcd, Server::Cairn] {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = match server {
            Server::Etcd => start_etcd(dir.path()),
            Server::Cairn => start_cairn(dir.path()),
        };
        let ep = p.endpoint();
        for cmd in [
            "role add r1",
            "role grant-permission r1 readwrite /p/ --prefix",
            "role grant-permission r1 write k",
            "user add u1:pw",
            "user grant-role u1 r1",
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            ctl_ok(&ep, &args);
        }
        for cmd in [
            "role get r1 -w protobuf",
            "role list -w protobuf",
            "user get u1 -w protobuf",
            "user list -w protobuf",
            "user get u1 --detail -w protobuf",
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            let want = etcdctl(&ep, &args, None);
            let got = with_ctl(cairnctl_bin(), || etcdctl(&ep, &args, None));
            assert_eq!(
                (got.status.code(), &got.stdout),
                (want.status.code(), &want.stdout),
                "{} {cmd}",
                server.label()
            );
            assert!(!want.stdout.is_empty(), "{cmd}");
        }
    }
}
