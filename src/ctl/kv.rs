//! `get`, `put`, `del`, `txn` and `compaction`, with etcdctl 3.4's flags,
//! checks, messages, exit codes and output in every format.

use std::io::{BufRead, Read};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse,
};
use prost::Message;

use super::client::{Client, Global};
use super::flags::{switch, value, Flags, Spec};
use super::output::*;
use super::{out, Failure, EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT};

/// `get`'s flags: etcdctl 3.4.23 (the oracle) has no `--count-only`, so
/// neither does cairnctl (a request for it is an unknown flag there too).
pub const GET_FLAGS: &[Spec] = &[
    value("consistency"),
    value("order"),
    value("sort-by"),
    value("limit"),
    switch("prefix"),
    switch("from-key"),
    value("rev"),
    switch("keys-only"),
    switch("print-value-only"),
];
pub const PUT_FLAGS: &[Spec] = &[
    value("lease"),
    switch("prev-kv"),
    switch("ignore-value"),
    switch("ignore-lease"),
];
pub const DEL_FLAGS: &[Spec] = &[switch("prefix"), switch("prev-kv"), switch("from-key")];
pub const TXN_FLAGS: &[Spec] = &[super::flags::short(switch("interactive"), 'i')];
pub const COMPACTION_FLAGS: &[Spec] = &[switch("physical")];

fn bad_args(msg: &str) -> Failure {
    Failure(EXIT_BAD_ARGS, msg.to_owned())
}

/// The end of the range of keys starting with `key` (clientv3's
/// `GetPrefixRangeEnd`).
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            if let Some(l) = end.last_mut() {
                *l = last + 1;
            }
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// `get`'s request from its arguments and flags (etcdctl's `getGetOp`).
pub fn get_op(f: &Flags, args: &[String]) -> Result<RangeRequest, Failure> {
    let Some(first) = args.first() else {
        return Err(bad_args(
            "get command needs one argument as key and an optional argument as range_end",
        ));
    };
    let (prefix, from_key) = (f.bool("prefix")?, f.bool("from-key")?);
    if prefix && from_key {
        return Err(bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let (keys_only, count_only) = (f.bool("keys-only")?, f.bool("count-only")?);
    if keys_only && count_only {
        return Err(bad_args(
            "`--keys-only` and `--count-only` cannot be set at the same time, choose one",
        ));
    }
    let mut r = RangeRequest::default();
    match f.get("consistency").unwrap_or("l") {
        "s" => r.serializable = true,
        "l" => {}
        other => {
            return Err(Failure(
                EXIT_BAD_FEATURE,
                format!("unknown consistency flag {}", go_quote(other)),
            ))
        }
    }
    let mut key = first.as_bytes().to_vec();
    if let Some(end) = args.get(1) {
        if prefix || from_key {
            return Err(bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        r.range_end = end.as_bytes().to_vec();
    }
    r.limit = f.int_or("limit", 0)?;
    let rev = f.int_or("rev", 0)?;
    if rev > 0 {
        r.revision = rev;
    }
    let order_flag = f.str_or("order", "");
    let mut order = match order_flag.to_uppercase().as_str() {
        "ASCEND" => 1,
        "DESCEND" => 2,
        "" => 0,
        _ => {
            return Err(Failure(
                EXIT_BAD_FEATURE,
                format!("bad sort order {order_flag}"),
            ))
        }
    };
    let target_flag = f.str_or("sort-by", "");
    let target = match target_flag.to_uppercase().as_str() {
        "CREATE" => 2,
        "KEY" | "" => 0,
        "MODIFY" => 3,
        "VALUE" => 4,
        "VERSION" => 1,
        _ => {
            return Err(Failure(
                EXIT_BAD_FEATURE,
                format!("bad sort target {target_flag}"),
            ))
        }
    };
    // The server returns keys in ascending order anyway.
    if target == 0 && order == 1 {
        order = 0;
    }
    r.sort_order = order;
    r.sort_target = target;
    if prefix {
        if key.is_empty() {
            key = vec![0];
            r.range_end = vec![0];
        } else {
            r.range_end = prefix_end(&key);
        }
    }
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        r.range_end = vec![0];
    }
    r.key = key;
    r.keys_only = keys_only;
    r.count_only = count_only;
    Ok(r)
}

/// `put`'s request (etcdctl's `getPutOp`); `stdin` gives the value when
/// the line does not.
pub fn put_op(
    f: &Flags,
    args: &[String],
    stdin: &mut dyn FnMut() -> Option<String>,
) -> Result<PutRequest, Failure> {
    const NEEDS: &str = "put command needs 1 argument and input from stdin or 2 arguments";
    let Some(key) = args.first() else {
        return Err(bad_args(NEEDS));
    };
    let ignore_value = f.bool("ignore-value")?;
    if ignore_value && args.len() > 1 {
        return Err(bad_args(
            "put command needs only 1 argument when 'ignore-value' is set",
        ));
    }
    let value = if ignore_value {
        String::new()
    } else {
        match args.get(1) {
            Some(v) => v.clone(),
            None => match stdin() {
                Some(v) if !v.is_empty() => v,
                _ => return Err(bad_args(NEEDS)),
            },
        }
    };
    let lease_flag = f.str_or("lease", "0");
    let lease = parse_hex_i64(&lease_flag).map_err(|e| {
        Failure(
            EXIT_BAD_ARGS,
            format!("bad lease ID ({e}), expecting ID in Hex"),
        )
    })?;
    Ok(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.into_bytes(),
        lease,
        prev_kv: f.bool("prev-kv")?,
        ignore_value,
        ignore_lease: f.bool("ignore-lease")?,
    })
}

/// Go's `strconv.ParseInt(s, 16, 64)`, with its error text.
pub fn parse_hex_i64(s: &str) -> Result<i64, String> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let syntax = || format!("strconv.ParseInt: parsing {}: invalid syntax", go_quote(s));
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(syntax());
    }
    let range = || {
        format!(
            "strconv.ParseInt: parsing {}: value out of range",
            go_quote(s)
        )
    };
    let v = u64::from_str_radix(digits, 16).map_err(|_| range())?;
    if neg {
        if v > 1 << 63 {
            return Err(range());
        }
        Ok((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).map_err(|_| range())
    }
}

/// `del`'s request (etcdctl's `getDelOp`).
pub fn del_op(f: &Flags, args: &[String]) -> Result<DeleteRangeRequest, Failure> {
    if args.is_empty() || args.len() > 2 {
        return Err(bad_args(
            "del command needs one argument as key and an optional argument as range_end",
        ));
    }
    let (prefix, from_key) = (f.bool("prefix")?, f.bool("from-key")?);
    if prefix && from_key {
        return Err(bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        ));
    }
    let mut r = DeleteRangeRequest::default();
    let mut key = args[0].as_bytes().to_vec();
    if let Some(end) = args.get(1) {
        if prefix || from_key {
            return Err(bad_args(
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            ));
        }
        r.range_end = end.as_bytes().to_vec();
    }
    if prefix {
        if key.is_empty() {
            key = vec![0];
            r.range_end = vec![0];
        } else {
            r.range_end = prefix_end(&key);
        }
    }
    r.prev_kv = f.bool("prev-kv")?;
    if from_key {
        if key.is_empty() {
            key = vec![0];
        }
        r.range_end = vec![0];
    }
    r.key = key;
    Ok(r)
}

