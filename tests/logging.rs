//! The real binary's log: JSON lines by default, each an object whose first
//! fields are etcd's (`level`, `ts`, `caller`, `msg`), parsed line by line
//! (issue 23's "logs are JSON by default and parse line by line");
//! `--log-format text` writes plain lines without colour codes into a file.
#![cfg(not(madsim))]

mod common;

use common::*;

#[test]
fn a_members_log_is_json_lines_with_etcds_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = start_cairn(dir.path());
    assert_eq!(ctl_ok(&c.endpoint(), &["put", "k", "v"]).trim(), "OK");
    c.kill9();
    let log = c.log_text();
    let mut lines = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for field in ["level", "ts", "caller", "msg"] {
            assert!(v[field].is_string(), "no {field} in {line}");
        }
        assert!(
            line.starts_with("{\"level\":\""),
            "etcd's field order: {line}"
        );
        lines += 1;
    }
    assert!(lines >= 3, "{log}");
    assert!(log.contains("\"msg\":\"cairn member started\""), "{log}");
}

#[test]
fn the_text_format_has_no_colour_codes_in_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = spawn_cairn(
        "t1",
        dir.path(),
        free_port(),
        free_port(),
        &["--log-format=text".to_owned()],
    );
    wait_healthy(&c);
    c.kill9();
    let log = c.log_text();
    assert!(log.contains("cairn member started"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a file: {log}");
    assert!(!log.starts_with('{'), "{log}");
}

#[test]
fn log_outputs_sends_every_line_to_each_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("member.log");
    let mut c = spawn_cairn(
        "o1",
        dir.path(),
        free_port(),
        free_port(),
        &[format!("--log-outputs={},default", file.display())],
    );
    wait_healthy(&c);
    c.kill9();
    let in_file = std::fs::read_to_string(&file).expect("the file output");
    let on_stderr = c.log_text();
    assert!(
        in_file.contains("\"msg\":\"cairn member started\""),
        "{in_file}"
    );
    assert_eq!(
        in_file.lines().next(),
        on_stderr.lines().next(),
        "the same lines on both"
    );
}
