//! The simulation suite's entry point (a `harness = false` test): runs the
//! CI seed range of every scenario, one process per seed, and prints a replay
//! command for each failure. See `cairn_sim_tests::sim::runner` for the
//! environment variables, and `docs/simulation.md`.
//!
//!   RUSTFLAGS="--cfg madsim" CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_TARGET_DIR=target/sim cargo test -p cairn-sim-tests --test sim

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    cairn_sim_tests::sim::runner::main()
}

#[cfg(not(madsim))]
fn main() {
    println!("the simulation suite runs only in the madsim world: RUSTFLAGS=\"--cfg madsim\" CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_TARGET_DIR=target/sim cargo test -p cairn-sim-tests --test sim");
}
