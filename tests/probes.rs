//! `/livez` and `/readyz` on the real binary, as etcd 3.5.11+ defines them:
//! named checks (`serializable_read` for livez; `data_corruption`,
//! `serializable_read`, `linearizable_read`, `non_learner` for readyz),
//! `?verbose`, `?exclude=`, one check per sub-path, 503 with the failed
//! check's reason. A member of a three-member cluster that lost its quorum
//! stays live but is not ready.
#![cfg(not(madsim))]

mod common;

use std::time::Duration;

use common::*;

fn get(p: &Proc, path: &str) -> (u16, String) {
    http_get(&p.endpoint(), path).unwrap_or_else(|| panic!("GET {path}: no answer"))
}

#[test]
fn a_healthy_member_is_live_and_ready_with_etcds_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start_cairn(dir.path());
    assert_eq!(get(&c, "/livez"), (200, "ok\n".into()));
    assert_eq!(get(&c, "/readyz"), (200, "ok\n".into()));
    assert_eq!(
        get(&c, "/readyz?verbose"),
        (
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n\
             [+]non_learner ok\nok\n"
                .into()
        )
    );
    assert_eq!(
        get(
            &c,
            "/readyz?verbose&exclude=linearizable_read&exclude=non_learner&exclude=nosuch"
        ),
        (
            200,
            "[+]data_corruption ok\n[+]serializable_read ok\nok\n".into()
        )
    );
    assert_eq!(
        get(&c, "/livez?verbose"),
        (200, "[+]serializable_read ok\nok\n".into())
    );
    assert_eq!(
        get(&c, "/readyz/linearizable_read?verbose"),
        (200, "[+]linearizable_read ok\nok\n".into())
    );
    assert_eq!(get(&c, "/readyz/nosuch").0, 404);
    assert_eq!(get(&c, "/livez/linearizable_read").0, 404);
}

#[test]
fn a_member_without_quorum_is_live_but_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("p{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let flags = vec![
        format!("--initial-cluster={cluster}"),
        "--heartbeat-interval=50".to_owned(),
        "--election-timeout=500".to_owned(),
    ];
    let mut procs: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| spawn_cairn(&format!("p{i}"), dir.path(), *c, *p, &flags))
        .collect();
    for p in &procs {
        wait_healthy(p);
    }
    assert_eq!(get(&procs[0], "/readyz"), (200, "ok\n".into()));
    procs[1].kill9();
    procs[2].kill9();
    // Live: it still reads its own state. Not ready: no consensus read.
    let (status, body) = poll_until(Duration::from_secs(30), "readyz to fail", || {
        match get(&procs[0], "/readyz") {
            (503, body) => Ok((503, body)),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(status, 503);
    assert!(
        body.starts_with("[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: etcdserver: "),
        "{body}"
    );
    assert!(body.ends_with("[+]non_learner ok\n\n"), "{body}");
    assert_eq!(get(&procs[0], "/livez"), (200, "ok\n".into()));
    // Excluding the failing check makes it ready again, as etcd.
    assert_eq!(
        get(&procs[0], "/readyz?exclude=linearizable_read"),
        (200, "ok\n".into())
    );
    drop(procs);
}
