//! The v2 store's rules one by one, as etcd 3.4's v2 store applies them.

use super::*;

const NOW: i64 = 1_700_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;

fn perm() -> Ttl {
    Ttl::default()
}

#[test]
fn set_creates_then_replaces_a_key_with_a_new_created_index() {
    let mut s = Store::new();
    let e = s.set("/message", false, "Hello", perm(), NOW).unwrap();
    assert_eq!(
        e.to_json(),
        "{\"action\":\"set\",\"node\":{\"key\":\"/message\",\"value\":\"Hello\",\"modifiedIndex\":1,\"createdIndex\":1}}\n"
    );
    assert!(e.is_created());
    let e = s.set("message", false, "World", perm(), NOW).unwrap();
    assert_eq!(
        e.to_json(),
        "{\"action\":\"set\",\"node\":{\"key\":\"/message\",\"value\":\"World\",\"modifiedIndex\":2,\"createdIndex\":2},\"prevNode\":{\"key\":\"/message\",\"value\":\"Hello\",\"modifiedIndex\":1,\"createdIndex\":1}}\n"
    );
    assert!(!e.is_created());
    assert_eq!(s.index(), 2);
}

#[test]
fn intermediate_directories_are_created_and_files_block_paths() {
    let mut s = Store::new();
    s.set("/a/b/c", false, "v", perm(), NOW).unwrap();
    let dir = s.get("/a", false, NOW).unwrap();
    assert!(dir.node.dir);
    assert_eq!(dir.node.nodes.len(), 1);
    assert_eq!(dir.node.nodes[0].key, "/a/b");
    assert!(dir.node.nodes[0].nodes.is_empty(), "not recursive");
    let all = s.get("/a", true, NOW).unwrap();
    assert_eq!(all.node.nodes[0].nodes[0].value.as_deref(), Some("v"));
    let err = s.set("/a/b/c/d", false, "x", perm(), NOW).unwrap_err();
    assert_eq!((err.code, err.cause.as_str()), (ECODE_NOT_DIR, "/a/b/c"));
    let err = s.get("/a/x/y", false, NOW).unwrap_err();
    assert_eq!(
        (err.code, err.cause.as_str()),
        (ECODE_KEY_NOT_FOUND, "/a/x")
    );
    assert_eq!(
        err.to_json(),
        "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/a/x\",\"index\":1}\n"
    );
    s.check_invariants().unwrap();
}

#[test]
fn root_is_read_only_and_lists_without_a_key() {
    let mut s = Store::new();
    for r in [
        s.set("/", false, "x", perm(), NOW),
        s.delete("/", true, true, NOW),
        s.update("/", "x", perm(), NOW),
    ] {
        let e = r.unwrap_err();
        assert_eq!(
            (e.code, e.cause.as_str(), e.status()),
            (ECODE_ROOT_RONLY, "/", 400)
        );
    }
    assert_eq!(
        s.get("/", false, NOW).unwrap().to_json(),
        "{\"action\":\"get\",\"node\":{\"dir\":true}}\n"
    );
}

#[test]
fn create_fails_on_an_existing_key_and_post_makes_in_order_keys() {
    let mut s = Store::new();
    s.create("/k", false, "1", false, None, NOW).unwrap();
    let e = s.create("/k", false, "2", false, None, NOW).unwrap_err();
    assert_eq!(
        (e.code, e.status(), e.message()),
        (105, 412, "Key already exists")
    );
    let a = s.create("/queue", false, "job1", true, None, NOW).unwrap();
    let b = s.create("/queue", false, "job2", true, None, NOW).unwrap();
    assert_eq!(a.node.key, "/queue/00000000000000000002");
    assert_eq!(b.node.key, "/queue/00000000000000000003");
    assert_eq!(a.action, "create");
}

