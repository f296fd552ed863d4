//! The `cairn-check` binary on history files: exit status and verdicts.

use std::io::Write;
use std::process::Command;

fn run(args: &[&str], history: &str) -> (i32, String) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(history.as_bytes()).expect("write history");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-check"))
        .args(args)
        .arg(file.path())
        .output()
        .expect("cairn-check runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

const LEGAL: &str = r#"{"op":{"client":1,"call":1,"ret":2,"input":{"put":{"key":"x","value":"a"}},"output":{"ok":{"put":{"header_revision":2}}}}}
{"op":{"client":2,"call":3,"ret":4,"input":{"get":{"key":"x"}},"output":{"ok":{"get":{"header_revision":2,"kv":{"value":"a","create_revision":2,"mod_revision":2,"version":1}}}}}}
{"change":{"revision":2,"key":"x","value":"a"}}
{"watch":{"client":3,"prefix":"x","start_revision":1,"events":[{"revision":2,"key":"x","value":"a"}]}}
{"fault":{"kind":"kill","member":1}}
"#;

#[test]
fn a_legal_history_exits_zero_with_every_check_named() {
    let (code, out) = run(&["all"], LEGAL);
    assert_eq!(code, 0, "{out}");
    for line in [
        "linearizable: ok",
        "serializable: ok",
        "durability: ok",
        "watch: ok",
        "fencing: skipped",
    ] {
        assert!(out.contains(line), "{line} in {out}");
    }
}

#[test]
fn a_stale_read_exits_one_and_bad_input_exits_two() {
    let stale = LEGAL.replace(
        r#""output":{"ok":{"get":{"header_revision":2,"kv":{"value":"a","create_revision":2,"mod_revision":2,"version":1}}}}"#,
        r#""output":{"ok":{"get":{"header_revision":2,"kv":null}}}"#,
    );
    assert_ne!(stale, LEGAL);
    let (code, out) = run(&["linearizable"], &stale);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("linearizable: VIOLATION"), "{out}");

    let lost_event = LEGAL.replace(
        r#""events":[{"revision":2,"key":"x","value":"a"}]"#,
        r#""events":[],"progress":2"#,
    );
    let (code, out) = run(&["watch"], &lost_event);
    assert_eq!(code, 1, "{out}");

    let (code, out) = run(&["all"], "{\"op\":{\"client\":1}}\n");
    assert_eq!(code, 2, "{out}");
    let (code, out) = run(&["nonsense"], LEGAL);
    assert_eq!(code, 2, "{out}");
}

#[test]
fn the_lease_check_catches_a_key_outliving_its_revoked_lease() {
    let legal = r#"{"lease_op":{"client":1,"call":0,"ret":10,"input":{"grant":{"ttl":5}},"output":{"ok":{"grant":{"lease":8,"ttl":5}}}}}
{"lease_op":{"client":1,"call":20,"ret":30,"input":{"put":{"key":"l/8/0","value":"v","lease":8}},"output":{"ok":{"put":{"revision":2}}}}}
{"lease_op":{"client":1,"call":40,"ret":50,"input":{"revoke":{"lease":8}},"output":{"ok":{"revoke":{"revision":3}}}}}
{"lease_op":{"client":2,"call":60,"ret":70,"input":{"get":{"key":"l/8/0"}},"output":{"ok":{"get":{"revision":3,"kv":null}}}}}
{"change":{"revision":2,"key":"l/8/0","value":"v"}}
{"change":{"revision":3,"key":"l/8/0","value":null}}
"#;
    let (code, out) = run(&["lease"], legal);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("lease: ok"), "{out}");
    let (code, out) = run(&["all"], legal);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("lease: ok") && out.contains("fencing: skipped"),
        "{out}"
    );

    let outlived = legal.replace(
        r#""kv":null"#,
        r#""kv":{"value":"v","lease":8,"mod_revision":2}"#,
    );
    let (code, out) = run(&["lease"], &outlived);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("lease: VIOLATION") && out.contains("came back"),
        "{out}"
    );
}
