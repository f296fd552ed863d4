//! `etcdctl watch` (the real etcdctl 3.4) against the real `cairn` binary,
//! with etcd 3.4 itself as the oracle: each session starts `etcdctl watch`,
//! waits until the server counts its watchers (`/metrics`,
//! `etcd_debugging_mvcc_watcher_total`, which both servers export), makes
//! writes with a second etcdctl, waits for the output to settle, stops the
//! watcher and records what it printed. The transcripts of both servers
//! must be equal once ids and terms are masked (revisions are compared as
//! they are: both servers start empty and see the same writes).
#![cfg(not(madsim))]

mod common;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One command of a session; `{REV}` / `{REV-n}` / `{REV+n}` in an argument
/// is the server's current revision (plus or minus n) when the step runs.
struct Cmd {
    args: Vec<String>,
    stdin: Option<String>,
}

fn cmd(line: &str) -> Cmd {
    Cmd {
        args: line.split_whitespace().map(str::to_owned).collect(),
        stdin: None,
    }
}

fn txn(script: &str) -> Cmd {
    Cmd {
        args: vec!["txn".into()],
        stdin: Some(script.into()),
    }
}

struct Session {
    name: &'static str,
    setup: Vec<Cmd>,
    /// The `etcdctl watch ...` arguments (after `watch`).
    watch: Vec<String>,
    /// Lines fed to `watch -i` (kept open while the session runs).
    interactive: Option<&'static str>,
    /// Watchers the watch command creates.
    watchers: u64,
    writes: Vec<Cmd>,
    /// The watch command ends by itself (it is canceled by the server).
    ends_itself: bool,
    /// The watch starts in the past: events come from history before any write.
    history: bool,
}

fn watch_args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

