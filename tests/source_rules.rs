//! House rules checked on the source text itself (docs/architecture.md,
//! "House rules"):
//!
//! - Every `select!` in code that runs under the simulation is `biased`: an
//!   unbiased select picks its branch with tokio's own random generator,
//!   which is not madsim's seeded one, so a seed no longer replays
//!   (simulation campaign seeds lease3 2120 and lock3 2000 failed madsim's
//!   determinism check that way when the lease forwarder's select was not
//!   biased).
//! - Every repository file named in README.md, docs/ or a source comment
//!   exists.
//! - `cfg(madsim)` appears only in runtime/ and sim-tests/; tests, benches
//!   and examples may only guard themselves with `cfg(not(madsim))`, and
//!   src/ has neither.
//! - The core (src/raft, src/mvcc, src/lease, src/watch, src/auth) uses no OS time,
//!   threads, files, sockets, tokio or unseeded randomness.
//! - No `unwrap()` outside tests.
//! - The bug-injection patches in sim-tests/experiments/ still apply.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dirs` (relative to the root) whose name ends in one of
/// `exts`, sorted.
fn files_under(dirs: &[&str], exts: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| root().join(d)).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                if !path.ends_with("target") {
                    stack.push(path);
                }
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Source files outside test-only files (`tests.rs`, `model_tests.rs`,
/// `golden.rs`, `properties.rs` are compiled only for tests), each cut at its
/// first test module (`#[cfg(test)]`, `#[cfg(all(test, ...))]`: test
/// modules sit at the bottom of a file).
fn non_test_code(dirs: &[&str]) -> Vec<(PathBuf, String)> {
    const TEST_FILES: [&str; 4] = ["tests.rs", "model_tests.rs", "golden.rs", "properties.rs"];
    files_under(dirs, &["rs"])
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !TEST_FILES.contains(&n))
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            let cut = text
                .match_indices("#[cfg(")
                .find(|(at, _)| {
                    let rest = &text[*at..];
                    let attr = rest.lines().next().unwrap_or("");
                    attr.contains("test") && rest[attr.len()..].trim_start().starts_with("mod ")
                })
                .map_or(text.len(), |(at, _)| at);
            (p, text[..cut].to_owned())
        })
        .collect()
}

/// Code lines only: `//` comments (line and doc) removed, string contents
/// kept (a pattern inside a string literal is rare enough to allow-list).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let code = l.split("//").next().unwrap_or("");
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

/// Backticked tokens of `text` that name a repository file: a relative path
/// with a directory part and a file extension, without placeholders.
fn file_references(text: &str) -> Vec<String> {
    const EXTS: [&str; 10] = [
        ".rs", ".md", ".sh", ".toml", ".txt", ".patch", ".proto", ".yml", ".yaml", ".json",
    ];
    let mut out = Vec::new();
    for (i, piece) in text.split('`').enumerate() {
        // Odd pieces are inside backticks.
        if i % 2 == 0 || piece.contains(char::is_whitespace) {
            continue;
        }
        let path = piece.split(['#', ':']).next().unwrap_or(piece);
        let ok_chars = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
        if !ok_chars || !path.contains('/') || !EXTS.iter().any(|e| path.ends_with(e)) {
            continue;
        }
        // Outside the repository or made at run time.
        if ["/", "../", "google/", "target/", "~"]
            .iter()
            .any(|p| path.starts_with(p))
        {
            continue;
        }
        out.push(path.to_owned());
    }
    out
}

/// Where a reference in `file` may be relative to: the repository root, the
/// file's own folder, and the `src` folder of the crate it is in.
fn resolves(reference: &str, file: &Path) -> bool {
    let mut bases = vec![root().to_path_buf()];
    if let Some(dir) = file.parent() {
        bases.push(dir.to_path_buf());
    }
    for anc in file.ancestors() {
        if anc.ends_with("src") {
            bases.push(anc.to_path_buf());
            // The crate's own folder (`sim-tests/tests/sim.rs` as named from sim-tests/src).
            if let Some(krate) = anc.parent() {
                bases.push(krate.to_path_buf());
            }
            break;
        }
    }
    bases.push(root().join("src"));
    bases.iter().any(|b| b.join(reference).exists())
}

/// `file:line: what` for every code line of `code` that `bad` names.
fn offending_lines(
    code: &[(PathBuf, String)],
    bad: impl Fn(&str) -> Option<&'static str>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (f, text) in code {
        for (line, l) in code_lines(text) {
            if let Some(what) = bad(l) {
                out.push(format!("{}:{line}: {what}", f.display()));
            }
        }
    }
    out
}

