//! cairnctl: cairn's etcdctl-compatible command line (DESIGN §1). So far its
//! `snapshot` commands, with etcdctl 3.4's flags, output and exit codes:
//!
//! - `cairnctl [--endpoints HOST:PORT] [--user NAME[:PASSWORD]] [--password
//!   PASSWORD] snapshot save FILE`: streams a backup from one member (cairn
//!   or etcd) into FILE, checking its SHA-256; with auth enabled the server
//!   wants a user holding `root`, whose token the save gets first;
//! - `cairnctl snapshot status FILE [-w simple|table|json|fields]`: hash,
//!   revision, total keys and size of a snapshot (cairn's or etcd's);
//! - `cairnctl snapshot restore FILE [--name] [--data-dir]
//!   [--initial-cluster] [--initial-cluster-token]
//!   [--initial-advertise-peer-urls] [--skip-hash-check]`: a new member's
//!   data directory from a snapshot (`cairn::backup::restore`), with the
//!   snapshot's users, roles and auth state.
//!
//! - `cairnctl [--endpoints A,B,..] [--cluster] [--user ..] defrag`:
//!   defragments each member named (with `--cluster`, every member the
//!   cluster's member list gives, at its client URLs), printing etcdctl
//!   3.4's `Finished defragmenting etcd member[<endpoint>]` on stdout or
//!   `Failed to defragment etcd member[<endpoint>] (<error>)` on stderr.
//!
//! On a terminal (stderr), `snapshot save`, `snapshot restore` and `defrag`
//! draw a progress line (`cairn::backup::progress`); elsewhere they print
//! exactly what etcdctl prints.
//!
//! Errors print `Error: <message>` on stderr; exit status 1, 2 when the
//! login fails, or 128 for bad arguments (etcdctl's codes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cairn::backup::progress::{human_bytes, rate, seconds, Progress};
use cairn::backup::{self, etcd, RestoreOptions, RestoreStep, SHA256_LEN};
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    AuthenticateRequest, DefragmentRequest, MemberListRequest, SnapshotRequest,
};
use tonic::transport::Channel;

const EXIT_ERROR: u8 = 1;
const EXIT_BAD_CONNECTION: u8 = 2;
const EXIT_BAD_ARGS: u8 = 128;

/// An exit status and the message printed as `Error: <message>` (none when
/// empty: the command has already said what failed).
struct Failure(u8, String);

fn bad_args(msg: impl Into<String>) -> Failure {
    Failure(EXIT_BAD_ARGS, msg.into())
}

fn error(msg: impl Into<String>) -> Failure {
    Failure(EXIT_ERROR, msg.into())
}

/// The command line: global flags, the words of the command, its flags.
#[derive(Default)]
struct Line {
    endpoints: Vec<String>,
    write_out: String,
    dial_timeout: Duration,
    command_timeout: Duration,
    /// `--user` (`name` or `name:password`) and `--password`.
    user: Option<String>,
    password: Option<String>,
    words: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

/// Flags that take no value.
const SWITCHES: &[&str] = &[
    "skip-hash-check",
    "debug",
    "insecure-skip-tls-verify",
    "cluster",
];

fn parse_duration(flag: &str, v: &str) -> Result<Duration, Failure> {
    let bad = || bad_args(format!("invalid argument {v:?} for \"--{flag}\" flag"));
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((v, "s"), |i| v.split_at(i));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse(args: Vec<String>) -> Result<Line, Failure> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut line = Line {
        user: env("ETCDCTL_USER"),
        password: env("ETCDCTL_PASSWORD"),
        endpoints: env("ETCDCTL_ENDPOINTS")
            .unwrap_or_else(|| "127.0.0.1:2379".into())
            .split(',')
            .map(str::to_owned)
            .collect(),
        write_out: env("ETCDCTL_WRITE_OUT").unwrap_or_else(|| "simple".into()),
        dial_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(5),
        ..Line::default()
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            line.words.push(a);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (flag.to_owned(), None),
        };
        let value = if SWITCHES.contains(&name.as_str()) {
            inline
        } else {
            match inline {
                Some(v) => Some(v),
                None => Some(
                    it.next()
                        .ok_or_else(|| bad_args(format!("flag needs an argument: --{name}")))?,
                ),
            }
        };
        match name.as_str() {
            "endpoints" => {
                line.endpoints = value
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            "w" | "write-out" => line.write_out = value.unwrap_or_default(),
            "dial-timeout" => {
                line.dial_timeout = parse_duration(&name, &value.unwrap_or_default())?
            }
            "command-timeout" => {
                line.command_timeout = parse_duration(&name, &value.unwrap_or_default())?
            }
            "user" => line.user = value.filter(|v| !v.is_empty()),
            "password" => line.password = value,
            _ => line.flags.push((name, value)),
        }
    }
    Ok(line)
}

impl Line {
    /// The user and password to authenticate as (etcdctl's rules: with
    /// `--password`, `--user` is the whole name; else `name:password`).
    fn credentials(&self) -> Result<Option<(String, String)>, Failure> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        if let Some(p) = self.password.as_ref().filter(|p| !p.is_empty()) {
            return Ok(Some((user.clone(), p.clone())));
        }
        match user.split_once(':') {
            Some((name, password)) => Ok(Some((name.to_owned(), password.to_owned()))),
            None => Err(bad_args(
                "no password for --user: give --user NAME:PASSWORD or --password",
            )),
        }
    }

