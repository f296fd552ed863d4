//! House rules checked on the source text itself.
//!
//! Every `select!` in code that runs under the simulation is `biased`: an
//! unbiased select picks its branch with tokio's own random generator, which
//! is not madsim's seeded one, so a seed no longer replays (simulation
//! campaign seeds lease3 2120 and lock3 2000 failed madsim's determinism
//! check that way when the lease forwarder's select was not biased).

use std::path::{Path, PathBuf};

/// Source files of the crates that run under madsim, test-only files aside
/// (`tests.rs` modules run on real tokio only).
fn simulated_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = ["src", "runtime/src", "sim-tests/src"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Line numbers of `select!` invocations whose first token is not `biased;`.
fn unbiased_selects(text: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("select! {") {
        let line = text[..at].lines().count();
        let line_text = text[..at].rsplit('\n').next().unwrap_or("");
        if line_text.trim_start().starts_with("//") {
            continue;
        }
        let first_statement = text[at + "select! {".len()..]
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("//"));
        if first_statement != Some("biased;") {
            found.push(line.max(1));
        }
    }
    found
}

#[test]
fn every_select_in_simulated_code_is_biased_so_seeds_replay() {
    let files = simulated_sources();
    assert!(files.len() > 20, "found the sources: {files:?}");
    let mut offenders = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        for line in unbiased_selects(&text) {
            offenders.push(format!("{}:{line}", f.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "select! without `biased;` (tokio's RNG breaks seed replay): {offenders:?}"
    );
}

#[test]
fn the_checker_tells_biased_from_unbiased_selects() {
    let biased = "loop {\n    tokio::select! {\n        biased;\n        _ = a => {}\n    }\n}\n";
    let unbiased = "fn f() {\n    tokio::select! {\n        _ = a => {}\n    }\n}\n";
    let commented = "// tokio::select! { _ = a => {} }\n";
    let explained = "tokio::select! {\n    // why\n\n    biased;\n    _ = a => {}\n}\n";
    assert!(unbiased_selects(biased).is_empty());
    assert_eq!(unbiased_selects(unbiased), vec![2]);
    assert!(unbiased_selects(commented).is_empty());
    assert!(unbiased_selects(explained).is_empty());
}