#[test]
fn every_file_named_in_docs_and_comments_exists() {
    let mut files = files_under(&["docs"], &["md"]);
    files.push(root().join("README.md"));
    files.extend(files_under(
        &[
            "src",
            "runtime",
            "sim-tests",
            "tests",
            "benches",
            "proto/src",
            "examples",
            "scripts",
        ],
        &["rs", "sh"],
    ));
    assert!(files.len() > 40, "found the files: {files:?}");
    let mut missing = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read file");
        let is_md = f.extension().is_some_and(|e| e == "md");
        let prose: String = if is_md {
            text.clone()
        } else {
            // Comments only: what a reader follows.
            text.lines()
                .filter_map(|l| l.split_once("//").map(|(_, c)| c))
                .chain(text.lines().filter(|l| l.trim_start().starts_with('#')))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for r in file_references(&prose) {
            if !resolves(&r, f) {
                missing.push(format!(
                    "{}: `{r}`",
                    f.strip_prefix(root()).unwrap_or(f).display()
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "references to files that do not exist: {missing:#?}"
    );
}

#[test]
fn the_reference_checker_finds_paths_and_skips_placeholders() {
    let text = "see `src/raft/log.rs` and `docs/x.md#top`, not `target/sim/x.rs`, \
                `<target>/sim`, `a b/c.rs`, `google/protobuf/descriptor.proto`, `Vec<u8>`";
    assert_eq!(file_references(text), vec!["src/raft/log.rs", "docs/x.md"]);
    assert!(resolves("src/raft/log.rs", &root().join("README.md")));
    assert!(resolves("raft/log.rs", &root().join("src/server/node.rs")));
    assert!(!resolves(
        "server/watch.rs",
        &root().join("src/watch/mod.rs")
    ));
}

#[test]
fn cfg_madsim_appears_only_in_runtime_and_sim_tests() {
    let mut offenders = Vec::new();
    for f in files_under(&["src", "tests", "benches", "examples", "proto"], &["rs"]) {
        if f.ends_with("tests/source_rules.rs") {
            continue; // names the pattern it looks for
        }
        let text = std::fs::read_to_string(&f).expect("read source");
        let in_src = f.starts_with(root().join("src"));
        let lines: Vec<(usize, &str)> = code_lines(&text).collect();
        for (k, (line, code)) in lines.iter().enumerate() {
            let positive = code.contains("cfg(madsim)");
            let guard = code.contains("cfg(not(madsim))");
            // A binary guarded out of the simulation world still needs a
            // `main` there: `#[cfg(madsim)] fn main() {}` and nothing else.
            let empty_main = !in_src
                && lines
                    .get(k + 1)
                    .is_some_and(|(_, l)| l.trim() == "fn main() {}");
            if (positive && !empty_main) || (in_src && guard) {
                offenders.push(format!("{}:{line}", f.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "cfg(madsim) outside runtime/ and sim-tests/ (DESIGN: never scattered through src/): {offenders:?}"
    );
}

#[test]
fn the_core_uses_no_os_time_threads_files_sockets_or_unseeded_randomness() {
    const FORBIDDEN: [&str; 13] = [
        "std::time::Instant",
        "SystemTime",
        "Instant::now",
        "std::thread",
        "std::fs",
        "std::net",
        "tokio::",
        "thread_rng",
        "rand::rng()",
        "from_entropy",
        "from_os_rng",
        "OsRng",
        "getrandom",
    ];
    let code = non_test_code(&["src/raft", "src/mvcc", "src/lease", "src/watch", "src/auth"]);
    assert!(code.len() > 20, "found the core: {}", code.len());
    let offenders = offending_lines(&code, |l| {
        FORBIDDEN.iter().find(|w| l.contains(*w)).copied()
    });
    assert!(
        offenders.is_empty(),
        "I/O in the sans-IO core: {offenders:?}"
    );
}

#[test]
fn no_unwrap_outside_tests() {
    let code = non_test_code(&[
        "src",
        "runtime/src",
        "sim-tests/src",
        "proto/src",
        "benches/src",
    ]);
    assert!(code.len() > 40, "found the sources: {}", code.len());
    let offenders = offending_lines(&code, |l| l.contains(".unwrap()").then_some("unwrap()"));
    assert!(
        offenders.is_empty(),
        "unwrap() outside tests (say why it cannot fail with expect): {offenders:?}"
    );
}

#[test]
fn every_experiment_patch_still_applies() {
    let patches = files_under(&["sim-tests/experiments"], &["patch"]);
    assert!(!patches.is_empty(), "found the experiments");
    for p in patches {
        let out = Command::new("git")
            .args(["apply", "--check"])
            .arg(&p)
            .current_dir(root())
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "{} no longer applies (regenerate it against the current code): {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