    /// The value of command flag `name`, and that no other flag was given.
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.flags.iter().position(|(n, _)| n == name)?;
        Some(self.flags.remove(i).1.unwrap_or_default())
    }

    fn switch(&mut self, name: &str) -> Result<bool, Failure> {
        match self.take(name).as_deref() {
            None => Ok(false),
            Some("" | "true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(bad_args(format!(
                "invalid argument {v:?} for \"--{name}\" flag"
            ))),
        }
    }

    fn no_other_flags(&self) -> Result<(), Failure> {
        match self.flags.first() {
            None => Ok(()),
            Some((n, _)) => Err(bad_args(format!("unknown flag: --{n}"))),
        }
    }
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("Error: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), Failure> {
    let mut line = parse(args)?;
    let words: Vec<&str> = line.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["snapshot", "save", rest @ ..] => {
            let [file] = rest else {
                return Err(bad_args("snapshot save expects one argument"));
            };
            let file = PathBuf::from(file);
            line.no_other_flags()?;
            save(&line, &file)
        }
        ["snapshot", "status", rest @ ..] => {
            let [file] = rest else {
                return Err(bad_args("snapshot status requires exactly one argument"));
            };
            let file = PathBuf::from(file);
            line.no_other_flags()?;
            status(&line.write_out, &file)
        }
        ["snapshot", "restore", rest @ ..] => {
            let [file] = rest else {
                return Err(bad_args("snapshot restore requires exactly one argument"));
            };
            let mut o = RestoreOptions {
                snapshot: PathBuf::from(file),
                ..RestoreOptions::default()
            };
            if let Some(v) = line.take("name") {
                o.name = v;
            }
            o.data_dir = line
                .take("data-dir")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from);
            if let Some(v) = line.take("initial-cluster") {
                o.initial_cluster = v;
            }
            if let Some(v) = line.take("initial-cluster-token") {
                o.initial_cluster_token = v;
            }
            if let Some(v) = line.take("initial-advertise-peer-urls") {
                o.initial_advertise_peer_urls = v;
            }
            o.skip_hash_check = line.switch("skip-hash-check")?;
            if line.take("wal-dir").is_some_and(|w| !w.is_empty()) {
                eprintln!("ignoring --wal-dir: cairn keeps its log in the data directory");
            }
            line.no_other_flags()?;
            restore(&o)
        }
        ["snapshot", ..] => Err(bad_args(
            "unknown snapshot command (save, status or restore)",
        )),
        ["defrag", rest @ ..] => {
            if !rest.is_empty() {
                return Err(bad_args("defrag takes no arguments"));
            }
            let cluster = line.switch("cluster")?;
            if line.take("data-dir").is_some() {
                return Err(bad_args(
                    "--data-dir is not supported: cairn defragments a running member (omit --data-dir)",
                ));
            }
            line.no_other_flags()?;
            defrag(&line, cluster)
        }
        [] => Err(bad_args(
            "cairnctl: no command (so far: snapshot save | status | restore, defrag)",
        )),
        [cmd, ..] => Err(bad_args(format!(
            "unknown command {cmd:?} for \"cairnctl\" (so far: snapshot save | status | restore, defrag)"
        ))),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| error(format!("cannot start the async runtime: {e}")))
}

