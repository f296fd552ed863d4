//! etcd's v2 keys API (`--enable-v2`, `src/api/v2.rs`, `src/v2store/`),
//! differentially against etcd 3.4 started with `--enable-v2`: the same raw
//! HTTP/1.1 requests (every curl example of the v2 API: set, get, TTLs,
//! compare-and-swap, compare-and-delete, in-order keys, directories, waits,
//! bad parameters) and an `ETCDCTL_API=2 etcdctl` session go to both, and the
//! answers must be equal: status, `X-Etcd-Index` and body, once store
//! indexes are taken relative to each server's index before the session
//! (etcd 3.4 counts its own membership records in the v2 store), and
//! expiry times, cluster and member ids masked. Then cairn alone: v2 off by
//! default, a three-member cluster replicating v2 writes, expiring TTLs on
//! every member, and keeping the store across restarts.
#![cfg(not(madsim))]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One HTTP answer: status, headers (lower-case names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let len = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if len == 0 || b.len() < i + 2 + len {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + len]);
        b = &b[(i + 4 + len).min(b.len())..];
    }
}

/// Sends one request (`Connection: close`, a form body when `form` is not
/// empty) and reads the answer until the server closes or `within` passes.
fn http(endpoint: &str, method: &str, target: &str, form: &str, within: Duration) -> Answer {
    let addr: SocketAddr = endpoint.parse().expect("endpoint");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut req =
        format!("{method} {target} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n");
    if !form.is_empty() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{form}", form.len()));
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw.get(split + 4..).unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn call(endpoint: &str, method: &str, target: &str, form: &str) -> Answer {
    http(endpoint, method, target, form, Duration::from_secs(10))
}

/// Starts a single member of `server` with `--enable-v2`.
fn start_v2(server: Server, dir: &Path) -> Proc {
    let (cp, pp) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{pp}");
    let mut flags = founding_flags("v1", &peer, &format!("v1={peer}"));
    flags.push("--enable-v2".into());
    let p = spawn_member(server, "v1", dir, cp, pp, &flags, &[]);
    wait_healthy(&p);
    p
}

/// The store index once it stops moving (etcd writes its membership
/// records into the v2 store as it starts).
fn settled_index(endpoint: &str) -> u64 {
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = call(endpoint, "GET", "/v2/keys/", "");
        let idx: u64 = a
            .header("x-etcd-index")
            .and_then(|v| v.parse().ok())
            .expect("X-Etcd-Index on a v2 GET");
        if last == Some(idx) || Instant::now() > deadline {
            return idx;
        }
        last = Some(idx);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Rewrites every store index in `text` relative to `base`: JSON fields
/// `modifiedIndex`, `createdIndex`, `index`, in-order key names (20 digits)
/// and the numbers of compare-failure causes. Expiry times and TTLs are
/// masked (they are wall-clock readings).
fn relative(text: &str, base: u64) -> String {
    let mut out = String::new();
    let mut rest = text;
    let rel = |n: u64| n.saturating_sub(base);
    while !rest.is_empty() {
        let fields = ["\"modifiedIndex\":", "\"createdIndex\":", "\"index\":"];
        if let Some(f) = fields.iter().find(|f| rest.starts_with(**f)) {
            out.push_str(f);
            rest = &rest[f.len()..];
            let d = rest.chars().take_while(char::is_ascii_digit).count();
            let n: u64 = rest[..d].parse().unwrap_or(0);
            // Error indexes of 0 (request errors) stay 0.
            out.push_str(&if n == 0 { 0 } else { rel(n) }.to_string());
            rest = &rest[d..];
            continue;
        }
        let d = rest.chars().take_while(char::is_ascii_digit).count();
        if d == 20 {
            let n: u64 = rest[..20].parse().unwrap_or(0);
            out.push_str(&format!("{:020}", rel(n)));
            rest = &rest[20..];
            continue;
        }
        let c = rest.chars().next().expect("non-empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    mask_after(&mask_after(&out, "\"expiration\":\"", '"'), "\"ttl\":", ',')
}

/// Replaces what follows each `pat` up to `end` with `*`.
fn mask_after(text: &str, pat: &str, end: char) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(pat) {
        out.push_str(&rest[..i + pat.len()]);
        rest = &rest[i + pat.len()..];
        let stop = rest.find([end, '}']).unwrap_or(rest.len());
        out.push('*');
        rest = &rest[stop..];
    }
    out.push_str(rest);
    out
}

/// A compare failure on indexes names them: `[prevIndex != modifiedIndex]`.
fn index_causes_relative(text: &str, base: u64) -> String {
    let Some(start) = text.find("\"cause\":\"[") else {
        return text.to_owned();
    };
    let open = start + "\"cause\":\"[".len();
    let Some(close) = text[open..].find(']').map(|c| c + open) else {
        return text.to_owned();
    };
    let inner = &text[open..close];
    let Some((a, b)) = inner.split_once(" != ") else {
        return text.to_owned();
    };
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => format!(
            "{}{} != {}{}",
            &text[..open],
            a.saturating_sub(base),
            b.saturating_sub(base),
            &text[close..]
        ),
        _ => text.to_owned(),
    }
}

