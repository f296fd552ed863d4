//! The storage's sizing names the server's column families: RocksStorage
//! gives its larger memtables to `LARGE_FAMILIES` by name (the runtime cannot
//! import the server's constants), so a renamed family would silently lose them.
#![cfg(not(madsim))]

#[test]
fn large_families_are_the_mvcc_store_and_the_raft_log() {
    let large = cairn_runtime::rocks_storage::LARGE_FAMILIES;
    assert!(large.contains(&cairn::mvcc::CF_KV), "{large:?}");
    assert!(
        large.contains(&cairn::raft::storage::CF_RAFT_LOG),
        "{large:?}"
    );
    for cf in large {
        assert!(
            cairn::server::apply::all_column_families().contains(cf),
            "{cf} is not a column family the server opens"
        );
    }
}
