//! The real etcdctl (Debian `etcd-client`, v3.4) against the real `cairn`
//! binary, with etcd 3.4 itself as the oracle: the same session runs against
//! both, and every output must be byte for byte etcd's once ids and terms
//! are masked (revisions are compared as they are: both start fresh).
#![cfg(not(madsim))]

mod common;

use common::sessions::*;
use common::*;

/// Masks the values of JSON fields that legitimately differ between servers,
/// and drops etcdctl's own retry log lines (they carry times and client ids).
fn mask(text: &str) -> String {
    let out: String = text
        .lines()
        .filter(|l| !l.starts_with("{\"level\":"))
        .map(|l| format!("{l}\n"))
        .collect();
    mask_json_ids(&out)
}

/// Runs the session; returns one transcript entry per step (exit status, stdout, stderr).
fn run_session(endpoint: &str, steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| {
            let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
            let out = etcdctl(endpoint, &args, s.stdin.as_deref());
            format!(
                "$ etcdctl {}\n[exit {}]\n{}{}",
                s.args.join(" "),
                out.status.code().unwrap_or(-1),
                mask(&String::from_utf8_lossy(&out.stdout)),
                mask(&String::from_utf8_lossy(&out.stderr))
            )
        })
        .collect()
}

#[test]
fn etcdctl_bad_input_gets_etcds_errors_and_the_server_keeps_serving() {
    assert_sessions_match(bad_input_session());
}

#[test]
fn etcdctl_kv_session_matches_etcd_byte_for_byte() {
    assert_sessions_match(kv_session());
}

