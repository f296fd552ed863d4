//! The HTML report of one simulated run: the jepsen harness's report
//! (`checker::report`) with simulated time as its axis.
//!
//! - the operations: the linearizable history, each logical tick placed at
//!   the simulated time it was taken (`RunReport::tick_ns`);
//! - the faults: the run's timeline (`faults::Timeline`), each fault a span
//!   from when it was injected to what ended it — a partition until the
//!   network is next reset, a kill, a pause or a failed fsync until the
//!   member next comes back (restarted or resumed), a slow disk or a
//!   buggify phase until it is replaced or healed, a clock change until the
//!   next change of that clock (nothing resets clocks); membership changes,
//!   alarms and backups as instants;
//! - the checks: each failed check (the text before `:` of a failure) with
//!   its failures, the linearizability check's own verdict, and on a
//!   linearizability violation the smallest set of operations that still
//!   shows it (`checker::minimize`), outlined in red.
//!
//! The runner writes it beside a failure's text file, and for any run with
//! `CAIRN_SIM_REPORT=1`; a run that panicked gets one from the parent, with
//! the faults it echoed up to the panic.
//! Tests: `tests` below.

use std::collections::BTreeMap;
use std::time::Duration;

use super::scenario::RunReport;
use crate::checker::checks::Status;
use crate::checker::minimize::{self, Minimal};
use crate::checker::report::{self, CheckRow, FaultSpan, ReportInput};
use crate::checker::{CheckOptions, Operation};

/// How long the minimisation of a linearizability violation may take.
const MINIMIZE_BUDGET: Duration = Duration::from_secs(30);

/// What ends a fault.
enum Ends {
    /// The next reset of the network (a partition of any shape, `heal`).
    NetworkReset,
    /// The next network degradation or reset of the network.
    NetworkChange,
    /// The member's next `restart` or `resume` (a paused member may be
    /// killed, and comes back with a restart), or `heal everything`.
    BackUp(String),
    /// The next entry beginning with this text; `heal everything` too when
    /// `healed`.
    Replaced { prefix: String, healed: bool },
    /// Nothing: an instant.
    Instant,
}

/// Timeline entries that reset the whole network first (`heal_network` in
/// `faults`): every partition shape but a one-way link.
const NETWORK_RESETS: [&str; 3] = ["partition ", "isolate leader ", "bridge:"];

/// A failure's check: the text before its first `:` (at most 60
/// characters). The report groups failures by it; a shrink keeps a cut
/// only while the same checks fail.
pub fn check_name(failure: &str) -> String {
    failure
        .split(':')
        .next()
        .unwrap_or(failure)
        .chars()
        .take(60)
        .collect()
}

/// The member named right after `word ` in `text` (`kill n2 (…` → `n2`).
fn member_after(text: &str, word: &str) -> String {
    text.strip_prefix(word)
        .unwrap_or("")
        .trim_start()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or("")
        .to_owned()
}

/// A timeline entry's colour kind and what ends it; `None` for entries that
/// are not drawn (the restarts and resumes that end other faults, and fault
/// slots a shrink left out, which did not happen).
fn classify(text: &str) -> Option<(&'static str, Ends)> {
    if text.starts_with("left out: ") || text.starts_with("restart ") || text.starts_with("resume ")
    {
        return None;
    }
    let starts = |p: &str| text.starts_with(p);
    Some(
        if NETWORK_RESETS.iter().any(|p| starts(p)) || starts("one-way:") {
            ("partition", Ends::NetworkReset)
        } else if starts("network:") {
            ("net", Ends::NetworkChange)
        } else if starts("kill ") {
            let kind = if text.contains("lose unsynced: true") {
                "lose"
            } else {
                "kill"
            };
            (kind, Ends::BackUp(member_after(text, "kill")))
        } else if starts("pause ") {
            ("pause", Ends::BackUp(member_after(text, "pause")))
        } else if starts("disk ") {
            let m = member_after(text, "disk");
            if text.contains("fsync takes") {
                let prefix = format!("disk {m}: fsync takes");
                (
                    "disk",
                    Ends::Replaced {
                        prefix,
                        healed: true,
                    },
                )
            } else {
                // A failed fsync or a flipped record: the member halts
                // until the scheduler restarts it.
                ("disk", Ends::BackUp(m))
            }
        } else if starts("clock ") {
            let prefix = format!("clock {}:", member_after(text, "clock"));
            (
                "clock",
                Ends::Replaced {
                    prefix,
                    healed: false,
                },
            )
        } else if starts("buggify on") {
            let prefix = "buggify ".to_owned();
            (
                "buggify",
                Ends::Replaced {
                    prefix,
                    healed: true,
                },
            )
        } else if starts("buggify") {
            ("buggify", Ends::Instant)
        } else if starts("heal ") {
            ("heal", Ends::Instant)
        } else if starts("membership: ") {
            ("member", Ends::Instant)
        } else {
            ("event", Ends::Instant)
        },
    )
}

