//! `make-mirror [options] <destination>` as etcdctl 3.4 runs it: the
//! source's keys (all, or under `--prefix`) read at one revision in pages
//! of 1000 and put to the destination, then a watch from the next revision
//! whose events are replayed there, one transaction per source revision;
//! every 30 seconds the count of keys synced so far on a line of its own.
//! Keys land under `--dest-prefix` (the first occurrence of the prefix in
//! each key replaced), under the same prefix by default, or with the prefix
//! taken off (`--no-dest-prefix`). The destination is one endpoint, reached
//! without the source's user; the watch is made again from where it was
//! when the source's stream breaks (clientv3 resumes it so).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    request_op, watch_request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use cairn_proto::mvccpb::event::EventType;

use super::client::{dial_until, Client, Global, REDIAL};
use super::flags::{switch, value, Flags, Spec};
use super::kv::prefix_end;
use super::{Failure, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR};

pub const MIRROR_FLAGS: &[Spec] = &[
    value("prefix"),
    value("dest-prefix"),
    switch("no-dest-prefix"),
    value("dest-cert"),
    value("dest-key"),
    value("dest-cacert"),
    switch("dest-insecure-transport"),
];

/// Keys per page of the initial sync (clientv3/mirror's batch limit).
const PAGE: i64 = 1000;

/// How often the count of keys synced is printed.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// etcd's error for a watch from a compacted revision.
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// Where a source key goes: the first occurrence of `from` replaced by
/// `to` (Go's `strings.Replace(key, from, to, 1)`; an empty `from` is
/// found at the start).
pub fn rename(key: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = if from.is_empty() {
        Some(0)
    } else {
        key.windows(from.len()).position(|w| w == from)
    };
    match at {
        Some(i) => [&key[..i], to, &key[i + from.len()..]].concat(),
        None => key.to_vec(),
    }
}

struct Mirror {
    prefix: Vec<u8>,
    dest_prefix: Vec<u8>,
    total: Arc<AtomicI64>,
}

impl Mirror {
    fn dest_key(&self, key: &[u8]) -> Vec<u8> {
        rename(key, &self.prefix, &self.dest_prefix)
    }

    /// The source's range: everything (from `\0`) or the prefix's keys.
    fn range(&self) -> (Vec<u8>, Vec<u8>) {
        if self.prefix.is_empty() {
            (vec![0], vec![0])
        } else {
            (self.prefix.clone(), prefix_end(&self.prefix))
        }
    }
}

/// `cairnctl make-mirror`.
pub fn run(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let [dest] = args else {
        return Err(Failure(
            EXIT_BAD_ARGS,
            "make-mirror takes one destination argument".into(),
        ));
    };
    let prefix = f.str_or("prefix", "");
    let mut dest_prefix = f.str_or("dest-prefix", "");
    let no_dest_prefix = f.bool("no-dest-prefix")?;
    // The destination: its one endpoint, its own TLS (`--dest-*`, no
    // skipping verification), the source's timeouts, no user.
    let tls = super::client::tls_dialer(
        &f.str_or("dest-cert", ""),
        &f.str_or("dest-key", ""),
        &f.str_or("dest-cacert", ""),
        None,
        f.bool_or("dest-insecure-transport", true)?,
        false,
    )?;
    let dg = Global {
        endpoints: vec![dest.clone()],
        credentials: None,
        tls,
        skip_verify: false,
        ..g.clone()
    };
    super::client::runtime()?.block_on(async move {
        // clientv3.New dials the destination first, then the source; a
        // member that cannot be reached is a bad connection.
        let deadline = Instant::now() + dg.dial_timeout;
        dial_until(&dg, dest, deadline)
            .await
            .map_err(|e| Failure(EXIT_BAD_CONNECTION, e))?;
        let mut dc = Client::new(dg);
        let mut sc = Client::new(g);
        sc.ensure_login().await?;
        let total = Arc::new(AtomicI64::new(0));
        let reporter = {
            let total = total.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REPORT_EVERY).await;
                    println!("{}", total.load(Ordering::SeqCst));
                }
            })
        };
        // The revision of the initial sync: the source's current one.
        let rev = sc
            .range(RangeRequest {
                key: b"foo".to_vec(),
                ..RangeRequest::default()
            })
            .await
            .map_err(|e| Failure(EXIT_ERROR, e))?
            .header
            .map_or(0, |h| h.revision);
        if no_dest_prefix && !dest_prefix.is_empty() {
            return Err(Failure(
                EXIT_BAD_ARGS,
                "`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one"
                    .into(),
            ));
        }
        if !no_dest_prefix && dest_prefix.is_empty() {
            dest_prefix = prefix.clone();
        }
        let m = Mirror {
            prefix: prefix.into_bytes(),
            dest_prefix: dest_prefix.into_bytes(),
            total,
        };
        let r = async {
            sync_base(&m, &mut sc, &mut dc, rev).await?;
            sync_updates(&m, &mut sc, &mut dc, rev + 1).await
        }
        .await;
        reporter.abort();
        // etcdctl exits through ExitWithError even when the watch just
        // ended: `Error: <nil>`.
        Err(Failure(
            EXIT_ERROR,
            r.err().unwrap_or_else(|| "<nil>".into()),
        ))
    })
}

