//! cairnctl's progress line and `cairnctl defrag`, with the real binaries:
//!
//! - under a pseudo-terminal (util-linux `script`), `snapshot save`,
//!   `snapshot restore` and `defrag` against a real cairn member holding a
//!   few MB draw a self-overwriting line on stderr (bytes and rate; keys,
//!   bytes and rate; elapsed time) that ends with a newline before the
//!   command's own output, and the result is right (the saved snapshot is
//!   whole, the restored member serves the data);
//! - without a terminal (pipes, or stderr alone redirected to a file) they
//!   print nothing more than before: exactly the lines the tests check;
//! - `cairnctl defrag` prints byte for byte what etcdctl 3.4 prints, with
//!   the same exit code, against cairn and against etcd 3.4: one or several
//!   endpoints, an unreachable one, `--cluster`, and with auth on: no user,
//!   a user without root, a wrong password, root. (etcdctl's own log lines,
//!   JSON with a timestamp, are not compared.)
#![cfg(not(madsim))]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn cairnctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairnctl")
}

fn cairnctl(args: &[&str]) -> Output {
    Command::new(cairnctl_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cairnctl")
}

/// etcdctl 3.4 (API v3) with exactly `args`.
fn etcdctl_raw(args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl (Debian's etcd-client)")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `cmd` (a shell command line) with stdin, stdout and stderr on a
/// pseudo-terminal; everything the terminal got, with the terminal's
/// `\r\n` line ends back to `\n`, the exit code and how long it took.
fn on_terminal(cmd: &str) -> (String, Option<i32>, Duration) {
    let started = Instant::now();
    let out = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run util-linux script");
    let took = started.elapsed();
    let screen = text(&out.stdout).replace("\r\n", "\n");
    (screen, out.status.code(), took)
}

fn cairnctl_line(args: &[&str]) -> String {
    std::iter::once(cairnctl_bin())
        .chain(args.iter().copied())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The redraws of the progress line in `screen` that start with `prefix`:
/// each begins with `\r` and runs to the next `\r` or newline.
fn redraws<'a>(screen: &'a str, prefix: &str) -> Vec<&'a str> {
    screen
        .split('\r')
        .skip(1)
        .map(|piece| piece.split('\n').next().unwrap_or("").trim_end())
        .filter(|line| line.starts_with(prefix))
        .collect()
}

/// The line of `screen` that the progress line ended with: the text after
/// the last `\r` before the newline that follows `prefix`'s last redraw.
fn final_line<'a>(screen: &'a str, prefix: &str) -> &'a str {
    let line = screen
        .lines()
        .find(|l| l.contains(&format!("\r{prefix}")))
        .unwrap_or_else(|| panic!("no progress line {prefix:?} on the terminal:\n{screen:?}"));
    line.rsplit('\r').next().unwrap_or("").trim_end()
}

/// What `screen` shows after the line that ends with `last` (the final
/// state of a progress line, blanks after it aside) and its newline.
fn after_line<'a>(screen: &'a str, last: &str) -> &'a str {
    let at = screen
        .find(last)
        .unwrap_or_else(|| panic!("{last:?} is not on the terminal:\n{screen:?}"));
    let (blanks, rest) = screen[at + last.len()..]
        .split_once('\n')
        .unwrap_or_else(|| panic!("the progress line does not end with a newline:\n{screen:?}"));
    assert!(
        blanks.chars().all(|c| c == ' '),
        "the progress line ends with {blanks:?}"
    );
    rest
}

/// go-humanize's `Bytes`, as cairnctl prints sizes.
fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut e = 0;
    let mut v = n as f64;
    while v >= 1000.0 && e < UNITS.len() - 1 {
        v /= 1000.0;
        e += 1;
    }
    if e == 0 {
        return format!("{n} B");
    }
    let v = (v * 10.0 + 0.5).floor() / 10.0;
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[e])
    } else {
        format!("{v:.0} {}", UNITS[e])
    }
}

/// Puts `keys` keys of `value_len` bytes each (a few MB in all).
fn fill(endpoint: &str, keys: usize, value_len: usize) {
    use etcd_client::{Client, Txn, TxnOp};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut c = Client::connect([format!("http://{endpoint}")], None)
            .await
            .expect("connect");
        for batch in (0..keys).collect::<Vec<_>>().chunks(100) {
            let ops = batch
                .iter()
                .map(|n| {
                    let value = format!("{n:08}").repeat(value_len / 8);
                    TxnOp::put(format!("data/{n:06}"), value, None)
                })
                .collect::<Vec<_>>();
            c.txn(Txn::new().and_then(ops)).await.expect("txn of puts");
        }
    });
}

