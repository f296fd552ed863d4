//! cairn-sim-tests: the simulation suite (DESIGN §7, layer 4).
//!
//! - `checker`: the history checkers, a pure library (no cairn, runtime,
//!   tokio or madsim) that builds and tests the same in both worlds;
//! - `sim` (madsim only): the cluster harness, fault scheduler, workloads and
//!   seed runner that feed the checkers;
//! - `swarm`: each seed's mix of faults and member configuration (pure).
//!
//! Tests: unit tests in each checker module, whole histories in
//! `tests/checker_histories.rs`, and the simulation runs in `tests/sim.rs`.

pub mod checker;
#[cfg(madsim)]
pub mod sim;
pub mod swarm;
