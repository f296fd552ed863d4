//! `lock <name> [command ...]` and `elect <name> [proposal]` / `elect -l
//! <name>` as etcdctl 3.4 runs them: clientv3's concurrency recipes on the
//! client (a session lease kept alive, a key per contender under
//! `<name>/`, a wait for the deletion of each predecessor), the owner's key
//! printed, held until SIGINT or SIGTERM, then released.

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    compare, request_op, response_op, watch_request, Compare, DeleteRangeRequest,
    LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest,
};
use cairn_proto::mvccpb::KeyValue;

use super::client::{rpc_error, Client, Ctx, Global};
use super::flags::{short, switch, value, Flags, Spec};
use super::kv::{prefix_end, print_get};
use super::{out, Failure, EXIT_BAD_ARGS, EXIT_ERROR};

pub const LOCK_FLAGS: &[Spec] = &[value("ttl")];
pub const ELECT_FLAGS: &[Spec] = &[short(switch("listen"), 'l')];

fn err(s: tonic::Status) -> Failure {
    Failure(EXIT_ERROR, rpc_error(&s))
}

/// A session: a lease kept alive in the background until the process ends.
struct Session {
    lease: i64,
    /// Fires when the lease could not be kept alive.
    lost: tokio::sync::oneshot::Receiver<()>,
}

async fn session(ctx: &Ctx, ttl: i64) -> Result<Session, Failure> {
    let lease = LeaseClient::new(ctx.channel.clone())
        .lease_grant(ctx.req(LeaseGrantRequest { ttl, id: 0 }))
        .await
        .map_err(err)?
        .into_inner();
    let (lost_tx, lost) = tokio::sync::oneshot::channel();
    let (ctx2, id, ttl) = (ctx.clone(), lease.id, lease.ttl.max(1));
    tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel::<LeaseKeepAliveRequest>(1);
        // The first keep-alive goes with the call (the server answers the
        // call with its first answer).
        let _ = tx.send(LeaseKeepAliveRequest { id }).await;
        let stream = LeaseClient::new(ctx2.channel.clone())
            .lease_keep_alive(ctx2.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await;
        let Ok(stream) = stream else {
            let _ = lost_tx.send(());
            return;
        };
        let mut stream = stream.into_inner();
        let mut first = true;
        loop {
            if !first && tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                break;
            }
            first = false;
            match stream.message().await {
                Ok(Some(r)) if r.ttl > 0 => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_secs(ttl as u64).div_f64(3.0)).await;
        }
        let _ = lost_tx.send(());
    });
    Ok(Session {
        lease: lease.id,
        lost,
    })
}

async fn range(ctx: &Ctx, r: RangeRequest) -> Result<RangeResponse, Failure> {
    KvClient::new(ctx.channel.clone())
        .range(ctx.req(r))
        .await
        .map(tonic::Response::into_inner)
        .map_err(err)
}

async fn txn(ctx: &Ctx, r: TxnRequest) -> Result<TxnResponse, Failure> {
    KvClient::new(ctx.channel.clone())
        .txn(ctx.req(r))
        .await
        .map(tonic::Response::into_inner)
        .map_err(err)
}

/// The request for the key under `pfx` created first (`last`: last).
fn first_or_last_created(pfx: &[u8], last: bool, max_create: i64) -> RangeRequest {
    RangeRequest {
        key: pfx.to_vec(),
        range_end: prefix_end(pfx),
        limit: 1,
        sort_target: 2,
        sort_order: if last { 2 } else { 1 },
        max_create_revision: max_create,
        ..RangeRequest::default()
    }
}

fn range_op(r: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(r)),
    }
}

fn create_rev_is_zero(key: &[u8]) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::CreateRevision(0)),
    }
}

fn ranges(r: &TxnResponse, i: usize) -> Vec<KeyValue> {
    match r.responses.get(i).and_then(|o| o.response.as_ref()) {
        Some(response_op::Response::ResponseRange(g)) => g.kvs.clone(),
        _ => Vec::new(),
    }
}

