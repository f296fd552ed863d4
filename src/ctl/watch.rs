//! `watch [options] [key or prefix] [range_end] [--] [exec-command arg1
//! arg2 ...]` and `watch -i`, as etcdctl 3.4 runs them: one gRPC stream,
//! each watcher's responses printed in the output format (the creation
//! answer kept back, as clientv3 does), a command run per event with the
//! `ETCD_WATCH_*` variables, and `Error: watch is canceled by the server`
//! (exit 5) when the server ends a watch.

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    watch_request, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use cairn_proto::mvccpb::Event;
use prost::Message;

use super::client::{rpc_error, Client, Global};
use super::flags::{short, switch, value, Flags, Spec};
use super::kv::{argify, prefix_end};
use super::output::*;
use super::{out, Failure, EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INVALID_INPUT};

pub const WATCH_FLAGS: &[Spec] = &[
    short(switch("interactive"), 'i'),
    switch("prefix"),
    value("rev"),
    switch("prev-kv"),
];

/// Exit status of a watch the server ended (etcdctl's ExitInterrupted).
const EXIT_INTERRUPTED: u8 = 5;

fn bad_args(msg: impl Into<String>) -> Failure {
    Failure(EXIT_BAD_ARGS, msg.into())
}

/// One watch to create: its key (and end), start revision, prev-kv, and
/// the command to run per event.
#[derive(Clone, Debug)]
struct Want {
    create: WatchCreateRequest,
    exec: Vec<String>,
}

/// The create request for `args` (key, optional range end) and the flags
/// (etcdctl's `getWatchChan`).
fn create_request(args: &[String], f: &Flags) -> Result<WatchCreateRequest, String> {
    let Some(key) = args.first() else {
        return Err("bad number of arguments".into());
    };
    let prefix = f.bool("prefix").map_err(|Failure(_, m)| m)?;
    let mut r = WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        start_revision: f.int_or("rev", 0).map_err(|Failure(_, m)| m)?,
        prev_kv: f.bool("prev-kv").map_err(|Failure(_, m)| m)?,
        ..WatchCreateRequest::default()
    };
    if args.len() == 2 {
        if prefix {
            return Err("`range_end` and `--prefix` are mutually exclusive".into());
        }
        r.range_end = args[1].as_bytes().to_vec();
    }
    if prefix {
        if r.key.is_empty() {
            r.key = vec![0];
            r.range_end = vec![0];
        } else {
            r.range_end = prefix_end(&r.key);
        }
    }
    Ok(r)
}

/// `cairnctl watch`: `raw` is the whole command line (for what follows
/// `--`), `rest` the positional words after `watch`.
pub fn run(g: Global, f: &Flags, raw: &[String], rest: &[String]) -> Result<(), Failure> {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let (env_key, env_range) = (env("ETCDCTL_WATCH_KEY"), env("ETCDCTL_WATCH_RANGE_END"));
    if env_key.is_empty() && !env_range.is_empty() {
        return Err(bad_args(format!(
            "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END={}",
            go_quote(&env_range)
        )));
    }
    if f.bool("interactive")? {
        let g = g.with_format(f)?;
        return interactive(g, &env_key, &env_range);
    }
    // What follows `watch` on the line, and the command after `--`.
    let after: &[String] = match raw.iter().position(|a| a == "watch") {
        Some(i) => &raw[i + 1..],
        None => &[],
    };
    let sep = after.iter().position(|a| a == "--");
    let exec: Vec<String> = match sep {
        Some(i) if i + 1 == after.len() => {
            return Err(bad_args(
                "bad number of arguments (found separator --, but no commands)",
            ))
        }
        Some(i) => after[i + 1..].to_vec(),
        None => Vec::new(),
    };
    if sep.is_none() && after.is_empty() && env_key.is_empty() {
        return Err(bad_args("bad number of arguments"));
    }
    let mut args: Vec<String> = rest[..rest.len().saturating_sub(exec.len())].to_vec();
    if !env_key.is_empty() {
        if !args.is_empty() {
            return Err(bad_args(
                "bad number of arguments (found conflicting environment key)",
            ));
        }
        args.push(env_key.clone());
        if !env_range.is_empty() {
            args.push(env_range.clone());
        }
    }
    let create = create_request(&args, f).map_err(bad_args)?;
    let g = g.with_format(f)?;
    super::client::runtime()?.block_on(async move {
        let mut c = Client::new(g.clone());
        c.ensure_login().await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<WatchRequest>();
        let _ = tx.send(create_msg(create));
        let mut pending = VecDeque::from([exec]);
        stream(&mut c, &g, rx, &mut pending, None).await
    })
}

