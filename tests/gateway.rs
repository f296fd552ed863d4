//! etcd's JSON gateway (`src/api/gateway/`), differentially: the same raw
//! HTTP/1.1 requests go to etcd 3.4 and to cairn, each fresh, in the same
//! order, and the answers must be equal — status, content type, and body
//! (JSON compared as values, with the ids, terms, revisions of headers,
//! tokens, hashes and sizes that legitimately differ masked; text compared
//! as text). Every route, both field-name styles, bad bodies, wrong
//! methods and paths, auth with the token in `Authorization`, and the
//! watch / keep-alive / snapshot / observe streams.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{start_cairn, start_etcd, Proc};
use serde_json::Value;

/// An answer: status, content type, body.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// Sends one request (`Connection: close`) and reads the whole answer.
fn send(endpoint: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let addr: SocketAddr = endpoint.parse().expect("endpoint");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(request(endpoint, method, path, headers, body, true).as_bytes())
        .expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let (status, content_type, chunked, body) = parse(&raw).expect("an HTTP answer");
    let body = if chunked {
        dechunk(body).0
    } else {
        body.to_vec()
    };
    Answer {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn request(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    close: bool,
) -> String {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if close {
        r.push_str("Connection: close\r\n");
    }
    if method != "GET" || !body.is_empty() {
        r.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

/// Status, content type, whether chunked, and the bytes after the head.
fn parse(raw: &[u8]) -> Option<(u16, String, bool, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    Some((
        status,
        header("content-type").unwrap_or_default(),
        chunked,
        &raw[end + 4..],
    ))
}

/// The data of the complete chunks in `rest`, and whether the last chunk came.
fn dechunk(mut rest: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            return (body, false);
        };
        if size == 0 {
            return (body, true);
        }
        let data = &rest[eol + 2..];
        if data.len() < size + 2 {
            return (body, false);
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

/// A streamed answer being read: the lines so far.
struct Stream {
    sock: TcpStream,
    raw: Vec<u8>,
}

impl Stream {
    fn open(endpoint: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Stream {
        let addr: SocketAddr = endpoint.parse().expect("endpoint");
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        sock.write_all(request(endpoint, "POST", path, headers, body, true).as_bytes())
            .expect("write");
        Stream {
            sock,
            raw: Vec::new(),
        }
    }

    /// (status, content type, body lines, ended) once `n` lines came, the
    /// answer ended, or `within` passed.
    fn lines(&mut self, n: usize, within: Duration) -> (u16, String, Vec<String>, bool) {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 8192];
        loop {
            let mut ended = false;
            match self.sock.read(&mut buf) {
                Ok(0) => ended = true,
                Ok(k) => self.raw.extend_from_slice(&buf[..k]),
                Err(_) => {}
            }
            if let Some((status, ct, chunked, rest)) = parse(&self.raw) {
                let (body, last) = if chunked {
                    dechunk(rest)
                } else {
                    (rest.to_vec(), ended)
                };
                let text = String::from_utf8_lossy(&body).into_owned();
                let lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
                let done = last || ended;
                if done
                    || lines.iter().filter(|l| l.ends_with('\n')).count() >= n
                    || Instant::now() >= deadline
                {
                    return (status, ct, lines, done);
                }
            } else if ended || Instant::now() >= deadline {
                return (0, String::new(), Vec::new(), ended);
            }
        }
    }
}

/// JSON fields whose values differ between two fresh servers for good
/// reasons, masked wherever they appear.
const MASKED: &[&str] = &[
    "cluster_id",
    "member_id",
    "raft_term",
    "revision",
    "token",
    "hash",
    "compact_revision",
    "hash_revision",
    "dbSize",
    "dbSizeInUse",
    "leader",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "version",
    "peerURLs",
    "clientURLs",
    "blob",
    "remaining_bytes",
    "isLearner",
];

/// Masks `MASKED` fields, member IDs (`ID` in a member) and etcd's names
/// of its one member, in a JSON value; a header's revision too.
fn mask(v: &mut Value, in_member: bool) {
    match v {
        Value::Object(map) => {
            // etcd 3.4 leaves the revision out of some headers (Cluster's),
            // cairn gives it: revisions are masked, so is their presence.
            if map.contains_key("cluster_id") {
                map.remove("revision");
            }
            if let Some(Value::Object(h)) = map.get_mut("header") {
                h.remove("revision");
            }
            let is_member = map.contains_key("peerURLs");
            for (k, val) in map.iter_mut() {
                let masked = MASKED.contains(&k.as_str())
                    || (is_member && (k == "ID" || k == "name"))
                    || (in_member && k == "ID");
                // A key-value's `version` is the key's, not a server's.
                let kv_version = k == "version" && val.is_string() && !is_status_like(val);
                if masked && !kv_version {
                    *val = Value::String("<masked>".into());
                } else {
                    mask(val, k == "member" || k == "members");
                    // Members come in the order of their (random) IDs.
                    if let (true, Value::Array(items)) = (k == "members", &mut *val) {
                        items.sort_by_key(|i| i.to_string());
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| mask(i, in_member)),
        _ => {}
    }
}

/// A server version string ("3.4.23") rather than a key's version ("1").
fn is_status_like(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains('.'))
}

/// An answer in comparable form: JSON bodies parsed and masked (each line
/// of a stream separately), other bodies as they are.
fn comparable(status: u16, content_type: &str, lines: &[String]) -> String {
    let body: Vec<String> = lines
        .iter()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(mut v) => {
                mask(&mut v, false);
                format!("json {v}")
            }
            Err(_) => format!("text {l:?}"),
        })
        .collect();
    format!("{status} {content_type} {}", body.join(" | "))
}

fn comparable_answer(a: &Answer) -> String {
    comparable(a.status, &a.content_type, std::slice::from_ref(&a.body))
}

/// One request of a session.
struct Call {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Compare only the status, the content type and the gRPC code (the
    /// message of a body of the wrong type is Go's on etcd, serde's here).
    code_only: bool,
    /// Leave the response header out: etcd 3.4 answers Alarm, Defragment
    /// and MoveLeader without one, cairn (as etcd 3.5) with one.
    no_header: bool,
}

fn post(path: &str, body: &str) -> Call {
    Call {
        method: "POST",
        path: path.to_owned(),
        headers: Vec::new(),
        body: body.to_owned(),
        code_only: false,
        no_header: false,
    }
}

fn with(method: &'static str, path: &str, body: &str) -> Call {
    Call {
        method,
        ..post(path, body)
    }
}

fn code_only(mut c: Call) -> Call {
    c.code_only = true;
    c
}

fn no_header(mut c: Call) -> Call {
    c.no_header = true;
    c
}

fn authed(mut c: Call, token: &str) -> Call {
    c.headers.push(("Authorization", token.to_owned()));
    c
}

fn run(p: &Proc, c: &Call) -> String {
    let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = send(&p.endpoint(), c.method, &c.path, &headers, &c.body);
    if c.code_only {
        let code = serde_json::from_str::<Value>(&a.body)
            .ok()
            .and_then(|v| v.get("code").cloned());
        return format!("{} {} code {:?}", a.status, a.content_type, code);
    }
    let mut a = a;
    if c.no_header {
        if let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(&a.body) {
            m.remove("header");
            a.body = Value::Object(m).to_string();
        }
    }
    comparable_answer(&a)
}

/// Runs `calls` on both servers, one after another; every difference.
fn differences(etcd: &Proc, cairn: &Proc, calls: &[Call]) -> Vec<String> {
    let mut diffs = Vec::new();
    for c in calls {
        let (e, k) = (run(etcd, c), run(cairn, c));
        if e != k {
            diffs.push(format!(
                "{} {} {}\n   etcd:  {e}\n   cairn: {k}",
                c.method, c.path, c.body
            ));
        }
    }
    diffs
}

fn assert_same(etcd: &Proc, cairn: &Proc, calls: &[Call]) {
    let diffs = differences(etcd, cairn, calls);
    assert!(
        diffs.is_empty(),
        "{} of {} answers differ:\n{}",
        diffs.len(),
        calls.len(),
        diffs.join("\n")
    );
}

fn servers() -> (tempfile::TempDir, Proc, Proc) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("e")).expect("dir");
    std::fs::create_dir_all(dir.path().join("c")).expect("dir");
    let etcd = start_etcd(&dir.path().join("e"));
    let cairn = start_cairn(&dir.path().join("c"));
    (dir, etcd, cairn)
}

/// base64 of a string, as JSON bodies carry keys and values.
fn b64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | (x as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_test_base64_is_standard() {
    assert_eq!(b64("foo"), "Zm9v");
    assert_eq!(b64("fo"), "Zm8=");
    assert_eq!(b64("f"), "Zg==");
    assert_eq!(b64("\0"), "AA==");
}

#[test]
fn kv_lease_and_maintenance_routes_answer_as_etcd() {
    let (_dir, etcd, cairn) = servers();
    let (foo, bar, baz, a, z) = (b64("foo"), b64("bar"), b64("baz"), b64("a"), b64("z"));
    let calls = vec![
        // KV, in both field-name styles.
        post(
            "/v3/kv/put",
            &format!(r#"{{"key":"{foo}","value":"{bar}"}}"#),
        ),
        post(
            "/v3/kv/put",
            &format!(r#"{{"key":"{a}","value":"{baz}","prev_kv":true}}"#),
        ),
        post(
            "/v3/kv/put",
            &format!(r#"{{"key":"{a}","value":"{bar}","prevKv":true}}"#),
        ),
        post("/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#)),
        post(
            "/v3/kv/range",
            &format!(r#"{{"key":"{a}","range_end":"{z}"}}"#),
        ),
        post(
            "/v3/kv/range",
            &format!(r#"{{"key":"{a}","rangeEnd":"{z}","keysOnly":true}}"#),
        ),
        post(
            "/v3/kv/range",
            &format!(r#"{{"key":"AA==","range_end":"AA==","count_only":true}}"#),
        ),
        post(
            "/v3/kv/range",
            &format!(
                r#"{{"key":"AA==","range_end":"AA==","limit":"1","sort_order":"DESCEND","sort_target":"KEY"}}"#
            ),
        ),
        post(
            "/v3/kv/range",
            &format!(
                r#"{{"key":"AA==","rangeEnd":"AA==","limit":1,"sortOrder":"ASCEND","sortTarget":"MOD"}}"#
            ),
        ),
        post(
            "/v3/kv/range",
            &format!(r#"{{"key":"{foo}","revision":"1"}}"#),
        ),
        post(
            "/v3/kv/range",
            &format!(r#"{{"key":"{foo}","serializable":true,"unknown_field":[1,2]}}"#),
        ),
        post(
            "/v3/kv/txn",
            &format!(
                r#"{{"compare":[{{"key":"{foo}","result":"EQUAL","target":"VALUE","value":"{bar}"}}],
                    "success":[{{"request_put":{{"key":"{foo}","value":"{baz}"}}}},{{"request_range":{{"key":"{foo}"}}}}],
                    "failure":[{{"requestDeleteRange":{{"key":"{foo}"}}}}]}}"#
            ),
        ),
        post(
            "/v3/kv/txn",
            &format!(
                r#"{{"compare":[{{"key":"{foo}","result":"GREATER","target":"VERSION","version":"5"}}],
                    "failure":[{{"request_range":{{"key":"{foo}"}}}},{{"request_txn":{{}}}}]}}"#
            ),
        ),
        post(
            "/v3/kv/txn",
            &format!(
                r#"{{"compare":[{{"key":"{foo}","target":"MOD","mod_revision":"0","result":"NOT_EQUAL"}}]}}"#
            ),
        ),
        post(
            "/v3/kv/deleterange",
            &format!(r#"{{"key":"{a}","prev_kv":true}}"#),
        ),
        post("/v3/kv/deleterange", &format!(r#"{{"key":"{a}"}}"#)),
        post("/v3/kv/compaction", r#"{"revision":"2","physical":true}"#),
        post(
            "/v3/kv/range",
            &format!(r#"{{"key":"{foo}","revision":"1"}}"#),
        ),
        post("/v3/kv/compaction", r#"{"revision":"100"}"#),
        // Leases, on every path.
        post("/v3/lease/grant", r#"{"TTL":"60","ID":"1234"}"#),
        post("/v3/lease/grant", r#"{"TTL":60,"ID":1234}"#),
        post("/v3/lease/grant", r#"{"TTL":"30","ID":"99"}"#),
        post(
            "/v3/kv/put",
            &format!(r#"{{"key":"{z}","value":"{bar}","lease":"1234"}}"#),
        ),
        post("/v3/lease/timetolive", r#"{"ID":"1234"}"#),
        code_only(post(
            "/v3/kv/lease/timetolive",
            r#"{"ID":"1234","keys":true}"#,
        )),
        post("/v3/lease/timetolive", r#"{"ID":"7"}"#),
        post("/v3/lease/leases", "{}"),
        post("/v3/kv/lease/leases", ""),
        post("/v3/lease/revoke", r#"{"ID":"99"}"#),
        post("/v3/kv/lease/revoke", r#"{"ID":"1234"}"#),
        post("/v3/lease/revoke", r#"{"ID":"1234"}"#),
        post("/v3/kv/range", &format!(r#"{{"key":"{z}"}}"#)),
        // Maintenance.
        no_header(post("/v3/maintenance/alarm", r#"{"action":"GET"}"#)),
        no_header(post("/v3/maintenance/alarm", r#"{}"#)),
        post("/v3/maintenance/status", "{}"),
        post("/v3/maintenance/hash", "{}"),
        no_header(post("/v3/maintenance/defragment", "")),
        // Cluster (ids masked).
        post("/v3/cluster/member/list", "{}"),
        post("/v3/cluster/member/remove", r#"{"ID":"12345"}"#),
        post(
            "/v3/cluster/member/update",
            r#"{"ID":"12345","peerURLs":["http://127.0.0.1:1"]}"#,
        ),
        post("/v3/cluster/member/promote", r#"{"ID":"12345"}"#),
        // The /v3beta/ prefix is /v3/.
        post("/v3beta/kv/range", &format!(r#"{{"key":"{foo}"}}"#)),
        post("/v3beta/lease/leases", ""),
    ];
    assert_same(&etcd, &cairn, &calls);
}

#[test]
fn member_changes_answer_as_etcd() {
    let (_dir, etcd, cairn) = servers();
    // A learner added, refused promotion (never started), removed.
    let add = post(
        "/v3/cluster/member/add",
        r#"{"peerURLs":["http://127.0.0.1:1"],"isLearner":true}"#,
    );
    let mut diffs = differences(&etcd, &cairn, &[add]);
    let learner = |p: &Proc| {
        let list = send(&p.endpoint(), "POST", "/v3/cluster/member/list", &[], "{}");
        let v: Value = serde_json::from_str(&list.body).expect("member list");
        let members = v["members"].as_array().expect("members").clone();
        let learner = members
            .iter()
            .find(|m| m["isLearner"] == Value::Bool(true))
            .expect("the learner");
        let own = members
            .iter()
            .find(|m| m["isLearner"] != Value::Bool(true))
            .expect("the member");
        (
            learner["ID"].as_str().expect("id").to_owned(),
            own["ID"].as_str().expect("id").to_owned(),
            own["peerURLs"][0].as_str().expect("url").to_owned(),
        )
    };
    let (le, me, mu) = learner(&etcd);
    let (lc, mc, mcu) = learner(&cairn);
    let pair = |e: Call, c: Call| {
        let (ea, ca) = (run(&etcd, &e), run(&cairn, &c));
        (ea != ca).then(|| format!("{} {}\n   etcd:  {ea}\n   cairn: {ca}", e.path, e.body))
    };
    let per = |path: &str, fe: String, fc: String| (post(path, &fe), post(path, &fc));
    for (e, c) in [
        per(
            "/v3/cluster/member/promote",
            format!(r#"{{"ID":"{le}"}}"#),
            format!(r#"{{"ID":"{lc}"}}"#),
        ),
        per(
            "/v3/cluster/member/update",
            format!(r#"{{"ID":"{me}","peerURLs":["{mu}"]}}"#),
            format!(r#"{{"ID":"{mc}","peerURLs":["{mcu}"]}}"#),
        ),
        per(
            "/v3/cluster/member/remove",
            format!(r#"{{"ID":"{le}"}}"#),
            format!(r#"{{"ID":"{lc}"}}"#),
        ),
        per(
            "/v3/cluster/member/remove",
            format!(r#"{{"ID":"{le}"}}"#),
            format!(r#"{{"ID":"{lc}"}}"#),
        ),
    ] {
        diffs.extend(pair(e, c));
    }
    // etcd 3.4 answers MoveLeader without a header, cairn (as 3.5) with
    // one: the status and the content type only.
    let moved = |p: &Proc, id: &str| {
        let a = send(
            &p.endpoint(),
            "POST",
            "/v3/maintenance/transfer-leadership",
            &[],
            &format!(r#"{{"targetID":"{id}"}}"#),
        );
        (a.status, a.content_type)
    };
    assert_eq!(moved(&etcd, &me), moved(&cairn, &mc), "transfer-leadership");
    assert!(diffs.is_empty(), "answers differ:\n{}", diffs.join("\n"));
}

#[test]
fn lock_and_election_routes_answer_as_etcd() {
    let (_dir, etcd, cairn) = servers();
    let (name, v1, v2) = (b64("job"), b64("one"), b64("two"));
    let calls = vec![
        post("/v3/lease/grant", r#"{"TTL":"60","ID":"500"}"#),
        post(
            "/v3/lock/lock",
            &format!(r#"{{"name":"{name}","lease":"500"}}"#),
        ),
        post(
            "/v3/lock/lock",
            &format!(r#"{{"name":"{}","lease":"501"}}"#, b64("other")),
        ),
        post(
            "/v3/election/campaign",
            &format!(r#"{{"name":"{name}","lease":"500","value":"{v1}"}}"#),
        ),
        post("/v3/election/leader", &format!(r#"{{"name":"{name}"}}"#)),
        post(
            "/v3/election/leader",
            &format!(r#"{{"name":"{}"}}"#, b64("nobody")),
        ),
        post(
            "/v3/election/proclaim",
            &format!(
                r#"{{"leader":{{"name":"{name}","key":"{}","rev":"2","lease":"500"}},"value":"{v2}"}}"#,
                b64("nope")
            ),
        ),
        post(
            "/v3/election/resign",
            &format!(
                r#"{{"leader":{{"name":"{name}","key":"{}","lease":"500"}}}}"#,
                b64("nope")
            ),
        ),
        post(
            "/v3/lock/unlock",
            &format!(r#"{{"key":"{}"}}"#, b64("nope")),
        ),
        post(
            "/v3/election/campaign",
            r#"{"name":"AA==","lease":"501","value":"AA=="}"#,
        ),
    ];
    assert_same(&etcd, &cairn, &calls);
}

#[test]
fn bad_requests_answer_as_etcd() {
    let (_dir, etcd, cairn) = servers();
    let calls = vec![
        // Bodies that are not JSON: Go's syntax errors, word for word.
        post("/v3/kv/range", "{bad"),
        post("/v3/kv/range", "abc"),
        post("/v3/kv/range", r#"{"key":"Zm9v""#),
        post("/v3/kv/range", r#"{"key" "Zm9v"}"#),
        post("/v3/kv/range", r#"{"key":"Zm9v" "x":1}"#),
        post("/v3/kv/range", r#"{"key":tru}"#),
        post("/v3/kv/range", r#"{"key":"Zm9v","limit":1.}"#),
        post("/v3/kv/range", r#"{"key":"\q"}"#),
        post("/v3/kv/put", "{"),
        post("/v3/kv/put", "{\"key\":\"a\n\"}"),
        // Not an object.
        post("/v3/kv/range", "[]"),
        post("/v3/kv/range", r#""Zm9v""#),
        post("/v3/kv/range", "12"),
        post("/v3/kv/range", "true"),
        post("/v3/kv/range", "null"),
        // Not base64.
        post("/v3/kv/range", r#"{"key":"notbase64!"}"#),
        post("/v3/kv/put", r#"{"key":"Zm9v","value":"@@@@"}"#),
        // Fields of the wrong type: the code is etcd's, the words Go's there.
        code_only(post("/v3/kv/range", r#"{"key":"Zm9v","limit":"abc"}"#)),
        code_only(post("/v3/kv/range", r#"{"key":5}"#)),
        code_only(post("/v3/kv/range", r#"{"key":"Zm9v","keys_only":"yes"}"#)),
        code_only(post(
            "/v3/kv/range",
            r#"{"key":"Zm9v","sort_order":"SIDEWAYS"}"#,
        )),
        // Empty bodies, trailing data, unknown fields.
        post("/v3/kv/range", ""),
        post("/v3/kv/range", "   "),
        post("/v3/kv/range", r#"{"key":"Zm9v"} trailing garbage"#),
        post("/v3/kv/range", r#"{"nokey":1}"#),
        post("/v3/kv/put", r#"{"key":"","value":"YmFy"}"#),
        // Server errors with their statuses.
        post("/v3/lease/revoke", r#"{"ID":"999"}"#),
        post("/v3/lease/grant", r#"{"TTL":"99999999999","ID":"5"}"#),
        post("/v3/auth/user/get", r#"{"name":"nobody"}"#),
        post("/v3/auth/disable", "{}"),
        post("/v3/auth/enable", "{}"),
        post("/v3/kv/range", r#"{"key":"Zm9v","revision":"100"}"#),
        post(
            "/v3/kv/txn",
            r#"{"success":[{"request_put":{"key":"Zm9v"}},{"request_put":{"key":"Zm9v"}}]}"#,
        ),
        // Methods and paths.
        with("GET", "/v3/kv/range", ""),
        with("PUT", "/v3/kv/range", "{}"),
        with("DELETE", "/v3/watch", ""),
        post("/v3/kv/nope", "{}"),
        with("GET", "/v3/kv/nope", ""),
        post("/v3/", "{}"),
        post("/v3/maintenance/hashkv", "{}"),
        post("/v3/auth/status", "{}"),
        post("/v3alpha/kv/range", "{}"),
        with("GET", "/v3alpha/kv/range", ""),
        with("OPTIONS", "/v3/kv/range", ""),
        post("/nowhere", "{}"),
    ];
    assert_same(&etcd, &cairn, &calls);
}

#[test]
fn auth_takes_the_token_from_the_authorization_header_as_etcd() {
    let (_dir, etcd, cairn) = servers();
    let (foo, bar) = (b64("foo"), b64("bar"));
    let setup = vec![
        post("/v3/auth/role/add", r#"{"name":"reader"}"#),
        post("/v3/auth/role/add", r#"{"name":"reader"}"#),
        post(
            "/v3/auth/role/grant",
            &format!(
                r#"{{"name":"reader","perm":{{"permType":"READ","key":"{foo}","range_end":"{}"}}}}"#,
                b64("fop")
            ),
        ),
        post("/v3/auth/role/get", r#"{"role":"reader"}"#),
        post("/v3/auth/role/list", "{}"),
        post(
            "/v3/auth/user/add",
            r#"{"name":"root","password":"rootpw"}"#,
        ),
        post("/v3/auth/user/add", r#"{"name":"al","password":"alpw"}"#),
        post("/v3/auth/user/add", r#"{"name":"bo","password":"bopw"}"#),
        post("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        post("/v3/auth/user/grant", r#"{"user":"al","role":"reader"}"#),
        post("/v3/auth/user/get", r#"{"name":"al"}"#),
        post("/v3/auth/user/list", "{}"),
        post(
            "/v3/auth/user/changepw",
            r#"{"name":"bo","password":"bopw2"}"#,
        ),
        post("/v3/auth/user/revoke", r#"{"name":"al","role":"nope"}"#),
        post("/v3/auth/user/delete", r#"{"name":"bo"}"#),
        post(
            "/v3/kv/put",
            &format!(r#"{{"key":"{foo}","value":"{bar}"}}"#),
        ),
        post("/v3/auth/enable", "{}"),
        post(
            "/v3/auth/authenticate",
            r#"{"name":"al","password":"wrong"}"#,
        ),
        post("/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#)),
    ];
    assert_same(&etcd, &cairn, &setup);
    let token = |p: &Proc, user: &str, pw: &str| {
        let a = send(
            &p.endpoint(),
            "POST",
            "/v3/auth/authenticate",
            &[],
            &format!(r#"{{"name":"{user}","password":"{pw}"}}"#),
        );
        let v: Value = serde_json::from_str(&a.body).expect("authenticate");
        v["token"].as_str().expect("a token").to_owned()
    };
    let calls = |al: &str, root: &str| {
        vec![
            authed(post("/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#)), al),
            authed(post("/v3/kv/range", &format!(r#"{{"key":"{bar}"}}"#)), al),
            authed(
                post(
                    "/v3/kv/put",
                    &format!(r#"{{"key":"{foo}","value":"{bar}"}}"#),
                ),
                al,
            ),
            authed(
                post("/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#)),
                "garbage",
            ),
            authed(post("/v3/auth/user/list", "{}"), al),
            authed(post("/v3/auth/user/list", "{}"), root),
            authed(post("/v3/maintenance/status", "{}"), al),
            authed(post("/v3/maintenance/hash", "{}"), al),
            authed(post("/v3/maintenance/defragment", "{}"), al),
            // (etcd 3.4 lets any user raise an alarm, cairn as 3.5 only root.)
            no_header(authed(
                post("/v3/maintenance/alarm", r#"{"action":"GET"}"#),
                al,
            )),
            authed(post("/v3/lease/grant", r#"{"TTL":"60","ID":"77"}"#), root),
            authed(post("/v3/lease/leases", "{}"), al),
            authed(post("/v3/cluster/member/list", "{}"), al),
            authed(
                post(
                    "/v3/auth/role/revoke",
                    &format!(
                        r#"{{"role":"reader","key":"{foo}","range_end":"{}"}}"#,
                        b64("fop")
                    ),
                ),
                root,
            ),
            authed(post("/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#)), al),
            authed(post("/v3/auth/role/delete", r#"{"role":"reader"}"#), root),
            authed(post("/v3/auth/disable", "{}"), al),
            authed(post("/v3/auth/disable", "{}"), root),
            post("/v3/kv/range", &format!(r#"{{"key":"{foo}"}}"#)),
        ]
    };
    let (ea, er) = (token(&etcd, "al", "alpw"), token(&etcd, "root", "rootpw"));
    let (ca, cr) = (token(&cairn, "al", "alpw"), token(&cairn, "root", "rootpw"));
    let mut diffs = Vec::new();
    for (e, c) in calls(&ea, &er).iter().zip(calls(&ca, &cr).iter()) {
        let (x, y) = (run(&etcd, e), run(&cairn, c));
        if x != y {
            diffs.push(format!(
                "{} {}\n   etcd:  {x}\n   cairn: {y}",
                e.path, e.body
            ));
        }
    }
    assert!(diffs.is_empty(), "answers differ:\n{}", diffs.join("\n"));
}

/// The first `n` lines of a stream on both servers, compared.
fn same_stream(
    etcd: &Proc,
    cairn: &Proc,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    n: usize,
) {
    let read = |p: &Proc| {
        let mut s = Stream::open(&p.endpoint(), path, headers, body);
        let (status, ct, lines, _) = s.lines(n, Duration::from_secs(3));
        comparable(status, &ct, &lines)
    };
    assert_eq!(read(etcd), read(cairn), "{path} {body}");
}

#[test]
fn watch_and_keep_alive_stream_as_etcd() {
    let (_dir, etcd, cairn) = servers();
    let (foo, bar, baz) = (b64("foo"), b64("bar"), b64("baz"));
    // A watch from now: created, then each change as it happens.
    let mut streams: Vec<Stream> = [&etcd, &cairn]
        .iter()
        .map(|p| {
            Stream::open(
                &p.endpoint(),
                "/v3/watch",
                &[],
                &format!(r#"{{"create_request":{{"key":"{foo}","prev_kv":true}}}}"#),
            )
        })
        .collect();
    let created: Vec<String> = streams
        .iter_mut()
        .map(|s| {
            let (st, ct, lines, _) = s.lines(1, Duration::from_secs(5));
            comparable(st, &ct, &lines)
        })
        .collect();
    assert_eq!(created[0], created[1], "watch created");
    assert!(created[0].contains("\"created\":true"), "{}", created[0]);
    let changes = vec![
        post(
            "/v3/kv/put",
            &format!(r#"{{"key":"{foo}","value":"{bar}"}}"#),
        ),
        post(
            "/v3/kv/put",
            &format!(r#"{{"key":"{foo}","value":"{baz}"}}"#),
        ),
        post("/v3/kv/deleterange", &format!(r#"{{"key":"{foo}"}}"#)),
    ];
    assert_same(&etcd, &cairn, &changes);
    let events: Vec<String> = streams
        .iter_mut()
        .map(|s| {
            let (st, ct, lines, _) = s.lines(4, Duration::from_secs(5));
            comparable(st, &ct, &lines)
        })
        .collect();
    assert_eq!(events[0], events[1], "watch events");
    assert!(events[0].contains("DELETE"), "{}", events[0]);

    // History from a revision, two requests in one body, a progress request.
    same_stream(
        &etcd,
        &cairn,
        "/v3/watch",
        &[],
        &format!(r#"{{"create_request":{{"key":"{foo}","start_revision":"1"}}}}"#),
        2,
    );
    same_stream(
        &etcd,
        &cairn,
        "/v3/watch",
        &[],
        &format!(r#"{{"create_request":{{"key":"{foo}"}}}} {{"progress_request":{{}}}}"#),
        2,
    );
    // camelCase, a range, filters.
    same_stream(
        &etcd,
        &cairn,
        "/v3/watch",
        &[],
        &format!(
            r#"{{"createRequest":{{"key":"AA==","rangeEnd":"AA==","startRevision":2,"filters":["NODELETE"]}}}}"#
        ),
        2,
    );
    // A first request that is not JSON; a bad one after a good one.
    same_stream(&etcd, &cairn, "/v3/watch", &[], "{bad", 1);
    same_stream(
        &etcd,
        &cairn,
        "/v3/watch",
        &[],
        &format!(r#"{{"create_request":{{"key":"{foo}"}}}}{{bad"#),
        1,
    );

    // Keep-alives: one answer per request, then the stream ends.
    assert_same(
        &etcd,
        &cairn,
        &[post("/v3/lease/grant", r#"{"TTL":"60","ID":"42"}"#)],
    );
    same_stream(
        &etcd,
        &cairn,
        "/v3/lease/keepalive",
        &[],
        r#"{"ID":"42"}"#,
        1,
    );
    same_stream(
        &etcd,
        &cairn,
        "/v3/lease/keepalive",
        &[],
        r#"{"ID":"42"} {"ID":"43"} {"ID":42}"#,
        3,
    );
    same_stream(&etcd, &cairn, "/v3/lease/keepalive", &[], "{bad", 1);
    same_stream(&etcd, &cairn, "/v3/lease/keepalive", &[], "", 1);
}

#[test]
fn server_streams_answer_as_etcd() {
    let (_dir, etcd, cairn) = servers();
    let name = b64("e");
    assert_same(
        &etcd,
        &cairn,
        &[
            post("/v3/lease/grant", r#"{"TTL":"60","ID":"8"}"#),
            post(
                "/v3/election/campaign",
                &format!(r#"{{"name":"{name}","lease":"8","value":"{}"}}"#, b64("v1")),
            ),
        ],
    );
    same_stream(
        &etcd,
        &cairn,
        "/v3/election/observe",
        &[],
        &format!(r#"{{"name":"{name}"}}"#),
        1,
    );
    // A snapshot: its bytes differ (and etcd 3.4 sends no header, cairn as
    // 3.5 does), so the status, the content type and the blobs.
    let snapshot = |p: &Proc| {
        let mut s = Stream::open(&p.endpoint(), "/v3/maintenance/snapshot", &[], "{}");
        let (status, ct, lines, ended) = s.lines(usize::MAX, Duration::from_secs(10));
        let blobs = lines.iter().all(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["result"]["blob"].is_string())
        });
        (status, ct, ended, !lines.is_empty() && blobs)
    };
    assert_eq!(snapshot(&etcd), snapshot(&cairn), "snapshot");
}

#[test]
fn streams_refuse_callers_as_etcd() {
    let (_dir, etcd, cairn) = servers();
    let setup = vec![
        post("/v3/auth/user/add", r#"{"name":"root","password":"pw"}"#),
        post("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        post("/v3/auth/user/add", r#"{"name":"al","password":"pw"}"#),
        post("/v3/lease/grant", r#"{"TTL":"60","ID":"9"}"#),
        post("/v3/auth/enable", "{}"),
    ];
    assert_same(&etcd, &cairn, &setup);
    for p in [&etcd, &cairn] {
        let a = send(
            &p.endpoint(),
            "POST",
            "/v3/auth/authenticate",
            &[],
            r#"{"name":"al","password":"pw"}"#,
        );
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let token = |p: &Proc| {
        let a = send(
            &p.endpoint(),
            "POST",
            "/v3/auth/authenticate",
            &[],
            r#"{"name":"al","password":"pw"}"#,
        );
        let v: Value = serde_json::from_str(&a.body).expect("json");
        v["token"].as_str().expect("token").to_owned()
    };
    let (te, tc) = (token(&etcd), token(&cairn));
    // A keep-alive with a token made a moment ago is sometimes refused by
    // cairn as `invalid auth token` (its lease renewal, not the gateway:
    // see the report of issue 20); a pause lets the login settle.
    std::thread::sleep(Duration::from_millis(1500));
    let both = |path: &str, body: &str, n: usize| {
        let read = |p: &Proc, t: &str| {
            let mut s = Stream::open(&p.endpoint(), path, &[("Authorization", t)], body);
            let (status, ct, lines, _) = s.lines(n, Duration::from_secs(3));
            comparable(status, &ct, &lines)
        };
        assert_eq!(read(&etcd, &te), read(&cairn, &tc), "{path} {body}");
    };
    both("/v3/watch", r#"{"create_request":{"key":"Zm9v"}}"#, 1);
    both("/v3/maintenance/snapshot", "{}", 1);
    both("/v3/lease/keepalive", r#"{"ID":"9"}"#, 1);
    same_stream(
        &etcd,
        &cairn,
        "/v3/watch",
        &[("Authorization", "garbage")],
        r#"{"create_request":{"key":"Zm9v"}}"#,
        1,
    );
    // etcd 3.4 renews a lease whatever the token (it checks none on
    // keep-alives); cairn checks it as later etcd does, so a bad token is
    // refused — in the gateway's stream-error shape, with etcd's words.
    let mut s = Stream::open(
        &cairn.endpoint(),
        "/v3/lease/keepalive",
        &[("Authorization", "garbage")],
        r#"{"ID":"9"}"#,
    );
    let (status, ct, lines, _) = s.lines(1, Duration::from_secs(3));
    assert_eq!(
        (status, ct.as_str(), lines.concat().as_str()),
        (
            401,
            "application/json",
            r#"{"error":{"grpc_code":16,"http_code":401,"message":"etcdserver: invalid auth token","http_status":"Unauthorized"}}"#
        )
    );
}

#[test]
fn a_connection_carries_many_requests() {
    let (_dir, _etcd, cairn) = servers();
    let addr: SocketAddr = cairn.endpoint().parse().expect("addr");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let ep = cairn.endpoint();
    for i in 0..3 {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(&format!("k{i}")),
            b64("v")
        );
        s.write_all(request(&ep, "POST", "/v3/kv/put", &[], &body, false).as_bytes())
            .expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let k = s.read(&mut buf).expect("read");
            assert!(k > 0, "connection closed after {i} answers");
            raw.extend_from_slice(&buf[..k]);
            if let Some((status, _, false, body)) = parse(&raw) {
                if body.ends_with(b"}") {
                    assert_eq!(status, 200);
                    break;
                }
            }
        }
    }
    s.write_all(request(&ep, "GET", "/health", &[], "", true).as_bytes())
        .expect("write");
    let mut rest = String::new();
    s.read_to_string(&mut rest).expect("read");
    assert!(rest.contains("{\"health\":\"true\""), "{rest}");
}

/// `curl -sk` (TLS without verification: auto-TLS certificates) of a
/// gateway route: (status, content type, body lines), `-m` seconds at most.
fn curl_tls(url: &str, body: &str, max_secs: &str) -> (u16, String, Vec<String>) {
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "-N",
            "-m",
            max_secs,
            "-w",
            "\n%{http_code} %{content_type}",
            "-d",
            body,
            url,
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, ct) = tail.split_once(' ').unwrap_or((tail, ""));
    let lines = body.split_inclusive('\n').map(str::to_owned).collect();
    (status.parse().unwrap_or(0), ct.to_owned(), lines)
}

/// etcd or cairn with `--auto-tls` on an https:// client URL; its base URL.
fn start_tls(program: &str, dir: &std::path::Path) -> (Proc, String) {
    let (cp, pp) = (common::free_port(), common::free_port());
    let client_url = format!("https://127.0.0.1:{cp}");
    let peer_url = format!("http://127.0.0.1:{pp}");
    let log = dir.join("tls.log");
    let child = std::process::Command::new(program)
        .args([
            "--name=t1".to_owned(),
            format!("--data-dir={}", dir.join("t1.data").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=t1={peer_url}"),
            "--auto-tls".to_owned(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let p = Proc {
        child,
        client_url: client_url.clone(),
        peer_url,
        name: "t1".into(),
        data_dir: dir.join("t1.data"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // Up, with a leader: a linearizable read answers.
    while curl_tls(
        &format!("{client_url}/v3/kv/range"),
        r#"{"key":"AA=="}"#,
        "2",
    )
    .0 != 200
    {
        assert!(
            Instant::now() < deadline,
            "{program} not up over TLS: {}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (p, client_url)
}

#[test]
fn the_gateway_answers_over_tls_as_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (e, c) = (dir.path().join("e"), dir.path().join("c"));
    std::fs::create_dir_all(&e).expect("dir");
    std::fs::create_dir_all(&c).expect("dir");
    let (_etcd, eu) = start_tls(&common::etcd_bin(), &e);
    let (_cairn, cu) = start_tls(common::cairn_bin(), &c);
    let (foo, bar) = (b64("foo"), b64("bar"));
    let calls = [
        (
            "/v3/kv/put",
            format!(r#"{{"key":"{foo}","value":"{bar}"}}"#),
            "5",
            1,
        ),
        ("/v3/kv/range", format!(r#"{{"key":"{foo}"}}"#), "5", 1),
        ("/v3/kv/range", "{bad".to_owned(), "5", 1),
        (
            "/v3/lease/grant",
            r#"{"TTL":"60","ID":"3"}"#.to_owned(),
            "5",
            1,
        ),
        ("/v3/lease/keepalive", r#"{"ID":"3"}"#.to_owned(), "5", 1),
        (
            "/v3/watch",
            format!(r#"{{"create_request":{{"key":"{foo}","start_revision":"1"}}}}"#),
            "2",
            2,
        ),
    ];
    for (path, body, secs, _) in &calls {
        let read = |base: &str| {
            let (status, ct, lines) = curl_tls(&format!("{base}{path}"), body, secs);
            comparable(status, &ct, &lines)
        };
        let (x, y) = (read(&eu), read(&cu));
        assert_eq!(x, y, "{path} {body}");
        assert!(!x.starts_with("0 "), "no answer over TLS: {x}");
    }
}

#[test]
fn the_metrics_port_serves_no_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mp = common::free_port();
    let p = common::spawn_cairn(
        "m1",
        dir.path(),
        common::free_port(),
        common::free_port(),
        &[format!("--listen-metrics-urls=http://127.0.0.1:{mp}")],
    );
    common::wait_healthy(&p);
    let metrics = format!("127.0.0.1:{mp}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::http_get(&metrics, "/health").is_none() {
        assert!(Instant::now() < deadline, "no metrics port");
        std::thread::sleep(Duration::from_millis(100));
    }
    let on_client = send(
        &p.endpoint(),
        "POST",
        "/v3/kv/range",
        &[],
        r#"{"key":"Zm9v"}"#,
    );
    assert_eq!(on_client.status, 200, "{}", on_client.body);
    let on_metrics = send(&metrics, "POST", "/v3/kv/range", &[], r#"{"key":"Zm9v"}"#);
    assert_eq!(
        (on_metrics.status, on_metrics.body.as_str()),
        (404, "404 page not found\n")
    );
    assert_eq!(
        common::http_get(&metrics, "/metrics").map(|(s, _)| s),
        Some(200)
    );
}
