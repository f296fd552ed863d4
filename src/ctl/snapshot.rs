//! `snapshot save | status | restore` and `defrag`: etcdctl 3.4's flags,
//! output and exit codes, against cairn or etcd.
//!
//! - `snapshot save FILE`: streams a backup from one member (cairn or etcd)
//!   into FILE, checking its SHA-256; with auth enabled the server wants a
//!   user holding `root`, whose token the save gets first;
//! - `snapshot status FILE [-w simple|table|json|fields]`: hash, revision,
//!   total keys and size of a snapshot (cairn's or etcd's);
//! - `snapshot restore FILE [--name] [--data-dir] [--initial-cluster]
//!   [--initial-cluster-token] [--initial-advertise-peer-urls]
//!   [--skip-hash-check]`: a new member's data directory from a snapshot
//!   (`crate::backup::restore`), with the snapshot's users, roles and auth;
//! - `defrag [--cluster]`: defragments each member named (with `--cluster`,
//!   every member of the member list, at its client URLs), printing
//!   `Finished defragmenting etcd member[<endpoint>]` on stdout or
//!   `Failed to defragment etcd member[<endpoint>] (<error>)` on stderr.
//!
//! On a terminal (stderr), save, restore and defrag draw a progress line
//! (`crate::backup::progress`); elsewhere they print exactly what etcdctl
//! prints.

use std::path::PathBuf;
use std::time::Instant;

use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{AuthenticateRequest, MemberListRequest, SnapshotRequest};
use tonic::transport::Channel;

use crate::backup::progress::{human_bytes, rate, seconds, Progress};
use crate::backup::{self, etcd, RestoreOptions, RestoreStep, SHA256_LEN};

use super::client::{defrag_member, dial, endpoint_url, login, runtime, time_left, Global, REDIAL};
use super::flags::Flags;
use super::output::table;
use super::{Failure, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR};

fn bad_args(msg: impl Into<String>) -> Failure {
    Failure(EXIT_BAD_ARGS, msg.into())
}

fn error(msg: impl Into<String>) -> Failure {
    Failure(EXIT_ERROR, msg.into())
}

/// `snapshot <sub>`.
pub fn run(sub: &str, g: Global, f: &Flags, rest: &[String]) -> Result<(), Failure> {
    match sub {
        "save" => {
            let [file] = rest else {
                return Err(bad_args("snapshot save expects one argument"));
            };
            let mut g = g;
            g.ask_password()?;
            save(&g, &PathBuf::from(file))
        }
        "status" => {
            let [file] = rest else {
                return Err(bad_args("snapshot status requires exactly one argument"));
            };
            status(&f.str_or("write-out", "simple"), &PathBuf::from(file))
        }
        _ => {
            let [file] = rest else {
                return Err(bad_args("snapshot restore requires exactly one argument"));
            };
            let mut o = RestoreOptions {
                snapshot: PathBuf::from(file),
                ..RestoreOptions::default()
            };
            if let Some(v) = f.get("name") {
                o.name = v.to_owned();
            }
            o.data_dir = f
                .get("data-dir")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from);
            if let Some(v) = f.get("initial-cluster") {
                o.initial_cluster = v.to_owned();
            }
            if let Some(v) = f.get("initial-cluster-token") {
                o.initial_cluster_token = v.to_owned();
            }
            if let Some(v) = f.get("initial-advertise-peer-urls") {
                o.initial_advertise_peer_urls = v.to_owned();
            }
            o.skip_hash_check = f.bool("skip-hash-check")?;
            if f.get("wal-dir").is_some_and(|w| !w.is_empty()) {
                eprintln!("ignoring --wal-dir: cairn keeps its log in the data directory");
            }
            restore(&o)
        }
    }
}

/// `defrag [--cluster]`.
pub fn defrag_command(g: Global, f: &Flags, rest: &[String]) -> Result<(), Failure> {
    // etcdctl's defrag ignores arguments.
    let _ = rest;
    if f.get("data-dir").is_some() {
        return Err(bad_args(
            "--data-dir is not supported: cairn defragments a running member (omit --data-dir)",
        ));
    }
    let mut g = g;
    g.ask_password()?;
    defrag(&g, f.bool("cluster")?)
}

/// `call` on the first of the endpoints that answers, trying them in turn
/// until `deadline`; a member that cannot be reached or is unavailable
/// passes the call on, any other error is the answer.
async fn first_answer<T, F, Fut>(g: &Global, deadline: Instant, mut call: F) -> Result<T, String>
where
    F: FnMut(Channel) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    loop {
        for ep in &g.endpoints {
            let Ok(channel) = dial(g, ep, deadline).await else {
                continue;
            };
            match tokio::time::timeout(time_left(deadline)?, call(channel)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(s)) if super::client::is_unreachable(&s) => {}
                Ok(Err(s)) => return Err(super::client::rpc_error(&s)),
                Err(_) => return Err(super::client::DEADLINE_EXCEEDED.to_owned()),
            }
        }
        let pause = REDIAL.min(time_left(deadline)?);
        tokio::time::sleep(pause).await;
    }
}

fn save(line: &Global, file: &std::path::Path) -> Result<(), Failure> {
    if line.endpoints.len() != 1 {
        return Err(error(format!(
            "snapshot must be requested to one selected node, not multiple {:?}",
            line.endpoints
        )));
    }
    let url = endpoint_url(&line.endpoints[0]);
    let part = PathBuf::from(format!("{}.part", file.display()));
    let credentials = line.credentials.clone();
    let mut progress = Progress::on_stderr();
    let result = runtime()?.block_on(fetch(
        line,
        &line.endpoints[0],
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
    line: &Global,
    ep: &str,
    credentials: Option<&(String, String)>,
    part: &std::path::Path,
    progress: &mut Progress<std::io::Stderr>,
) -> Result<u64, Failure> {
    use std::io::Write as _;
    let (url, dialer) = super::client::dial_target(line, ep).map_err(error)?;
    let channel = dialer
        .connect_tuned(&url, line.dial_timeout, |e| e)
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

/// `cairnctl defrag`: etcdctl 3.4's, member by member, with a progress
/// line per member on a terminal.
fn defrag(line: &Global, cluster: bool) -> Result<(), Failure> {
    let credentials = line.credentials.clone();
    runtime()?.block_on(async {
        if let Some(c) = &credentials {
            // etcdctl logs in as it makes its client, before anything else:
            // a refused login ends the command (exit 2).
            let deadline = Instant::now() + line.dial_timeout;
            first_answer(line, deadline, |ch| login(ch, c))
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
            let work = defrag_member(
                line,
                ep,
                credentials.as_ref(),
                Instant::now() + line.command_timeout,
            );
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
pub async fn member_client_urls(line: &Global) -> Result<Vec<String>, Failure> {
    let deadline = Instant::now() + line.command_timeout;
    let list = first_answer(line, deadline, |ch| async {
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
                &["hash", "revision", "total keys", "total size"],
                &[vec![
                    format!("{:x}", s.hash),
                    s.revision.to_string(),
                    s.total_key.to_string(),
                    size
                ]]
            )
        ),
        other => return Err(bad_args(format!("unknown output format {other:?}"))),
    }
    Ok(())
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
