//! cairn-sim-tests: the simulation suite (DESIGN §7, layer 4).
//!
//! - `checker`: the history checkers, the crate cairn-check (`checker/`,
//!   no cairn, runtime, tokio or madsim) re-exported under its old name;
//! - `sim` (madsim only): the cluster harness, fault scheduler, workloads and
//!   seed runner that feed the checkers;
//! - `swarm`: each seed's mix of faults and member configuration (pure).
//!
//! Tests: unit tests in each checker module, whole histories in
//! `tests/checker_histories.rs`, and the simulation runs in `tests/sim.rs`.

pub use cairn_check as checker;
#[cfg(madsim)]
pub mod sim;
pub mod swarm;
