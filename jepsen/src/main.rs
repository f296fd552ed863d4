//! cairn-jepsen: the release `cairn` (or etcd) as real processes in network
//! namespaces, under faults from a seed, driven by real gRPC clients; every
//! run writes its history (JSON lines, `checker/README.md`), its fault
//! timeline and a self-contained HTML report, and exits 0 only when every
//! check passed.
//!
//! ```text
//! cairn-jepsen [--target cairn|etcd] [--bin PATH] [--nodes 3|5] [--seed N]
//!              [--time SECS] [--workload kv|locks|lease]
//!              [--nemesis kill,pause,partition,net,clock,lose,member|all|none]
//!              [--clients N] [--out DIR] [--dir DIR] [--check-steps N]
//! ```
//!
//! Needs root (namespaces, nftables, tc). Everything it makes — namespaces,
//! processes, data directories — is removed on exit, on failure and on
//! Ctrl-C / SIGTERM; only `--out` (history, faults, report, member logs)
//! stays. Modules: `net` (namespaces and network faults), `cluster` (the
//! member processes), `workload` (clients), `nemesis` (the fault schedule),
//! and the HTML report (`cairn_check::report`, with `cairn_check::minimize`;
//! the simulation suite writes the same report). The whole flow: docs/jepsen.md.
//!
//! Tests: each module's unit tests; whole runs in `jepsen/smoke.sh`.

mod cluster;
mod lazyfs;
mod nemesis;
mod net;
mod wire;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_check::checks::{self, Status, Verdict};
use cairn_check::jsonl::{History, Record, Revisions};
use cairn_check::{minimize, report};
use cairn_check::{CheckOptions, CommittedChange, Revision};
use etcd_client as ec;
use tokio::sync::watch;

use crate::cluster::{Cluster, Target};
use crate::nemesis::{wall_now, FaultLog, Nemesis, KINDS};
use crate::net::Net;
use crate::workload::{connect, Shared};

#[derive(Debug, Clone)]
struct Args {
    target: Target,
    binary: PathBuf,
    nodes: usize,
    seed: u64,
    time: Duration,
    workload: String,
    nemesis: Vec<&'static str>,
    clients: usize,
    out: PathBuf,
    dir: PathBuf,
    check_steps: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut target = Target::Cairn;
    let mut binary = None;
    let mut nodes = 3;
    let mut seed = 1;
    let mut time = 60;
    let mut workload = "kv".to_owned();
    let mut nemesis = "kill,pause,partition,net".to_owned();
    let mut clients = 2;
    let mut out = None;
    let mut dir = None;
    let mut check_steps = 20_000_000;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--target" => {
                target = match value()?.as_str() {
                    "cairn" => Target::Cairn,
                    "etcd" => Target::Etcd,
                    other => return Err(format!("--target {other}: cairn or etcd")),
                }
            }
            "--bin" => binary = Some(PathBuf::from(value()?)),
            "--nodes" => nodes = num(value()?)? as usize,
            "--seed" => seed = num(value()?)?,
            "--time" => time = num(value()?)?,
            "--workload" => workload = value()?,
            "--nemesis" => nemesis = value()?,
            "--clients" => clients = num(value()?)? as usize,
            "--out" => out = Some(PathBuf::from(value()?)),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--check-steps" => check_steps = num(value()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !(nodes == 3 || nodes == 5) {
        return Err("--nodes: 3 or 5".into());
    }
    if !["kv", "locks", "lease"].contains(&workload.as_str()) {
        return Err("--workload: kv, locks or lease".into());
    }
    let kinds: Vec<&'static str> = match nemesis.as_str() {
        "all" => KINDS.to_vec(),
        "none" => Vec::new(),
        list => list
            .split(',')
            .map(|k| {
                KINDS
                    .iter()
                    .find(|x| **x == k)
                    .copied()
                    .ok_or(format!("--nemesis {k}: one of {KINDS:?}, all or none"))
            })
            .collect::<Result<_, _>>()?,
    };
    let binary = binary.unwrap_or_else(|| match target {
        Target::Cairn => {
            let base = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
            PathBuf::from(base).join("release/cairn")
        }
        Target::Etcd => PathBuf::from("/usr/bin/etcd"),
    });
    let binary = std::fs::canonicalize(&binary)
        .map_err(|e| format!("server binary {}: {e}", binary.display()))?;
    let name = format!("{}-{}-seed{seed}", target.name(), workload);
    Ok(Args {
        target,
        binary,
        nodes,
        seed,
        time: Duration::from_secs(time),
        workload,
        nemesis: kinds,
        clients,
        out: out.unwrap_or_else(|| PathBuf::from("jepsen-out").join(name)),
        dir: dir.unwrap_or_else(|| {
            PathBuf::from(format!("/var/tmp/cairn-jepsen-{}", std::process::id()))
        }),
        check_steps,
    })
}

