//! cairnctl against etcdctl 3.4 (the oracle), on etcd 3.4 and on cairn:
//! the KV sessions of `tests/etcdctl_interop.rs` (shared through
//! `tests/common/sessions.rs`) and a session of output formats, flags and
//! errors of our own run once with each CLI against a fresh server of each
//! kind, and every step's exit status, stdout and stderr must be byte for
//! byte etcdctl's, once ids and terms are masked (cluster and member ids
//! differ between two servers; revisions are compared as they are) and the
//! program's name is read as `etcdctl`.
#![cfg(not(madsim))]

mod common;

use common::sessions::*;
use common::*;

/// Masks the values that legitimately differ between two fresh servers
/// and drops etcdctl's own retry log lines (times and client ids).
fn mask(text: &str) -> String {
    let out: String = text
        .lines()
        .filter(|l| !l.starts_with("{\"level\":"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut out = mask_json_ids(&out);
    for pat in [
        "\"ClusterID\" : ",
        "\"MemberID\" : ",
        "\"RaftTerm\" : ",
        "\"ID\":",
        "\"ID\" : ",
        "\"leader\":",
        "\"Leader\" : ",
        // Each server listens on ports of its own.
        "127.0.0.1:",
    ] {
        out = mask_digits_after(&out, pat);
    }
    out
}

/// Runs the session with the CLI of this thread; one transcript entry per
/// step (exit status, stdout, stderr).
fn run_session(endpoint: &str, steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| {
            let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
            let out = etcdctl(endpoint, &args, s.stdin.as_deref());
            format!(
                "$ etcdctl {}\n[exit {}]\n{}--- stderr\n{}",
                s.args.join(" "),
                out.status.code().unwrap_or(-1),
                mask(&String::from_utf8_lossy(&out.stdout)),
                mask(&String::from_utf8_lossy(&out.stderr))
            )
        })
        .collect()
}

fn start(server: Server, dir: &std::path::Path) -> Proc {
    match server {
        Server::Etcd => start_etcd(dir),
        Server::Cairn => start_cairn(dir),
    }
}

/// The session with etcdctl against one fresh `server` and with cairnctl
/// against another; the steps that differ.
fn differences(server: Server, steps: &[Step]) -> Vec<String> {
    let (d1, d2) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let (a, b) = (start(server, d1.path()), start(server, d2.path()));
    let want = run_session(&a.endpoint(), steps);
    let got = with_ctl(cairnctl_bin(), || run_session(&b.endpoint(), steps));
    want.iter()
        .zip(&got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| {
            format!(
                "--- etcdctl on {}\n{w}\n+++ cairnctl on {}\n{g}",
                server.label(),
                server.label()
            )
        })
        .collect()
}

fn assert_cairnctl_prints_what_etcdctl_prints(steps: Vec<Step>) {
    let mut diffs = Vec::new();
    for server in [Server::Etcd, Server::Cairn] {
        diffs.extend(differences(server, &steps));
    }
    assert!(
        diffs.is_empty(),
        "{} step runs differ from etcdctl's:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

#[test]
fn cairnctl_kv_session_prints_what_etcdctl_prints() {
    assert_cairnctl_prints_what_etcdctl_prints(kv_session());
}

#[test]
fn cairnctl_bad_input_session_prints_what_etcdctl_prints() {
    assert_cairnctl_prints_what_etcdctl_prints(bad_input_session());
}

fn txn_step(flags: &str, script: &str) -> Step {
    let mut s = step(&format!("txn {flags}"));
    s.stdin = Some(script.to_owned());
    s
}

/// Every output format of the KV commands, the flags' checks and errors,
/// global flags, txn's parse errors and prompts, and the cluster views
/// whose values do not depend on timing.
fn formats_session() -> Vec<Step> {
    let mut s: Vec<Step> = [
        "put foo bar",
        "put foo baz --prev-kv -w json",
        "put foo qux --prev-kv -w fields",
        "put foo1 bar1 -w table",
        "put foo2 bar2",
        "put ünï \"quoted\"<&>",
        "get foo -w fields",
        "get foo --prefix -w json",
        "get foo --prefix -w fields --limit=1",
        "get foo -w table",
        "get foo --prefix --hex",
        "get ünï -w json",
        "get ünï -w fields",
        "get foo --prefix --sort-by=CREATE --order=descend",
        "get foo --prefix --sort-by=version",
        "get foo --prefix --sort-by=nope",
        "get foo --order=sideways",
        "get foo --consistency=s",
        "get foo --consistency=x",
        "get foo --print-value-only -w json",
        "get foo --prefix --from-key",
        "get foo --keys-only --count-only",
        "get foo z --prefix",
        "get foo --rev=x",
        "get foo --limit",
        "get foo --nope",
        "get foo -x",
        "get -- foo",
        "get --help",
        "get foo -w yaml",
        "get foo --write-out=json --hex",
        "--dial-timeout=x get foo",
        "--command-timeout=3s get foo",
        "put",
        "put a b c --ignore-value",
        "put a b --lease=zz",
        "put a b --lease=ffffffffffffffffff",
        "put a b --lease=1234",
        "put foo --ignore-value -w json",
        "put nokey --ignore-value",
        "put foo x --ignore-lease",
        "del",
        "del a b c",
        "del foo1 --prev-kv -w json",
        "del foo2 --prev-kv -w fields",
        "del foo --prefix --from-key",
        "del foo z --prefix",
        "del zzz -w table",
        "compaction",
        "compaction x",
        "compaction 2 --physical",
        "compaction 2",
        "compaction 99",
        "txn extra",
        "alarm list",
        "alarm list -w json",
        "alarm disarm",
        "lease list -w table",
        "lease grant",
        "lease grant x",
        "lease revoke zz",
        "lease revoke 1234",
        "lease timetolive 1234",
        "lease timetolive 1234 -w json",
        "lease keep-alive --once 1234",
        "lease keep-alive",
        "member list -w json",
        "member list -w fields",
        "member remove",
        "member remove zz",
        "member add",
        "member add a b http://x",
        "member add a",
        "member update 1",
        "move-leader",
        "move-leader zz",
        "snapshot save",
        "defrag extra",
    ]
    .into_iter()
    .map(step)
    .collect();
    s.push(txn_step(
        "-w json",
        "value(\"foo\") = \"x\"\n\nput a 1\n\nget foo\nput b 2 --prev-kv\ndel nothing\n\n",
    ));
    s.push(txn_step(
        "-w fields",
        "mod(\"foo\") > \"1\"\n\nput a 2 --prev-kv\nget a\ndel a --prev-kv\n\n\n",
    ));
    s.push(txn_step("-w table", "\n\n\n"));
    s.push(txn_step(
        "-i",
        "ver(\"foo\") > \"0\"\nc(\"foo\") != \"0\"\n\nget 'abc'\n\nget \"a\\x62\"\n\n",
    ));
    s.push(txn_step("", "value(\"foo\") = \"bar\""));
    s.push(txn_step("", "xx(\"foo\") = \"bar\"\n\n\n\n"));
    s.push(txn_step("", "value(\"foo\" = \"bar\"\n\n\n\n"));
    s.push(txn_step("", "value(foo) = \"bar\"\n\n\n\n"));
    s.push(txn_step("", "version(\"foo\") = \"x\"\n\n\n\n"));
    s.push(txn_step("", "\nput a\n\n\n"));
    s.push(txn_step("", "\nfoo a\n\n\n"));
    s.push(txn_step("", "\nget\n\n\n"));
    s.push(txn_step("", "\nd a --prefix\ng a\np a 5\n\n\n"));
    s.push(Step {
        args: vec!["put".into(), "fromstdin".into()],
        stdin: Some("line one\nline two\n".into()),
    });
    s.push(step("get fromstdin -w json"));
    s.push(step("get foo --prefix -w protobuf --rev=1"));
    s
}

#[test]
fn cairnctl_formats_flags_and_errors_are_etcdctls() {
    assert_cairnctl_prints_what_etcdctl_prints(formats_session());
}

/// Failover as etcdctl does it: an endpoint that refuses connections is
/// passed over for the next; none answering is `context deadline exceeded`
/// once the command timeout passes (exit 1).
#[test]
fn cairnctl_fails_over_across_endpoints_as_etcdctl_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let dead = format!("127.0.0.1:{}", free_port());
    let both = format!("{dead},{}", cairn.endpoint());
    for (eps, args) in [
        (both.as_str(), vec!["put", "k", "v"]),
        (both.as_str(), vec!["get", "k"]),
        (dead.as_str(), vec!["--command-timeout=1s", "get", "k"]),
    ] {
        let run = |program: &str| {
            let mut cmd = std::process::Command::new(program);
            cmd.env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={eps}"))
                .args(&args);
            let out = cmd.output().expect("run the CLI");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .filter(|l| !l.starts_with("{\"level\":"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        };
        assert_eq!(run(cairnctl_bin()), run("etcdctl"), "{eps} {args:?}");
    }
}

/// The `ETCDCTL_*` variables stand in for the global flags not given.
#[test]
fn cairnctl_reads_etcdctl_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    ctl_ok(&cairn.endpoint(), &["put", "k", "v"]);
    let run = |program: &str| {
        let out = std::process::Command::new(program)
            .env("ETCDCTL_API", "3")
            .env("ETCDCTL_ENDPOINTS", cairn.endpoint())
            .env("ETCDCTL_WRITE_OUT", "fields")
            .env("ETCDCTL_HEX", "false")
            .args(["get", "k"])
            .output()
            .expect("run the CLI");
        (
            out.status.code(),
            mask(&String::from_utf8_lossy(&out.stdout)),
        )
    };
    let want = run("etcdctl");
    assert_eq!(want.0, Some(0), "{want:?}");
    assert_eq!(run(cairnctl_bin()), want);
}

/// Help: a group without (or with an unknown) subcommand, `--help`,
/// `help <command>` and a bad flag on a group print what etcdctl prints,
/// byte for byte; the top-level help lists the same commands, less the ones
/// cairnctl does not have (shell completion, the v2 migration) and with its
/// own version.
#[test]
fn cairnctl_help_prints_what_etcdctl_prints() {
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program)
            .env("ETCDCTL_API", "3")
            .args(args)
            .output()
            .expect("run the CLI");
        let name = std::path::Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = |b: &[u8]| String::from_utf8_lossy(b).replace(&name, "etcdctl");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let groups = [
        "alarm", "auth", "check", "endpoint", "lease", "member", "role", "snapshot", "user",
    ];
    let mut cases: Vec<Vec<&str>> = Vec::new();
    for g in groups {
        cases.push(vec![g]);
        cases.push(vec![g, "--help"]);
        cases.push(vec!["help", g]);
    }
    cases.push(vec!["member", "bogus"]);
    cases.push(vec!["mem", "-h"]);
    cases.push(vec!["member", "--bogusflag"]);
    cases.push(vec!["help", "member", "add"]);
    cases.push(vec!["help", "member", "bogus"]);
    cases.push(vec!["help", "get"]);
    for args in &cases {
        let want = run("etcdctl", args);
        assert_eq!(run(cairnctl_bin(), args), want, "{args:?}");
    }
    let top_cases: [&[&str]; 4] = [&[], &["--help"], &["help"], &["help", "bogus"]];
    for args in top_cases {
        let (code, stdout, stderr) = run("etcdctl", args);
        let mut lines: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.starts_with("\tcompletion ") && !l.starts_with("\tmigrate\t"))
            .collect();
        let version = lines
            .iter()
            .position(|l| *l == "VERSION:")
            .expect("VERSION")
            + 1;
        let ours = format!("\t{}", env!("CARGO_PKG_VERSION"));
        lines[version] = &ours;
        let want = (code, lines.join("\n") + "\n", stderr);
        let got = run(cairnctl_bin(), args);
        assert_eq!(got, want, "{args:?}");
        assert!(got.1.contains("\tmember add\t"), "{}", got.1);
    }
}
