//! `lease grant | revoke | timetolive [--keys] | list | keep-alive [--once]`
//! as etcdctl 3.4 runs and prints them.

use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest,
};
use prost::Message;

use super::client::{rpc_error, Client, Global, DEADLINE_EXCEEDED};
use super::flags::Flags;
use super::kv::{parse_hex_i64, unary};
use super::output::*;
use super::{out, Failure, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_BAD_FEATURE, EXIT_ERROR};

fn lease_arg(arg: &str) -> Result<i64, Failure> {
    parse_hex_i64(arg).map_err(|e| {
        Failure(
            EXIT_BAD_ARGS,
            format!("bad lease ID arg ({e}), expecting ID in Hex"),
        )
    })
}

/// What `-w protobuf` says of the lease commands whose clientv3 answers
/// are not protobuf messages.
fn no_protobuf(what: &str) -> Failure {
    Failure(
        EXIT_BAD_FEATURE,
        format!("marshal unsupported for type clientv3.{what}"),
    )
}

/// A clientv3 lease answer in JSON: the header's fields inline, then `rest`.
fn inline_json(
    h: &Option<cairn_proto::etcdserverpb::ResponseHeader>,
    rest: Vec<(&str, Option<String>)>,
) -> String {
    let mut fields = match h {
        Some(h) => header_fields(h),
        None => Vec::new(),
    };
    fields.extend(rest);
    obj(&fields)
}

pub fn run(sub: &str, g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    match sub {
        "grant" => grant(g, f, args),
        "revoke" => revoke(g, f, args),
        "timetolive" => time_to_live(g, f, args),
        "list" => list(g, f),
        _ => keep_alive(g, f, args),
    }
}