/// `{N}` in a step is the server's base index plus N.
fn fill(step: &str, base: u64) -> String {
    let mut out = String::new();
    let mut rest = step;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let close = rest[i..].find('}').expect("closing brace") + i;
        let n: u64 = rest[i + 1..close].parse().expect("a number in braces");
        out.push_str(&(base + n).to_string());
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The curl session: (method, target, form body). Indexes in braces are
/// relative to the store index before the session.
const SESSION: &[(&str, &str, &str)] = &[
    ("GET", "/v2/keys/", ""),
    ("PUT", "/v2/keys/message", "value=Hello world"),
    ("GET", "/v2/keys/message", ""),
    ("PUT", "/v2/keys/message", "value=Hello etcd"),
    ("DELETE", "/v2/keys/message", ""),
    ("GET", "/v2/keys/message", ""),
    ("PUT", "/v2/keys/foo", "value=bar&ttl=20"),
    ("GET", "/v2/keys/foo", ""),
    ("PUT", "/v2/keys/foo?value=bar&ttl=&prevExist=true", ""),
    ("PUT", "/v2/keys/foo", "ttl=30&refresh=true&prevExist=true"),
    ("PUT", "/v2/keys/foo", "value=x&ttl=30&refresh=true"),
    ("PUT", "/v2/keys/foo", "refresh=true"),
    ("PUT", "/v2/keys/foo", "ttl=abc&value=1"),
    ("POST", "/v2/keys/queue", "value=Job1"),
    ("POST", "/v2/keys/queue", "value=Job2"),
    ("GET", "/v2/keys/queue?recursive=true&sorted=true", ""),
    ("PUT", "/v2/keys/dir", "ttl=30&dir=true"),
    ("PUT", "/v2/keys/dir", "ttl=&dir=true&prevExist=true"),
    ("PUT", "/v2/keys/dir/k", "value=v"),
    ("GET", "/v2/keys/dir", ""),
    ("PUT", "/v2/keys/foo?prevExist=false", "value=three"),
    ("PUT", "/v2/keys/foo?prevValue=two", "value=three"),
    ("PUT", "/v2/keys/foo?prevValue=", "value=three"),
    ("PUT", "/v2/keys/foo?prevValue=bar", "value=three"),
    ("PUT", "/v2/keys/foo?prevIndex={1}", "value=four"),
    ("PUT", "/v2/keys/foo?prevIndex=abc", "value=four"),
    ("DELETE", "/v2/keys/foo?prevValue=two", ""),
    ("DELETE", "/v2/keys/foo?prevIndex={1}", ""),
    ("DELETE", "/v2/keys/foo?prevValue=three", ""),
    ("PUT", "/v2/keys/dir2?dir=true", ""),
    ("PUT", "/v2/keys/dir2?dir=true", ""),
    ("GET", "/v2/keys/?sorted=true", ""),
    ("DELETE", "/v2/keys/dir2", ""),
    ("DELETE", "/v2/keys/dir2?dir=true", ""),
    ("DELETE", "/v2/keys/dir?dir=true", ""),
    ("DELETE", "/v2/keys/dir?recursive=true", ""),
    ("PUT", "/v2/keys/afile", "value=1"),
    ("PUT", "/v2/keys/afile/child", "value=2"),
    ("GET", "/v2/keys/afile/child", ""),
    ("PUT", "/v2/keys/", "value=root"),
    ("DELETE", "/v2/keys/?recursive=true", ""),
    ("PUT", "/v2/keys/foo_dir/_hidden", "value=h"),
    ("PUT", "/v2/keys/foo_dir/shown", "value=s"),
    ("GET", "/v2/keys/foo_dir?recursive=true", ""),
    ("GET", "/v2/keys/foo_dir/_hidden", ""),
    ("PUT", "/v2/keys/esc%20aped%3Fkey", "value=%3Cb%3E+%26+more"),
    ("GET", "/v2/keys/esc%20aped%3Fkey", ""),
    ("PUT", "/v2/keys/nv?noValueOnSuccess=true", "value=1"),
    ("PUT", "/v2/keys/x?recursive=maybe", "value=1"),
    ("PUT", "/v2/keys/x?wait=true", "value=1"),
    ("GET", "/v2/keys/afile?wait=true&waitIndex={1}", ""),
    (
        "GET",
        "/v2/keys/queue?wait=true&recursive=true&waitIndex={2}",
        "",
    ),
    ("GET", "/v2/keys/foo?wait=true&waitIndex={10}", ""),
    ("HEAD", "/v2/keys/afile", ""),
    ("PATCH", "/v2/keys/afile", ""),
    ("GET", "/v2/keys/afile?quorum=true", ""),
    ("GET", "/v2/stats/leader", ""),
    ("GET", "/v2/members/leader", ""),
    ("GET", "/v2/nothing", ""),
];

fn transcript(endpoint: &str, base: u64) -> Vec<String> {
    SESSION
        .iter()
        .map(|(method, template, form)| {
            let a = call(endpoint, method, &fill(template, base), form);
            let index = a
                .header("x-etcd-index")
                .map(|v| relative(&format!("\"index\":{v}"), base));
            let body = index_causes_relative(&relative(&a.body, base), base);
            let body = mask_after(&mask_after(&body, "\"leader\":\"", '"'), "\"id\":\"", '"');
            let body = mask_after(&mask_after(&body, "URLs\":[", ']'), "\"name\":\"", '"');
            format!(
                "{method} {template} {form}\n{} {:?} {:?}\n{body}",
                a.status,
                a.header("content-type"),
                index
            )
        })
        .collect()
}

#[test]
fn v2_curl_session_answers_as_etcd_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_v2(Server::Etcd, dir.path());
    let cairn = start_v2(Server::Cairn, dir.path());
    let want = transcript(&etcd.endpoint(), settled_index(&etcd.endpoint()));
    let got = transcript(&cairn.endpoint(), settled_index(&cairn.endpoint()));
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w, "cairn (left) differs from etcd 3.4 (right)");
    }
    assert_eq!(got.len(), want.len());
}

