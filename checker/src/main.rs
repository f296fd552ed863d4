//! `cairn-check <check> <history.jsonl> [--max-steps N]`: checks a JSON-lines
//! history (the format is in this crate's README.md) and prints one verdict
//! per check. `<check>` is one of `linearizable`, `serializable`,
//! `durability`, `watch`, `fencing`, or `all`.
//!
//! Exit status: 0 every check passed or was skipped, 1 a violation, 2 a
//! usage error or a malformed history, 3 inconclusive (and nothing worse).
//!
//! Tests: `tests/cli.rs`.

use std::process::ExitCode;

use cairn_check::checks::{self, Status, CHECKS};
use cairn_check::jsonl::History;
use cairn_check::CheckOptions;

fn usage() -> ExitCode {
    eprintln!(
        "usage: cairn-check <{}|all> <history.jsonl> [--max-steps N]",
        CHECKS.join("|")
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = CheckOptions::default();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--max-steps" {
            match it.next().and_then(|n| n.parse().ok()) {
                Some(n) => options.max_steps = n,
                None => return usage(),
            }
        } else if a == "-h" || a == "--help" {
            return usage();
        } else {
            positional.push(a.as_str());
        }
    }
    let [check, path] = positional[..] else {
        return usage();
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cairn-check: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let history = match History::parse(&text) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cairn-check: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let verdicts = if check == "all" {
        checks::run_all(&history, &options)
    } else {
        match checks::run(check, &history, &options) {
            Some(v) => vec![v],
            None => return usage(),
        }
    };
    for v in &verdicts {
        println!("{v}");
    }
    let worst = |s: Status| verdicts.iter().any(|v| v.status == s);
    if worst(Status::Malformed) {
        ExitCode::from(2)
    } else if worst(Status::Violation) {
        ExitCode::from(1)
    } else if worst(Status::Inconclusive) {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
