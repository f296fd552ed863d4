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