fn grant(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let [ttl] = args else {
        return Err(Failure(
            EXIT_BAD_ARGS,
            "lease grant command needs TTL argument".into(),
        ));
    };
    let ttl: i64 = ttl.parse().map_err(|_| {
        Failure(
            EXIT_BAD_ARGS,
            format!(
                "bad TTL (strconv.ParseInt: parsing {}: invalid syntax)",
                go_quote(ttl)
            ),
        )
    })?;
    let g = g.with_format(f)?;
    let r = unary(g.clone(), |mut c| async move {
        c.call(|ctx| {
            let req = ctx.req(LeaseGrantRequest { ttl, id: 0 });
            async move {
                LeaseClient::new(ctx.channel)
                    .lease_grant(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
        .map_err(|e| format!("failed to grant lease ({e})"))
    })?;
    let text = match g.format {
        Format::Simple => format!("lease {:016x} granted with TTL({}s)\n", r.id, r.ttl),
        Format::Json => {
            inline_json(
                &r.header,
                vec![
                    ("ID", Some(r.id.to_string())),
                    ("TTL", Some(r.ttl.to_string())),
                    ("Error", Some(jstr(&r.error))),
                ],
            ) + "\n"
        }
        Format::Fields => {
            header_fields_text(&r.header) + &format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl)
        }
        Format::Protobuf => return Err(no_protobuf("LeaseGrantResponse")),
        Format::Table => return Err(g.format.unsupported()),
    };
    out(text.as_bytes())
}

fn revoke(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let [id] = args else {
        return Err(Failure(
            EXIT_BAD_ARGS,
            "lease revoke command needs 1 argument".into(),
        ));
    };
    let id = lease_arg(id)?;
    let g = g.with_format(f)?;
    let r = unary(g.clone(), |mut c| async move {
        c.call(|ctx| {
            let req = ctx.req(LeaseRevokeRequest { id });
            async move {
                LeaseClient::new(ctx.channel)
                    .lease_revoke(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
        .map_err(|e| format!("failed to revoke lease ({e})"))
    })?;
    let bytes = match g.format {
        Format::Simple => format!("lease {id:016x} revoked\n").into_bytes(),
        Format::Json => (obj(&[("header", opt_header(&r.header))]) + "\n").into_bytes(),
        Format::Fields => header_fields_text(&r.header).into_bytes(),
        Format::Protobuf => return Err(no_protobuf("LeaseRevokeResponse")),
        Format::Table => return Err(g.format.unsupported()),
    };
    out(&bytes)
}

/// Runs `f` on a client; its error is exit 2 (as etcdctl's lease
/// timetolive, list and keep-alive exit).
fn bad_connection<T, F, Fut>(g: Global, f: F) -> Result<T, Failure>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    unary(g, f).map_err(|Failure(code, msg)| {
        Failure(
            if code == EXIT_ERROR {
                EXIT_BAD_CONNECTION
            } else {
                code
            },
            msg,
        )
    })
}

fn time_to_live(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let [id] = args else {
        return Err(Failure(
            EXIT_BAD_ARGS,
            "lease timetolive command needs lease ID as argument".into(),
        ));
    };
    let keys = f.bool("keys")?;
    let id = lease_arg(id)?;
    let g = g.with_format(f)?;
    let r = bad_connection(g.clone(), |mut c| async move {
        c.call(|ctx| {
            let req = ctx.req(LeaseTimeToLiveRequest { id, keys });
            async move {
                LeaseClient::new(ctx.channel)
                    .lease_time_to_live(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    })?;
    let text = match g.format {
        Format::Simple => {
            if r.granted_ttl == 0 && r.ttl == -1 {
                format!("lease {:016x} already expired\n", r.id)
            } else {
                let mut t = format!(
                    "lease {:016x} granted with TTL({}s), remaining({}s)",
                    r.id, r.granted_ttl, r.ttl
                );
                if keys {
                    let ks: Vec<String> = r
                        .keys
                        .iter()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect();
                    t += &format!(", attached keys([{}])", ks.join(" "));
                }
                t + "\n"
            }
        }
        Format::Json => {
            let keys = if r.keys.is_empty() {
                "null".to_owned()
            } else {
                arr(r.keys.iter().map(|k| jbytes(k)).collect())
            };
            inline_json(
                &r.header,
                vec![
                    ("id", Some(r.id.to_string())),
                    ("ttl", Some(r.ttl.to_string())),
                    ("granted-ttl", Some(r.granted_ttl.to_string())),
                    ("keys", Some(keys)),
                ],
            ) + "\n"
        }
        Format::Fields => {
            let mut t = header_fields_text(&r.header)
                + &format!(
                    "\"ID\" : {}\n\"TTL\" : {}\n\"GrantedTTL\" : {}\n",
                    r.id, r.ttl, r.granted_ttl
                );
            for k in &r.keys {
                t += &format!("\"Key\" : {}\n", go_quote_bytes(k));
            }
            t
        }
        Format::Protobuf => return Err(no_protobuf("LeaseTimeToLiveResponse")),
        Format::Table => return Err(g.format.unsupported()),
    };
    out(text.as_bytes())
}

fn list(g: Global, f: &Flags) -> Result<(), Failure> {
    let g = g.with_format(f)?;
    let r = bad_connection(g.clone(), |mut c| async move {
        c.call(|ctx| {
            let req = ctx.req(LeaseLeasesRequest {});
            async move {
                LeaseClient::new(ctx.channel)
                    .lease_leases(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    })?;
    let text = match g.format {
        Format::Simple => {
            let mut t = format!("found {} leases\n", r.leases.len());
            for l in &r.leases {
                t += &format!("{:016x}\n", l.id);
            }
            t
        }
        Format::Json => {
            let leases = arr(r
                .leases
                .iter()
                .map(|l| obj(&[("id", Some(l.id.to_string()))]))
                .collect());
            inline_json(&r.header, vec![("leases", Some(leases))]) + "\n"
        }
        Format::Fields => {
            let mut t = header_fields_text(&r.header);
            for l in &r.leases {
                t += &format!("\"ID\" : {}\n", l.id);
            }
            t
        }
        Format::Protobuf => return Err(no_protobuf("LeaseLeasesResponse")),
        Format::Table => return Err(g.format.unsupported()),
    };
    out(text.as_bytes())
}

fn keep_alive_text(format: Format, r: &LeaseKeepAliveResponse) -> Result<String, Failure> {
    Ok(match format {
        Format::Simple => format!("lease {:016x} keepalived with TTL({})\n", r.id, r.ttl),
        Format::Json => {
            inline_json(
                &r.header,
                vec![
                    ("ID", Some(r.id.to_string())),
                    ("TTL", Some(r.ttl.to_string())),
                ],
            ) + "\n"
        }
        Format::Fields => {
            header_fields_text(&r.header) + &format!("\"ID\" : {}\n\"TTL\" : {}\n", r.id, r.ttl)
        }
        Format::Protobuf => {
            let _ = r.encode_to_vec();
            return Err(no_protobuf("LeaseKeepAliveResponse"));
        }
        Format::Table => return Err(format.unsupported()),
    })
}

/// One keep-alive of lease `id` on a stream of its own, within `deadline`.
async fn keep_alive_once(
    c: &mut Client,
    id: i64,
    deadline: Instant,
) -> Result<LeaseKeepAliveResponse, String> {
    c.call_until(deadline, |ctx| async move {
        let req = ctx.req(tokio_stream::iter(vec![LeaseKeepAliveRequest { id }]));
        let mut stream = LeaseClient::new(ctx.channel)
            .lease_keep_alive(req)
            .await?
            .into_inner();
        match stream.message().await? {
            Some(r) => Ok(r),
            None => Err(tonic::Status::unavailable("keep-alive stream closed")),
        }
    })
    .await
}

fn keep_alive(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let [id] = args else {
        return Err(Failure(
            EXIT_BAD_ARGS,
            "lease keep-alive command needs lease ID as argument".into(),
        ));
    };
    let id = lease_arg(id)?;
    let once = f.bool("once")?;
    let g = g.with_format(f)?;
    let format = g.format;
    let not_found = || {
        Failure(
            EXIT_BAD_CONNECTION,
            "etcdserver: requested lease not found".into(),
        )
    };
    if once {
        let r = bad_connection(g, |mut c| async move {
            let deadline = Instant::now() + c.g.command_timeout;
            keep_alive_once(&mut c, id, deadline).await
        })?;
        if r.ttl <= 0 {
            return Err(not_found());
        }
        return out(keep_alive_text(format, &r)?.as_bytes());
    }
    // Until the lease is gone: a keep-alive a third of its TTL after the
    // last one, each answer printed.
    super::client::runtime()?.block_on(async move {
        let mut c = Client::new(g);
        c.ensure_login().await?;
        let ctx = c
            .stream_ctx(Duration::from_secs(3600 * 24 * 365))
            .await
            .map_err(|e| Failure(EXIT_BAD_CONNECTION, e))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<LeaseKeepAliveRequest>(4);
        // The first keep-alive goes with the call: the server answers the
        // call (headers and all) with its first answer.
        let _ = tx.send(LeaseKeepAliveRequest { id }).await;
        let mut stream = LeaseClient::new(ctx.channel.clone())
            .lease_keep_alive(ctx.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
            .map_err(|s| Failure(EXIT_BAD_CONNECTION, rpc_error(&s)))?
            .into_inner();
        let mut first = true;
        loop {
            if !first && tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                break;
            }
            first = false;
            let r = match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) => break,
                Ok(Err(s)) => return Err(Failure(EXIT_BAD_CONNECTION, rpc_error(&s))),
                Err(_) => return Err(Failure(EXIT_BAD_CONNECTION, DEADLINE_EXCEEDED.into())),
            };
            if r.ttl <= 0 {
                break;
            }
            out(keep_alive_text(format, &r)?.as_bytes())?;
            let pause = Duration::from_secs(r.ttl as u64)
                .div_f64(3.0)
                .max(Duration::from_millis(500));
            tokio::time::sleep(pause).await;
        }
        if format == Format::Simple {
            out(format!("lease {id:016x} expired or revoked.\n").as_bytes())?;
        }
        Ok(())
    })
}
