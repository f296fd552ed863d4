//! Distributed locks and leader election through the real etcdctl (v3.4)
//! against the real `cairn` binary, with etcd 3.4 as the oracle: the same
//! session runs against both and must print the same once lease ids (which
//! each server chooses) are masked. etcdctl's `lock` and `elect` run
//! clientv3's concurrency recipes on the client (KV txns, leases, watches
//! of the predecessor's deletion), so this checks that those recipes work
//! on cairn as they do on etcd; the Lock and Election gRPC services
//! themselves are checked in `tests/lock_election.rs`.
//!
//! The session: a lock with a command (which sees `ETCD_LOCK_KEY` /
//! `ETCD_LOCK_REV`); two lockers of one name, the second blocked until the
//! first's command ends; a lock without a command held until SIGINT, which
//! releases it; an election with a candidate, an observer (`elect -l`) and a
//! second candidate who takes over when the first is interrupted (it
//! resigns). Timing is checked loosely: orderings, not durations.
#![cfg(not(madsim))]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// How long any one expectation may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// An etcdctl running in the background; its stdout lines, timestamped.
struct Bg {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    what: String,
}

impl Bg {
    fn spawn(endpoint: &str, args: &[&str]) -> Bg {
        let mut child = Command::new(ctl_program())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    sink.lock().expect("lines").push((Instant::now(), line));
                }
            });
        }
        Bg {
            child,
            lines,
            what: args.join(" "),
        }
    }

    fn lines(&self) -> Vec<String> {
        let lines = self.lines.lock().expect("lines");
        lines.iter().map(|(_, l)| l.clone()).collect()
    }

    /// When the line `text` was printed, waiting for it.
    fn wait_for(&self, text: &str) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some((at, _)) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|(_, l)| l == text)
            {
                return *at;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "`etcdctl {}` never printed {text:?}; printed {:?}",
            self.what,
            self.lines()
        );
    }

    /// Waits until `n` lines were printed.
    fn wait_lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.lines.lock().expect("lines").len() >= n {
                return self.lines();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "`etcdctl {}` printed fewer than {n} lines: {:?}",
            self.what,
            self.lines()
        );
    }

    fn interrupt(&self) {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "SIGINT to etcdctl {}", self.what);
    }

    /// Waits for the exit; whether it succeeded.
    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "`etcdctl {}` did not exit; printed {:?}",
            self.what,
            self.lines()
        );
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replaces the lease id after each participant prefix with `<Ln>`, n by
/// first appearance.
fn mask_leases(text: &str, prefixes: &[&str]) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::new();
    let mut rest = text;
    loop {
        let next = prefixes
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min();
        let Some((i, len)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i + len]);
        rest = &rest[i + len..];
        let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        if hex.is_empty() {
            continue;
        }
        let n = match seen.iter().position(|s| *s == hex) {
            Some(n) => n,
            None => {
                seen.push(hex.clone());
                seen.len() - 1
            }
        };
        out.push_str(&format!("<L{}>", n + 1));
        rest = &rest[hex.len()..];
    }
}

fn session(p: &Proc) -> String {
    let ep = p.endpoint();
    let mut out = Vec::new();

    // A lock around a command, which learns the key and its revision.
    out.push(
        "$ etcdctl lock mylock -- sh -c 'echo key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV; echo done'"
            .to_owned(),
    );
    out.push(ctl_ok(
        &ep,
        &[
            "lock",
            "mylock",
            "--",
            "sh",
            "-c",
            "echo key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV; echo done",
        ],
    ));
    out.push(format!(
        "keys left: {:?}",
        ctl_ok(&ep, &["get", "--prefix", "mylock/", "--keys-only"])
    ));

    // Two lockers: the second runs its command only after the first's ended.
    let mut first = Bg::spawn(
        &ep,
        &[
            "lock",
            "q",
            "--",
            "sh",
            "-c",
            "echo first-start; sleep 1; echo first-end",
        ],
    );
    first.wait_for("first-start");
    let mut second = Bg::spawn(&ep, &["lock", "q", "--", "sh", "-c", "echo second-start"]);
    let first_end = first.wait_for("first-end");
    let second_start = second.wait_for("second-start");
    out.push(format!(
        "first: {:?} exit ok {}; second: {:?} exit ok {}; second ran after first: {}",
        first.lines(),
        first.wait_exit(),
        second.lines(),
        second.wait_exit(),
        second_start >= first_end
    ));

    // A lock held without a command prints its key; SIGINT releases it.
    let mut held = Bg::spawn(&ep, &["lock", "held"]);
    out.push(format!("$ etcdctl lock held\n{:?}", held.wait_lines(1)));
    out.push(format!(
        "keys while held: {:?}",
        ctl_ok(&ep, &["get", "--prefix", "held/", "--keys-only"])
    ));
    held.interrupt();
    out.push(format!("interrupted, exit ok {}", held.wait_exit()));
    out.push(format!(
        "keys after: {:?}",
        ctl_ok(&ep, &["get", "--prefix", "held/", "--keys-only"])
    ));

    // An election: candidate, observer, a second candidate who waits.
    let mut c1 = Bg::spawn(&ep, &["elect", "myel", "p1"]);
    out.push(format!("$ etcdctl elect myel p1\n{:?}", c1.wait_lines(2)));
    let mut observer = Bg::spawn(&ep, &["elect", "-l", "myel"]);
    out.push(format!(
        "$ etcdctl elect -l myel\n{:?}",
        observer.wait_lines(2)
    ));
    let mut c2 = Bg::spawn(&ep, &["elect", "myel", "p2"]);
    std::thread::sleep(Duration::from_millis(500));
    out.push(format!(
        "$ etcdctl elect myel p2 (while p1 leads)\n{:?}",
        c2.lines()
    ));
    c1.interrupt();
    out.push(format!("p1 interrupted, exit ok {}", c1.wait_exit()));
    out.push(format!("p2 now: {:?}", c2.wait_lines(2)));
    out.push(format!("observer now: {:?}", observer.wait_lines(4)));
    out.push(format!(
        "$ etcdctl elect -l myel (a new observer)\n{:?}",
        Bg::spawn(&ep, &["elect", "-l", "myel"]).wait_lines(2)
    ));
    c2.interrupt();
    observer.interrupt();
    c2.wait_exit();
    observer.wait_exit();
    out.push(format!(
        "keys after: {:?}",
        ctl_ok(&ep, &["get", "--prefix", "myel/", "--keys-only"])
    ));
    mask_leases(&out.join("\n"), &["mylock/", "q/", "held/", "myel/"])
}

#[test]
fn etcdctl_lock_and_elect_behave_as_against_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let cairn = start_cairn(dir.path());
    let want = session(&etcd);
    let got = session(&cairn);
    assert_eq!(got, want, "cairn:\n{got}\n\netcd:\n{want}");
    // What the session is meant to have shown (so two equal failures don't pass).
    for expect in [
        "key=mylock/<L1> rev=",
        "second ran after first: true",
        "[\"myel/<L",
        "\"p2\"]",
        "keys after: \"\"",
    ] {
        assert!(want.contains(expect), "{expect:?} missing from:\n{want}");
    }
}

/// The same session with cairnctl (`with_ctl` in `tests/common/mod.rs`)
/// against a fresh server of each kind prints what etcdctl prints against
/// another.
#[test]
fn cairnctl_lock_and_elect_behave_as_etcdctls() {
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
        let want = session(&a);
        let got = with_ctl(cairnctl_bin(), || session(&b));
        assert_eq!(
            got,
            want,
            "on {}: cairnctl:\n{got}\n\netcdctl:\n{want}",
            server.label()
        );
    }
}