fn stdin_all() -> Option<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).ok()?;
    Some(s)
}

/// `cairnctl get`.
pub fn get(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let req = get_op(f, args)?;
    let g = g.with_format(f)?;
    let format = g.format;
    let resp = unary(g.clone(), |mut c| async move { c.range(req).await })?;
    if f.bool("count-only")? && format != Format::Fields {
        return Err(bad_args("--count-only is only for `--write-out=fields`"));
    }
    let value_only = f.bool("print-value-only")?;
    if value_only && format != Format::Simple {
        return Err(bad_args(
            "print-value-only is only for `--write-out=simple`",
        ));
    }
    out(&print_get(format, g.hex, value_only, &resp)?)
}

pub fn print_get(
    format: Format,
    hex: bool,
    value_only: bool,
    r: &RangeResponse,
) -> Result<Vec<u8>, Failure> {
    Ok(match format {
        Format::Simple => r
            .kvs
            .iter()
            .flat_map(|kv| kv_simple(hex, value_only, kv))
            .collect(),
        Format::Json => (range_json(r) + "\n").into_bytes(),
        Format::Fields => {
            let mut s = header_fields_text(&r.header);
            for kv in &r.kvs {
                s += &kv_fields_text("", kv);
            }
            s += &format!("\"More\" : {}\n\"Count\" : {}\n", r.more, r.count);
            s.into_bytes()
        }
        Format::Protobuf => r.encode_to_vec(),
        Format::Table => return Err(format.unsupported()),
    })
}

