//! cairn-benches: criterion micro-benchmarks of cairn's cores (see
//! `benches/`), run with `cargo bench -p cairn-benches`.