fn endpoint_url(ep: &str) -> String {
    if ep.contains("://") {
        ep.to_owned()
    } else {
        format!("http://{ep}")
    }
}

fn save(line: &Line, file: &std::path::Path) -> Result<(), Failure> {
    if line.endpoints.len() != 1 {
        return Err(error(format!(
            "snapshot must be requested to one selected node, not multiple {:?}",
            line.endpoints
        )));
    }
    let url = endpoint_url(&line.endpoints[0]);
    let part = PathBuf::from(format!("{}.part", file.display()));
    let credentials = line.credentials()?;
    let mut progress = Progress::on_stderr();
    let result = runtime()?.block_on(fetch(
        &url,
        line.dial_timeout,
        credentials.as_ref(),
        &part,
        &mut progress,
    ));
    drop(progress);
    match result {
        Ok(size) => {
            std::fs::rename(&part, file).map_err(|e| {
                error(format!(
                    "could not rename {} to {}: {e}",
                    part.display(),
                    file.display()
                ))
            })?;
            eprintln!("fetched snapshot from {url}: {size} bytes");
            println!("Snapshot saved at {}", file.display());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Streams a snapshot into `part` (as `credentials`' user when given),
/// checks its SHA-256 trailer, syncs it; shows the bytes received, of how
/// many (the server's `remaining_bytes`), and the rate on `progress`.
async fn fetch(
    url: &str,
    dial_timeout: Duration,
    credentials: Option<&(String, String)>,
    part: &std::path::Path,
    progress: &mut Progress<std::io::Stderr>,
) -> Result<u64, Failure> {
    use std::io::Write as _;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| error(format!("bad endpoint {url}: {e}")))?
        .connect_timeout(dial_timeout)
        .connect()
        .await
        .map_err(|e| {
            error(format!(
                "context deadline exceeded (connecting to {url}: {e})"
            ))
        })?;
    let mut request = tonic::Request::new(SnapshotRequest {});
    if let Some((name, password)) = credentials {
        let token = AuthClient::new(channel.clone())
            .authenticate(AuthenticateRequest {
                name: name.clone(),
                password: password.clone(),
            })
            .await
            .map_err(|s| error(s.message().to_owned()))?
            .into_inner()
            .token;
        let value = token.parse().map_err(|_| {
            error(format!(
                "the server's token {token:?} is not a header value"
            ))
        })?;
        request.metadata_mut().insert("token", value);
    }
    let mut client = MaintenanceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut stream = client
        .snapshot(request)
        .await
        .map_err(|s| error(s.message().to_owned()))?
        .into_inner();
    let mut f = std::fs::File::create(part)
        .map_err(|e| error(format!("could not open {}: {e}", part.display())))?;
    let mut hash = backup::StreamHash::default();
    // The last SHA256_LEN bytes received are the trailer, not the database.
    let mut tail: Vec<u8> = Vec::new();
    let mut size = 0u64;
    let mut received = 0u64;
    // The whole stream's length, once the first message tells it.
    let mut total: Option<u64> = None;
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|s| error(s.message().to_owned()))?
    {
        received += msg.blob.len() as u64;
        if total.is_none() && msg.remaining_bytes > 0 {
            total = Some(received + msg.remaining_bytes);
        }
        progress.update(|t| {
            let of = match total {
                Some(all) if all > 0 => format!(
                    " of {} ({}%)",
                    human_bytes(all),
                    received.min(all) * 100 / all
                ),
                _ => String::new(),
            };
            format!(
                "receiving snapshot: {}{of}, {}, {}",
                human_bytes(received),
                rate(received, t),
                seconds(t)
            )
        });
        tail.extend_from_slice(&msg.blob);
        if tail.len() > SHA256_LEN {
            let body = tail.len() - SHA256_LEN;
            hash.update(&tail[..body]);
            f.write_all(&tail[..body])
                .map_err(|e| error(format!("write {}: {e}", part.display())))?;
            size += body as u64;
            tail.drain(..body);
        }
    }
    if tail.len() != SHA256_LEN || (size + SHA256_LEN as u64) % 512 != SHA256_LEN as u64 {
        return Err(error("sha256 checksum not found"));
    }
    if hash.finish() != tail {
        return Err(error("sha256 checksum mismatch"));
    }
    f.write_all(&tail)
        .and_then(|_| f.sync_all())
        .map_err(|e| error(format!("write {}: {e}", part.display())))?;
    progress.finish(|t| {
        format!(
            "received snapshot: {} in {}, {}",
            human_bytes(received),
            seconds(t),
            rate(received, t)
        )
    });
    Ok(size + SHA256_LEN as u64)
}

/// What etcdctl says when a call ran out of time.
const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

/// Pause between two dials of a member that refused one.
const REDIAL: Duration = Duration::from_millis(100);

/// An RPC error as etcdctl 3.4 prints it (clientv3's `toErr`): etcd's own
/// errors (`etcdserver: ...`) by their text alone, any other status as
/// gRPC-Go formats it.
fn rpc_error(s: &tonic::Status) -> String {
    use tonic::Code;
    let msg = s.message();
    if msg.starts_with("etcdserver: ") {
        return msg.to_owned();
    }
    let code = match s.code() {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => return DEADLINE_EXCEEDED.to_owned(),
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    };
    format!("rpc error: code = {code} desc = {msg}")
}

fn time_left(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(DEADLINE_EXCEEDED.to_owned())
    } else {
        Ok(left)
    }
}

/// `fut`, unless `deadline` passes first.
async fn before<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(time_left(deadline)?, fut).await {
        Ok(r) => r.map_err(|s| rpc_error(&s)),
        Err(_) => Err(DEADLINE_EXCEEDED.to_owned()),
    }
}