/// Waits until `key` is deleted, watching from `rev`.
async fn wait_delete(ctx: &Ctx, key: &[u8], rev: i64) -> Result<(), Failure> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: key.to_vec(),
                start_revision: rev,
                ..WatchCreateRequest::default()
            },
        )),
    });
    let mut stream = WatchClient::new(ctx.channel.clone())
        .watch(ctx.req(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)))
        .await
        .map_err(err)?
        .into_inner();
    loop {
        match stream.message().await.map_err(err)? {
            Some(r) if r.events.iter().any(|e| e.r#type == 1) => return Ok(()),
            Some(r) if r.canceled => {
                return Err(Failure(EXIT_ERROR, "watch canceled".into()));
            }
            Some(_) => {}
            None => return Err(Failure(EXIT_ERROR, "watch closed".into())),
        }
    }
}

/// Waits until every key under `pfx` created at or before `max_create` is
/// deleted (clientv3's `waitDeletes`).
async fn wait_deletes(ctx: &Ctx, pfx: &[u8], max_create: i64) -> Result<ResponseHeader, Failure> {
    loop {
        let r = range(ctx, first_or_last_created(pfx, true, max_create)).await?;
        let Some(last) = r.kvs.first() else {
            return Ok(r.header.unwrap_or_default());
        };
        let rev = r.header.as_ref().map_or(0, |h| h.revision);
        wait_delete(ctx, &last.key, rev).await?;
    }
}

use cairn_runtime::client_port::Interrupts;

/// Deletes `key` (a lock's or a leader's).
async fn delete(ctx: &Ctx, key: &[u8]) -> Result<(), Failure> {
    KvClient::new(ctx.channel.clone())
        .delete_range(ctx.req(DeleteRangeRequest {
            key: key.to_vec(),
            ..DeleteRangeRequest::default()
        }))
        .await
        .map_err(err)?;
    Ok(())
}

async fn connect(g: &Global) -> Result<Ctx, Failure> {
    let mut c = Client::new(g.clone());
    c.ensure_login().await?;
    c.stream_ctx(g.command_timeout)
        .await
        .map_err(|e| Failure(EXIT_ERROR, e))
}

async fn print_key(g: &Global, ctx: &Ctx, key: &[u8]) -> Result<(), Failure> {
    let r = range(
        ctx,
        RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        },
    )
    .await?;
    if r.kvs.is_empty() {
        return Err(Failure(EXIT_ERROR, "lock lost on init".into()));
    }
    out(&print_get(g.format, g.hex, false, &r)?)
}

