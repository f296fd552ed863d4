//! etcd's v2 HTTP API on the client port, served with `--enable-v2` (404
//! without, as etcd 3.4): `/v2/keys` (GET, HEAD, PUT, POST, DELETE, with
//! etcd's form parameters, status codes, `X-Etcd-Index`, `X-Raft-Index`,
//! `X-Raft-Term` and `X-Etcd-Cluster-Id` headers and JSON errors),
//! `wait=true` watches (long-polling and `stream=true`), `/v2/members`
//! (list, leader, add, remove, update), `/v2/machines` and `/v2/stats/self`,
//! `/leader` and `/store`. The store itself is `crate::v2store`; the server
//! side (proposing, watching, the expiry sweep) is `crate::server::v2`.
//!
//! Parameters are read as Go's `Request.ParseForm` reads them: the URL's
//! query, plus a form body (`application/x-www-form-urlencoded`) on PUT and
//! POST, whose values come first.
//!
//! Tests: `tests/v2_api.rs` diffs curl-style requests and an
//! `ETCDCTL_API=2 etcdctl` session against etcd 3.4 started with
//! `--enable-v2`.

use cairn_proto::cairnpb::V2Request;
use cairn_proto::etcdserverpb::{MemberAddRequest, MemberRemoveRequest, MemberUpdateRequest};
use cairn_runtime::client_port::{HttpBody, HttpReply, HttpRequest};
use futures::StreamExt as _;

use crate::server::v2::V2Answer;
use crate::server::{Server, ServerError};
use crate::v2store::{self, go_quote, Error};

const JSON: &str = "application/json";
const KEYS: &str = "/v2/keys";

/// The answer to a v2 path; `None`: not a v2 path, or v2 is off.
pub async fn answer(
    server: &Server,
    req: &HttpRequest,
    path: &str,
    query: &str,
) -> Option<HttpReply> {
    if !server.v2_enabled() || !path.starts_with("/v2/") {
        return None;
    }
    if path == KEYS || path.starts_with("/v2/keys/") {
        return Some(keys(server, req, path, query).await);
    }
    if path == "/v2/members" || path.starts_with("/v2/members/") {
        return Some(members(server, req, path).await);
    }
    match path {
        "/v2/machines" => Some(allow(req, &["GET", "HEAD"]).unwrap_or_else(|| machines(server))),
        "/v2/stats/store" => Some(
            allow(req, &["GET"])
                .unwrap_or_else(|| HttpReply::new(200, JSON, server.v2_store_stats())),
        ),
        "/v2/stats/self" => Some(allow(req, &["GET"]).unwrap_or_else(|| self_stats(server))),
        "/v2/stats/leader" => Some(allow(req, &["GET"]).unwrap_or_else(|| leader_stats(server))),
        _ => Some(HttpReply::new(
            404,
            "text/plain; charset=utf-8",
            "404 page not found\n",
        )),
    }
}

/// etcd's `allowMethod`: `405` with an `Allow` header for other methods.
fn allow(req: &HttpRequest, methods: &[&str]) -> Option<HttpReply> {
    if methods.contains(&req.method.as_str()) {
        return None;
    }
    let mut r = HttpReply::new(405, "text/plain; charset=utf-8", "Method Not Allowed\n");
    r.headers.push(("Allow", methods.join(",")));
    Some(r)
}

fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

/// A v2 error reply.
fn error_reply(server: &Server, e: &Error) -> HttpReply {
    let mut r = HttpReply::new(e.status(), JSON, e.to_json());
    r.headers
        .push(("X-Etcd-Cluster-Id", hex_id(server.cluster_id())));
    r.headers.push(("X-Etcd-Index", e.index.to_string()));
    r
}

/// Percent-decoding (`+` as a space in forms, not in paths); `None` for a
/// malformed escape.
fn unescape(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Form values in order (`Err`: Go's ParseForm error text).
fn parse_form(s: &str, into: &mut Vec<(String, String)>) -> Result<(), String> {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = unescape(k, true).ok_or_else(|| format!("invalid URL escape {:?}", k))?;
        let value = unescape(v, true).ok_or_else(|| format!("invalid URL escape {:?}", v))?;
        into.push((key, value));
    }
    Ok(())
}

struct Form(Vec<(String, String)>);

impl Form {
    fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn value(&self, key: &str) -> &str {
        self.first(key).unwrap_or("")
    }

    fn has(&self, key: &str) -> bool {
        self.first(key).is_some()
    }

    /// Go's `strconv.ParseBool` of the first value; absent: false.
    fn bool(&self, key: &str, code: u32, cause: &str) -> Result<bool, Error> {
        match self.first(key) {
            None => Ok(false),
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
            Some(_) => Err(Error::new(code, cause, 0)),
        }
    }

    fn uint(&self, key: &str, cause: &str) -> Result<u64, Error> {
        match self.first(key) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| Error::new(v2store::ECODE_INDEX_NAN, cause, 0)),
        }
    }
}

