//! Session step lists shared by the interop tests: the same steps run
//! with etcdctl 3.4 (`tests/etcdctl_interop.rs`) and with cairnctl
//! (`tests/cairnctl_kv.rs`), against etcd 3.4 and cairn.

pub struct Step {
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

pub fn step(cmd: &str) -> Step {
    Step {
        args: cmd.split_whitespace().map(str::to_owned).collect(),
        stdin: None,
    }
}

pub fn kv_session() -> Vec<Step> {
    let mut s: Vec<Step> = [
        "put foo bar",
        "get foo",
        "get foo --hex",
        "get foo --print-value-only",
        "put foo1 bar1",
        "put foo2 bar2",
        "put foo3 bar3",
        "get foo --prefix",
        "get foo --prefix --keys-only",
        "get foo --prefix --limit=2",
        "get foo --prefix --sort-by=VALUE --order=DESCEND",
        "get foo --prefix --sort-by=MODIFY --order=ASCEND --keys-only",
        "get foo1 --from-key",
        "get foo --prefix --count-only -w json",
        "get foo -w json",
        "get foo --rev=2",
        "get foo --rev=1",
        "get foo --rev=100",
        "put foo baz --prev-kv",
        "get foo -w json",
        "del foo",
        "get foo",
        "del nothing",
        "del foo --prefix --prev-kv",
        "get foo --prefix",
        "put / 0",
        "put /home 1",
        "put /home/root 2",
        "put /home/mysql 2",
        "put /home/etcd 2",
        "put /home/etcd/history 3",
        "get /home/ --keys-only --prefix",
        "get /home --keys-only --prefix",
        "get / --prefix --keys-only --limit=3 --order=DESCEND",
        "compaction 5",
        "get foo --rev=3",
        "compaction 4",
        "get /home --prefix --rev=5",
        "put a",
        "get",
    ]
    .into_iter()
    .map(step)
    .collect();
    s.push(Step {
        args: vec!["txn".into()],
        stdin: Some("value(\"/home\") = \"1\"\n\nput a 1\n\nput b 2\n\n".into()),
    });
    s.push(Step {
        args: vec!["txn".into()],
        stdin: Some("value(\"/home\") = \"nope\"\n\nput a 1\n\nput b 2\nget a\n\n".into()),
    });
    s.push(Step {
        args: vec!["txn".into(), "-w".into(), "json".into()],
        stdin: Some("mod(\"a\") > \"0\"\n\nget a\n\n\n".into()),
    });
    s.push(step("get a b"));
    s
}

/// Bad input: each gets etcd's error, and the server keeps serving.
pub fn bad_input_session() -> Vec<Step> {
    let many_puts: String = (0..129).map(|i| format!("put k{i} v\n")).collect();
    let big_value = "x".repeat(1_600_000);
    vec![
        Step {
            args: vec!["put".into(), "big".into()],
            stdin: Some(big_value),
        },
        Step {
            args: vec!["txn".into()],
            stdin: Some(format!("\n{many_puts}\n\n")),
        },
        Step {
            args: vec!["txn".into()],
            stdin: Some("\nput a 1\nput a 2\n\n\n".into()),
        },
        Step {
            args: vec!["txn".into()],
            stdin: Some("\nput a 1\ndel a\n\n\n".into()),
        },
        step("get z a"),
        step("get --rev=-1 a"),
        step("compaction 1000"),
        step("put ok 1"),
        step("get ok"),
    ]
}