/// `cairnctl lock`.
pub fn lock(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let Some(name) = args.first() else {
        return Err(Failure(
            EXIT_BAD_ARGS,
            "lock takes a lock name argument and an optional command to execute".into(),
        ));
    };
    let ttl = f.int_or("ttl", 10)?;
    let command = args[1..].to_vec();
    let g = g.with_format(f)?;
    let name = name.clone();
    super::client::runtime()?.block_on(async move {
        let mut sig = Interrupts::new();
        let ctx = connect(&g).await?;
        let s = session(&ctx, ttl).await?;
        let pfx = format!("{name}/").into_bytes();
        let my_key = [pfx.clone(), format!("{:x}", s.lease).into_bytes()].concat();
        let acquire = async {
            let r = txn(
                &ctx,
                TxnRequest {
                    compare: vec![create_rev_is_zero(&my_key)],
                    success: vec![
                        RequestOp {
                            request: Some(request_op::Request::RequestPut(PutRequest {
                                key: my_key.clone(),
                                lease: s.lease,
                                ..PutRequest::default()
                            })),
                        },
                        range_op(first_or_last_created(&pfx, false, 0)),
                    ],
                    failure: vec![
                        range_op(RangeRequest {
                            key: my_key.clone(),
                            ..RangeRequest::default()
                        }),
                        range_op(first_or_last_created(&pfx, false, 0)),
                    ],
                },
            )
            .await?;
            let mut my_rev = r.header.as_ref().map_or(0, |h| h.revision);
            if !r.succeeded {
                my_rev = ranges(&r, 0).first().map_or(0, |kv| kv.create_revision);
            }
            let owner = ranges(&r, 1);
            if owner.first().is_none_or(|kv| kv.create_revision == my_rev) {
                return Ok::<_, Failure>(r.header.unwrap_or_default());
            }
            match wait_deletes(&ctx, &pfx, my_rev - 1).await {
                Ok(h) => Ok(h),
                Err(e) => {
                    let _ = delete(&ctx, &my_key).await;
                    Err(e)
                }
            }
        };
        let header = tokio::select! {
            biased;
            _ = sig.recv() => return Err(Failure(EXIT_ERROR, "context canceled".into())),
            h = acquire => h?,
        };
        if !command.is_empty() {
            let status = tokio::process::Command::new(&command[0])
                .args(&command[1..])
                .env(
                    "ETCD_LOCK_KEY",
                    String::from_utf8_lossy(&my_key).into_owned(),
                )
                .env("ETCD_LOCK_REV", header.revision.to_string())
                .status()
                .await;
            let unlocked = delete(&ctx, &my_key).await;
            return match status {
                Ok(s) if s.success() => unlocked,
                Ok(s) => Err(Failure(
                    EXIT_ERROR,
                    match s.code() {
                        Some(c) => format!("exit status {c}"),
                        None => "signal: killed".into(),
                    },
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Failure(
                    EXIT_ERROR,
                    format!(
                        "exec: {}: executable file not found in $PATH",
                        super::output::go_quote(&command[0])
                    ),
                )),
                Err(e) => Err(Failure(EXIT_ERROR, e.to_string())),
            };
        }
        print_key(&g, &ctx, &my_key).await?;
        let mut lost = s.lost;
        tokio::select! {
            biased;
            _ = sig.recv() => delete(&ctx, &my_key).await,
            _ = &mut lost => Err(Failure(EXIT_ERROR, "session expired".into())),
        }
    })
}

/// `cairnctl elect`.
pub fn elect(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    if args.len() != 1 && args.len() != 2 {
        return Err(Failure(
            EXIT_BAD_ARGS,
            "elect takes one election name argument and an optional proposal argument".into(),
        ));
    }
    let listen = f.bool("listen")?;
    if args.len() == 1 && !listen {
        return Err(Failure(
            EXIT_BAD_ARGS,
            "no proposal argument but -l not set".into(),
        ));
    }
    if args.len() == 2 && listen {
        return Err(Failure(
            EXIT_BAD_ARGS,
            "proposal given but -l is set".into(),
        ));
    }
    let g = g.with_format(f)?;
    let pfx = format!("{}/", args[0]).into_bytes();
    let proposal = args.get(1).cloned();
    super::client::runtime()?.block_on(async move {
        let mut sig = Interrupts::new();
        let ctx = connect(&g).await?;
        let s = session(&ctx, 60).await?;
        match proposal {
            None => {
                tokio::select! {
                    biased;
                    _ = sig.recv() => Ok(()),
                    r = observe(&g, &ctx, &pfx) => r,
                }
            }
            Some(val) => campaign(&g, &ctx, s, &pfx, &val, &mut sig).await,
        }
    })
}

async fn campaign(
    g: &Global,
    ctx: &Ctx,
    s: Session,
    pfx: &[u8],
    val: &str,
    sig: &mut Interrupts,
) -> Result<(), Failure> {
    let key = [pfx.to_vec(), format!("{:x}", s.lease).into_bytes()].concat();
    let win = async {
        let r = txn(
            ctx,
            TxnRequest {
                compare: vec![create_rev_is_zero(&key)],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: key.clone(),
                        value: val.as_bytes().to_vec(),
                        lease: s.lease,
                        ..PutRequest::default()
                    })),
                }],
                failure: vec![range_op(RangeRequest {
                    key: key.clone(),
                    ..RangeRequest::default()
                })],
            },
        )
        .await?;
        let mut rev = r.header.as_ref().map_or(0, |h| h.revision);
        if !r.succeeded {
            if let Some(kv) = ranges(&r, 0).first() {
                rev = kv.create_revision;
                if kv.value != val.as_bytes() {
                    KvClient::new(ctx.channel.clone())
                        .put(ctx.req(PutRequest {
                            key: key.clone(),
                            value: val.as_bytes().to_vec(),
                            lease: s.lease,
                            ..PutRequest::default()
                        }))
                        .await
                        .map_err(err)?;
                }
            }
        }
        wait_deletes(ctx, pfx, rev - 1).await
    };
    tokio::select! {
        biased;
        _ = sig.recv() => {
            let _ = delete(ctx, &key).await;
            return Err(Failure(EXIT_ERROR, "context canceled".into()));
        }
        r = win => { r?; }
    }
    print_key(g, ctx, &key).await?;
    let mut lost = s.lost;
    tokio::select! {
        biased;
        _ = sig.recv() => delete(ctx, &key).await,
        _ = &mut lost => Err(Failure(EXIT_ERROR, "elect: session expired".into())),
    }
}