/// What a keys request asks (etcd's `parseKeyRequest`).
struct KeyRequest {
    path: String,
    wait: bool,
    since: u64,
    recursive: bool,
    quorum: bool,
    stream: bool,
    no_value_on_success: bool,
    write: V2Request,
}

fn parse_key_request(
    server: &Server,
    req: &HttpRequest,
    path: &str,
    query: &str,
) -> Result<KeyRequest, Error> {
    let invalid = |cause: String| Error::new(v2store::ECODE_INVALID_FORM, cause, 0);
    let mut values = Vec::new();
    let form_body = matches!(req.method.as_str(), "PUT" | "POST")
        && req
            .header("content-type")
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| {
                c.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
    if form_body {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        parse_form(&body, &mut values).map_err(invalid)?;
    }
    parse_form(query, &mut values).map_err(invalid)?;
    let f = Form(values);
    let key =
        unescape(&path[KEYS.len()..], false).ok_or_else(|| invalid("invalid URL escape".into()))?;
    let field = v2store::ECODE_INVALID_FIELD;
    let prev_index = f.uint("prevIndex", "invalid value for \"prevIndex\"")?;
    let since = f.uint("waitIndex", "invalid value for \"waitIndex\"")?;
    let recursive = f.bool("recursive", field, "invalid value for \"recursive\"")?;
    let _sorted = f.bool("sorted", field, "invalid value for \"sorted\"")?;
    let wait = f.bool("wait", field, "invalid value for \"wait\"")?;
    let dir = f.bool("dir", field, "invalid value for \"dir\"")?;
    let quorum = f.bool("quorum", field, "invalid value for \"quorum\"")?;
    let stream = f.bool("stream", field, "invalid value for \"stream\"")?;
    if wait && req.method != "GET" {
        return Err(Error::new(
            field,
            "\"wait\" can only be used with GET requests",
            0,
        ));
    }
    let prev_value = f.value("prevValue").to_owned();
    if f.has("prevValue") && prev_value.is_empty() {
        return Err(Error::new(
            v2store::ECODE_PREV_VALUE_REQUIRED,
            "\"prevValue\" cannot be empty",
            0,
        ));
    }
    let no_value_on_success = f.bool(
        "noValueOnSuccess",
        field,
        "invalid value for \"noValueOnSuccess\"",
    )?;
    let ttl = if f.value("ttl").is_empty() {
        None
    } else {
        Some(
            f.uint("ttl", "")
                .map_err(|_| Error::new(v2store::ECODE_TTL_NAN, "invalid value for \"ttl\"", 0))?,
        )
    };
    let prev_exist = if f.has("prevExist") {
        Some(f.bool("prevExist", field, "invalid value for prevExist")?)
    } else {
        None
    };
    let refresh = if f.has("refresh") {
        let r = f.bool("refresh", field, "invalid value for refresh")?;
        if r {
            if f.has("value") && !f.value("value").is_empty() {
                return Err(Error::new(
                    v2store::ECODE_REFRESH_VALUE,
                    "A value was provided on a refresh",
                    0,
                ));
            }
            if ttl.is_none() {
                return Err(Error::new(
                    v2store::ECODE_REFRESH_TTL_REQUIRED,
                    "No TTL value set",
                    0,
                ));
            }
        }
        r
    } else {
        false
    };
    let expiration = ttl.map_or(0, |secs| {
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        server
            .v2_now()
            .saturating_add(secs.saturating_mul(1_000_000_000))
    });
    Ok(KeyRequest {
        path: v2store::clean(&key),
        wait,
        since,
        recursive,
        quorum,
        stream,
        no_value_on_success,
        write: V2Request {
            method: req.method.clone(),
            path: v2store::clean(&key),
            val: f.value("value").to_owned(),
            dir,
            prev_value,
            prev_index,
            prev_exist,
            expiration,
            recursive,
            refresh,
            time: 0,
        },
    })
}

fn event_headers(r: &mut HttpReply, server: &Server, etcd_index: u64, term: u64, index: u64) {
    r.headers
        .push(("X-Etcd-Cluster-Id", hex_id(server.cluster_id())));
    r.headers.push(("X-Etcd-Index", etcd_index.to_string()));
    r.headers.push(("X-Raft-Index", index.to_string()));
    r.headers.push(("X-Raft-Term", term.to_string()));
}

fn event_reply(server: &Server, a: &V2Answer, no_value: bool, head: bool) -> HttpReply {
    let e = &a.event;
    let status = if e.is_created() { 201 } else { 200 };
    let body = if head {
        String::new()
    } else if no_value && matches!(e.action, "set" | "compareAndSwap" | "create" | "update") {
        v2store::event_without_nodes(e)
    } else {
        e.to_json()
    };
    let mut r = HttpReply::new(status, JSON, body);
    event_headers(&mut r, server, e.etcd_index, a.raft_term, a.raft_index);
    r
}

async fn keys(server: &Server, req: &HttpRequest, path: &str, query: &str) -> HttpReply {
    if let Some(r) = allow(req, &["HEAD", "GET", "PUT", "POST", "DELETE"]) {
        return r;
    }
    let kr = match parse_key_request(server, req, path, query) {
        Ok(kr) => kr,
        Err(e) => return error_reply(server, &e),
    };
    let head = req.method == "HEAD";
    match req.method.as_str() {
        "GET" | "HEAD" if kr.wait => watch(server, &kr),
        "GET" | "HEAD" => match server.v2_get(&kr.path, kr.recursive, kr.quorum).await {
            Ok(a) => event_reply(server, &a, false, head),
            Err(e) => error_reply(server, &e),
        },
        _ => match server.v2_write(kr.write).await {
            Ok(a) => event_reply(server, &a, kr.no_value_on_success, false),
            Err(e) => error_reply(server, &e),
        },
    }
}

/// A `wait=true` GET: the headers at once, then the event (or, streaming,
/// every event) as it happens.
fn watch(server: &Server, kr: &KeyRequest) -> HttpReply {
    let w = match server.v2_watch(&kr.path, kr.recursive, kr.stream, kr.since) {
        Ok(w) => w,
        Err(e) => return error_reply(server, &e),
    };
    let stream = kr.stream;
    let events = tokio_stream::wrappers::ReceiverStream::new(w.events)
        .map(|e| e.to_json().into_bytes())
        .take(if stream { usize::MAX } else { 1 });
    let mut r = HttpReply {
        status: 200,
        content_type: JSON,
        headers: Vec::new(),
        body: HttpBody::Stream(events.boxed()),
    };
    event_headers(&mut r, server, w.etcd_index, w.raft_term, w.raft_index);
    r
}

/// etcd's `httptypes.HTTPError` body.
fn http_error(status: u16, message: &str) -> HttpReply {
    HttpReply::new(
        status,
        JSON,
        format!("{{\"message\":{}}}", go_quote(message)),
    )
}

fn member_json(id: u64, name: &str, peer_urls: &[String], client_urls: &[String]) -> String {
    let list = |v: &[String]| v.iter().map(|u| go_quote(u)).collect::<Vec<_>>().join(",");
    format!(
        "{{\"id\":\"{}\",\"name\":{},\"peerURLs\":[{}],\"clientURLs\":[{}]}}",
        hex_id(id),
        go_quote(name),
        list(peer_urls),
        list(client_urls)
    )
}

/// The `peerURLs` of a members request's JSON body.
fn peer_urls_of(req: &HttpRequest) -> Result<Vec<String>, HttpReply> {
    let ctype = req
        .header("content-type")
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if ctype != "application/json" {
        return Err(http_error(
            415,
            &format!("Bad Content-Type {ctype}, accept application/json"),
        ));
    }
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "peerURLs", default)]
        peer_urls: Vec<String>,
    }
    serde_json::from_slice::<Body>(&req.body)
        .map(|b| b.peer_urls)
        .map_err(|e| http_error(400, &e.to_string()))
}