/// A timeline line (`   12.345s  #7 kill n2 …`): its time in nanoseconds
/// and its text without the fault slot.
fn parse_line(line: &str) -> Option<(u64, &str)> {
    let (t, text) = line.trim_start().split_once("s  ")?;
    let secs: f64 = t.trim().parse().ok()?;
    let text = match text.strip_prefix('#') {
        Some(rest) => rest
            .split_once(' ')
            .filter(|(slot, _)| slot.chars().all(|c| c.is_ascii_digit()))
            .map_or(text, |(_, rest)| rest),
        None => text,
    };
    Some(((secs * 1e9).round() as u64, text))
}

fn secs(ns: u64) -> String {
    format!("{:.3} s", ns as f64 / 1e9)
}

/// The faults of a run's timeline as spans of the report's time axis (the
/// module header says what ends each); a fault nothing ended lasts to
/// `end_ns`.
pub fn fault_spans(timeline: &[String], end_ns: u64) -> Vec<FaultSpan> {
    let entries: Vec<(u64, &str)> = timeline.iter().filter_map(|l| parse_line(l)).collect();
    let mut spans = Vec::new();
    for (i, &(at, text)) in entries.iter().enumerate() {
        let Some((kind, ends)) = classify(text) else {
            continue;
        };
        let later = &entries[i + 1..];
        let network_reset =
            |t: &str| t.starts_with("heal ") || NETWORK_RESETS.iter().any(|p| t.starts_with(p));
        let heal_all = |t: &str| t.starts_with("heal everything");
        let end = match &ends {
            Ends::Instant => Some(at),
            Ends::NetworkReset => later.iter().find(|(_, t)| network_reset(t)).map(|e| e.0),
            Ends::NetworkChange => later
                .iter()
                .find(|(_, t)| network_reset(t) || t.starts_with("network:"))
                .map(|e| e.0),
            Ends::BackUp(m) => later
                .iter()
                .find(|(_, t)| {
                    heal_all(t)
                        || ["restart", "resume"]
                            .iter()
                            .any(|w| t.starts_with(w) && member_after(t, w) == *m)
                })
                .map(|e| e.0),
            Ends::Replaced { prefix, healed } => later
                .iter()
                .find(|(_, t)| t.starts_with(prefix.as_str()) || (*healed && heal_all(t)))
                .map(|e| e.0),
        };
        spans.push(FaultSpan {
            kind: kind.to_owned(),
            detail: text.to_owned(),
            start_ns: at,
            end_ns: end.unwrap_or(end_ns).max(at),
            start: secs(at),
            end: end.map_or_else(|| "end of run".to_owned(), secs),
        });
    }
    spans
}