/// One dial of `ep`, given up after `dial_timeout` or at `deadline`.
async fn dial(ep: &str, dial_timeout: Duration, deadline: Instant) -> Result<Channel, String> {
    let url = endpoint_url(ep);
    let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| format!("bad endpoint {url}: {e}"))?
        .connect_timeout(dial_timeout);
    match tokio::time::timeout(time_left(deadline)?, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(format!("dial {url}: {e}")),
        Err(_) => Err(DEADLINE_EXCEEDED.to_owned()),
    }
}

/// A channel to `ep`, dialling again while it refuses, until `deadline`
/// (an RPC to an unreachable member waits out its deadline in etcdctl).
async fn dial_until(
    ep: &str,
    dial_timeout: Duration,
    deadline: Instant,
) -> Result<Channel, String> {
    loop {
        match dial(ep, dial_timeout, deadline).await {
            Ok(channel) => return Ok(channel),
            Err(e) if e.starts_with("bad endpoint") => return Err(e),
            Err(_) => {
                let pause = REDIAL.min(time_left(deadline)?);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// `call` on the first of `endpoints` that answers, trying them in turn
/// until `deadline`; a member that cannot be reached or is unavailable
/// passes the call on, any other error is the answer.
async fn first_answer<T, F, Fut>(
    endpoints: &[String],
    dial_timeout: Duration,
    deadline: Instant,
    mut call: F,
) -> Result<T, String>
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    loop {
        for ep in endpoints {
            let Ok(channel) = dial(ep, dial_timeout, deadline).await else {
                continue;
            };
            match before(deadline, call(channel)).await {
                Ok(answer) => return Ok(answer),
                Err(e) if e.starts_with("rpc error: code = Unavailable") => {}
                Err(e) => return Err(e),
            }
        }
        let pause = REDIAL.min(time_left(deadline)?);
        tokio::time::sleep(pause).await;
    }
}

/// A token for `credentials` from the member behind `channel`; `None` when
/// its auth is off (etcdctl goes on without one then).
async fn login(
    channel: Channel,
    credentials: &(String, String),
) -> Result<Option<String>, tonic::Status> {
    let request = AuthenticateRequest {
        name: credentials.0.clone(),
        password: credentials.1.clone(),
    };
    match AuthClient::new(channel).authenticate(request).await {
        Ok(r) => Ok(Some(r.into_inner().token)),
        Err(s) if s.message() == "etcdserver: authentication is not enabled" => Ok(None),
        Err(s) => Err(s),
    }
}

/// `cairnctl defrag`: etcdctl 3.4's, member by member, with a progress
/// line per member on a terminal.
fn defrag(line: &Line, cluster: bool) -> Result<(), Failure> {
    let credentials = line.credentials()?;
    runtime()?.block_on(async {
        if let Some(c) = &credentials {
            // etcdctl logs in as it makes its client, before anything else:
            // a refused login ends the command (exit 2).
            let deadline = Instant::now() + line.dial_timeout;
            first_answer(&line.endpoints, line.dial_timeout, deadline, |ch| {
                login(ch, c)
            })
            .await
            .map_err(|e| Failure(EXIT_BAD_CONNECTION, e))?;
        }
        let members = if cluster {
            member_client_urls(line).await?
        } else {
            line.endpoints.clone()
        };
        let mut failures = 0;
        for ep in &members {
            let mut progress = Progress::on_stderr();
            let work = defrag_member(ep, line, credentials.as_ref());
            let result = if progress.enabled() {
                tokio::pin!(work);
                let mut tick = tokio::time::interval(backup::progress::REFRESH);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        r = &mut work => break r,
                        _ = tick.tick() => progress.redraw(|t| {
                            format!("defragmenting etcd member[{ep}]: {}", seconds(t))
                        }),
                    }
                }
            } else {
                work.await
            };
            match result {
                Ok(()) => {
                    progress
                        .finish(|t| format!("defragmented etcd member[{ep}] in {}", seconds(t)));
                    println!("Finished defragmenting etcd member[{ep}]");
                }
                Err(e) => {
                    progress.finish(|t| {
                        format!(
                            "defragmenting etcd member[{ep}] failed after {}",
                            seconds(t)
                        )
                    });
                    eprintln!("Failed to defragment etcd member[{ep}] ({e})");
                    failures += 1;
                }
            }
        }
        if failures > 0 {
            return Err(Failure(EXIT_ERROR, String::new()));
        }
        Ok(())
    })
}

/// `--cluster`: the client URLs of every member in the member list (asked
/// without logging in, as etcdctl does).
async fn member_client_urls(line: &Line) -> Result<Vec<String>, Failure> {
    let deadline = Instant::now() + line.command_timeout;
    let list = first_answer(&line.endpoints, line.dial_timeout, deadline, |ch| async {
        ClusterClient::new(ch)
            .member_list(MemberListRequest {
                linearizable: false,
            })
            .await
            .map(tonic::Response::into_inner)
    })
    .await
    .map_err(|e| {
        error(format!(
            "failed to fetch endpoints from etcd cluster member list: {e}"
        ))
    })?;
    Ok(list
        .members
        .into_iter()
        .flat_map(|m| m.client_ur_ls)
        .collect())
}

/// Defragments the member at `ep`, within the command timeout (dialling,
/// logging in at that member, the call itself).
async fn defrag_member(
    ep: &str,
    line: &Line,
    credentials: Option<&(String, String)>,
) -> Result<(), String> {
    let deadline = Instant::now() + line.command_timeout;
    let channel = dial_until(ep, line.dial_timeout, deadline).await?;
    let mut request = tonic::Request::new(DefragmentRequest {});
    if let Some(c) = credentials {
        if let Some(token) = before(deadline, login(channel.clone(), c)).await? {
            let value = token
                .parse()
                .map_err(|_| format!("the server's token {token:?} is not a header value"))?;
            request.metadata_mut().insert("token", value);
        }
    }
    before(
        deadline,
        MaintenanceClient::new(channel).defragment(request),
    )
    .await?;
    Ok(())
}

fn status(write_out: &str, file: &std::path::Path) -> Result<(), Failure> {
    let snap = backup::open_snapshot(file, true).map_err(error)?;
    let s = etcd::status(&snap.db).map_err(|e| error(e.to_string()))?;
    let size = human_bytes(s.total_size);
    match write_out {
        "simple" => println!("{:x}, {}, {}, {}", s.hash, s.revision, s.total_key, size),
        "json" => println!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}",
            s.hash, s.revision, s.total_key, s.total_size
        ),
        "fields" => {
            println!("\"Hash\" : {}", s.hash);
            println!("\"Revision\" : {}", s.revision);
            println!("\"Keys\" : {}", s.total_key);
            println!("\"Size\" : {}", s.total_size);
        }
        "table" => print!(
            "{}",
            table(
                &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                &[
                    format!("{:x}", s.hash),
                    s.revision.to_string(),
                    s.total_key.to_string(),
                    size
                ]
            )
        ),
        other => return Err(bad_args(format!("unknown output format {other:?}"))),
    }
    Ok(())
}