fn member_error(e: &ServerError) -> HttpReply {
    match e {
        ServerError::MemberNotFound => http_error(404, "No such member"),
        ServerError::PeerUrlExists => http_error(409, "membership: peerURL exists"),
        e => http_error(500, &e.to_string()),
    }
}

async fn members(server: &Server, req: &HttpRequest, path: &str) -> HttpReply {
    if let Some(r) = allow(req, &["GET", "POST", "DELETE", "PUT"]) {
        return r;
    }
    let rest = path["/v2/members".len()..].trim_start_matches('/');
    let mut reply = match (req.method.as_str(), rest) {
        ("GET", "") => match server.member_list(false).await {
            Ok(list) => {
                let mut ms = list.members;
                ms.sort_by_key(|m| m.id);
                let items: Vec<String> = ms
                    .iter()
                    .map(|m| member_json(m.id, &m.name, &m.peer_ur_ls, &m.client_ur_ls))
                    .collect();
                HttpReply::new(
                    200,
                    JSON,
                    format!("{{\"members\":[{}]}}\n", items.join(",")),
                )
            }
            Err(e) => member_error(&e),
        },
        ("GET", "leader") => match (server.leader(), server.member_list(false).await) {
            (Some(id), Ok(list)) => match list.members.iter().find(|m| m.id == id) {
                Some(m) => HttpReply::new(
                    200,
                    JSON,
                    format!(
                        "{}\n",
                        member_json(m.id, &m.name, &m.peer_ur_ls, &m.client_ur_ls)
                    ),
                ),
                None => http_error(503, "During election"),
            },
            _ => http_error(503, "During election"),
        },
        ("GET", _) => http_error(404, "Not found"),
        ("POST", "") => match peer_urls_of(req) {
            Ok(urls) => {
                let add = MemberAddRequest {
                    peer_ur_ls: urls.clone(),
                    is_learner: false,
                };
                match server.member_add(add, false).await {
                    Ok(resp) => {
                        let id = resp.member.map_or(0, |m| m.id);
                        HttpReply::new(201, JSON, format!("{}\n", member_json(id, "", &urls, &[])))
                    }
                    Err(e) => member_error(&e),
                }
            }
            Err(r) => r,
        },
        ("DELETE" | "PUT", "") => {
            HttpReply::new(405, "text/plain; charset=utf-8", "Method Not Allowed\n")
        }
        ("DELETE", id) => match u64::from_str_radix(id, 16) {
            Ok(id) => match server
                .member_remove(MemberRemoveRequest { id }, false)
                .await
            {
                Ok(_) => HttpReply::new(204, "", ""),
                Err(e) => member_error(&e),
            },
            Err(_) => http_error(404, &format!("No such member: {id}")),
        },
        ("PUT", id) => match u64::from_str_radix(id, 16) {
            Ok(id) => match peer_urls_of(req) {
                Ok(urls) => match server
                    .member_update(MemberUpdateRequest {
                        id,
                        peer_ur_ls: urls,
                    })
                    .await
                {
                    Ok(_) => HttpReply::new(204, "", ""),
                    Err(e) => member_error(&e),
                },
                Err(r) => r,
            },
            Err(_) => http_error(404, &format!("No such member: {id}")),
        },
        _ => http_error(405, "Method Not Allowed"),
    };
    reply
        .headers
        .push(("X-Etcd-Cluster-Id", hex_id(server.cluster_id())));
    reply
}