/// The rows of the report's check table: each failed check (failures
/// grouped by the text before their first `:`), the linearizability
/// check's verdict from its note when it did not fail, and one row for the
/// other checks when none of them failed.
pub fn check_rows(failures: &[String], notes: &[String]) -> Vec<CheckRow> {
    let mut failed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in failures {
        failed.entry(check_name(f)).or_default().push(f.clone());
    }
    let mut rows: Vec<CheckRow> = Vec::new();
    if !failed.contains_key("linearizability") {
        if let Some(n) = notes.iter().find(|n| n.starts_with("linearizability:")) {
            let status = if n.contains("NOT CHECKED in this scenario") {
                Status::Skipped
            } else if n.contains("NOT CHECKED") {
                Status::Inconclusive
            } else {
                Status::Ok
            };
            rows.push(CheckRow {
                name: "linearizability".into(),
                status,
                details: vec![n.clone()],
            });
        }
    }
    let others_failed = failed.keys().any(|k| k != "linearizability");
    for (name, details) in failed {
        rows.push(CheckRow {
            name,
            status: Status::Violation,
            details,
        });
    }
    if !others_failed {
        rows.push(CheckRow {
            name: "every other check".into(),
            status: Status::Ok,
            details: vec!["serializable reads, durability, watches, leases, locks, membership, the raft oracle and the invariants: no failure".into()],
        });
    }
    rows
}

/// On a linearizability violation, the smallest set of operations that
/// still shows it (the checker run without the committed history's help;
/// `None` when that search cannot reproduce it).
fn minimal_set(history: &[Operation], rows: &[CheckRow], max_steps: u64) -> Option<Minimal> {
    let row = rows
        .iter()
        .find(|r| r.name == "linearizability" && r.status == Status::Violation)?;
    let named = report::named_in(&row.details, history.len());
    let options = CheckOptions { max_steps };
    minimize::minimize(history, &named, &options, MINIMIZE_BUDGET)
}

/// The report of a run that finished (passed or not).
pub fn render_run(
    scenario: &str,
    seed: u64,
    replay: &str,
    r: &RunReport,
    max_steps: u64,
) -> String {
    let at = |tick: u64| match tick {
        0 => 0,
        t => usize::try_from(t - 1)
            .ok()
            .and_then(|i| r.tick_ns.get(i).copied())
            .unwrap_or(r.end_ns),
    };
    let ops: Vec<Operation> = r
        .history
        .iter()
        .map(|o| {
            let mut o = o.clone();
            o.call = at(o.call);
            o.ret = o.ret.map(at);
            o
        })
        .collect();
    let rows = check_rows(&r.failures, &r.notes);
    let minimal = minimal_set(&r.history, &rows, max_steps);
    let faults = fault_spans(&r.timeline, r.end_ns);
    let settings = vec![
        ("scenario".to_owned(), scenario.to_owned()),
        ("seed".to_owned(), seed.to_string()),
        ("replay".to_owned(), replay.to_owned()),
        (
            "result".to_owned(),
            if r.passed() { "passed" } else { "FAILED" }.to_owned(),
        ),
        (
            "simulated time".to_owned(),
            format!("{:.1} s", r.simulated_secs),
        ),
        (
            "linearizable operations".to_owned(),
            r.history.len().to_string(),
        ),
        (
            "serializable reads".to_owned(),
            r.serializable.len().to_string(),
        ),
        (
            "committed changes".to_owned(),
            r.committed.changes.len().to_string(),
        ),
        (
            "watch segments".to_owned(),
            r.watch_segments.len().to_string(),
        ),
        ("leases".to_owned(), r.lease_lives.len().to_string()),
        ("lock holds".to_owned(), r.lock_holds.len().to_string()),
        (
            "timeline entries drawn".to_owned(),
            faults.len().to_string(),
        ),
        ("trace hash".to_owned(), format!("{:016x}", r.trace_hash)),
    ];
    report::render(&ReportInput {
        title: format!(
            "cairn simulation: {scenario} seed {seed} — {}",
            if r.passed() { "passed" } else { "FAILED" }
        ),
        settings,
        ops: &ops,
        holds: &[],
        lease_ops: &[],
        faults: &faults,
        checks: &rows,
        notes: &r.notes,
        end_ns: r.end_ns,
        minimal: minimal.as_ref(),
        clients_per_row: 1,
        time_axis: "simulated",
    })
}