/// Removes the network and the data directory however the run ends.
struct Cleanup {
    net: Net,
    dir: PathBuf,
    /// Where the members' logs go if the run ends early (an error): a
    /// completed run has copied them already.
    out: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // File systems of the `lose` nemesis still mounted (a panic, a signal).
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for m in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            if Path::new(m).starts_with(&self.dir) {
                if let Err(e) = net::sh("umount", &["-l", m]) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
        for e in self.net.teardown() {
            eprintln!("cleanup: {e}");
        }
        for i in 1..=self.net.members {
            let log = format!("n{i}.log");
            let kept = self.out.join(&log);
            if !kept.exists() && self.dir.join(&log).exists() {
                let _ = std::fs::copy(self.dir.join(&log), kept);
            }
        }
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("cleanup: {}: {e}", self.dir.display());
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cairn-jepsen: {e}");
            return ExitCode::from(2);
        }
    };
    let net = Net::new(args.nodes);
    let cleanup = Cleanup {
        net: net.clone(),
        dir: args.dir.clone(),
        out: args.out.clone(),
    };
    let setup = net
        .setup()
        .and_then(|()| net.enter_client_ns())
        .and_then(|()| std::fs::create_dir_all(&args.dir).map_err(|e| e.to_string()))
        .and_then(|()| std::fs::create_dir_all(&args.out).map_err(|e| e.to_string()));
    if let Err(e) = setup {
        eprintln!("cairn-jepsen: setup: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn-jepsen: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => return Err(format!("SIGTERM handler: {e}")),
            };
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => Err("interrupted (Ctrl-C): cleaned up".to_owned()),
            _ = term.recv() => Err("terminated (SIGTERM): cleaned up".to_owned()),
            r = run(&args, &net) => r,
        }
    });
    // Dropping the runtime drops the member processes (killed on drop).
    drop(runtime);
    drop(cleanup);
    match code {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("cairn-jepsen: {e}");
            ExitCode::from(2)
        }
    }
}