/// Puts the source's keys as of `rev` to the destination.
async fn sync_base(m: &Mirror, sc: &mut Client, dc: &mut Client, rev: i64) -> Result<(), String> {
    let (mut key, end) = m.range();
    loop {
        let page = sc
            .range(RangeRequest {
                key: key.clone(),
                range_end: end.clone(),
                limit: PAGE,
                revision: rev,
                ..RangeRequest::default()
            })
            .await?;
        for kv in &page.kvs {
            let put = PutRequest {
                key: m.dest_key(&kv.key),
                value: kv.value.clone(),
                ..PutRequest::default()
            };
            dc.call(|ctx| {
                let req = ctx.req(put.clone());
                async move { KvClient::new(ctx.channel).put(req).await.map(|_| ()) }
            })
            .await?;
            m.total.fetch_add(1, Ordering::SeqCst);
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                key = last.key.clone();
                key.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// One destination transaction of the operations of one source revision.
async fn apply(dc: &mut Client, ops: Vec<RequestOp>) -> Result<(), String> {
    let txn = TxnRequest {
        success: ops,
        ..TxnRequest::default()
    };
    dc.call(|ctx| {
        let req = ctx.req(txn.clone());
        async move { KvClient::new(ctx.channel).txn(req).await.map(|_| ()) }
    })
    .await
}

/// Watches the source from `from` and replays each revision's events on
/// the destination; returns only on an error (or `Ok` if the source ends
/// the watch without one).
async fn sync_updates(
    m: &Mirror,
    sc: &mut Client,
    dc: &mut Client,
    mut from: i64,
) -> Result<(), String> {
    let (key, end) = m.range();
    loop {
        // A stream to the source (the next member when one cannot be
        // reached), made again from the first revision not yet replayed
        // whenever it breaks.
        let create = WatchCreateRequest {
            key: key.clone(),
            range_end: end.clone(),
            start_revision: from,
            ..WatchCreateRequest::default()
        };
        let opened = sc
            .call(|ctx| {
                // The request stream stays open while the watch lives.
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<WatchRequest>();
                let _ = tx.send(WatchRequest {
                    request_union: Some(watch_request::RequestUnion::CreateRequest(create.clone())),
                });
                let req = ctx.req(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
                async move {
                    let s = WatchClient::new(ctx.channel).watch(req).await?;
                    Ok::<_, tonic::Status>((s.into_inner(), tx))
                }
            })
            .await;
        let (mut stream, tx) = match opened {
            Ok(s) => s,
            Err(e) if e == super::client::DEADLINE_EXCEEDED || e.starts_with("dial ") => {
                tokio::time::sleep(REDIAL).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        loop {
            let r = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            if r.compact_revision != 0 {
                return Err(COMPACTED.into());
            }
            if r.canceled {
                // The server ended the watch: clientv3 closes the channel.
                return Ok(());
            }
            let mut ops = Vec::new();
            let mut last = 0;
            for ev in r.events {
                let Some(kv) = ev.kv else { continue };
                if last != 0 && kv.mod_revision > last {
                    apply(dc, std::mem::take(&mut ops)).await?;
                    from = last + 1;
                }
                last = kv.mod_revision;
                let key = m.dest_key(&kv.key);
                ops.push(RequestOp {
                    request: Some(if ev.r#type == EventType::Delete as i32 {
                        request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                            key,
                            ..DeleteRangeRequest::default()
                        })
                    } else {
                        request_op::Request::RequestPut(PutRequest {
                            key,
                            value: kv.value,
                            ..PutRequest::default()
                        })
                    }),
                });
                m.total.fetch_add(1, Ordering::SeqCst);
            }
            if !ops.is_empty() {
                apply(dc, ops).await?;
                from = last + 1;
            }
        }
        drop(tx);
        // The stream broke: the source may be gone; open it again.
        tokio::time::sleep(REDIAL).await;
    }
}