#[test]
fn compare_and_swap_and_delete_check_value_and_index_with_etcds_causes() {
    let mut s = Store::new();
    s.set("/foo", false, "one", perm(), NOW).unwrap();
    let e = s
        .compare_and_swap("/foo", "two", 0, "three", perm(), NOW)
        .unwrap_err();
    assert_eq!((e.code, e.cause.as_str()), (101, "[two != one]"));
    let e = s
        .compare_and_swap("/foo", "", 7, "three", perm(), NOW)
        .unwrap_err();
    assert_eq!(e.cause, "[7 != 1]");
    let e = s
        .compare_and_swap("/foo", "x", 7, "three", perm(), NOW)
        .unwrap_err();
    assert_eq!(e.cause, "[x != one] [7 != 1]");
    let ok = s
        .compare_and_swap("/foo", "one", 1, "two", perm(), NOW)
        .unwrap();
    assert_eq!(ok.action, "compareAndSwap");
    assert_eq!((ok.node.modified_index, ok.node.created_index), (2, 1));
    let e = s.compare_and_delete("/foo", "one", 0, NOW).unwrap_err();
    assert_eq!(e.cause, "[one != two]");
    let ok = s.compare_and_delete("/foo", "two", 2, NOW).unwrap();
    assert_eq!(ok.action, "compareAndDelete");
    assert_eq!(ok.prev_node.unwrap().value.as_deref(), Some("two"));
    s.set("/d/x", false, "1", perm(), NOW).unwrap();
    let e = s
        .compare_and_swap("/d", "1", 0, "2", perm(), NOW)
        .unwrap_err();
    assert_eq!((e.code, e.cause.as_str()), (ECODE_NOT_FILE, "/d"));
}

#[test]
fn deleting_directories_needs_dir_and_recursive_when_not_empty() {
    let mut s = Store::new();
    s.set("/dir", true, "", perm(), NOW).unwrap();
    s.set("/dir/k", false, "v", perm(), NOW).unwrap();
    let e = s.delete("/dir", false, false, NOW).unwrap_err();
    assert_eq!((e.code, e.status()), (ECODE_NOT_FILE, 403));
    let e = s.delete("/dir", true, false, NOW).unwrap_err();
    assert_eq!((e.code, e.status()), (ECODE_DIR_NOT_EMPTY, 403));
    let e = s.delete("/dir", false, true, NOW).unwrap();
    assert!(e.node.dir);
    assert_eq!(e.removed, vec!["/dir/k".to_owned(), "/dir".to_owned()]);
    assert!(s.get("/dir/k", false, NOW).is_err());
    s.check_invariants().unwrap();
}

#[test]
fn ttls_count_down_in_whole_seconds_and_expire_whole_subtrees() {
    let mut s = Store::new();
    let ttl = Ttl {
        expire: Some(NOW + 5 * SEC),
        refresh: false,
    };
    let e = s.set("/tmp", true, "", ttl, NOW).unwrap();
    assert_eq!(e.node.ttl, 5);
    s.set("/tmp/a", false, "1", perm(), NOW).unwrap();
    assert_eq!(s.get("/tmp", false, NOW + SEC / 2).unwrap().node.ttl, 5);
    assert_eq!(s.get("/tmp", false, NOW + SEC).unwrap().node.ttl, 4);
    assert!(s.delete_expired(NOW + 4 * SEC, NOW).is_empty());
    let expired = s.delete_expired(NOW + 5 * SEC, NOW);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].action, "expire");
    assert!(expired[0].node.dir);
    assert_eq!(s.next_expiry(), None);
    assert!(s.get("/tmp/a", false, NOW).is_err());
    // An expiry before 2000 is no expiry.
    let e = s
        .set(
            "/p",
            false,
            "v",
            Ttl {
                expire: Some(5),
                refresh: false,
            },
            NOW,
        )
        .unwrap();
    assert_eq!((e.node.ttl, e.node.expiration), (0, None));
    s.check_invariants().unwrap();
}

#[test]
fn refresh_keeps_the_value_and_is_hidden_from_watchers() {
    let mut s = Store::new();
    s.set(
        "/k",
        false,
        "v",
        Ttl {
            expire: Some(NOW + SEC),
            refresh: false,
        },
        NOW,
    )
    .unwrap();
    let e = s
        .set(
            "/k",
            false,
            "",
            Ttl {
                expire: Some(NOW + 9 * SEC),
                refresh: true,
            },
            NOW,
        )
        .unwrap();
    assert!(e.refresh);
    assert_eq!(e.node.value.as_deref(), Some("v"));
    assert_eq!(e.node.ttl, 9);
    assert!(!e.concerns("/k", false));
    assert_eq!(s.watch_scan("/k", false, 2).unwrap(), None);
}

