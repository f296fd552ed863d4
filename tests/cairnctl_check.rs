//! `cairnctl check perf` and `check datascale` against cairn and etcd 3.4,
//! beside etcdctl 3.4's.
//!
//! `check perf --load s` runs for 5 seconds here (etcdctl has no shorter
//! run than 60 s: cairnctl reads `CAIRNCTL_CHECK_PERF_DURATION`, a hidden
//! test setting) against cairn and must PASS with etcdctl's lines, a
//! throughput near the load's 150 writes/s, the compaction lines of
//! `--auto-compact`, and no key left behind. Its refusals (an unknown
//! load, a prefix with keys) are etcdctl's. `check datascale --load s`
//! prints what etcdctl prints, numbers aside, with either CLI against
//! either server.
#![cfg(not(madsim))]

mod common;

use std::process::{Command, Output};

use common::*;

fn run(program: &str, endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(program);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the CLI")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The progress line as last drawn (the text after its last `\r`).
fn last_frame(line: &str) -> &str {
    line.rsplit('\r').next().unwrap_or(line)
}

/// `s` with each run of digits replaced by `N`.
fn digits_masked(s: &str) -> String {
    let mut out = String::new();
    let mut in_num = false;
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            if !in_num {
                out.push('N');
            }
            in_num = true;
        } else {
            in_num = false;
            out.push(ch);
        }
    }
    out
}

fn number_after<'a>(line: &'a str, pat: &str, end: &str) -> &'a str {
    line.strip_prefix(pat)
        .and_then(|r| r.strip_suffix(end))
        .unwrap_or_else(|| panic!("{line:?} is not {pat}...{end}"))
}

#[test]
fn check_perf_small_passes_on_cairn() {
    let d = tempfile::tempdir().expect("tmp");
    let c = start_cairn(d.path());
    let out = run(
        cairnctl_bin(),
        &c.endpoint(),
        &["check", "perf", "--load=s", "--auto-compact"],
        &[("CAIRNCTL_CHECK_PERF_DURATION", "5")],
    );
    let stdout = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    // The bar: one tick a second, drawn from 0 up to 5 of 5.
    assert!(lines[0].starts_with("\r 0 / 5    0.00%"), "{stdout:?}");
    assert_eq!(last_frame(lines[0]), " 5 / 5  100.00% 5s");
    let rev: i64 = number_after(lines[1], "Compacting with revision ", "")
        .parse()
        .expect("revision");
    assert!(rev > 750, "{stdout}");
    assert_eq!(lines[2], format!("Compacted with revision {rev}"));
    let rate: u32 = number_after(lines[3], "PASS: Throughput is ", " writes/s")
        .parse()
        .expect("throughput");
    assert!((140..=151).contains(&rate), "{stdout}");
    for (line, pat) in [
        (lines[4], "PASS: Slowest request took "),
        (lines[5], "PASS: Stddev is "),
    ] {
        let secs: f64 = number_after(line, pat, "s").parse().expect("seconds");
        assert_eq!(
            number_after(line, pat, "s").split('.').nth(1).map(str::len),
            Some(6)
        );
        assert!(secs < 0.5, "{stdout}");
    }
    assert_eq!(lines[6], "PASS");
    // Every key written is gone again.
    let left = ctl_ok(
        &c.endpoint(),
        &["get", "--prefix", "/etcdctl-check-perf/", "--keys-only"],
    );
    assert_eq!(left, "", "keys left behind");
}

/// An unknown load and a prefix that holds keys end cairnctl as they end
/// etcdctl (against etcd 3.4 and cairn respectively).
#[test]
fn check_refusals_as_etcdctl() {
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (e, c) = (start_etcd(d1.path()), start_cairn(d2.path()));
    for ep in [e.endpoint(), c.endpoint()] {
        ctl_ok(&ep, &["put", "/taken/k", "v"]);
    }
    let cases: Vec<Vec<&str>> = vec![
        vec!["check", "perf", "--load=z"],
        vec!["check", "datascale", "--load", "huge"],
        vec!["check", "perf", "--load=small", "--prefix=/taken/"],
        vec!["check", "datascale", "--prefix=/taken/"],
    ];
    for args in cases {
        let want = run("etcdctl", &e.endpoint(), &args, &[]);
        let got = run(cairnctl_bin(), &c.endpoint(), &args, &[]);
        let show = |o: &Output| {
            format!(
                "[exit {:?}]\n{}--- stderr\n{}",
                o.status.code(),
                text(o),
                String::from_utf8_lossy(&o.stderr).replace("cairnctl", "etcdctl")
            )
        };
        assert_eq!(show(&got), show(&want), "{args:?}");
    }
}

/// `check datascale --load s`'s output with its numbers masked.
fn datascale_shape(program: &str, endpoint: &str) -> String {
    let out = run(program, endpoint, &["check", "datascale", "--load=s"], &[]);
    assert!(
        out.status.success(),
        "{program} on {endpoint}: {}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = text(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[1].starts_with("\r 0 / 10000    0.00%"), "{stdout:?}");
    format!(
        "{}\n{}\n{}\n",
        lines[0],
        digits_masked(last_frame(lines[1])),
        // Memory can also shrink.
        digits_masked(lines[2]).replace("-N", "N")
    )
}

#[test]
fn check_datascale_small_like_etcdctl() {
    let (d1, d2) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let (e, c) = (start_etcd(d1.path()), start_cairn(d2.path()));
    let (ee, ce) = (e.endpoint(), c.endpoint());
    let on_etcd = std::thread::spawn(move || {
        (
            datascale_shape("etcdctl", &ee),
            datascale_shape(cairnctl_bin(), &ee),
        )
    });
    let on_cairn = (
        datascale_shape(cairnctl_bin(), &ce),
        datascale_shape("etcdctl", &ce),
    );
    let on_etcd = on_etcd.join().expect("etcd runs");
    let want = "Start data scale check for work load [10000 key-value pairs, 1024 bytes per key-value, 50 concurrent clients].\n N / N  N.N% Ns\nPASS: Approximate system memory used : N.N MB.\n";
    for (who, got) in [
        ("etcdctl on etcd", on_etcd.0),
        ("cairnctl on etcd", on_etcd.1),
        ("cairnctl on cairn", on_cairn.0),
        ("etcdctl on cairn", on_cairn.1),
    ] {
        assert_eq!(got, want, "{who}");
    }
}
