//! Leases through the real etcdctl (v3.4) against the real `cairn` binary,
//! with etcd 3.4 as the oracle: the same lease session runs against both and
//! must print the same, once lease ids (which each server chooses), cluster
//! and member ids, terms and remaining TTLs (which depend on timing) are
//! masked. Revisions are compared as they are (both servers start fresh).
//! Plus the service-registration scenario end to end against cairn: a key
//! kept alive stays, and disappears one TTL after the last keep-alive — not
//! before.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Sorts the items of every list that opens with `open` and ends at
/// `close`, split on `sep` (etcd lists a lease's keys in Go map order).
fn sort_lists(text: &str, open: &str, close: char, sep: char) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(open) {
        out.push_str(&rest[..i + open.len()]);
        rest = &rest[i + open.len()..];
        let end = rest.find(close).unwrap_or(rest.len());
        let mut items: Vec<&str> = rest[..end].split(sep).collect();
        items.sort_unstable();
        out.push_str(&items.join(&sep.to_string()));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Masks what legitimately differs between two servers running the same
/// session; drops etcdctl's own retry log lines (times and client ids).
fn mask(text: &str, ids: &Ids) -> String {
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with("{\"level\":"))
        .map(|l| format!("{l}\n"))
        .collect();
    for (i, id) in ids.granted.iter().enumerate() {
        out = out.replace(&format!("{id:016x}"), &format!("<ID{}>", i + 1));
        out = out.replace(&format!("{id:x}"), &format!("<ID{}>", i + 1));
        out = out.replace(&id.to_string(), &format!("<ID{}>", i + 1));
    }
    for pat in ["\"cluster_id\":", "\"member_id\":", "\"raft_term\":"] {
        out = mask_digits_after(&out, pat);
    }
    out = sort_lists(&out, "attached keys([", ']', ' ');
    out = sort_lists(&out, "\"keys\":[", ']', ',');
    // Remaining TTLs depend on when the command ran (checked separately).
    for pat in ["remaining(", "\"ttl\":"] {
        out = mask_digits_after(&out, pat);
    }
    out
}

/// The lease ids a session was granted, in order.
#[derive(Default)]
struct Ids {
    granted: Vec<i64>,
}

impl Ids {
    /// Substitutes `$1`, `$2`, … with the granted ids (hex, as etcdctl takes them).
    fn expand(&self, arg: &str) -> String {
        let mut out = arg.to_owned();
        for (i, id) in self.granted.iter().enumerate().rev() {
            out = out.replace(&format!("${}", i + 1), &format!("{id:x}"));
        }
        out
    }

    /// Records the id of a `lease grant` answer (`lease <hex> granted with TTL(..)`).
    fn record(&mut self, stdout: &str) {
        if let Some(hex) = stdout
            .strip_prefix("lease ")
            .and_then(|r| r.split_whitespace().next())
        {
            self.granted
                .push(i64::from_str_radix(hex, 16).expect("hex lease id"));
        }
    }
}

enum Step {
    /// An etcdctl command; `$n` is the n-th granted lease.
    Ctl(&'static str),
    /// `etcdctl lease keep-alive $n` in the background for a while: its
    /// first answer is compared.
    KeepAliveFor(usize, Duration),
    /// `etcdctl lease keep-alive $n` in the background, then `lease revoke
    /// $n`: the keep-alive notices and exits; its whole output is compared.
    KeepAliveUntilRevoked(usize),
}

fn spawn_ctl(endpoint: &str, args: &[String]) -> Child {
    Command::new(ctl_program())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl")
}

fn wait_output(mut child: Child, within: Duration) -> (String, String, Option<i32>) {
    let deadline = Instant::now() + within;
    let mut code = None;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait etcdctl") {
            code = status.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if code.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("etcdctl output");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        code,
    )
}