fn create_msg(create: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    }
}

/// Streams the watch responses until the server ends the watch(es):
/// `pending` are the commands of the watchers asked for, in order; `more`
/// gives further requests (interactive mode).
async fn stream(
    c: &mut Client,
    g: &Global,
    rx: tokio::sync::mpsc::UnboundedReceiver<WatchRequest>,
    pending: &mut VecDeque<Vec<String>>,
    mut more: Option<tokio::sync::mpsc::UnboundedReceiver<(WatchRequest, Option<Vec<String>>)>>,
) -> Result<(), Failure> {
    let ctx = c
        .stream_ctx(g.command_timeout.max(std::time::Duration::from_secs(1)))
        .await
        .map_err(|e| Failure(EXIT_ERROR, e))?;
    let mut req = ctx.req(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    req.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    // The sender of further requests, kept while requests may come.
    let mut responses = WatchClient::new(ctx.channel.clone())
        .watch(req)
        .await
        .map_err(|s| Failure(EXIT_ERROR, rpc_error(&s)))?
        .into_inner();
    let mut watchers: HashMap<i64, Vec<String>> = HashMap::new();
    let mut fragments: HashMap<i64, WatchResponse> = HashMap::new();
    let mut live = 0usize;
    loop {
        let msg = if let Some(m) = more.as_mut() {
            // A watcher's command is queued before its create request
            // goes out, so it is here before the creation answer.
            tokio::select! {
                biased;
                next = m.recv() => {
                    match next {
                        Some((_, Some(exec))) => pending.push_back(exec),
                        Some((_, None)) => {}
                        None => more = None,
                    }
                    continue;
                }
                r = responses.message() => r,
            }
        } else {
            responses.message().await
        };
        let mut r = match msg {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => break,
        };
        // Fragments of one response come together first.
        if r.fragment {
            let acc = fragments
                .entry(r.watch_id)
                .or_insert_with(|| WatchResponse {
                    header: r.header.clone(),
                    watch_id: r.watch_id,
                    ..WatchResponse::default()
                });
            acc.events.append(&mut r.events);
            continue;
        }
        if let Some(mut acc) = fragments.remove(&r.watch_id) {
            acc.events.append(&mut r.events);
            acc.header = r.header.clone();
            r = acc;
        }
        if r.created {
            watchers.insert(r.watch_id, pending.pop_front().unwrap_or_default());
            live += 1;
            if !r.canceled {
                continue;
            }
        }
        if r.canceled {
            eprintln!("watch was canceled ({})", cancel_error(&r));
        }
        let exec = watchers.get(&r.watch_id).cloned().unwrap_or_default();
        if progress_notify(&r) {
            out(format!(
                "progress notify: {}\n",
                r.header.as_ref().map_or(0, |h| h.revision)
            )
            .as_bytes())?;
        }
        out(&print_watch(g.format, g.hex, &r)?)?;
        if !exec.is_empty() {
            run_per_event(&exec, &r)?;
        }
        if r.canceled {
            watchers.remove(&r.watch_id);
            live = live.saturating_sub(1);
            if live == 0 && more.is_none() {
                break;
            }
        }
    }
    Err(Failure(
        EXIT_INTERRUPTED,
        "watch is canceled by the server".into(),
    ))
}

fn progress_notify(r: &WatchResponse) -> bool {
    r.events.is_empty()
        && !r.canceled
        && !r.created
        && r.compact_revision == 0
        && r.header.as_ref().is_some_and(|h| h.revision != 0)
}

/// clientv3's `WatchResponse.Err()` of a canceled watch.
fn cancel_error(r: &WatchResponse) -> String {
    if r.compact_revision != 0 {
        return "etcdserver: mvcc: required revision has been compacted".into();
    }
    if r.cancel_reason.is_empty() {
        return "etcdserver: mvcc: required revision is a future revision".into();
    }
    if r.cancel_reason.starts_with("etcdserver: ") {
        return r.cancel_reason.clone();
    }
    format!(
        "rpc error: code = FailedPrecondition desc = {}",
        r.cancel_reason
    )
}

fn event_type(e: &Event) -> &'static str {
    if e.r#type == 1 {
        "DELETE"
    } else {
        "PUT"
    }
}

