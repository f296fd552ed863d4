//! The simulation harness (madsim only): the unmodified cairn server on
//! simulated nodes, faults from a seed, workloads, checks (DESIGN §7).
//!
//! - `cluster`: members on madsim nodes with SimStorage and skewed clocks;
//! - `oracle`: the raft oracle probe and committed-history collector;
//! - `faults`: the fault scheduler and its timeline;
//! - `leases`: the lease workload and its safety checks;
//! - `locks`: the lock workload (fenced writes; `checker::fencing` checks);
//! - `membership`: the `churn` scenario's membership changes;
//! - `workload`: clients, the KV and list-append mixes, the recorder;
//! - `watchers`: watch streams under faults, checked for etcd's guarantees;
//! - `space`: the space operator of the small-quota seeds (NOSPACE alarms);
//! - `backup`: snapshot saves under faults, each image checked against the
//!   oracle's state at its applied index;
//! - `scenario`: one run end to end, and its checks;
//! - `report`: a run's HTML report (history, checks, fault timeline);
//! - `runner`: seeds, one process per seed, replay commands, determinism.
//! Tests: `tests/sim.rs` is the entry point.

pub mod auth;
pub mod backup;
pub mod cluster;
pub mod faults;
pub mod leases;
pub mod locks;
pub mod membership;
pub mod oracle;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod space;
pub mod v2;
pub mod watchers;
pub mod workload;
