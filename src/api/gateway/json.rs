//! Reading request bodies as etcd 3.4's gateway reads them: one JSON value
//! after another from the body (a stream's requests are consecutive values;
//! a unary call takes the first and ignores the rest), with Go's
//! `encoding/json` decoder's syntax errors word for word (clients and tests
//! see them: `invalid character 'b' looking for beginning of object key
//! string`, `unexpected EOF`), then each value mapped onto its protobuf
//! message by the serde code pbjson-build generates (`cairn-proto`).
//!
//! What the scanner checks and says follows the states of Go's JSON
//! scanner (a value, then nothing is read past it); the mapping's own
//! errors (a field of the wrong type) are serde's, with etcd's code.
//! Tests: the unit tests below, `tests/gateway.rs` (bad bodies against etcd).

use serde::de::DeserializeOwned;

/// Why a body's next value could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or not the message's JSON: the message to show.
    Invalid(String),
}

impl DecodeError {
    pub fn message(&self) -> &str {
        match self {
            DecodeError::Invalid(m) => m,
        }
    }
}

/// The values of a body, one at a time.
pub struct Values<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Values<'a> {
    pub fn new(body: &'a [u8]) -> Values<'a> {
        Values { body, at: 0 }
    }

    /// The next value decoded as `T`: `None` at the body's end (only
    /// white space left), an error for bad JSON or a value not `T`'s.
    pub fn next_message<T: DeserializeOwned + Default>(
        &mut self,
    ) -> Option<Result<T, DecodeError>> {
        let rest = &self.body[self.at..];
        let start = rest.iter().position(|b| !is_space(*b))?;
        let end = match scan_value(&rest[start..]) {
            Ok(len) => start + len,
            Err(e) => {
                self.at = self.body.len();
                return Some(Err(DecodeError::Invalid(e)));
            }
        };
        self.at += end;
        Some(to_message(&rest[start..end]))
    }
}

/// The message a whole JSON value stands for (after the syntax check).
fn to_message<T: DeserializeOwned + Default>(value: &[u8]) -> Result<T, DecodeError> {
    // As etcd: a message is read from a JSON object; `null` is the empty
    // message; anything else is refused with Go's words.
    let kind = match value.first() {
        Some(b'{') => None,
        Some(b'n') => return Ok(T::default()),
        Some(b'[') => Some("array"),
        Some(b'"') => Some("string"),
        Some(b't' | b'f') => Some("bool"),
        _ => Some("number"),
    };
    if let Some(kind) = kind {
        return Err(DecodeError::Invalid(format!(
            "json: cannot unmarshal {kind} into Go value of type map[string]json.RawMessage"
        )));
    }
    serde_json::from_slice(value).map_err(|e| DecodeError::Invalid(without_position(&e)))
}

/// serde's message without its ` at line L column C`; a bad base64 byte
/// in Go's words.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => &text[..i],
        None => &text,
    };
    // The base64 crate's `Invalid symbol 33, offset 9.`
    if let Some(rest) = text.strip_prefix("Invalid symbol ") {
        if let Some((_, offset)) = rest.split_once(", offset ") {
            return format!(
                "illegal base64 data at input byte {}",
                offset.trim_end_matches('.')
            );
        }
    }
    text.to_owned()
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Go's quoting of the offending byte in a syntax error (`strconv.Quote`
/// of the byte taken as a character, between single quotes).
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_owned(),
        b'"' => "'\"'".to_owned(),
        0x07 => "'\\a'".to_owned(),
        0x08 => "'\\b'".to_owned(),
        0x0c => "'\\f'".to_owned(),
        b'\n' => "'\\n'".to_owned(),
        b'\r' => "'\\r'".to_owned(),
        b'\t' => "'\\t'".to_owned(),
        0x0b => "'\\v'".to_owned(),
        b'\\' => "'\\\\'".to_owned(),
        0x20..=0x7e => format!("'{}'", c as char),
        0x00..=0x1f | 0x7f => format!("'\\x{c:02x}'"),
        // A byte of 0x80 and up is taken as the character of that number:
        // printable from 0xa1 on (except the soft hyphen), escaped below.
        0x80..=0xa0 | 0xad => format!("'\\u{:04x}'", c as u32),
        _ => format!("'{}'", c as char),
    }
}

fn invalid(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", quote_char(c))
}

/// The container a value is in.
#[derive(Clone, Copy)]
enum Frame {
    Object,
    Array,
}

fn skip_space(text: &[u8], mut i: usize) -> usize {
    while i < text.len() && is_space(text[i]) {
        i += 1;
    }
    i
}