#[test]
fn watches_find_history_recursive_changes_and_deleted_parents_but_not_hidden_keys() {
    let mut s = Store::new();
    s.set("/foo/bar", false, "1", perm(), NOW).unwrap(); // 1 (dir /foo at 1)
    s.set("/foo/_hidden", false, "h", perm(), NOW).unwrap(); // 2
    s.set("/other", false, "o", perm(), NOW).unwrap(); // 3
    assert_eq!(
        s.watch_scan("/foo/bar", false, 1).unwrap().unwrap().index(),
        1
    );
    assert_eq!(s.watch_scan("/foo", false, 1).unwrap(), None);
    assert_eq!(s.watch_scan("/foo", true, 1).unwrap().unwrap().index(), 1);
    assert_eq!(s.watch_scan("/foo", true, 3).unwrap(), None);
    s.delete("/foo", true, true, NOW).unwrap(); // 4
    let e = s.watch_scan("/foo/bar", false, 4).unwrap().unwrap();
    assert_eq!(e.action, "delete");
    assert!(e.concerns("/foo/bar", false));
    let hidden = s.set("/foo/_h2", false, "x", perm(), NOW).unwrap();
    assert!(!hidden.concerns("/foo", true));
    assert!(hidden.concerns("/foo/_h2", false));
    for i in 0..HISTORY_LEN {
        s.set("/x", false, &i.to_string(), perm(), NOW).unwrap();
    }
    let e = s.watch_scan("/x", false, 2).unwrap_err();
    assert_eq!(e.code, ECODE_EVENT_INDEX_CLEARED);
    assert_eq!(e.cause, "the requested history has been cleared [6/2]");
    assert_eq!(e.index, s.index(), "the store index, as etcd");
}

#[test]
fn a_loaded_store_equals_the_one_persisted_and_refuses_older_watches() {
    let mut s = Store::new();
    s.set(
        "/a/b",
        false,
        "1",
        Ttl {
            expire: Some(NOW + SEC),
            refresh: false,
        },
        NOW,
    )
    .unwrap();
    s.set("/c", true, "", perm(), NOW).unwrap();
    s.set("/u", false, "ünïcode <&>", perm(), NOW).unwrap();
    s.delete("/c", true, false, NOW).unwrap();
    let mut records = BTreeMap::new();
    for p in s.take_dirty() {
        if let Some(v) = s.encode_node(&p) {
            records.insert(p.into_bytes(), v);
        }
    }
    let (k, v) = s.index_record();
    records.insert(k.to_vec(), v);
    let loaded = Store::load(records).unwrap();
    loaded.check_invariants().unwrap();
    let a: Vec<_> = s.nodes().map(|(p, n)| (p.clone(), n.clone())).collect();
    let b: Vec<_> = loaded
        .nodes()
        .map(|(p, n)| (p.clone(), n.clone()))
        .collect();
    assert_eq!(a, b);
    assert_eq!(loaded.index(), s.index());
    assert_eq!(loaded.next_expiry(), Some(NOW + SEC));
    assert_eq!(loaded.watch_scan("/a", true, 2).unwrap_err().code, 401);
    assert_eq!(loaded.watch_scan("/a", true, 0).unwrap(), None);
}

#[test]
fn json_is_escaped_and_timed_as_go_writes_it() {
    assert_eq!(
        go_quote("a<b>&\"\\\n\u{1}"),
        "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u0001\""
    );
    assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339_nanos(1_386_158_481_874_888_581),
        "2013-12-04T12:01:21.874888581Z"
    );
    assert_eq!(
        rfc3339_nanos(951_782_400_500_000_000),
        "2000-02-29T00:00:00.5Z"
    );
    assert_eq!(clean("a//b/./c/../"), "/a/b");
    assert_eq!(clean(""), "/");
}