/// 3000 keys of 1.5 kB: about 4.5 MB of values.
const KEYS: usize = 3000;
const VALUE_LEN: usize = 1536;

#[test]
fn snapshot_save_and_restore_show_their_progress_on_a_terminal_and_nothing_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let ep = cairn.endpoint();
    fill(&ep, KEYS, VALUE_LEN);

    // ---- save, on a terminal ----
    let on_tty = dir.path().join("tty.db");
    let tty_file = on_tty.to_str().expect("path");
    let (screen, code, took) = on_terminal(&cairnctl_line(&[
        "--endpoints",
        &ep,
        "snapshot",
        "save",
        tty_file,
    ]));
    assert_eq!(code, Some(0), "save on a terminal:\n{screen}");
    let size = std::fs::metadata(&on_tty).expect("saved file").len();
    assert!(size > 4_000_000, "a few MB were saved: {size} bytes");
    // Redraws while receiving: bytes so far of the whole, and the rate.
    let receiving = redraws(&screen, "receiving snapshot: ");
    assert!(
        !receiving.is_empty(),
        "no progress while receiving:\n{screen:?}"
    );
    for line in &receiving {
        assert!(
            line.contains(&format!(" of {} (", human(size))) && line.contains("B/s"),
            "a redraw without the bytes, the whole or the rate: {line:?}"
        );
    }
    // At most a few redraws a second.
    let allowed = 2 + (took.as_millis() / 200) as usize;
    assert!(
        receiving.len() <= allowed,
        "{} redraws in {took:?}:\n{screen:?}",
        receiving.len()
    );
    // The line ends with the total and the rate, then the command's output.
    let last = final_line(&screen, "received snapshot: ");
    assert!(
        last.starts_with(&format!("received snapshot: {} in ", human(size)))
            && last.ends_with("B/s"),
        "final progress line: {last:?}"
    );
    let after = after_line(&screen, last);
    assert_eq!(
        after,
        format!("fetched snapshot from http://{ep}: {size} bytes\nSnapshot saved at {tty_file}\n"),
        "what follows the progress line"
    );

    // ---- save, no terminal: exactly the lines of before ----
    let piped = dir.path().join("piped.db");
    let piped_file = piped.to_str().expect("path");
    let out = cairnctl(&["--endpoints", &ep, "snapshot", "save", piped_file]);
    assert!(out.status.success(), "save: {out:?}");
    assert_eq!(
        text(&out.stdout),
        format!("Snapshot saved at {piped_file}\n")
    );
    let size2 = std::fs::metadata(&piped).expect("saved").len();
    assert_eq!(
        text(&out.stderr),
        format!("fetched snapshot from http://{ep}: {size2} bytes\n")
    );

    // ---- save with stdout on a terminal but stderr in a file: no progress ----
    let half = dir.path().join("half.db");
    let half_file = half.to_str().expect("path");
    let err_file = dir.path().join("half.err");
    let (screen, code, _) = on_terminal(&format!(
        "{} 2>{}",
        cairnctl_line(&["--endpoints", &ep, "snapshot", "save", half_file]),
        quote(err_file.to_str().expect("path"))
    ));
    assert_eq!(code, Some(0), "{screen}");
    assert_eq!(screen, format!("Snapshot saved at {half_file}\n"));
    let size3 = std::fs::metadata(&half).expect("saved").len();
    assert_eq!(
        std::fs::read_to_string(&err_file).expect("stderr file"),
        format!("fetched snapshot from http://{ep}: {size3} bytes\n")
    );

    // The snapshot saved on the terminal is whole.
    let status = cairnctl(&["snapshot", "status", tty_file, "-w", "json"]);
    assert!(
        status.status.success(),
        "status of the saved file: {status:?}"
    );

    // ---- restore, on a terminal ----
    let (pp, cp) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{pp}");
    let data_dir = dir.path().join("r1.cairn");
    let restore_args = |file: &str, data: &Path| {
        vec![
            "snapshot".to_owned(),
            "restore".to_owned(),
            file.to_owned(),
            "--name=r1".to_owned(),
            format!("--data-dir={}", data.display()),
            format!("--initial-cluster=r1={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
        ]
    };
    let args = restore_args(tty_file, &data_dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (screen, code, took) = on_terminal(&cairnctl_line(&args));
    assert_eq!(code, Some(0), "restore on a terminal:\n{screen}");
    assert!(
        screen.starts_with("\rrestoring: "),
        "the line is drawn from the start:\n{screen:?}"
    );
    let restoring = redraws(&screen, "restoring: ");
    let allowed = 2 + (took.as_millis() / 200) as usize;
    assert!(
        restoring.len() <= allowed,
        "{} redraws in {took:?}",
        restoring.len()
    );
    for line in restoring.iter().filter(|l| l.contains(" keys, ")) {
        let fields: Vec<&str> = line.split(", ").collect();
        assert!(
            fields.len() == 4 && fields[1].ends_with('B') && fields[2].ends_with("B/s"),
            "a redraw without keys, bytes and rate: {line:?}"
        );
    }
    let last = final_line(&screen, "restored ");
    // "restored N keys, X MB in T, R/s", N being the revision records the
    // summary line after it counts.
    let keys: u64 = last
        .strip_prefix("restored ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no key count in {last:?}"));
    assert!(keys >= KEYS as u64, "{keys} keys restored: {last:?}");
    assert!(
        last.contains(" MB in ") && last.ends_with("B/s"),
        "{last:?}"
    );
    let after = after_line(&screen, last);
    assert!(
        after.starts_with("restored snapshot ")
            && after.contains(&format!(", {keys} revision records, "))
            && after.ends_with('\n')
            && after.lines().count() == 1,
        "what follows the progress line: {after:?}"
    );

    // ---- restore, no terminal: only the summary line ----
    let data_dir2 = dir.path().join("r2.cairn");
    let args = restore_args(piped_file, &data_dir2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cairnctl(&args);
    assert!(out.status.success(), "restore: {out:?}");
    assert_eq!(text(&out.stdout), "");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("restored snapshot ") && err.lines().count() == 1 && !err.contains('\r'),
        "stderr of a restore without a terminal: {err:?}"
    );

    // The member restored on the terminal serves the data.
    drop(cairn);
    let flags = founding_flags("r1", &peer, &format!("r1={peer}"));
    let restored = spawn_member(Server::Cairn, "r1", dir.path(), cp, pp, &flags, &[]);
    wait_healthy(&restored);
    let count = ctl_ok(
        &restored.endpoint(),
        &["get", "data/", "--prefix", "--keys-only", "-w", "json"],
    );
    assert!(count.contains(&format!("\"count\":{KEYS}")), "{count}");
}