/// The length of the JSON value at the start of `text` (which starts with
/// no white space), or Go's error for it. Bytes past the value are not
/// looked at, except the one that ends a number.
fn scan_value(text: &[u8]) -> Result<usize, String> {
    let eof = || "unexpected EOF".to_owned();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    'value: loop {
        i = skip_space(text, i);
        let c = *text.get(i).ok_or_else(eof)?;
        match c {
            b'{' => {
                i = skip_space(text, i + 1);
                match text.get(i) {
                    None => return Err(eof()),
                    Some(b'}') => i += 1,
                    Some(b'"') => {
                        i = expect_colon(text, scan_string(text, i)?)?;
                        stack.push(Frame::Object);
                        continue 'value;
                    }
                    Some(&c) => {
                        return Err(invalid(c, "looking for beginning of object key string"))
                    }
                }
            }
            b'[' => {
                i = skip_space(text, i + 1);
                match text.get(i) {
                    None => return Err(eof()),
                    Some(b']') => i += 1,
                    Some(_) => {
                        stack.push(Frame::Array);
                        continue 'value;
                    }
                }
            }
            b'"' => i = scan_string(text, i)?,
            b'-' | b'0'..=b'9' => i = scan_number(text, i, stack.is_empty())?,
            b't' => i = scan_literal(text, i, b"true")?,
            b'f' => i = scan_literal(text, i, b"false")?,
            b'n' => i = scan_literal(text, i, b"null")?,
            c => return Err(invalid(c, "looking for beginning of value")),
        }
        // A value ended at `i`: what its container expects next.
        while let Some(frame) = stack.last().copied() {
            i = skip_space(text, i);
            let c = *text.get(i).ok_or_else(eof)?;
            match (frame, c) {
                (Frame::Object, b',') => {
                    i = skip_space(text, i + 1);
                    match text.get(i) {
                        None => return Err(eof()),
                        Some(b'"') => {
                            i = expect_colon(text, scan_string(text, i)?)?;
                            continue 'value;
                        }
                        Some(&c) => {
                            return Err(invalid(c, "looking for beginning of object key string"))
                        }
                    }
                }
                (Frame::Object, b'}') | (Frame::Array, b']') => {
                    stack.pop();
                    i += 1;
                }
                (Frame::Object, c) => return Err(invalid(c, "after object key:value pair")),
                (Frame::Array, b',') => {
                    i += 1;
                    continue 'value;
                }
                (Frame::Array, c) => return Err(invalid(c, "after array element")),
            }
        }
        return Ok(i);
    }
}

/// After an object key: white space and `:`; where the value may start.
fn expect_colon(text: &[u8], i: usize) -> Result<usize, String> {
    let i = skip_space(text, i);
    match text.get(i) {
        None => Err("unexpected EOF".to_owned()),
        Some(b':') => Ok(i + 1),
        Some(&c) => Err(invalid(c, "after object key")),
    }
}

/// A string starting at `text[i] == '"'`; the index past its closing quote.
fn scan_string(text: &[u8], mut i: usize) -> Result<usize, String> {
    i += 1;
    loop {
        let c = *text.get(i).ok_or("unexpected EOF")?;
        i += 1;
        match c {
            b'"' => return Ok(i),
            b'\\' => {
                let e = *text.get(i).ok_or("unexpected EOF")?;
                i += 1;
                match e {
                    b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {}
                    b'u' => {
                        for _ in 0..4 {
                            let h = *text.get(i).ok_or("unexpected EOF")?;
                            if !h.is_ascii_hexdigit() {
                                return Err(invalid(h, "in \\u hexadecimal character escape"));
                            }
                            i += 1;
                        }
                    }
                    e => return Err(invalid(e, "in string escape code")),
                }
            }
            c if c < 0x20 => return Err(invalid(c, "in string literal")),
            _ => {}
        }
    }
}

