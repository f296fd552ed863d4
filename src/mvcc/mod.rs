//! MVCC key-value store (in progress).