/// Runs `defrag` with `args` through etcdctl and cairnctl and asserts the
/// same stdout, the same stderr (etcdctl's JSON log lines aside) and the
/// same exit code; returns cairnctl's output.
fn defrag_like_etcdctl(what: &str, args: &[&str]) -> Output {
    let etcd = etcdctl_raw(args);
    let ours = cairnctl(args);
    let errors = |o: &Output| {
        text(&o.stderr)
            .lines()
            .filter(|l| !l.starts_with("{\"level\":"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    assert_eq!(text(&ours.stdout), text(&etcd.stdout), "{what}: stdout");
    assert_eq!(errors(&ours), errors(&etcd), "{what}: stderr");
    assert_eq!(ours.status.code(), etcd.status.code(), "{what}: exit code");
    assert!(
        !text(&ours.stderr).contains('\r'),
        "{what}: no progress without a terminal"
    );
    ours
}

fn set_up_auth(endpoint: &str) {
    for cmd in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["auth", "enable"],
    ] {
        ctl_ok(endpoint, cmd);
    }
}

#[test]
fn defrag_prints_what_etcdctl_3_4_prints_on_cairn_and_on_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let etcd = start_etcd(dir.path());
    let dead = format!("127.0.0.1:{}", free_port());
    for (server, p) in [("cairn", &cairn), ("etcd", &etcd)] {
        let ep = p.endpoint();
        let url = p.client_url.clone();
        let eps = format!("--endpoints={ep}");
        let out = defrag_like_etcdctl(&format!("{server}: one endpoint"), &[&eps, "defrag"]);
        assert_eq!(
            text(&out.stdout),
            format!("Finished defragmenting etcd member[{ep}]\n")
        );
        assert_eq!(out.status.code(), Some(0));
        // etcdctl 3.4 sends an endpoint given as a URL, scheme and all, as
        // the HTTP/2 authority when it defragments, and cairn's HTTP/2
        // stack refuses that (PROTOCOL_ERROR): on cairn, cairnctl's answer
        // is checked against what etcdctl prints on etcd.
        let by_url = [format!("--endpoints={url}"), "defrag".to_owned()];
        let by_url: Vec<&str> = by_url.iter().map(String::as_str).collect();
        let out = if server == "etcd" {
            defrag_like_etcdctl("etcd: an endpoint given as a URL", &by_url)
        } else {
            cairnctl(&by_url)
        };
        assert_eq!(
            (text(&out.stdout), text(&out.stderr), out.status.code()),
            (
                format!("Finished defragmenting etcd member[{url}]\n"),
                String::new(),
                Some(0)
            ),
            "{server}: an endpoint given as a URL"
        );
        let out = defrag_like_etcdctl(
            &format!("{server}: a member that is down, then one that is up"),
            &[
                &format!("--endpoints={dead},{ep}"),
                "--command-timeout=1s",
                "defrag",
            ],
        );
        assert_eq!(
            text(&out.stderr),
            format!("Failed to defragment etcd member[{dead}] (context deadline exceeded)\n")
        );
        assert_eq!(out.status.code(), Some(1));
        defrag_like_etcdctl(
            &format!("{server}: no member reachable for --cluster"),
            &[
                &format!("--endpoints={dead}"),
                "--command-timeout=1s",
                "defrag",
                "--cluster",
            ],
        );
    }

    // --cluster: every member at its client URL (so, on cairn, checked
    // against what etcdctl prints on etcd: see above).
    let out = defrag_like_etcdctl(
        "etcd: --cluster",
        &[
            &format!("--endpoints={}", etcd.endpoint()),
            "defrag",
            "--cluster",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        format!("Finished defragmenting etcd member[{}]\n", etcd.client_url)
    );
    let out = cairnctl(&[
        &format!("--endpoints={dead},{}", cairn.endpoint()),
        "defrag",
        "--cluster",
    ]);
    assert_eq!(
        (text(&out.stdout), text(&out.stderr), out.status.code()),
        (
            format!("Finished defragmenting etcd member[{}]\n", cairn.client_url),
            String::new(),
            Some(0)
        ),
        "cairn: --cluster"
    );

    // With auth on, on both servers.
    for (server, p) in [("cairn", &cairn), ("etcd", &etcd)] {
        let ep = p.endpoint();
        set_up_auth(&ep);
        let eps = format!("--endpoints={ep}");
        for (case, user, code) in [
            ("no user", None, 1),
            ("a user without root", Some("--user=alice:alicepw"), 1),
            ("a wrong password", Some("--user=alice:wrong"), 2),
            ("root", Some("--user=root:rootpw"), 0),
        ] {
            let mut args = vec![eps.as_str()];
            args.extend(user);
            args.push("defrag");
            let out = defrag_like_etcdctl(&format!("{server} with auth: {case}"), &args);
            assert_eq!(out.status.code(), Some(code), "{server}: {case}");
        }
        defrag_like_etcdctl(
            &format!("{server} with auth: --cluster with a wrong password"),
            &[&eps, "--user=root:nope", "defrag", "--cluster"],
        );
    }
}

#[test]
fn defrag_shows_the_time_it_takes_on_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let ep = cairn.endpoint();
    fill(&ep, KEYS, VALUE_LEN);
    ctl_ok(&ep, &["del", "data/", "--prefix"]);
    let dead = format!("127.0.0.1:{}", free_port());

    let (screen, code, took) = on_terminal(&cairnctl_line(&[
        &format!("--endpoints={ep},{dead}"),
        "--command-timeout=1s",
        "defrag",
    ]));
    assert_eq!(code, Some(1), "one member of two failed:\n{screen}");
    // Per member, a line that counts the seconds and ends with the outcome,
    // then etcdctl's line.
    let done = final_line(&screen, "defragment");
    assert!(
        done.starts_with(&format!("defragmented etcd member[{ep}] in ")) && done.ends_with('s'),
        "{done:?}"
    );
    let ok = format!("{done}\nFinished defragmenting etcd member[{ep}]\n");
    assert!(screen.contains(&ok), "{screen:?}");
    let failed = format!("defragmenting etcd member[{dead}] failed after ");
    let failed_at = screen
        .find(&failed)
        .unwrap_or_else(|| panic!("no failure progress line:\n{screen:?}"));
    let rest = &screen[failed_at..];
    let (line, after) = rest.split_once('\n').expect("a newline ends the line");
    assert!(line.ends_with('s'), "{line:?}");
    assert_eq!(
        after,
        format!("Failed to defragment etcd member[{dead}] (context deadline exceeded)\n")
    );
    // The unreachable member took a second: the elapsed time was redrawn
    // a few times, at most five a second.
    let ticks = redraws(&screen, &format!("defragmenting etcd member[{dead}]: "));
    assert!(ticks.len() >= 2, "the seconds are counted:\n{screen:?}");
    assert!(
        ticks.len() <= 2 + (took.as_millis() / 200) as usize,
        "{} redraws in {took:?}",
        ticks.len()
    );
}
