//! cairn-benches: `cairn-bench`, a load generator for any etcd v3 endpoint
//! (etcd or cairn) in the manner of etcd's `benchmark` tool, and criterion
//! micro-benchmarks of cairn's cores (`benches/`).
//!
//! - `histogram`: log-linear latency histogram (HdrHistogram-like).
//! - `options`: the command line of `cairn-bench`.
//! - `report`: a run's results as text or JSON.
//! - `load`: the workloads over gRPC (not under madsim: real sockets).
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