/// `/v2/machines`: every member's client URLs, sorted, joined by ", ".
fn machines(server: &Server) -> HttpReply {
    let mut urls: Vec<String> = server
        .member_records()
        .into_iter()
        .flat_map(|m| m.client_urls)
        .collect();
    urls.sort();
    HttpReply::new(200, "text/plain; charset=utf-8", urls.join(", "))
}

fn self_stats(server: &Server) -> HttpReply {
    let me = server.member_id();
    let leader = server.leader().unwrap_or(0);
    let name = server
        .member_records()
        .into_iter()
        .find(|m| m.id == me)
        .map(|m| m.name)
        .unwrap_or_default();
    let state = if leader == me {
        "StateLeader"
    } else {
        "StateFollower"
    };
    let started = server.started_unix_nanos();
    let now = server.v2_now();
    let uptime = std::time::Duration::from_nanos(u64::try_from(now - started).unwrap_or(0));
    let body = format!(
        "{{\"name\":{},\"id\":\"{}\",\"state\":\"{state}\",\"startTime\":{},\
         \"leaderInfo\":{{\"leader\":\"{}\",\"uptime\":\"{:?}\",\"startTime\":{}}},\
         \"recvAppendRequestCnt\":0,\"sendAppendRequestCnt\":0}}",
        go_quote(&name),
        hex_id(me),
        go_quote(&v2store::rfc3339_nanos(started)),
        hex_id(leader),
        uptime,
        go_quote(&v2store::rfc3339_nanos(started)),
    );
    HttpReply::new(200, JSON, body)
}

fn leader_stats(server: &Server) -> HttpReply {
    let me = server.member_id();
    if server.leader() != Some(me) {
        return http_error(403, "not current leader");
    }
    // Round trips of the transport's small calls (heartbeats, empty
    // appends) stand for etcd's per-append latencies; cairn keeps their
    // count and mean, not the last value or the spread, so `current`,
    // `minimum` and `maximum` repeat the mean and `standardDeviation` is 0.
    let latency = server.peer_latency();
    let followers: Vec<String> = server
        .member_records()
        .into_iter()
        .filter(|m| m.id != me)
        .map(|m| {
            let (n, mean, fail) = latency
                .iter()
                .find(|(id, ..)| *id == m.id)
                .map_or((0, 0.0, 0), |(_, n, mean, fail)| (*n, *mean, *fail));
            format!(
                "\"{}\":{{\"latency\":{{\"current\":{mean},\"average\":{mean},\"standardDeviation\":0,\
                 \"minimum\":{mean},\"maximum\":{mean}}},\"counts\":{{\"fail\":{fail},\"success\":{n}}}}}",
                hex_id(m.id)
            )
        })
        .collect();
    HttpReply::new(
        200,
        JSON,
        format!(
            "{{\"leader\":\"{}\",\"followers\":{{{}}}}}",
            hex_id(me),
            followers.join(",")
        ),
    )
}