/// Prints each leader of the election under `pfx` (and each new value it
/// proclaims), as clientv3's `Observe`.
async fn observe(g: &Global, ctx: &Ctx, pfx: &[u8]) -> Result<(), Failure> {
    loop {
        let r = range(ctx, first_or_last_created(pfx, false, 0)).await?;
        let mut header = r.header.clone().unwrap_or_default();
        let leader = match r.kvs.first() {
            Some(kv) => kv.clone(),
            None => {
                // Wait for the first leader's key.
                match watch_first_put(ctx, pfx, header.revision).await? {
                    (h, kv) => {
                        header = h;
                        kv
                    }
                }
            }
        };
        let show = |h: &ResponseHeader, kv: &KeyValue| -> Result<(), Failure> {
            let resp = RangeResponse {
                header: Some(h.clone()),
                kvs: vec![kv.clone()],
                ..RangeResponse::default()
            };
            out(&print_get(g.format, g.hex, false, &resp)?)
        };
        show(&header, &leader)?;
        // Its value changes until its key is deleted.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = tx.send(WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: leader.key.clone(),
                    start_revision: header.revision + 1,
                    ..WatchCreateRequest::default()
                },
            )),
        });
        let mut stream = WatchClient::new(ctx.channel.clone())
            .watch(ctx.req(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)))
            .await
            .map_err(err)?
            .into_inner();
        'leader: loop {
            let Some(w) = stream.message().await.map_err(err)? else {
                return Err(Failure(EXIT_ERROR, "elect: observer lost".into()));
            };
            for e in &w.events {
                if e.r#type == 1 {
                    break 'leader;
                }
                if let Some(kv) = &e.kv {
                    show(&w.header.clone().unwrap_or_default(), kv)?;
                }
            }
        }
    }
}

async fn watch_first_put(
    ctx: &Ctx,
    pfx: &[u8],
    rev: i64,
) -> Result<(ResponseHeader, KeyValue), Failure> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: pfx.to_vec(),
                range_end: prefix_end(pfx),
                start_revision: rev,
                ..WatchCreateRequest::default()
            },
        )),
    });
    let mut stream = WatchClient::new(ctx.channel.clone())
        .watch(ctx.req(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)))
        .await
        .map_err(err)?
        .into_inner();
    loop {
        let Some(w) = stream.message().await.map_err(err)? else {
            return Err(Failure(EXIT_ERROR, "elect: observer lost".into()));
        };
        for e in &w.events {
            if e.r#type == 0 {
                if let Some(kv) = &e.kv {
                    return Ok((w.header.clone().unwrap_or_default(), kv.clone()));
                }
            }
        }
    }
}
