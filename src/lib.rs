//! cairn: an etcd-compatible, strongly consistent key-value store, built to be
//! proven correct by deterministic simulation. See `docs/architecture.md`.
//!
//! The core modules (`raft`, `mvcc`, …) are sans-IO state machines: they take
//! time, randomness and storage only through `cairn-runtime`'s seams.

pub mod api;
pub mod auth;
pub mod backup;
pub mod config;
pub mod ctl;
pub mod discovery;
pub mod gofmt;
pub mod lease;
pub mod logging;
pub mod mvcc;
pub mod notify;
pub mod process;
pub mod raft;
pub mod server;
pub mod v2store;
pub mod watch;