/// Runs the session; one transcript entry per step, plus the raw remaining
/// TTLs seen by `timetolive` (checked for plausibility).
fn run_session(endpoint: &str, steps: &[Step]) -> (Vec<String>, Vec<i64>) {
    let mut ids = Ids::default();
    let mut transcript = Vec::new();
    let mut remaining = Vec::new();
    for s in steps {
        let entry = match s {
            Step::Ctl(cmd) => {
                let args: Vec<String> = cmd.split_whitespace().map(|a| ids.expand(a)).collect();
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = etcdctl(endpoint, &argv, None);
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                if cmd.starts_with("lease grant") {
                    ids.record(&stdout);
                }
                if let Some(r) = stdout.split("remaining(").nth(1) {
                    let secs: String = r.chars().take_while(char::is_ascii_digit).collect();
                    remaining.push(secs.parse().expect("remaining seconds"));
                }
                format!(
                    "$ etcdctl {cmd}\n[exit {}]\n{}{}",
                    out.status.code().unwrap_or(-1),
                    mask(&stdout, &ids),
                    mask(&stderr, &ids)
                )
            }
            Step::KeepAliveFor(n, d) => {
                let args = vec![
                    "lease".into(),
                    "keep-alive".into(),
                    ids.expand(&format!("${n}")),
                ];
                let child = spawn_ctl(endpoint, &args);
                let (stdout, _, _) = wait_output(child, *d);
                let first = stdout.lines().next().unwrap_or("").to_owned();
                format!(
                    "$ etcdctl lease keep-alive ${n} &  (first answer)\n{}",
                    mask(&first, &ids)
                )
            }
            Step::KeepAliveUntilRevoked(n) => {
                let id = ids.expand(&format!("${n}"));
                let args = vec!["lease".into(), "keep-alive".into(), id.clone()];
                let child = spawn_ctl(endpoint, &args);
                std::thread::sleep(Duration::from_millis(700));
                let revoke = etcdctl(endpoint, &["lease", "revoke", &id], None);
                assert!(
                    revoke.status.success(),
                    "revoke while keeping alive: {}{}",
                    String::from_utf8_lossy(&revoke.stdout),
                    String::from_utf8_lossy(&revoke.stderr)
                );
                let (stdout, stderr, code) = wait_output(child, Duration::from_secs(10));
                // The answers before the revoke: one or more identical lines.
                let mut lines: Vec<&str> = stdout.lines().collect();
                lines.dedup();
                format!(
                    "$ etcdctl lease keep-alive ${n} &; lease revoke ${n}\n[exit {code:?}]\n{}{}",
                    mask(&lines.join("\n"), &ids),
                    mask(&stderr, &ids)
                )
            }
        };
        transcript.push(entry);
    }
    (transcript, remaining)
}

fn lease_session() -> Vec<Step> {
    use Step::*;
    vec![
        Ctl("lease grant 60"),
        Ctl("lease grant 1"),
        Ctl("lease revoke $2"),
        Ctl("lease grant 0"),
        Ctl("lease revoke $3"),
        Ctl("put foo bar --lease=$1"),
        Ctl("put foo2 bar2 --lease=$1"),
        Ctl("get foo -w json"),
        Ctl("lease timetolive $1"),
        Ctl("lease timetolive $1 --keys"),
        Ctl("lease timetolive $1 --keys -w json"),
        Ctl("lease list"),
        Ctl("lease keep-alive --once $1"),
        Ctl("lease keep-alive --once $1 -w json"),
        // A put without a lease detaches; ignore-lease keeps it; delete detaches.
        Ctl("put foo bar"),
        Ctl("lease timetolive $1 --keys"),
        Ctl("put foo2 other --ignore-lease"),
        Ctl("get foo2 -w json"),
        Ctl("lease timetolive $1 --keys"),
        Ctl("del foo2"),
        Ctl("lease timetolive $1 --keys"),
        Ctl("put foo2 again --lease=$1"),
        Ctl("put foo4 z --lease=$1"),
        Ctl("put foo5 z"),
        KeepAliveFor(1, Duration::from_millis(1500)),
        // Revoke deletes the attached keys, in one revision.
        Ctl("lease revoke $1"),
        Ctl("get foo --prefix -w json"),
        Ctl("get foo4 --rev=0 -w json"),
        Ctl("lease timetolive $1"),
        Ctl("lease timetolive $1 -w json"),
        Ctl("lease keep-alive --once $1"),
        Ctl("lease revoke $1"),
        Ctl("put foo bar --lease=$1"),
        // Unknown leases and bad TTLs.
        Ctl("put k v --lease=1234"),
        Ctl("lease timetolive 1234"),
        Ctl("lease keep-alive --once 1234"),
        Ctl("lease revoke 1234"),
        Ctl("lease revoke zz"),
        Ctl("lease grant 9000000001"),
        Ctl("lease grant abc"),
        Ctl("lease grant 9000000000"),
        Ctl("lease timetolive $4"),
        Ctl("lease grant 30"),
        Ctl("lease list"),
        Ctl("lease list -w json"),
        KeepAliveUntilRevoked(5),
        Ctl("lease revoke $4"),
        Ctl("lease list"),
        Ctl("get foo --prefix --keys-only"),
    ]
}