/// A number starting at `i`; the index past it. At the top level the
/// body's end ends a number; inside a container it is an unexpected end.
fn scan_number(text: &[u8], mut i: usize, top: bool) -> Result<usize, String> {
    let at = |i: usize| text.get(i).copied();
    let end = |i: usize| -> Result<usize, String> {
        if i >= text.len() && !top {
            Err("unexpected EOF".to_owned())
        } else {
            Ok(i)
        }
    };
    if at(i) == Some(b'-') {
        i += 1;
        match at(i) {
            None => return Err("unexpected EOF".to_owned()),
            Some(b'0'..=b'9') => {}
            Some(c) => return Err(invalid(c, "in numeric literal")),
        }
    }
    if at(i) == Some(b'0') {
        i += 1;
    } else {
        while matches!(at(i), Some(b'0'..=b'9')) {
            i += 1;
        }
    }
    if at(i) == Some(b'.') {
        i += 1;
        match at(i) {
            None => return Err("unexpected EOF".to_owned()),
            Some(b'0'..=b'9') => {}
            Some(c) => return Err(invalid(c, "after decimal point in numeric literal")),
        }
        while matches!(at(i), Some(b'0'..=b'9')) {
            i += 1;
        }
    }
    if matches!(at(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(at(i), Some(b'+' | b'-')) {
            i += 1;
        }
        match at(i) {
            None => return Err("unexpected EOF".to_owned()),
            Some(b'0'..=b'9') => {}
            Some(c) => return Err(invalid(c, "in exponent of numeric literal")),
        }
        while matches!(at(i), Some(b'0'..=b'9')) {
            i += 1;
        }
    }
    end(i)
}

/// `true`, `false` or `null` starting at `i`; the index past it.
fn scan_literal(text: &[u8], i: usize, word: &[u8]) -> Result<usize, String> {
    let name = String::from_utf8_lossy(word);
    for (k, &want) in word.iter().enumerate().skip(1) {
        match text.get(i + k) {
            None => return Err("unexpected EOF".to_owned()),
            Some(&c) if c == want => {}
            Some(&c) => {
                return Err(invalid(
                    c,
                    &format!("in literal {name} (expecting '{}')", want as char),
                ))
            }
        }
    }
    Ok(i + word.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(body: &str) -> Result<usize, String> {
        let start = body.bytes().position(|b| !is_space(b)).unwrap_or(0);
        scan_value(&body.as_bytes()[start..]).map(|n| n + start)
    }

    #[test]
    fn go_syntax_errors() {
        let cases = [
            (
                "{bad",
                "invalid character 'b' looking for beginning of object key string",
            ),
            (
                "abc",
                "invalid character 'a' looking for beginning of value",
            ),
            ("{\"a\" 1}", "invalid character '1' after object key"),
            (
                "{\"a\":1 \"b\"}",
                "invalid character '\"' after object key:value pair",
            ),
            ("[1 2]", "invalid character '2' after array element"),
            (
                "{\"a\":tru}",
                "invalid character '}' in literal true (expecting 'e')",
            ),
            (
                "{\"a\":nul1}",
                "invalid character '1' in literal null (expecting 'l')",
            ),
            ("{\"a\":-x}", "invalid character 'x' in numeric literal"),
            (
                "{\"a\":1.}",
                "invalid character '}' after decimal point in numeric literal",
            ),
            (
                "{\"a\":1e}",
                "invalid character '}' in exponent of numeric literal",
            ),
            (
                "{\"a\":\"\\q\"}",
                "invalid character 'q' in string escape code",
            ),
            (
                "{\"a\":\"\\u12x4\"}",
                "invalid character 'x' in \\u hexadecimal character escape",
            ),
            (
                "{\"a\":\"\n\"}",
                "invalid character '\\n' in string literal",
            ),
            (
                "{,}",
                "invalid character ',' looking for beginning of object key string",
            ),
            (
                "{\"a\":1,}",
                "invalid character '}' looking for beginning of object key string",
            ),
            (
                "[1,]",
                "invalid character ']' looking for beginning of value",
            ),
            ("{\"a\":", "unexpected EOF"),
            ("{\"a\":1", "unexpected EOF"),
            ("{\"a\":\"x", "unexpected EOF"),
            ("{\"a\":[1", "unexpected EOF"),
            ("{", "unexpected EOF"),
        ];
        for (body, want) in cases {
            assert_eq!(first(body), Err(want.to_owned()), "{body}");
        }
    }

    #[test]
    fn values_end_where_go_stops_reading() {
        assert_eq!(first("{}"), Ok(2));
        assert_eq!(first(" {\"a\":{\"b\":[1,{},[]]}} junk"), Ok(22));
        assert_eq!(first("12 34"), Ok(2));
        assert_eq!(first("12"), Ok(2));
        assert_eq!(first("\"x\"y"), Ok(3));
        assert_eq!(first("null,"), Ok(4));
    }

    #[test]
    fn messages_from_values() {
        use cairn_proto::etcdserverpb::{LeaseGrantRequest, RangeRequest};
        let mut v = Values::new(br#"{"key":"Zm9v","range_end":"AA==","limit":"2"} {"key":"YQ==","rangeEnd":"Yg==","keysOnly":true,"unknown":1}"#);
        let a: RangeRequest = v.next_message().unwrap().unwrap();
        assert_eq!((a.key, a.range_end, a.limit), (b"foo".to_vec(), vec![0], 2));
        let b: RangeRequest = v.next_message().unwrap().unwrap();
        assert_eq!(
            (b.key, b.range_end, b.keys_only),
            (b"a".to_vec(), b"b".to_vec(), true)
        );
        assert!(v.next_message::<RangeRequest>().is_none());
        let g: LeaseGrantRequest = Values::new(br#"{"TTL":60,"ID":"7"}"#)
            .next_message()
            .unwrap()
            .unwrap();
        assert_eq!((g.ttl, g.id), (60, 7));
        assert!(Values::new(b"  \n")
            .next_message::<RangeRequest>()
            .is_none());
        assert_eq!(
            Values::new(b"[]").next_message::<RangeRequest>().unwrap(),
            Err(DecodeError::Invalid(
                "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
                    .to_owned()
            ))
        );
        assert_eq!(
            Values::new(b"null").next_message::<RangeRequest>().unwrap(),
            Ok(RangeRequest::default())
        );
    }
}
