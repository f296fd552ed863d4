//! cairn-check: history checkers for etcd-compatible stores, used by the
//! simulation suite (sim-tests) and by the jepsen harness (jepsen/).
//!
//! - `history`: what a client observed (`Operation`: request, call/return
//!   times, outcome `Ok` / `Failed` / `Unknown`).
//! - `model`: a sequential model of etcd's KV API (revisions, compaction,
//!   per-key value / create / mod revision / version, Range at a revision, Txn).
//! - `linearizability`: a Wing & Gong / Lowe style search over a history,
//!   memoised on (linearized set, model state), bounded by a step budget.
//! - `committed`: the final committed history read back from the cluster.
//! - `serializable`: serializable (possibly stale) reads return exactly the
//!   state at the revision they report.
//! - `durability`: every acknowledged write survives, no invented values.
//! - `fencing`: lock holders' fenced writes never interleave (lock workload).
//! - `lease`: leases never expire early, stay gone, TimeToLive agrees.
//! - `watch`: every watch stream delivered exactly the committed changes,
//!   in order, without gaps.
//! - `jsonl`: the JSON-lines history format (README.md) and its reader;
//!   the `cairn-check` binary checks such files.
//! - `minimize`: the smallest set of operations still showing a
//!   linearizability violation (delta debugging over the checker).
//! - `report`: the HTML report of a checked history and its faults, written
//!   by the jepsen harness and by the simulation suite alike.
//!
//! - `auth` (feature `auth`): a model of etcd's auth rules over cairn's
//!   protobuf requests.
//!
//! Tests: each module's unit tests, and `sim-tests/tests/checker_histories.rs`.

#[cfg(feature = "auth")]
pub mod auth;
mod canonical;
pub mod checks;
pub mod committed;
pub mod durability;
pub mod fencing;
pub mod history;
pub mod jsonl;
pub mod lease;
pub mod linearizability;
pub mod minimize;
pub mod model;
pub mod report;
pub mod serializable;
pub mod watch;

pub use committed::{CommittedChange, CommittedHistory, HistoryError};
pub use durability::{
    acknowledged_writes, check_durability, possibly_written_values, AckedWrite, DurabilityViolation,
};
pub use history::{
    Compare, CompareOp, CompareTarget, EtcdError, KeyValue, Operation, Outcome, Request, Response,
    Revision, Txn, TxnOp, TxnOpResult,
};
pub use linearizability::{check_linearizable, check_linearizable_with, CheckOptions, CheckResult};
pub use model::{matches, EtcdState};
pub use serializable::{check_serializable_reads, ReadViolation};