/// A watch that waits: its headers come at once, the event when it happens,
/// on both servers; a stream gets every event; an index older than the last
/// 1 000 changes is refused with 401.
#[test]
fn v2_waits_get_later_changes_and_old_indexes_are_cleared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_v2(Server::Etcd, dir.path());
    let cairn = start_v2(Server::Cairn, dir.path());
    let mut answers = Vec::new();
    for p in [&etcd, &cairn] {
        let ep = p.endpoint();
        let base = settled_index(&ep);
        let waiter = {
            let ep = ep.clone();
            std::thread::spawn(move || call(&ep, "GET", "/v2/keys/w?wait=true", ""))
        };
        let streamer = {
            let ep = ep.clone();
            std::thread::spawn(move || {
                http(
                    &ep,
                    "GET",
                    "/v2/keys/s?wait=true&recursive=true&stream=true",
                    "",
                    Duration::from_secs(3),
                )
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        call(&ep, "PUT", "/v2/keys/other", "value=0");
        call(&ep, "PUT", "/v2/keys/w", "value=1");
        call(&ep, "PUT", "/v2/keys/s/a", "value=2");
        call(&ep, "PUT", "/v2/keys/s/b", "value=3");
        let w = waiter.join().expect("waiter");
        let s = streamer.join().expect("streamer");
        for i in 0..1000 {
            let a = call(&ep, "PUT", "/v2/keys/fill", &format!("value={i}"));
            assert!(a.status == 200 || a.status == 201, "{a:?}");
        }
        let old = call(
            &ep,
            "GET",
            &format!("/v2/keys/w?wait=true&waitIndex={}", base + 2),
            "",
        );
        answers.push((
            w.status,
            relative(&w.body, base),
            relative(&s.body, base),
            old.status,
            mask_after(&relative(&old.body, base), "cleared [", ']'),
        ));
    }
    assert_eq!(
        answers[1], answers[0],
        "cairn (left) differs from etcd 3.4 (right)"
    );
    assert!(answers[1].2.lines().count() == 2, "{:?}", answers[1]);
    assert_eq!(answers[1].3, 400);
}

/// Runs `ETCDCTL_API=2 etcdctl` with `args`; (exit code, stdout + stderr).
fn etcdctl2(endpoint: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("timeout")
        .arg("5")
        .arg("etcdctl")
        .env("ETCDCTL_API", "2")
        .arg(format!("--endpoints=http://{endpoint}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// etcdctl's extended output names indexes as `Index: N`.
fn index_words_relative(text: &str, base: u64) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("Index: ") {
        out.push_str(&rest[..i + 7]);
        rest = &rest[i + 7..];
        let d = rest.chars().take_while(char::is_ascii_digit).count();
        let n: u64 = rest[..d].parse().unwrap_or(0);
        out.push_str(&n.saturating_sub(base).to_string());
        rest = &rest[d..];
    }
    out.push_str(rest);
    out
}

fn ctl_session(endpoint: &str, base: u64) -> Vec<String> {
    let mut out = Vec::new();
    let steps: &[&[&str]] = &[
        &["set", "/a/b", "1"],
        &["get", "/a/b"],
        &["mk", "/a/c", "2"],
        &["mk", "/a/c", "3"],
        &["mkdir", "/d"],
        &["mkdir", "/d"],
        &["setdir", "/d2"],
        &["ls", "--sort", "-r", "/"],
        &["ls", "--sort", "-r", "-p", "/"],
        &["update", "/a/b", "5"],
        &["update", "/nope", "5"],
        &["updatedir", "/d2", "--ttl", "100"],
        &["set", "--swap-with-value", "5", "/a/b", "6"],
        &["set", "--swap-with-value", "5", "/a/b", "7"],
        &["rm", "/a/b"],
        &["rm", "/a/b"],
        &["rmdir", "/d"],
        &["rmdir", "/a"],
        &["rm", "--recursive", "/a"],
        &["get", "/nope"],
        &["-o", "json", "get", "/d2"],
        &["-o", "extended", "set", "/e", "x"],
        &["member", "list"],
        &["cluster-health"],
    ];
    for args in steps {
        let (code, text) = etcdctl2(endpoint, args);
        let text = text.replace(endpoint, "ENDPOINT");
        let text = mask_after(&text, "[", ']');
        let text = relative(&text, base);
        let text = index_words_relative(&text, base);
        let text = text
            .split_whitespace()
            .map(|w| {
                // Member ids (16 hex digits) differ.
                if w.trim_end_matches(':').len() >= 12
                    && w.trim_end_matches(':')
                        .chars()
                        .all(|c| c.is_ascii_hexdigit())
                {
                    "ID".to_owned()
                } else if w.starts_with("peerURLs=") || w.starts_with("clientURLs=") {
                    w.split('=').next().unwrap_or("").to_owned()
                } else {
                    w.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        out.push(format!(
            "$ etcdctl {}\n[exit {code}] {text}",
            args.join(" ")
        ));
    }
    // A watch waits for the next change; exec-watch runs a command per change.
    let ep = endpoint.to_owned();
    let watch = std::thread::spawn(move || etcdctl2(&ep, &["watch", "/w"]));
    let ep = endpoint.to_owned();
    let exec = std::thread::spawn(move || {
        etcdctl2(
            &ep,
            &[
                "exec-watch",
                "/w",
                "--",
                "sh",
                "-c",
                "echo got $ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE",
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    etcdctl2(endpoint, &["set", "/w", "hello"]);
    let (code, text) = watch.join().expect("watch");
    out.push(format!("$ etcdctl watch /w\n[exit {code}] {text}"));
    let (_, text) = exec.join().expect("exec-watch");
    out.push(format!("$ etcdctl exec-watch /w\n{text}"));
    out
}

#[test]
fn v2_etcdctl_session_prints_what_etcd_prints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_v2(Server::Etcd, dir.path());
    let cairn = start_v2(Server::Cairn, dir.path());
    let want = ctl_session(&etcd.endpoint(), settled_index(&etcd.endpoint()));
    let got = ctl_session(&cairn.endpoint(), settled_index(&cairn.endpoint()));
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w, "cairn (left) differs from etcd 3.4 (right)");
    }
    assert_eq!(got.len(), want.len());
}

#[test]
fn v2_is_off_unless_enabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = start_cairn(dir.path());
    let a = call(&cairn.endpoint(), "PUT", "/v2/keys/foo", "value=1");
    assert_eq!((a.status, a.body.as_str()), (404, "404 page not found\n"));
}

/// Three cairn members: a v2 write through any member is read on every
/// other (with `quorum=true`, and without once applied there), a TTL key
/// expires on all of them by the leader's sweep, and the store, its index
/// included, survives restarting every member.
#[test]
fn v2_store_is_replicated_expired_everywhere_and_kept_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, pp))| format!("m{i}=http://127.0.0.1:{pp}"))
        .collect();
    let start = |i: usize| {
        let (cp, pp) = ports[i];
        let mut flags = founding_flags(
            &format!("m{i}"),
            &format!("http://127.0.0.1:{pp}"),
            &cluster.join(","),
        );
        flags.push("--enable-v2".into());
        spawn_member(
            Server::Cairn,
            &format!("m{i}"),
            dir.path(),
            cp,
            pp,
            &flags,
            &[],
        )
    };
    let mut members: Vec<Proc> = (0..3).map(start).collect();
    for m in &members {
        wait_healthy(m);
    }
    let eps: Vec<String> = members.iter().map(Proc::endpoint).collect();
    for (i, ep) in eps.iter().enumerate() {
        let a = call(
            ep,
            "PUT",
            &format!("/v2/keys/from/{i}"),
            &format!("value=v{i}"),
        );
        assert_eq!(a.status, 201, "{a:?}");
    }
    call(&eps[0], "PUT", "/v2/keys/ttl", "value=short&ttl=2");
    for ep in &eps {
        let a = call(
            ep,
            "GET",
            "/v2/keys/from?recursive=true&sorted=true&quorum=true",
            "",
        );
        assert_eq!(a.status, 200);
        for i in 0..3 {
            assert!(
                a.body.contains(&format!("\"value\":\"v{i}\"")),
                "{}",
                a.body
            );
        }
    }
    let expired = |ep: &str| call(ep, "GET", "/v2/keys/ttl?quorum=true", "").status == 404;
    poll_until(
        Duration::from_secs(10),
        "the TTL key expires on every member",
        || {
            if eps.iter().all(|ep| expired(ep)) {
                Ok(())
            } else {
                Err("still there".to_owned())
            }
        },
    );
    let before = call(
        &eps[1],
        "GET",
        "/v2/keys/?recursive=true&sorted=true&quorum=true",
        "",
    );
    for m in &mut members {
        m.kill9();
    }
    members = (0..3).map(start).collect();
    for m in &members {
        wait_healthy(m);
    }
    let after = call(
        &eps[1],
        "GET",
        "/v2/keys/?recursive=true&sorted=true&quorum=true",
        "",
    );
    assert_eq!(after.body, before.body);
    assert_eq!(after.header("x-etcd-index"), before.header("x-etcd-index"));
}

/// etcd's `/members` on the peer port (what etcd's own joining members and
/// tools read): the same JSON as etcd 3.4 once ids and ports are masked,
/// and etcd's answers to another method and another path.
#[test]
fn peer_port_members_answer_as_etcds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let etcd = start_v2(Server::Etcd, dir.path());
    let cairn = start_v2(Server::Cairn, dir.path());
    let answers: Vec<Vec<(u16, String)>> = [&etcd, &cairn]
        .iter()
        .map(|p| {
            let peer = p.peer_url.trim_start_matches("http://").to_owned();
            let port = peer.rsplit(':').next().unwrap_or("").to_owned();
            let client_port = p.endpoint().rsplit(':').next().unwrap_or("").to_owned();
            [
                ("GET", "/members"),
                ("POST", "/members"),
                ("GET", "/nothing"),
            ]
            .iter()
            .map(|(m, path)| {
                let a = call(&peer, m, path, "");
                let body = mask_digits_after(&a.body, "\"id\":")
                    .replace(&port, "PEER")
                    .replace(&client_port, "CLIENT");
                (a.status, if a.status == 200 { body } else { String::new() })
            })
            .collect()
        })
        .collect();
    assert_eq!(
        answers[1], answers[0],
        "cairn (left) differs from etcd 3.4 (right)"
    );
    assert!(
        answers[1][0].1.contains("\"name\":\"v1\""),
        "{:?}",
        answers[1]
    );
}