fn metric(endpoint: &str, name: &str) -> Option<u64> {
    let (_, body) = http_get(endpoint, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The server's watcher gauge; `None` when /metrics did not answer in time
/// (a loaded machine): callers poll again.
fn watchers(endpoint: &str) -> Option<u64> {
    metric(endpoint, "etcd_debugging_mvcc_watcher_total")
}

/// `wait_at_most`, failing the test on timeout.
fn wait_until(what: &str, limit: Duration, ok: impl FnMut() -> bool) {
    if !wait_at_most(limit, ok) {
        panic!("timed out waiting for {what}");
    }
}

fn current_revision(endpoint: &str) -> i64 {
    let out = ctl_ok(endpoint, &["get", "no-such-key", "-w", "json"]);
    let at = out.find("\"revision\":").expect("revision in the header") + 11;
    out[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a revision")
}

/// Replaces `{REV}`, `{REV-n}`, `{REV+n}` with the current revision.
fn resolve(endpoint: &str, arg: &str) -> String {
    let Some(start) = arg.find("{REV") else {
        return arg.to_owned();
    };
    let end = start + arg[start..].find('}').expect("closing brace");
    let delta: i64 = match &arg[start + 4..end] {
        "" => 0,
        d => d.parse().expect("{REV±n}"),
    };
    let rev = current_revision(endpoint) + delta;
    format!("{}{rev}{}", &arg[..start], &arg[end + 1..])
}

fn run_cmd(endpoint: &str, c: &Cmd) -> String {
    let args: Vec<String> = c.args.iter().map(|a| resolve(endpoint, a)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etcdctl(endpoint, &args, c.stdin.as_deref());
    format!(
        "$ etcdctl {}\n[exit {}]\n{}{}",
        args.join(" "),
        out.status.code().unwrap_or(-1),
        mask_json_ids(&String::from_utf8_lossy(&out.stdout)),
        mask_json_ids(&String::from_utf8_lossy(&out.stderr))
    )
}

fn spawn_watch(endpoint: &str, args: &[String], dir: &std::path::Path) -> Child {
    Command::new(ctl_program())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("watch")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(dir.join("watch.out")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.join("watch.err")).expect("stderr file"))
        .spawn()
        .expect("spawn etcdctl (install the Debian package etcd-client)")
}

/// Waits until the file at `path` has not changed for `quiet`.
fn settle(path: &std::path::Path, quiet: Duration) {
    let size = || std::fs::metadata(path).map_or(0, |m| m.len());
    let mut last = (size(), Instant::now());
    wait_until(
        "the watch output to settle",
        Duration::from_secs(20),
        || {
            let now = size();
            if now != last.0 {
                last = (now, Instant::now());
            }
            last.1.elapsed() >= quiet
        },
    );
}

/// What one run of a session printed.
struct Outcome {
    /// The whole transcript: commands, their output, the watch output.
    transcript: String,
    /// The (masked) watch output before the writes: what came from history.
    history: String,
    /// The (masked) watch output at the end.
    output: String,
}

/// Waits until `ok`, at most `limit`; says whether it happened.
fn wait_at_most(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Runs `s` against `endpoint`. With `like`, the outcome of the same
/// session on the oracle, it waits (boundedly) for the watch to print what
/// the oracle printed before each step instead of relying on timing alone,
/// so a loaded machine does not turn a slow delivery into a difference.
fn run_session(endpoint: &str, s: &Session, like: Option<&Outcome>) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut transcript = format!("## {}\n", s.name);
    for c in &s.setup {
        transcript.push_str(&run_cmd(endpoint, c));
    }
    // Watchers of the previous session are gone before this one starts.
    wait_until(
        "the previous watchers to go",
        Duration::from_secs(10),
        || watchers(endpoint) == Some(0),
    );
    let args: Vec<String> = s.watch.iter().map(|a| resolve(endpoint, a)).collect();
    transcript.push_str(&format!("$ etcdctl watch {}\n", args.join(" ")));
    let mut child = spawn_watch(endpoint, &args, dir.path());
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(lines) = s.interactive {
        stdin
            .write_all(lines.as_bytes())
            .expect("interactive input");
        stdin.flush().expect("flush");
    }
    let out_path = dir.path().join("watch.out");
    let printed = || mask_json_ids(&std::fs::read_to_string(&out_path).unwrap_or_default());
    if s.ends_itself {
        wait_until("the watch to end", Duration::from_secs(15), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
    } else {
        wait_until(
            "the watchers to be created",
            Duration::from_secs(10),
            || watchers(endpoint).is_some_and(|n| n >= s.watchers),
        );
    }
    // What the watch replays from history goes out before the writes (etcd
    // catches watchers up every 100 ms; a write meanwhile would join the batch).
    match like {
        Some(o) => {
            wait_at_most(Duration::from_secs(10), || printed() == o.history);
        }
        None if s.history => {
            wait_at_most(Duration::from_secs(10), || !printed().is_empty());
        }
        None => {}
    }
    settle(&out_path, Duration::from_millis(500));
    let history = printed();
    for c in &s.writes {
        transcript.push_str(&run_cmd(endpoint, c));
    }
    if let Some(o) = like {
        wait_at_most(Duration::from_secs(10), || printed() == o.output);
    }
    settle(&out_path, Duration::from_secs(1));
    let ended = match child.try_wait().expect("watch status") {
        Some(status) => format!("[watch exit {}]\n", status.code().unwrap_or(-1)),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            "[watch stopped]\n".to_owned()
        }
    };
    drop(stdin);
    transcript.push_str(&ended);
    let output = printed();
    transcript.push_str(&output);
    let err = std::fs::read_to_string(dir.path().join("watch.err")).unwrap_or_default();
    transcript.push_str(&mask_json_ids(&err));
    Outcome {
        transcript,
        history,
        output,
    }
}

/// The first line where `got` and `want` differ, with its number.
fn first_difference(got: &str, want: &str) -> String {
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    for i in 0..g.len().max(w.len()) {
        let (a, b) = (g.get(i), w.get(i));
        if a != b {
            return format!("line {}: cairn {:?}, etcd {:?}", i + 1, a, b);
        }
    }
    "no line differs (line endings?)".to_owned()
}

fn sessions() -> Vec<Session> {
    let plain = |name, watch: &str, writes: Vec<Cmd>| Session {
        name,
        setup: Vec::new(),
        watch: watch_args(watch),
        interactive: None,
        watchers: 1,
        writes,
        ends_itself: false,
        history: watch.contains("--rev=") && !watch.contains("{REV+"),
    };
    vec![
        plain(
            "one key",
            "foo",
            vec![
                cmd("put foo bar"),
                cmd("put foo baz"),
                cmd("put foobar x"),
                cmd("del foo"),
            ],
        ),
        plain(
            "prefix, a txn's events together, a multi-key delete",
            "--prefix foo",
            vec![
                cmd("put foo1 a"),
                cmd("put fo x"),
                txn("\nput foo2 b\nput foo3 c\n\n\n"),
                cmd("del foo --prefix"),
            ],
        ),
        plain(
            "history from a past revision, then live",
            "--rev=2 foo",
            vec![cmd("put foo again")],
        ),
        plain(
            "a future start revision",
            "--rev={REV+2} foo",
            vec![cmd("put foo f1"), cmd("put foo f2"), cmd("put foo f3")],
        ),
        plain(
            "prev-kv",
            "--prev-kv foo",
            vec![cmd("put foo p1"), cmd("put foo p2"), cmd("del foo")],
        ),
        plain(
            "a key range",
            "foo1 foo3",
            vec![cmd("put foo1 r"), cmd("put foo2 r"), cmd("put foo3 r")],
        ),
        plain(
            "json output with headers, from history",
            "-w json --prefix --prev-kv --rev={REV-2} foo",
            vec![cmd("put foo9 z")],
        ),
        Session {
            name: "every key from the first revision",
            setup: Vec::new(),
            watch: vec!["--rev=1".into(), "--prefix".into(), String::new()],
            interactive: None,
            watchers: 1,
            writes: vec![cmd("put zz last")],
            ends_itself: false,
            history: true,
        },
        Session {
            name: "interactive: two watchers on one stream",
            setup: Vec::new(),
            watch: watch_args("-i"),
            interactive: Some("watch foo --prev-kv\nwatch bar\n"),
            watchers: 2,
            writes: vec![
                cmd("put bar i1"),
                cmd("put foo i2"),
                cmd("put bar i3"),
                cmd("put foo i4"),
            ],
            ends_itself: false,
            history: false,
        },
        Session {
            name: "start below the compact revision: canceled",
            setup: vec![
                cmd("put c1 a"),
                cmd("put c2 b"),
                cmd("del c1"),
                cmd("put c3 c"),
                cmd("compaction {REV-1}"),
            ],
            watch: watch_args("--rev={REV-2} --prefix c"),
            interactive: None,
            watchers: 1,
            writes: Vec::new(),
            ends_itself: true,
            history: false,
        },
        Session {
            name: "start below the compact revision, json",
            setup: Vec::new(),
            watch: watch_args("-w json --rev=3 c1"),
            interactive: None,
            watchers: 1,
            writes: Vec::new(),
            ends_itself: true,
            history: false,
        },
        plain(
            "start at the compact revision: what compaction kept",
            "--rev={REV-1} --prefix c",
            vec![cmd("put c4 d")],
        ),
    ]
}

#[test]
fn etcdctl_watch_sessions_print_what_etcd_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let cairn = start_cairn(dir.path());
    for s in sessions() {
        let want = run_session(&etcd.endpoint(), &s, None);
        let got = run_session(&cairn.endpoint(), &s, Some(&want));
        if got.transcript != want.transcript {
            panic!(
                "session {:?}: cairn differs from etcd 3.4 at {}\n\
                 --- cairn ---\n{}--- etcd 3.4 ---\n{}",
                s.name,
                first_difference(&got.transcript, &want.transcript),
                got.transcript,
                want.transcript
            );
        }
    }
}

/// The same sessions with cairnctl (`with_ctl` in `tests/common/mod.rs`)
/// against a fresh server of each kind print what etcdctl prints against
/// another.
#[test]
fn cairnctl_watch_sessions_print_what_etcdctl_prints() {
    for server in [Server::Etcd, Server::Cairn] {
        let (d1, d2) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let start = |dir: &std::path::Path| match server {
            Server::Etcd => start_etcd(dir),
            Server::Cairn => start_cairn(dir),
        };
        let (a, b) = (start(d1.path()), start(d2.path()));
        for s in sessions() {
            let want = run_session(&a.endpoint(), &s, None);
            let got = with_ctl(cairnctl_bin(), || {
                run_session(&b.endpoint(), &s, Some(&want))
            });
            assert!(
                got.transcript == want.transcript,
                "on {}, session {:?}: cairnctl differs from etcdctl at {}\n--- cairnctl ---\n{}--- etcdctl ---\n{}",
                server.label(),
                s.name,
                first_difference(&got.transcript, &want.transcript),
                got.transcript,
                want.transcript
            );
        }
    }
}