/// One-row table as etcdctl draws it: centred headers, values to the right.
fn table(headers: &[&str], row: &[String]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .zip(row)
        .map(|(h, v)| h.len().max(v.len()))
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = rule.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let gap = w - h.len();
        let left = gap / 2;
        out += &format!("| {}{}{} ", " ".repeat(left), h, " ".repeat(gap - left));
    }
    out += "|\n";
    out += &rule;
    for (v, w) in row.iter().zip(&widths) {
        out += &format!("| {v:>w$} ");
    }
    out += "|\n";
    out += &rule;
    out
}

fn restore(o: &RestoreOptions) -> Result<(), Failure> {
    let mut progress = Progress::on_stderr();
    let mut imported = (0u64, 0u64);
    let show = progress.enabled();
    let mut observe = |step: RestoreStep| {
        if !show {
            return;
        }
        match step {
            RestoreStep::Checking => {
                progress.update(|_| "restoring: checking the snapshot...".into())
            }
            RestoreStep::Importing { keys, bytes } => {
                imported = (keys, bytes);
                progress.update(|t| {
                    format!(
                        "restoring: {keys} keys, {}, {}, {}",
                        human_bytes(bytes),
                        rate(bytes, t),
                        seconds(t)
                    )
                })
            }
            RestoreStep::Finishing => {
                let (keys, bytes) = imported;
                progress.update(|t| {
                    format!(
                        "restoring: {keys} keys, {}, syncing..., {}",
                        human_bytes(bytes),
                        seconds(t)
                    )
                })
            }
        }
    };
    let result = runtime()?.block_on(backup::restore_observed(o, &mut observe));
    let (keys, bytes) = imported;
    if result.is_ok() {
        progress.finish(|t| {
            format!(
                "restored {keys} keys, {} in {}, {}",
                human_bytes(bytes),
                seconds(t),
                rate(bytes, t)
            )
        });
    }
    drop(progress);
    let restored = result.map_err(error)?;
    let i = &restored.imported;
    eprintln!(
        "restored snapshot {} into {}: member {:x} of cluster {:x}, revision {}, {} revision records, {} leases, {} users, {} roles, auth {}",
        o.snapshot.display(),
        restored.data_dir.display(),
        restored.member_id,
        restored.cluster_id,
        i.revision,
        i.keys,
        i.leases,
        i.users,
        i.roles,
        if i.auth_enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> Line {
        match parse(args.iter().map(|a| a.to_string()).collect()) {
            Ok(l) => l,
            Err(Failure(code, msg)) => panic!("parse {args:?}: {code} {msg}"),
        }
    }

    #[test]
    fn credentials_follow_etcdctls_user_and_password_flags() {
        let creds = |args: &[&str]| match line(args).credentials() {
            Ok(c) => Ok(c),
            Err(Failure(code, _)) => Err(code),
        };
        let pair = |u: &str, p: &str| Ok(Some((u.to_owned(), p.to_owned())));
        assert_eq!(creds(&["snapshot", "save", "f"]), Ok(None));
        assert_eq!(
            creds(&["--user=root:pw", "snapshot", "save", "f"]),
            pair("root", "pw")
        );
        assert_eq!(creds(&["--user", "root:a:b"]), pair("root", "a:b"));
        assert_eq!(
            creds(&["--user=ro:ot", "--password=pw"]),
            pair("ro:ot", "pw")
        );
        assert_eq!(
            creds(&["--user=root:pw", "--password="]),
            pair("root", "pw")
        );
        assert_eq!(creds(&["--password=pw"]), Ok(None));
        assert_eq!(creds(&["--user=root"]), Err(EXIT_BAD_ARGS));
    }
}