fn assert_sessions_match(steps: Vec<Step>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let cairn = start_cairn(dir.path());
    let expected = run_session(&etcd.endpoint(), &steps);
    let got = run_session(&cairn.endpoint(), &steps);
    let mut diffs = Vec::new();
    for (e, g) in expected.iter().zip(&got) {
        if e != g {
            diffs.push(format!("--- etcd\n{e}\n+++ cairn\n{g}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} steps differ from etcd:\n{}",
        diffs.len(),
        steps.len(),
        diffs.join("\n")
    );
}

#[test]
fn etcdctl_reference_examples_print_exactly_etcds_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let ep = cairn.endpoint();
    assert_eq!(ctl_ok(&ep, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(ctl_ok(&ep, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(
        ctl_ok(&ep, &["get", "foo", "--hex"]),
        "\\x66\\x6f\\x6f\n\\x62\\x61\\x72\n"
    );
    assert_eq!(ctl_ok(&ep, &["get", "foo", "--print-value-only"]), "bar\n");
    for (k, v) in [
        ("/", "0"),
        ("/home", "1"),
        ("/home/root", "2"),
        ("/home/mysql", "2"),
        ("/home/etcd", "2"),
        ("/home/etcd/history", "3"),
    ] {
        ctl_ok(&ep, &["put", k, v]);
    }
    assert_eq!(
        ctl_ok(&ep, &["get", "/home/", "--keys-only", "--prefix"]),
        "/home/etcd\n\n/home/etcd/history\n\n/home/mysql\n\n/home/root\n\n"
    );
    assert_eq!(
        ctl_ok(&ep, &["get", "/home", "--keys-only", "--prefix"]),
        "/home\n\n/home/etcd\n\n/home/etcd/history\n\n/home/mysql\n\n/home/root\n\n"
    );
    assert_eq!(ctl_ok(&ep, &["del", "/home", "--prefix"]), "5\n");
    let out = etcdctl(
        &ep,
        &["txn"],
        Some("value(\"foo\") = \"bar\"\n\nput a 1\n\nput b 2\n\n"),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SUCCESS\n\nOK\n");
}

#[test]
fn etcdctl_cluster_views_show_this_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let ep = cairn.endpoint();
    let health = String::from_utf8_lossy(&etcdctl(&ep, &["endpoint", "health"], None).stderr)
        .into_owned()
        + &String::from_utf8_lossy(&etcdctl(&ep, &["endpoint", "health"], None).stdout);
    assert!(
        health.contains(&format!("{ep} is healthy: successfully committed proposal")),
        "{health}"
    );

    let members = ctl_ok(&ep, &["member", "list", "-w", "table"]);
    let lines: Vec<&str> = members.lines().collect();
    assert_eq!(
        lines[1].split('|').map(str::trim).collect::<Vec<_>>(),
        [
            "",
            "ID",
            "STATUS",
            "NAME",
            "PEER ADDRS",
            "CLIENT ADDRS",
            "IS LEARNER",
            ""
        ]
    );
    let row: Vec<&str> = lines[3].split('|').map(str::trim).collect();
    assert_eq!(
        &row[2..7],
        [
            "started",
            "c1",
            cairn.peer_url.as_str(),
            cairn.client_url.as_str(),
            "false"
        ],
        "{members}"
    );

    let status = ctl_ok(&ep, &["endpoint", "status", "-w", "table"]);
    let row: Vec<&str> = status
        .lines()
        .nth(3)
        .expect("status row")
        .split('|')
        .map(str::trim)
        .collect();
    assert_eq!(row[1], ep);
    assert_eq!(row[3], "3.5.0", "reports the etcd API version: {status}");
    assert_eq!(
        (row[5], row[6]),
        ("true", "false"),
        "leader, not learner: {status}"
    );
    let (term, index, applied): (u64, u64, u64) = (
        row[7].parse().expect("term"),
        row[8].parse().expect("index"),
        row[9].parse().expect("applied"),
    );
    assert!(term >= 2 && index >= 2 && applied <= index, "{status}");
}

/// etcdctl 3.4 dials a member by its URL for some calls (`endpoint status`,
/// `endpoint hashkv`, `defrag` with `http://` endpoints or `--cluster`) and
/// sends that URL as the HTTP/2 authority: etcd answers them, and so must
/// cairn (its HTTP/2 library refused such streams until
/// `cairn_runtime::h2_authority`). Each command's exit status and the
/// shape of each output line (the endpoint and what follows it, values
/// masked) must be etcd's.
#[test]
fn etcdctl_calls_that_dial_a_member_by_url_succeed_as_on_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_etcd(dir.path());
    let cairn = start_cairn(dir.path());
    let commands: &[&[&str]] = &[
        &["--url", "endpoint", "status"],
        &["--url", "endpoint", "hashkv"],
        &["--url", "defrag"],
        &["endpoint", "status", "--cluster"],
        &["endpoint", "status", "--cluster", "-w", "table"],
        &["endpoint", "hashkv", "--cluster"],
        &["defrag", "--cluster"],
    ];
    let run = |p: &Proc| -> Vec<String> {
        let ep = p.endpoint();
        commands
            .iter()
            .map(|cmd| {
                let (endpoint, args) = match cmd.first() {
                    Some(&"--url") => (format!("http://{ep}"), &cmd[1..]),
                    _ => (ep.clone(), &cmd[..]),
                };
                let out = etcdctl(&endpoint, args, None);
                let text = String::from_utf8_lossy(&out.stdout).replace(&ep, "<ep>");
                // Keep the endpoint and the punctuation; mask every value.
                let shape: String = text
                    .chars()
                    .map(|c| match c {
                        c if c.is_ascii_alphanumeric() || c == '.' => 'x',
                        c => c,
                    })
                    .collect::<String>()
                    .split('x')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("x")
                    // Table cells and borders pad to the values' widths
                    // (ids are hex without leading zeros): one space, one dash.
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
                    .split('-')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("-");
                format!(
                    "$ {endpoint_kind} {}\n[exit {}]\n{shape}\n{}",
                    args.join(" "),
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .filter(|l| !l.starts_with("{\"level\":"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    endpoint_kind = if endpoint.starts_with("http://") {
                        "url"
                    } else {
                        "host:port"
                    },
                )
            })
            .collect()
    };
    let (want, got) = (run(&etcd), run(&cairn));
    for (w, g) in want.iter().zip(&got) {
        assert!(w.contains("[exit 0]"), "etcd fails it: {w}");
        assert_eq!(g, w, "cairn (left) vs etcd 3.4 (right)");
    }
    // cairnctl's endpoint status and hashkv, defrag, by URL and with
    // --cluster, against both servers: the same as etcdctl's.
    let ctl = cairnctl_bin();
    let (by_ctl_on_etcd, by_ctl_on_cairn) = with_ctl(ctl, || (run(&etcd), run(&cairn)));
    for (w, g) in want.iter().zip(&by_ctl_on_etcd) {
        assert_eq!(
            g, w,
            "cairnctl on etcd 3.4 (left) vs etcdctl on etcd 3.4 (right)"
        );
    }
    for (w, g) in want.iter().zip(&by_ctl_on_cairn) {
        assert_eq!(
            g, w,
            "cairnctl on cairn (left) vs etcdctl on etcd 3.4 (right)"
        );
    }
}