/// The report of a run that panicked or crashed: the reason as its failed
/// check and the faults it echoed (`FAULT` lines, timeline format) up to
/// then; there is no history.
pub fn render_crash(
    scenario: &str,
    seed: u64,
    replay: &str,
    reason: &str,
    faults: &[String],
    sim_secs: f64,
) -> String {
    let last = faults
        .iter()
        .filter_map(|l| parse_line(l))
        .map(|(t, _)| t)
        .max()
        .unwrap_or(0);
    let end_ns = ((sim_secs * 1e9) as u64).max(last).max(1);
    let spans = fault_spans(faults, end_ns);
    let rows = vec![CheckRow {
        name: "the run".into(),
        status: Status::Violation,
        details: vec![reason.to_owned()],
    }];
    report::render(&ReportInput {
        title: format!("cairn simulation: {scenario} seed {seed} — the run panicked or crashed"),
        settings: vec![
            ("scenario".to_owned(), scenario.to_owned()),
            ("seed".to_owned(), seed.to_string()),
            ("replay".to_owned(), replay.to_owned()),
            ("faults until the crash".to_owned(), spans.len().to_string()),
        ],
        ops: &[],
        holds: &[],
        lease_ops: &[],
        faults: &spans,
        checks: &rows,
        notes: &["No history: the run did not finish. Its members' logs: CAIRN_SIM_LOG=info on the replay.".to_owned()],
        end_ns,
        minimal: None,
        clients_per_row: 1,
        time_axis: "simulated",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: f64, what: &str) -> String {
        format!("{t:9.3}s  {what}")
    }

    #[test]
    fn every_fault_becomes_a_span_ended_by_what_undoes_it() {
        let timeline = vec![
            line(1.0, "#0 partition {n1} | {n2,n3}"),
            line(1.5, "#1 kill n2 (lose unsynced: true, kept 0 unsynced batches first, torn batch: false), back in 900 ms"),
            line(2.0, "#2 network: packet loss 0.1, latency up to 100 ms"),
            line(2.4, "restart n2"),
            line(3.0, "#3 isolate leader n1"),
            line(3.5, "#4 clock n3: offset -20 ms, drift 100 ppm"),
            line(4.0, "#5 left out: pause n1 for 300 ms"),
            line(4.2, "#6 pause n10 for 300 ms"),
            line(4.3, "resume n1"),
            line(4.6, "resume n10"),
            line(4.7, "#7 pause n3 for 800 ms"),
            line(4.8, "#8 kill n3 (lose unsynced: false, kept 0 unsynced batches first, torn batch: false), back in 900 ms"),
            line(4.9, "restart n3"),
            line(5.0, "membership: add n4"),
            line(6.0, "heal everything: network, paused, killed and halted members"),
        ];
        let spans = fault_spans(&timeline, 9_000_000_000);
        let got: Vec<(&str, u64, u64, &str)> = spans
            .iter()
            .map(|s| (s.kind.as_str(), s.start_ns, s.end_ns, s.end.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("partition", 1_000_000_000, 3_000_000_000, "3.000 s"),
                ("lose", 1_500_000_000, 2_400_000_000, "2.400 s"),
                ("net", 2_000_000_000, 3_000_000_000, "3.000 s"),
                ("partition", 3_000_000_000, 6_000_000_000, "6.000 s"),
                // Nothing resets a clock.
                ("clock", 3_500_000_000, 9_000_000_000, "end of run"),
                // n10's pause is not ended by n1's resume.
                ("pause", 4_200_000_000, 4_600_000_000, "4.600 s"),
                // A paused member killed comes back with a restart.
                ("pause", 4_700_000_000, 4_900_000_000, "4.900 s"),
                ("kill", 4_800_000_000, 4_900_000_000, "4.900 s"),
                ("member", 5_000_000_000, 5_000_000_000, "5.000 s"),
                ("heal", 6_000_000_000, 6_000_000_000, "6.000 s"),
            ]
        );
        assert_eq!(
            spans[1].detail.split(' ').next(),
            Some("kill"),
            "slot stripped"
        );
    }

    #[test]
    fn failures_are_grouped_by_check_and_the_linearizability_note_is_a_row() {
        let rows = check_rows(
            &[
                "durability: lost c1-3".into(),
                "durability: lost c2-4".into(),
            ],
            &["linearizability: ok (checked in 3 ms wall)".into()],
        );
        let got: Vec<(&str, Status, usize)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.status, r.details.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("linearizability", Status::Ok, 1),
                ("durability", Status::Violation, 2)
            ]
        );
        let rows = check_rows(
            &[],
            &["linearizability: NOT CHECKED in this scenario".into()],
        );
        assert_eq!(rows[0].status, Status::Skipped);
        assert_eq!(rows[1].status, Status::Ok);
    }

    /// A run that failed the way the stale-read experiments make runs fail
    /// (`sim-tests/experiments/local-reads.patch`): a read answered at a
    /// revision older than a write acknowledged before it began, during a
    /// partition. Its report names the failed check, draws every fault of
    /// the timeline, and outlines the write the read missed and the read.
    #[test]
    fn a_stale_read_runs_report_names_the_failed_check_and_draws_every_fault() {
        use crate::checker::committed::change;
        use crate::checker::{CommittedHistory, KeyValue};

        let put = Operation::put_ok;
        let get = |client, call, ret, key, kv, rev| {
            Operation::get_ok(client, call, ret, key, rev, Some(kv))
        };
        let mut run = RunReport {
            history: vec![
                put(1, 1, 2, "k", "c1-1", 2),
                put(2, 3, 4, "z", "c2-1", 3),
                put(1, 5, 6, "k", "c1-2", 4),
                // Began after k=c1-2 (revision 4) was acknowledged; answered
                // at revision 3 with the value before it.
                get(3, 7, 8, "k", KeyValue::new("c1-1", 2, 2, 1), 3),
            ],
            committed: CommittedHistory::complete(vec![
                change(2, "k", Some("c1-1")),
                change(3, "z", Some("c2-1")),
                change(4, "k", Some("c1-2")),
            ]),
            timeline: vec![
                line(0.8, "#0 isolate leader n1"),
                line(1.2, "#1 kill n3 (lose unsynced: false, kept 0 unsynced batches first, torn batch: false), back in 700 ms"),
                line(1.9, "restart n3"),
                line(2.5, "#2 clock n2: offset -300 ms, drift 2000 ppm"),
                line(3.0, "heal everything: network, paused, killed and halted members"),
            ],
            tick_ns: (1..=8).map(|t| t * 400_000_000).collect(),
            end_ns: 4_000_000_000,
            ..RunReport::default()
        };
        let cfg = super::super::scenario::RunConfig::kv(3);
        super::super::scenario::check_linearizability(&cfg, &mut run);
        assert!(!run.passed(), "the stale read is found: {:?}", run.notes);
        let html = render_run("kv3", 7, "replay-command", &run, cfg.check_steps);

        assert!(
            html.contains("<td class=\"bad\">linearizability</td>"),
            "the failed check is named: {html}"
        );
        assert!(html.contains("— FAILED</h1>"));
        // Every fault of the timeline (the restart ends the kill; the heal
        // is an instant) is shaded and listed.
        assert_eq!(html.matches("class=\"fault\"").count(), 4, "{html}");
        for what in [
            "isolate leader n1",
            "kill n3",
            "clock n2",
            "heal everything",
        ] {
            assert!(
                html.contains(&format!("<td>{what}")),
                "{what} listed: {html}"
            );
        }
        // The kill is drawn until the restart, on the simulated time axis.
        assert!(
            html.contains("<td>1.200 s</td><td>1.900 s</td><td>kill</td>"),
            "{html}"
        );
        // The write the read missed and the read, outlined in red.
        assert!(
            html.contains("Minimal set showing the violation</h2><p>2 of 4"),
            "{html}"
        );
        assert_eq!(html.matches("class=\"minimal\"").count(), 2);
        assert!(
            html.contains("<li>#2 ") && html.contains("<li>#3 "),
            "{html}"
        );
        // Operations sit at their simulated times: the read (ticks 7–8)
        // from 2.8 s to 3.2 s of the 4 s axis.
        let x = |ns: f64| 60.0 + ns / 4e9 * (1400.0 - 60.0 - 10.0);
        assert!(
            html.contains(&format!("<rect x=\"{:.1}\"", x(2.8e9))),
            "the read at 2.8 s: {html}"
        );
    }
}