/// Waits until every running member answers a linearizable read.
async fn wait_ready(cluster: &Cluster, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    for i in 0..cluster.members.len() {
        let url = cluster.client_url(i);
        loop {
            let ok = match connect(&url, Duration::from_secs(1)).await {
                Ok(mut c) => c.get("ready", None).await.is_ok(),
                Err(_) => false,
            };
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "n{} not ready after {limit:?}; its log ends:\n{}",
                    i + 1,
                    cluster.log_tail(i, 15)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The member that members report as leader, if they agree on one we can map.
async fn find_leader(cluster: &Cluster) -> Option<usize> {
    let mut ids = Vec::new();
    let mut leader = None;
    for i in 0..cluster.members.len() {
        if cluster.members[i].paused || !cluster.is_running(i) {
            ids.push(None);
            continue;
        }
        let status = tokio::time::timeout(Duration::from_millis(800), async {
            let mut c = connect(&cluster.client_url(i), Duration::from_millis(700))
                .await
                .ok()?;
            c.status().await.ok()
        })
        .await
        .ok()
        .flatten();
        ids.push(
            status
                .as_ref()
                .and_then(|s| s.header().map(|h| h.member_id())),
        );
        if let Some(s) = status {
            if s.leader() != 0 {
                leader = Some(s.leader());
            }
        }
    }
    let leader = leader?;
    ids.iter().position(|id| *id == Some(leader))
}

/// Waits (up to 20 s: TTLs are at most 5 s, plus a leader's extension)
/// until no lease is left, then revokes any still there; says which.
async fn settle_leases(cluster: &Cluster) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(mut c) = connect(&cluster.client_url(0), Duration::from_secs(3)).await else {
            if Instant::now() > deadline {
                return "could not connect to list leases".into();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let ids: Vec<i64> = match c.leases().await {
            Ok(r) => r.leases().iter().map(|l| l.id()).collect(),
            Err(_) => {
                if Instant::now() > deadline {
                    return "could not list leases".into();
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        if ids.is_empty() {
            return "every lease expired or revoked".into();
        }
        if Instant::now() > deadline {
            for id in &ids {
                let _ = c.lease_revoke(*id).await;
            }
            return format!("{} leases outlived 20 s; revoked by the harness", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The committed history read back from member `i` with a watch from
/// revision 1, up to `current`.
async fn committed(
    cluster: &Cluster,
    i: usize,
    current: u64,
) -> Result<Vec<CommittedChange>, String> {
    let mut c = connect(&cluster.client_url(i), Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let opts = ec::WatchOptions::new()
        .with_from_key()
        .with_start_revision(1);
    let mut stream = c
        .watch(vec![0u8], Some(opts))
        .await
        .map_err(|e| e.to_string())?;
    let mut changes = Vec::new();
    let mut last = 1u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while last < current {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, stream.message())
            .await
            .map_err(|_| format!("committed history: stuck at revision {last} of {current}"))?
            .map_err(|e| e.to_string())?
            .ok_or("committed history: the watch ended")?;
        for e in msg.events() {
            let Some(kv) = e.kv() else { continue };
            let value = match e.event_type() {
                ec::EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
                ec::EventType::Delete => None,
            };
            last = last.max(kv.mod_revision() as u64);
            changes.push(CommittedChange {
                revision: Revision(kv.mod_revision() as u64),
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value,
            });
        }
    }
    Ok(changes)
}

async fn run(args: &Args, net: &Net) -> Result<bool, String> {
    let clocks = args.nemesis.contains(&"clock");
    let mut cluster = Cluster::new(args.target, args.binary.clone(), net, &args.dir, clocks);
    println!(
        "{} cairn-jepsen: {} x{} ({}), workload {}, nemesis {:?}, seed {}, {}s; data in {}, output in {}",
        wall_now(),
        args.target.name(),
        args.nodes,
        args.binary.display(),
        args.workload,
        args.nemesis,
        args.seed,
        args.time.as_secs(),
        args.dir.display(),
        args.out.display()
    );
    if args.nemesis.contains(&"lose") {
        cluster.mount_lazyfs()?;
    }
    for i in 0..args.nodes {
        cluster.start(i)?;
    }
    wait_ready(&cluster, Duration::from_secs(30)).await?;
    println!("{} cluster ready", wall_now());

    let shared = Arc::new(Shared::new(args.seed));
    let (stop_clients, clients_rx) = watch::channel(false);
    let (stop_watchers, watchers_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut watchers = Vec::new();
    let mut stream = 0u64;
    for m in 0..args.nodes {
        let url = cluster.client_url(m);
        for _ in 0..args.clients {
            stream += 1;
            let (s, u, rx) = (shared.clone(), url.clone(), clients_rx.clone());
            let w = args.workload.clone();
            tasks.push(tokio::spawn(async move {
                match w.as_str() {
                    "kv" => workload::registers(&s, u, stream, rx).await,
                    "lease" => workload::leases(&s, u, stream, rx).await,
                    _ => workload::locks(&s, u, stream, rx).await,
                }
            }));
        }
        if args.workload == "kv" {
            stream += 1;
            let (s, u, rx) = (shared.clone(), url.clone(), clients_rx.clone());
            tasks.push(tokio::spawn(async move {
                workload::append(&s, u, stream, rx).await
            }));
        }
        let prefixes: &[&str] = match args.workload.as_str() {
            "kv" => &["r", "a"],
            "lease" => &["l/"],
            _ => &["fenced/"],
        };
        for p in prefixes {
            let slot = {
                let mut r = shared.reached.lock().map_err(|e| e.to_string())?;
                r.push((p.to_string(), 0));
                r.len() - 1
            };
            let (s, u, rx, p) = (
                shared.clone(),
                url.clone(),
                watchers_rx.clone(),
                p.to_string(),
            );
            watchers.push(tokio::spawn(async move {
                workload::watcher(&s, u, p, slot, rx).await
            }));
        }
    }

    let mut notes = Vec::new();
    let mut nemesis = Nemesis::new(args.seed, args.nemesis.clone());
    let started = Instant::now();
    let mut harness_error = None;
    while started.elapsed() < args.time {
        let Some(step) = nemesis.next_step() else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        tokio::time::sleep(step.rest).await;
        if started.elapsed() + step.hold > args.time {
            break;
        }
        let leader = find_leader(&cluster).await;
        if let Err(e) = nemesis
            .apply(&step, &mut cluster, net, leader, shared.now())
            .await
        {
            harness_error = Some(format!("nemesis {}: {e}", step.kind));
            break;
        }
        tokio::time::sleep(step.hold).await;
        if let Err(e) = nemesis.heal(&mut cluster, net, shared.now()).await {
            harness_error = Some(format!("heal {}: {e}", step.kind));
            break;
        }
        for (i, status) in cluster.exited() {
            notes.push(format!("n{} exited by itself ({status})", i + 1));
            println!(
                "{} n{} exited by itself ({status}); restarting",
                wall_now(),
                i + 1
            );
            cluster.start(i)?;
        }
    }
    let _ = nemesis.heal(&mut cluster, net, shared.now()).await;
    let crashed: Vec<String> = cluster
        .exited()
        .into_iter()
        .map(|(i, s)| format!("n{} exited by itself ({s})", i + 1))
        .collect();
    for i in 0..args.nodes {
        if !cluster.is_running(i) {
            cluster.start(i)?;
        }
    }
    let _ = stop_clients.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let end_ns = shared.now();
    println!("{} workload stopped; healing and reading back", wall_now());
    if let Some(e) = harness_error {
        return Err(e);
    }

    // Read back: the current revision, the committed history, convergence.
    let mut failures: Vec<String> = crashed;
    if let Some(wait) = cluster.clock_catch_up() {
        println!(
            "{} waiting {:.1}s for clocks stepped back to catch up",
            wall_now(),
            wait.as_secs_f64()
        );
        // libfaketime rereads its file at most once a second.
        tokio::time::sleep(wait + Duration::from_millis(1500)).await;
    }
    wait_ready(&cluster, Duration::from_secs(60)).await?;
    if args.workload == "lease" {
        // Leases left behind expire after the workload: let them, so that no
        // expiry changes the store after the revision read back below.
        let left = settle_leases(&cluster).await;
        println!("{} leases settled ({left})", wall_now());
    }
    let mut c0 = connect(&cluster.client_url(0), Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let current = c0
        .get("ready", None)
        .await
        .map_err(|e| e.to_string())?
        .header()
        .map_or(1, |h| h.revision()) as u64;
    let changes = committed(&cluster, 0, current).await?;
    let mut hashes = Vec::new();
    for i in 0..args.nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        let hash = loop {
            let got = async {
                let mut c = connect(&cluster.client_url(i), Duration::from_secs(2))
                    .await
                    .ok()?;
                let h = c.hash_kv(current as i64).await.ok()?;
                Some(h.hash())
            }
            .await;
            if let Some(h) = got {
                break Some(h);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        hashes.push(hash);
    }
    if hashes.iter().any(Option::is_none) || hashes.windows(2).any(|w| w[0] != w[1]) {
        failures.push(format!(
            "members disagree at revision {current}: HashKV {:?}",
            hashes
        ));
    }
    // Watchers catch up (to the last change under their prefix), then stop.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let behind: Vec<String> = shared
            .reached
            .lock()
            .map(|r| {
                r.iter()
                    .filter_map(|(prefix, reached)| {
                        let last = changes
                            .iter()
                            .filter(|c| c.key.starts_with(prefix.as_str()))
                            .map(|c| c.revision.0)
                            .max()
                            .unwrap_or(0);
                        (*reached < last).then(|| format!("{prefix:?} at {reached} of {last}"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if behind.is_empty() || Instant::now() > deadline {
            if !behind.is_empty() {
                failures.push(format!(
                    "watchers never caught up 15 s after the faults ended: {}",
                    behind.join(", ")
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop_watchers.send(true);
    for w in watchers {
        let _ = w.await;
    }

    // The history, checked.
    let history = History {
        ops: shared.ops.lock().map(|v| v.clone()).unwrap_or_default(),
        changes,
        revisions: Some(Revisions {
            compact: Revision(0),
            current: Revision(current),
        }),
        holds: shared.holds.lock().map(|v| v.clone()).unwrap_or_default(),
        watches: shared.watches.lock().map(|v| v.clone()).unwrap_or_default(),
        other: Vec::new(),
    };
    let lease_ops = shared
        .lease_ops
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let lease_lines: Vec<serde_json::Value> = lease_ops
        .iter()
        .map(|o| serde_json::json!({ "lease_op": o }))
        .collect();
    let mut history = history;
    history.ops.sort_by_key(|o| o.call);
    // The lease check reads its calls and the clock faults from here.
    history.other.extend(lease_lines.iter().cloned());
    history.other.extend(nemesis.log.iter().map(|f| f.json()));
    let options = CheckOptions {
        max_steps: args.check_steps,
    };
    let mut verdicts = checks::run_all(&history, &options);
    verdicts.push(Verdict {
        check: "cluster",
        status: if failures.is_empty() {
            Status::Ok
        } else {
            Status::Violation
        },
        details: if failures.is_empty() {
            vec![format!(
                "{} members agree at revision {current}",
                args.nodes
            )]
        } else {
            failures.clone()
        },
    });

    // Files: history, faults, report, member logs.
    let mut lines = Vec::new();
    lines.extend(history.ops.iter().map(|o| Record::Op(o).line()));
    lines.extend(history.changes.iter().map(|c| Record::Change(c).line()));
    if let Some(r) = history.revisions {
        lines.push(Record::Revisions(r).line());
    }
    lines.extend(history.holds.iter().map(|h| Record::Hold(h).line()));
    lines.extend(history.watches.iter().map(|w| Record::Watch(w).line()));
    lines.extend(lease_lines.iter().map(|l| l.to_string()));
    lines.extend(nemesis.log.iter().map(|f| f.json().to_string()));
    lines.extend(
        notes
            .iter()
            .map(|n| serde_json::json!({ "note": n }).to_string()),
    );
    let write = |name: &str, text: String| {
        let p = args.out.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("history.jsonl", lines.join("\n") + "\n")?;
    write(
        "faults.jsonl",
        nemesis
            .log
            .iter()
            .map(|f| f.json().to_string() + "\n")
            .collect(),
    )?;
    let faults_applied = nemesis.log.len();
    let title = format!(
        "cairn-jepsen: {} x{}, {} workload, seed {}",
        args.target.name(),
        args.nodes,
        args.workload,
        args.seed
    );
    let settings = vec![
        (
            "target".to_owned(),
            format!("{} ({})", args.target.name(), args.binary.display()),
        ),
        ("members".to_owned(), args.nodes.to_string()),
        ("workload".to_owned(), args.workload.clone()),
        ("nemesis".to_owned(), format!("{:?}", args.nemesis)),
        ("seed".to_owned(), args.seed.to_string()),
        (
            "duration".to_owned(),
            format!("{:.1} s", end_ns as f64 / 1e9),
        ),
        ("operations".to_owned(), history.ops.len().to_string()),
        ("lock holds".to_owned(), history.holds.len().to_string()),
        ("lease calls".to_owned(), lease_ops.len().to_string()),
        (
            "watch streams".to_owned(),
            history.watches.len().to_string(),
        ),
        ("faults".to_owned(), faults_applied.to_string()),
        ("final revision".to_owned(), current.to_string()),
        ("finished".to_owned(), wall_now()),
    ];
    // On a linearizability violation: the smallest set still showing it.
    let minimal = verdicts
        .iter()
        .find(|v| v.check == "linearizable" && v.status == Status::Violation)
        .and_then(|v| {
            let named = report::named_in(&v.details, history.ops.len());
            println!(
                "{} minimising the violation ({} operations named)",
                wall_now(),
                named.len()
            );
            minimize::minimize(&history.ops, &named, &options, Duration::from_secs(90))
        });
    if let Some(m) = &minimal {
        println!(
            "minimal set ({} of {} operations, {} checks{}):",
            m.ops.len(),
            history.ops.len(),
            m.checks,
            if m.complete {
                ""
            } else {
                ", time budget ran out"
            }
        );
        for i in &m.ops {
            println!("  #{i} {}", history.ops[*i]);
        }
    }
    let faults: Vec<report::FaultSpan> = nemesis.log.iter().map(FaultLog::span).collect();
    let checks: Vec<report::CheckRow> = verdicts.iter().map(report::CheckRow::from).collect();
    let html = report::render(&report::ReportInput {
        title,
        settings,
        ops: &history.ops,
        holds: &history.holds,
        lease_ops: &lease_ops,
        faults: &faults,
        checks: &checks,
        notes: &notes,
        end_ns,
        minimal: minimal.as_ref(),
        // A worker's successive client ids share its row.
        clients_per_row: workload::CLIENTS_PER_STREAM,
        time_axis: "UTC",
    });
    write("report.html", html)?;
    for i in 0..args.nodes {
        let _ = std::fs::copy(
            &cluster.members[i].log,
            args.out.join(format!("n{}.log", i + 1)),
        );
    }
    cluster.stop_all().await;

    println!(
        "{} {} ops, {} lock holds, {} lease calls, {} watch streams, {} faults, final revision {current}",
        wall_now(),
        history.ops.len(),
        history.holds.len(),
        lease_ops.len(),
        history.watches.len(),
        faults_applied
    );
    for v in &verdicts {
        println!("{v}");
    }
    println!("report: {}", args.out.join("report.html").display());
    let bad = verdicts
        .iter()
        .any(|v| matches!(v.status, Status::Violation | Status::Malformed));
    Ok(!bad)
}
