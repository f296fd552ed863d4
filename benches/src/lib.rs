//! cairn-benches: `cairn-bench`, a load generator for any etcd v3 endpoint
//! (etcd or cairn) in the manner of etcd's `benchmark` tool, and criterion
//! micro-benchmarks of cairn's cores (`benches/`).
//!
//! - `histogram`: log-linear latency histogram (HdrHistogram-like).
//! - `options`: the command line of `cairn-bench`.
//! - `report`: a run's results as text or JSON.
//! - `load`: the workloads over gRPC (not under madsim: real sockets).
//! - `write_batch`: the server's `BatchedWrites` (`runtime/src/write_batch.rs`,
//!   included by path: the load generator needs no part of the server's
//!   crates), under each client connection.
//!
//! Run the load generator: `target/release/cairn-bench --help`; compare with
//! etcd: `benches/compare.sh --quick`; micro-benchmarks:
//! `cargo bench --workspace --bench <name>` (see `benches/`).
//! Tests: unit tests in each module, `cargo test --workspace --lib -- histogram`.

pub mod histogram;
#[cfg(not(madsim))]
pub mod load;
pub mod options;
pub mod report;
#[cfg(not(madsim))]
#[path = "../../runtime/src/write_batch.rs"]
mod write_batch;