fn range_json(r: &RangeResponse) -> String {
    obj(&[
        ("header", opt_header(&r.header)),
        ("kvs", kvs_json(&r.kvs)),
        ("more", nz_b(r.more)),
        ("count", nz_i(r.count)),
    ])
}

fn put_json(r: &PutResponse) -> String {
    obj(&[
        ("header", opt_header(&r.header)),
        ("prev_kv", r.prev_kv.as_ref().map(kv_json)),
    ])
}

fn del_json(r: &DeleteRangeResponse) -> String {
    obj(&[
        ("header", opt_header(&r.header)),
        ("deleted", nz_i(r.deleted)),
        ("prev_kvs", kvs_json(&r.prev_kvs)),
    ])
}

/// Runs `f` with a client on a runtime of its own: the login first (a
/// refused one is exit 2), then `f`'s calls; an error is exit 1.
pub fn unary<T, F, Fut>(g: Global, f: F) -> Result<T, Failure>
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    super::client::runtime()?.block_on(async move {
        let mut c = Client::new(g);
        c.ensure_login().await?;
        f(c).await.map_err(|e| Failure(EXIT_ERROR, e))
    })
}

/// `cairnctl put`.
pub fn put(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let req = put_op(f, args, &mut stdin_all)?;
    let g = g.with_format(f)?;
    let resp = unary(g.clone(), |mut c| async move {
        c.call(|ctx| {
            let req = ctx.req(req.clone());
            async move {
                KvClient::new(ctx.channel)
                    .put(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    })?;
    out(&print_put(g.format, g.hex, &resp)?)
}

pub fn print_put(format: Format, hex: bool, r: &PutResponse) -> Result<Vec<u8>, Failure> {
    Ok(match format {
        Format::Simple => {
            let mut o = b"OK\n".to_vec();
            if let Some(kv) = &r.prev_kv {
                o.extend(kv_simple(hex, false, kv));
            }
            o
        }
        Format::Json => (put_json(r) + "\n").into_bytes(),
        Format::Fields => {
            let mut s = header_fields_text(&r.header);
            if let Some(kv) = &r.prev_kv {
                s += &kv_fields_text("Prev", kv);
            }
            s.into_bytes()
        }
        Format::Protobuf => r.encode_to_vec(),
        Format::Table => return Err(format.unsupported()),
    })
}

/// `cairnctl del`.
pub fn del(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let req = del_op(f, args)?;
    let g = g.with_format(f)?;
    let resp = unary(g.clone(), |mut c| async move {
        c.call(|ctx| {
            let req = ctx.req(req.clone());
            async move {
                KvClient::new(ctx.channel)
                    .delete_range(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    })?;
    out(&print_del(g.format, g.hex, &resp)?)
}

pub fn print_del(format: Format, hex: bool, r: &DeleteRangeResponse) -> Result<Vec<u8>, Failure> {
    Ok(match format {
        Format::Simple => {
            let mut o = format!("{}\n", r.deleted).into_bytes();
            for kv in &r.prev_kvs {
                o.extend(kv_simple(hex, false, kv));
            }
            o
        }
        Format::Json => (del_json(r) + "\n").into_bytes(),
        Format::Fields => {
            let mut s = header_fields_text(&r.header);
            s += &format!("\"Deleted\" : {}\n", r.deleted);
            for kv in &r.prev_kvs {
                s += &kv_fields_text("Prev", kv);
            }
            s.into_bytes()
        }
        Format::Protobuf => r.encode_to_vec(),
        Format::Table => return Err(format.unsupported()),
    })
}

/// `cairnctl compaction`.
pub fn compaction(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    let [rev] = args else {
        return Err(bad_args("compaction command needs 1 argument"));
    };
    let rev: i64 = rev.parse().map_err(|_| {
        Failure(
            EXIT_ERROR,
            format!(
                "strconv.ParseInt: parsing {}: {}",
                go_quote(rev),
                if rev
                    .trim_start_matches(['-', '+'])
                    .chars()
                    .all(|c| c.is_ascii_digit())
                    && !rev.trim_start_matches(['-', '+']).is_empty()
                {
                    "value out of range"
                } else {
                    "invalid syntax"
                }
            ),
        )
    })?;
    let physical = f.bool("physical")?;
    let g = g.with_format(f)?;
    unary(g, |mut c| async move {
        c.call(|ctx| {
            let req = ctx.req(CompactionRequest {
                revision: rev,
                physical,
            });
            async move {
                KvClient::new(ctx.channel)
                    .compact(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    })?;
    out(format!("compacted revision {rev}\n").as_bytes())
}

// ---- txn ----

/// etcdctl's `argify`: words, "double-quoted" (Go-unquoted) and
/// 'single-quoted' strings of a txn line.
pub fn argify(line: &str) -> Result<Vec<String>, String> {
    let b: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '"' {
            let mut j = i + 1;
            let mut closed = None;
            while j < b.len() {
                match b[j] {
                    '\\' => j += 2,
                    '"' => {
                        closed = Some(j);
                        break;
                    }
                    _ => j += 1,
                }
            }
            if let Some(j) = closed {
                let quoted: String = b[i..=j].iter().collect();
                out.push(Word::Double(quoted));
                i = j + 1;
                continue;
            }
        } else if c == '\'' {
            if let Some(k) = b[i + 1..].iter().position(|&x| x == '\'') {
                let j = i + 1 + k;
                out.push(Word::Single(b[i..=j].iter().collect()));
                i = j + 1;
                continue;
            }
        } else if !c.is_whitespace() {
            let mut j = i;
            while j < b.len() && !b[j].is_whitespace() {
                j += 1;
            }
            out.push(Word::Plain(b[i..j].iter().collect()));
            i = j;
            continue;
        }
        i += 1;
    }
    let n = out.len();
    out.into_iter()
        .map(|w| match w {
            Word::Plain(s) => Ok(s),
            // etcdctl cuts a single-quoted word by the number of words
            // on the line (its own slip), not by the word's length.
            Word::Single(s) => Ok(s
                .get(1..n.saturating_sub(1).max(1))
                .unwrap_or("")
                .to_owned()),
            Word::Double(s) => go_unquote(&s),
        })
        .collect()
}

enum Word {
    Plain(String),
    Single(String),
    Double(String),
}

/// Go's `%q` scan of a double-quoted string literal.
pub fn go_unquote(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or_else(|| "bad quoted string".to_owned())?;
    let mut out: Vec<u8> = Vec::new();
    let mut it = inner.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let e = it.next().ok_or("bad quoted string")?;
        let mut hex = |n: usize| -> Result<u32, String> {
            let h: String = (0..n).filter_map(|_| it.next()).collect();
            if h.len() != n {
                return Err("bad quoted string".into());
            }
            u32::from_str_radix(&h, 16).map_err(|_| "bad quoted string".into())
        };
        match e {
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(11),
            '\\' => out.push(b'\\'),
            '"' => out.push(b'"'),
            '\'' => out.push(b'\''),
            'x' => out.push(hex(2)? as u8),
            'u' | 'U' => {
                let v = hex(if e == 'u' { 4 } else { 8 })?;
                let ch = char::from_u32(v).ok_or("bad quoted string")?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let mut v = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    let d = it
                        .next()
                        .and_then(|c| c.to_digit(8))
                        .ok_or("bad quoted string")?;
                    v = v * 8 + d;
                }
                out.push(v as u8);
            }
            _ => return Err("bad quoted string".into()),
        }
    }
    String::from_utf8(out).map_err(|_| "bad quoted string".into())
}

/// A Go `%q` scan at the start of `s`: the string and what follows.
fn scan_quoted(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('`') {
        let end = rest.find('`')?;
        return Some((rest[..end].to_owned(), &rest[end + 1..]));
    }
    if !s.starts_with('"') {
        return None;
    }
    let b = s.as_bytes();
    let mut j = 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => {
                let v = go_unquote(&s[..=j]).ok()?;
                return Some((v, &s[j + 1..]));
            }
            _ => j += 1,
        }
    }
    None
}

/// One comparison line (`value("k") = "v"`, `mod("k") > "3"`, ...).
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    let Some((target, rest)) = line.split_once('(') else {
        return Err(format!("malformed comparison: {line}"));
    };
    // fmt.Sscanf(rest, "%q) %s %q", &key, &op, &val)
    let (mut key, mut op, mut val) = (String::new(), String::new(), String::new());
    let mut n = 0;
    let mut scan = || -> Option<()> {
        let (k, r) = scan_quoted(rest)?;
        key = k;
        n = 1;
        let r = r.strip_prefix(')')?;
        let r = r.strip_prefix(' ')?.trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        if end == 0 {
            return None;
        }
        op = r[..end].to_owned();
        n = 2;
        let r = &r[end..];
        let r = r.strip_prefix(' ')?;
        let (v, _) = scan_quoted(r)?;
        val = v;
        n = 3;
        Some(())
    };
    let _ = scan();
    if n != 3 {
        return Err(format!(
            "malformed comparison: {line}; got {target}({}) {op} {}",
            go_quote(&key),
            go_quote(&val)
        ));
    }
    let result = match op.as_str() {
        "=" => compare::CompareResult::Equal,
        "!=" => compare::CompareResult::NotEqual,
        "<" => compare::CompareResult::Less,
        ">" => compare::CompareResult::Greater,
        _ => return Err("panic: Unknown result op".into()),
    } as i32;
    let int = || {
        val.parse::<i64>()
            .map_err(|_| format!("invalid txn compare request: {line}"))
    };
    let (t, union) = match target {
        "ver" | "version" => (
            compare::CompareTarget::Version,
            compare::TargetUnion::Version(int()?),
        ),
        "c" | "create" => (
            compare::CompareTarget::Create,
            compare::TargetUnion::CreateRevision(int()?),
        ),
        "m" | "mod" => (
            compare::CompareTarget::Mod,
            compare::TargetUnion::ModRevision(int()?),
        ),
        "val" | "value" => (
            compare::CompareTarget::Value,
            compare::TargetUnion::Value(val.clone().into_bytes()),
        ),
        "lease" => (
            compare::CompareTarget::Lease,
            compare::TargetUnion::Lease(
                parse_hex_i64(&val).map_err(|_| "panic: bad compare value".to_owned())?,
            ),
        ),
        _ => {
            return Err(format!(
                "malformed comparison: {line} (unknown target {target})"
            ))
        }
    };
    Ok(Compare {
        result,
        target: t as i32,
        key: key.into_bytes(),
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// One request line of a txn (`put k v`, `get k --prefix`, `del k`).
pub fn parse_request(line: &str) -> Result<RequestOp, Failure> {
    let args = argify(line).map_err(|e| Failure(EXIT_INVALID_INPUT, e))?;
    if args.len() < 2 {
        return Err(Failure(
            EXIT_INVALID_INPUT,
            format!("invalid txn compare request: {line}"),
        ));
    }
    let invalid = || Failure(EXIT_INVALID_INPUT, format!("invalid txn request: {line}"));
    let cmd = args[0].as_str();
    let pick = |name: &str| !cmd.is_empty() && name.starts_with(cmd);
    let (which, specs): (u8, &[Spec]) = if pick("put") {
        (0, PUT_FLAGS)
    } else if pick("get") {
        (1, GET_FLAGS)
    } else if pick("del") {
        (2, DEL_FLAGS)
    } else {
        return Err(invalid());
    };
    let f = super::flags::parse(&args[1..], &[specs]).map_err(|_| invalid())?;
    let words = f.words.clone();
    let request = match which {
        // etcdctl's txn has read its input into a buffer by then: a put
        // without a value finds nothing left on stdin.
        0 => request_op::Request::RequestPut(put_op(&f, &words, &mut || None)?),
        1 => request_op::Request::RequestRange(get_op(&f, &words)?),
        _ => request_op::Request::RequestDeleteRange(del_op(&f, &words)?),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

/// Reads the lines of one section (up to an empty line); the end of the
/// input before it is etcdctl's `EOF` error.
fn read_section(input: &mut dyn BufRead) -> Result<Vec<String>, Failure> {
    let mut lines = Vec::new();
    loop {
        let mut buf = Vec::new();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| Failure(EXIT_INVALID_INPUT, e.to_string()))?;
        if n == 0 || buf.last() != Some(&b'\n') {
            return Err(Failure(EXIT_INVALID_INPUT, "EOF".into()));
        }
        let line = String::from_utf8_lossy(&buf).trim().to_owned();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

/// `cairnctl txn [-i]`.
pub fn txn(g: Global, f: &Flags, args: &[String]) -> Result<(), Failure> {
    if !args.is_empty() {
        return Err(bad_args("txn command does not accept argument"));
    }
    let interactive = f.bool("interactive")?;
    let g = g.with_format(f)?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let prompt = |s: &str| -> Result<(), Failure> {
        if interactive {
            out(format!("{s}\n").as_bytes())?;
        }
        Ok(())
    };
    prompt("compares:")?;
    let mut compares = Vec::new();
    for line in read_section(&mut input)? {
        compares.push(parse_compare(&line).map_err(|e| Failure(EXIT_INVALID_INPUT, e))?);
    }
    let ops = |input: &mut dyn BufRead| -> Result<Vec<RequestOp>, Failure> {
        read_section(input)?
            .iter()
            .map(|l| parse_request(l))
            .collect()
    };
    prompt("success requests (get, put, del):")?;
    let success = ops(&mut input)?;
    prompt("failure requests (get, put, del):")?;
    let failure = ops(&mut input)?;
    let req = TxnRequest {
        compare: compares,
        success,
        failure,
    };
    let resp = unary(g.clone(), |mut c| async move {
        c.call(|ctx| {
            let req = ctx.req(req.clone());
            async move {
                KvClient::new(ctx.channel)
                    .txn(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    })?;
    out(&print_txn(g.format, g.hex, &resp)?)
}

pub fn print_txn(format: Format, hex: bool, r: &TxnResponse) -> Result<Vec<u8>, Failure> {
    Ok(match format {
        Format::Simple => {
            let mut o: Vec<u8> = if r.succeeded {
                b"SUCCESS\n".to_vec()
            } else {
                b"FAILURE\n".to_vec()
            };
            for resp in &r.responses {
                o.push(b'\n');
                match &resp.response {
                    Some(response_op::Response::ResponseDeleteRange(d)) => {
                        o.extend(print_del(format, hex, d)?)
                    }
                    Some(response_op::Response::ResponsePut(p)) => {
                        o.extend(print_put(format, hex, p)?)
                    }
                    Some(response_op::Response::ResponseRange(g)) => {
                        o.extend(print_get(format, hex, false, g)?)
                    }
                    _ => o.extend(format!("unexpected response {resp:?}\n").into_bytes()),
                }
            }
            o
        }
        Format::Json => (txn_json(r) + "\n").into_bytes(),
        Format::Fields => {
            let mut o = header_fields_text(&r.header).into_bytes();
            o.extend(format!("\"Succeeded\" : {}\n", r.succeeded).into_bytes());
            for resp in &r.responses {
                match &resp.response {
                    Some(response_op::Response::ResponseDeleteRange(d)) => {
                        o.extend(print_del(format, hex, d)?)
                    }
                    Some(response_op::Response::ResponsePut(p)) => {
                        o.extend(print_put(format, hex, p)?)
                    }
                    Some(response_op::Response::ResponseRange(g)) => {
                        o.extend(print_get(format, hex, false, g)?)
                    }
                    other => o.extend(
                        format!("\"Unknown\" : {}\n", go_quote(&format!("{other:?}"))).into_bytes(),
                    ),
                }
            }
            o
        }
        Format::Protobuf => r.encode_to_vec(),
        Format::Table => return Err(format.unsupported()),
    })
}

fn txn_json(r: &TxnResponse) -> String {
    let responses: Vec<String> = r
        .responses
        .iter()
        .map(|op| {
            let inner = match &op.response {
                Some(response_op::Response::ResponseRange(x)) => {
                    Some(obj(&[("ResponseRange", Some(range_json(x)))]))
                }
                Some(response_op::Response::ResponsePut(x)) => {
                    Some(obj(&[("ResponsePut", Some(put_json(x)))]))
                }
                Some(response_op::Response::ResponseDeleteRange(x)) => {
                    Some(obj(&[("ResponseDeleteRange", Some(del_json(x)))]))
                }
                Some(response_op::Response::ResponseTxn(x)) => {
                    Some(obj(&[("ResponseTxn", Some(txn_json(x)))]))
                }
                None => Some("null".to_owned()),
            };
            obj(&[("Response", inner)])
        })
        .collect();
    obj(&[
        ("header", opt_header(&r.header)),
        ("succeeded", nz_b(r.succeeded)),
        ("responses", nz_arr(responses)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_and_hex_leases_are_clientv3s() {
        assert_eq!(prefix_end(b"foo"), b"fop".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
        assert_eq!(parse_hex_i64("ff"), Ok(255));
        assert!(parse_hex_i64("xyz").is_err());
    }

    #[test]
    fn txn_lines_are_read_as_etcdctl_reads_them() {
        assert_eq!(
            argify(r#"put "a b" c"#),
            Ok(vec!["put".to_owned(), "a b".to_owned(), "c".to_owned()])
        );
        let c = match parse_compare(r#"value("k") = "v""#) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.key, b"k".to_vec());
        assert_eq!(
            parse_compare(r#"value(foo) = "bar""#),
            Err(r#"malformed comparison: value(foo) = "bar"; got value("")  """#.to_owned())
        );
        assert_eq!(
            parse_compare(r#"value("foo" = "bar""#),
            Err(r#"malformed comparison: value("foo" = "bar"; got value("foo")  """#.to_owned())
        );
    }
}