#[test]
fn etcdctl_lease_session_matches_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let cairn = start_cairn(dir.path());
    let steps = lease_session();
    let (expected, etcd_remaining) = run_session(&etcd.endpoint(), &steps);
    let (got, cairn_remaining) = run_session(&cairn.endpoint(), &steps);
    let mut diffs = Vec::new();
    for (e, g) in expected.iter().zip(&got) {
        if e != g {
            diffs.push(format!("--- etcd\n{e}\n+++ cairn\n{g}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} steps differ from etcd:\n{}\n\ncairn log:\n{}",
        diffs.len(),
        steps.len(),
        diffs.join("\n"),
        cairn.log_text()
    );
    // The masked remaining TTLs: the same count, each close to etcd's.
    assert_eq!(etcd_remaining.len(), cairn_remaining.len());
    for (e, c) in etcd_remaining.iter().zip(&cairn_remaining) {
        assert!((e - c).abs() <= 2, "remaining TTL {c} vs etcd's {e}");
    }
}

/// The same session with cairnctl (`tests/common/mod.rs`'s `with_ctl`)
/// against a fresh server of each kind prints what etcdctl prints against
/// another.
#[test]
fn cairnctl_lease_session_prints_what_etcdctl_prints() {
    let steps = lease_session();
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
        let (want, _) = run_session(&a.endpoint(), &steps);
        let (got, _) = with_ctl(cairnctl_bin(), || run_session(&b.endpoint(), &steps));
        let diffs: Vec<String> = want
            .iter()
            .zip(&got)
            .filter(|(w, g)| w != g)
            .map(|(w, g)| format!("--- etcdctl\n{w}\n+++ cairnctl\n{g}"))
            .collect();
        assert!(
            diffs.is_empty(),
            "on {}: {} of {} steps differ:\n{}",
            server.label(),
            diffs.len(),
            steps.len(),
            diffs.join("\n")
        );
    }
}

// ---- service registration, end to end against cairn ----

fn key_exists(ep: &str, key: &str) -> bool {
    !ctl_ok(ep, &["get", key, "--keys-only"]).trim().is_empty()
}

fn lease_id(grant_output: &str) -> String {
    grant_output
        .split_whitespace()
        .nth(1)
        .expect("lease id in the grant output")
        .to_owned()
}

#[test]
fn registered_service_key_lives_while_kept_alive_and_vanishes_one_ttl_after_the_last_keep_alive() {
    const TTL: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let ep = cairn.endpoint();
    let key = "/services/x/instance-1";

    let grant = ctl_ok(&ep, &["lease", "grant", "3"]);
    assert!(grant.ends_with("granted with TTL(3s)\n"), "{grant}");
    let id = lease_id(&grant);
    assert_eq!(
        ctl_ok(
            &ep,
            &["put", key, "10.0.0.1:8080", &format!("--lease={id}")]
        ),
        "OK\n"
    );

    // A consumer lists the instances, then watches for changes after that
    // listing (`--rev` = the listing's revision + 1), as service discovery does.
    let listing = ctl_ok(&ep, &["get", "/services/x/", "--prefix", "-w", "fields"]);
    assert!(
        listing.contains("\"Value\" : \"10.0.0.1:8080\""),
        "{listing}"
    );
    let rev: i64 = listing
        .lines()
        .find(|l| l.starts_with("\"Revision\""))
        .and_then(|l| l.split(" : ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .expect("the listing's revision");
    let watcher = spawn_ctl(
        &ep,
        &[
            "watch".into(),
            "/services/x/".into(),
            "--prefix".into(),
            format!("--rev={}", rev + 1),
        ],
    );

    // The instance keeps its lease alive in the background: the key stays
    // for well over two TTLs.
    let mut keeper = spawn_ctl(&ep, &["lease".into(), "keep-alive".into(), id.clone()]);
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        assert!(key_exists(&ep, key), "the key vanished while kept alive");
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = keeper.kill();
    let out = keeper.wait_with_output().expect("keep-alive output");
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        lines.lines().count() >= 3
            && lines
                .lines()
                .all(|l| l == format!("lease {id} keepalived with TTL(3)")),
        "keep-alive answers: {lines}"
    );

    // One last keep-alive whose time is known, then the instance dies.
    let before_last = Instant::now();
    assert_eq!(
        ctl_ok(&ep, &["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(3)\n")
    );
    let after_last = Instant::now();

    // Not before one TTL since the last keep-alive…
    let mut vanished_at = None;
    while Instant::now() < after_last + TTL + Duration::from_secs(5) {
        if !key_exists(&ep, key) {
            vanished_at = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let vanished_at = vanished_at.expect("the key vanished after its lease expired");
    assert!(
        vanished_at >= before_last + TTL,
        "the key vanished {:?} after the last keep-alive, before its TTL",
        vanished_at - before_last
    );
    // …and soon after it (the leader checks expiry every tick).
    assert!(
        vanished_at <= after_last + TTL + Duration::from_secs(2),
        "the key outlived its lease by {:?}",
        vanished_at - (after_last + TTL)
    );
    let ttl = ctl_ok(&ep, &["lease", "timetolive", &id]);
    assert_eq!(ttl, format!("lease {id} already expired\n"));
    let list = ctl_ok(&ep, &["lease", "list"]);
    assert_eq!(list, "found 0 leases\n");
    // The consumer saw the instance go away, and nothing else.
    let (seen, _, _) = wait_output(watcher, Duration::from_secs(1));
    let lines: Vec<&str> = seen.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines, ["DELETE", key], "the watcher's output: {seen:?}");
}

#[test]
fn leases_and_their_keys_survive_a_restart_of_cairn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cp, pp) = (free_port(), free_port());
    let mut cairn = spawn_cairn("c1", dir.path(), cp, pp, &[]);
    wait_healthy(&cairn);
    let ep = cairn.endpoint();
    let id = lease_id(&ctl_ok(&ep, &["lease", "grant", "600"]));
    ctl_ok(&ep, &["put", "a", "1", &format!("--lease={id}")]);
    ctl_ok(&ep, &["put", "b", "2", &format!("--lease={id}")]);
    let short = lease_id(&ctl_ok(&ep, &["lease", "grant", "100"]));
    ctl_ok(&ep, &["lease", "revoke", &short]);
    cairn.kill9();

    let cairn = spawn_cairn("c1", dir.path(), cp, pp, &[]);
    wait_healthy(&cairn);
    let ttl = ctl_ok(&ep, &["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(600s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.ends_with("attached keys([a b])\n"), "{ttl}");
    let mut listed: BTreeMap<String, ()> = BTreeMap::new();
    for l in ctl_ok(&ep, &["lease", "list"]).lines().skip(1) {
        listed.insert(l.to_owned(), ());
    }
    assert_eq!(listed.keys().collect::<Vec<_>>(), vec![&id]);
    // The revoked lease stays revoked.
    assert_eq!(
        ctl_ok(&ep, &["lease", "timetolive", &short]),
        format!("lease {short} already expired\n")
    );
    ctl_ok(&ep, &["lease", "revoke", &id]);
    assert_eq!(ctl_ok(&ep, &["get", "", "--from-key", "--keys-only"]), "");
}