fn event_json(e: &Event) -> String {
    obj(&[
        ("type", nz_i(i64::from(e.r#type))),
        ("kv", e.kv.as_ref().map(kv_json)),
        ("prev_kv", e.prev_kv.as_ref().map(kv_json)),
    ])
}

pub fn print_watch(format: Format, hex: bool, r: &WatchResponse) -> Result<Vec<u8>, Failure> {
    let header = r.header.clone().unwrap_or_default();
    Ok(match format {
        Format::Simple => {
            let mut o = Vec::new();
            for e in &r.events {
                o.extend(format!("{}\n", event_type(e)).into_bytes());
                if let Some(p) = &e.prev_kv {
                    o.extend(kv_simple(hex, false, p));
                }
                o.extend(kv_simple(hex, false, &e.kv.clone().unwrap_or_default()));
            }
            o
        }
        Format::Json => {
            let events = arr(r.events.iter().map(event_json).collect());
            (obj(&[
                ("Header", Some(header_json(&header))),
                ("Events", Some(events)),
                ("CompactRevision", Some(r.compact_revision.to_string())),
                ("Canceled", Some(r.canceled.to_string())),
                ("Created", Some(r.created.to_string())),
            ]) + "\n")
                .into_bytes()
        }
        Format::Fields => {
            let mut t = header_fields_text(&Some(header));
            for e in &r.events {
                t += &format!("\"Type\" : {}\n", event_type(e));
                if let Some(p) = &e.prev_kv {
                    t += &kv_fields_text("Prev", p);
                }
                t += &kv_fields_text("", &e.kv.clone().unwrap_or_default());
            }
            t.into_bytes()
        }
        Format::Protobuf => WatchResponse {
            header: Some(header),
            events: r.events.clone(),
            compact_revision: r.compact_revision,
            canceled: r.canceled,
            created: r.created,
            ..WatchResponse::default()
        }
        .encode_to_vec(),
        Format::Table => return Err(format.unsupported()),
    })
}

/// Runs `exec` once per event of `r`, with the `ETCD_WATCH_*` variables.
fn run_per_event(exec: &[String], r: &WatchResponse) -> Result<(), Failure> {
    let rev = r.header.as_ref().map_or(0, |h| h.revision);
    for e in &r.events {
        let kv = e.kv.clone().unwrap_or_default();
        let status = std::process::Command::new(&exec[0])
            .args(&exec[1..])
            .env("ETCD_WATCH_REVISION", rev.to_string())
            .env("ETCD_WATCH_EVENT_TYPE", go_quote(event_type(e)))
            .env("ETCD_WATCH_KEY", go_quote_bytes(&kv.key))
            .env("ETCD_WATCH_VALUE", go_quote_bytes(&kv.value))
            .status();
        let err = match status {
            Ok(s) if s.success() => continue,
            Ok(s) => match s.code() {
                Some(c) => format!("exit status {c}"),
                None => "signal: killed".to_owned(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "exec: {}: executable file not found in $PATH",
                go_quote(&exec[0])
            ),
            Err(e) => e.to_string(),
        };
        let quoted: Vec<String> = exec.iter().map(|a| go_quote(a)).collect();
        eprintln!("command [{}] error ({err})", quoted.join(" "));
        return Err(Failure(EXIT_ERROR, String::new()));
    }
    Ok(())
}

/// `watch -i`: `watch ...` and `progress` lines from stdin, the watchers
/// on one stream.
fn interactive(g: Global, env_key: &str, env_range: &str) -> Result<(), Failure> {
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Lines are read on a thread of their own (stdin blocks).
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut buf = String::new();
            match input.read_line(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line_tx.send(buf).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (env_key, env_range) = (env_key.to_owned(), env_range.to_owned());
    super::client::runtime()?.block_on(async move {
        let mut c = Client::new(g.clone());
        c.ensure_login().await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<WatchRequest>();
        let (more_tx, more_rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = async move {
            while let Some(raw) = line_rx.recv().await {
                if !raw.ends_with('\n') {
                    break;
                }
                let l = raw.trim_end_matches('\n');
                let args = argify(l).unwrap_or_default();
                match args.first().map(String::as_str) {
                    None => eprintln!("Invalid command: {l} (watch and progress supported)"),
                    Some("watch") => {
                        if args.len() < 2 && env_key.is_empty() {
                            eprintln!("Invalid command {l} (command type or key is not provided)");
                            continue;
                        }
                        let want = parse_interactive(&args[1..], &env_key, &env_range)?;
                        if let Some(want) = want {
                            let _ =
                                more_tx.send((create_msg(want.create.clone()), Some(want.exec)));
                            let _ = tx.send(create_msg(want.create));
                        } else {
                            eprintln!("Invalid command {l} (bad number of arguments)");
                        }
                    }
                    Some("progress") => {
                        let _ = tx.send(WatchRequest {
                            request_union: Some(watch_request::RequestUnion::ProgressRequest(
                                WatchProgressRequest {},
                            )),
                        });
                    }
                    Some(_) => eprintln!("Invalid command {l} (only support watch)"),
                }
            }
            Err::<(), Failure>(Failure(
                EXIT_INVALID_INPUT,
                "Error reading watch request line: EOF".into(),
            ))
        };
        let mut pending = VecDeque::new();
        tokio::select! {
            biased;
            r = reader => r,
            r = stream(&mut c, &g, rx, &mut pending, Some(more_rx)) => r,
        }
    })
}

/// One interactive `watch` line's watcher (flags, key, command after
/// `--`); `None` when it names no key.
fn parse_interactive(
    args: &[String],
    env_key: &str,
    env_range: &str,
) -> Result<Option<Want>, Failure> {
    let sep = args.iter().position(|a| a == "--");
    if sep.is_some_and(|i| i + 1 == args.len()) {
        return Err(bad_args(
            "bad number of arguments (found separator --, but no commands)",
        ));
    }
    let (watch_part, exec) = match sep {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    let f = super::flags::parse(watch_part, &[WATCH_FLAGS]).map_err(|Failure(_, m)| bad_args(m))?;
    let mut words = f.words.clone();
    if !env_key.is_empty() {
        if !words.is_empty() && exec.is_empty() {
            return Err(bad_args(
                "bad number of arguments (found conflicting environment key)",
            ));
        }
        let mut w = vec![env_key.to_owned()];
        if !env_range.is_empty() {
            w.push(env_range.to_owned());
        }
        w.extend(words);
        words = w;
    }
    if words.is_empty() {
        return Ok(None);
    }
    match create_request(&words, &f) {
        Ok(create) => Ok(Some(Want { create, exec })),
        Err(e) => {
            eprintln!("Invalid command watch {} ({e})", args.join(" "));
            Ok(None)
        }
    }
}
