//! cairn-sim-tests: the simulation suite (DESIGN §7, layer 4).
//!
//! For now this crate holds only the history checkers (`checker`), a pure
//! library with no dependency on cairn, its runtime, tokio or madsim, so it
//! builds and tests the same with and without `--cfg madsim`. The cluster
//! harness, fault scheduler and workloads will convert their client calls into
//! `checker::history::Operation`s and hand them to the checkers.
//!
//! Tests: unit tests in each checker module, whole histories in
//! `tests/checker_histories.rs`.

pub mod checker;
