//! The HTML report of a checked history: one self-contained file (inline
//! SVG and CSS, no script, no network) with the run's settings, each check's
//! verdict, the fault timeline, and an SVG timeline of every client's
//! operations — a bar from call to return per operation (green ok, amber
//! unknown, grey failed), lock holds in blue, faults shaded across all rows,
//! and — on a linearizability violation — the smallest set of operations
//! that still shows it (`minimize`) outlined in red and listed below the
//! timeline; without one, the operations a violation names (`#<index>` in
//! its explanation).
//!
//! Both the jepsen harness (wall-clock times, real processes) and the
//! simulation suite (simulated times, `sim-tests`' runner) write it; each
//! turns its own fault log into `FaultSpan`s and its findings into
//! `CheckRow`s.
//!
//! Tests: `tests` below.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::checks::{Status, Verdict};
use crate::history::{Operation, Outcome};
use crate::jsonl::HoldRecord;
use crate::lease::{LeaseOp, LeaseOutcome};
use crate::minimize::Minimal;

/// One fault as the report draws it: a span of the time axis, shaded
/// across every row, and a line of the fault table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSpan {
    /// Picks the colour: `kill`, `lose`, `pause`, `partition`, `net`,
    /// `member`, `clock`, `disk`; anything else is drawn in violet.
    pub kind: String,
    pub detail: String,
    /// Nanoseconds on the report's time axis (that of the operations).
    pub start_ns: u64,
    pub end_ns: u64,
    /// The start and end as the fault table shows them (wall-clock time,
    /// or simulated seconds).
    pub start: String,
    pub end: String,
}

/// One check's result as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRow {
    pub name: String,
    pub status: Status,
    /// What was found (a violation's explanation names operations `#<n>`).
    pub details: Vec<String>,
}

impl From<&Verdict> for CheckRow {
    fn from(v: &Verdict) -> CheckRow {
        CheckRow {
            name: v.check.to_owned(),
            status: v.status,
            details: v.details.clone(),
        }
    }
}

pub struct ReportInput<'a> {
    pub title: String,
    pub settings: Vec<(String, String)>,
    /// Call and return times in nanoseconds from the start of the run.
    pub ops: &'a [Operation],
    pub holds: &'a [HoldRecord],
    pub lease_ops: &'a [LeaseOp],
    pub faults: &'a [FaultSpan],
    pub checks: &'a [CheckRow],
    pub notes: &'a [String],
    pub end_ns: u64,
    /// The minimised set of a linearizability violation, if one was found.
    pub minimal: Option<&'a Minimal>,
    /// Client ids sharing a row: row `client / clients_per_row` (the
    /// jepsen workers' successive ids share one; 1: a row per client).
    pub clients_per_row: u64,
    /// What the fault table's times are (`UTC`, `simulated`).
    pub time_axis: &'a str,
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Indices of operations (below `ops`) that explanations name as `#<n>`.
pub fn named_in(details: &[String], ops: usize) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for d in details {
        for part in d.split('#').skip(1) {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse::<usize>() {
                if n < ops {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// Indices of operations the violations among `checks` name as `#<n>`.
pub fn named_ops(checks: &[CheckRow], ops: usize) -> BTreeSet<usize> {
    checks
        .iter()
        .filter(|c| c.status == Status::Violation)
        .flat_map(|c| named_in(&c.details, ops))
        .collect()
}

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 60.0;
const ROW: f64 = 9.0;

pub fn render(r: &ReportInput) -> String {
    let end = r.end_ns.max(1) as f64;
    let x = |ns: u64| LEFT + (ns as f64 / end) * (WIDTH - LEFT - 10.0);
    let per_row = r.clients_per_row.max(1);
    let row_of = |client: u64| client / per_row;
    let mut rows: BTreeMap<u64, usize> = BTreeMap::new();
    for op in r.ops {
        let next = rows.len();
        rows.entry(row_of(op.client)).or_insert(next);
    }
    let hold_row0 = rows.len();
    let mut hold_rows: BTreeMap<u64, usize> = BTreeMap::new();
    for h in r.holds {
        let next = hold_row0 + hold_rows.len();
        hold_rows.entry(row_of(h.client)).or_insert(next);
    }
    let lease_row0 = hold_row0 + hold_rows.len();
    let mut lease_rows: BTreeMap<u64, usize> = BTreeMap::new();
    for o in r.lease_ops {
        let next = lease_row0 + lease_rows.len();
        lease_rows.entry(row_of(o.client)).or_insert(next);
    }
    let nrows = lease_row0 + lease_rows.len();
    let top = 30.0;
    let height = top + nrows as f64 * ROW + 20.0;
    let highlighted: BTreeSet<usize> = match r.minimal {
        Some(m) => m.ops.iter().copied().filter(|i| *i < r.ops.len()).collect(),
        None => named_ops(r.checks, r.ops.len()),
    };

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="10">"#
    );
    for f in r.faults {
        let (a, b) = (x(f.start_ns), x(f.end_ns.max(f.start_ns)));
        let color = match f.kind.as_str() {
            "kill" => "#f4a6a6",
            "lose" => "#e07070",
            "pause" => "#f7d08a",
            "partition" => "#b9c7f0",
            "net" => "#c9e7c0",
            "member" => "#9fd6d2",
            "clock" => "#d8d0a0",
            "disk" => "#c8b4a0",
            _ => "#e0c2ee",
        };
        let _ = write!(
            svg,
            r#"<rect x="{a:.1}" y="{top}" width="{:.1}" height="{:.1}" fill="{color}" opacity="0.6" class="fault"><title>{}</title></rect><text x="{a:.1}" y="{:.1}">{}</text>"#,
            (b - a).max(1.0),
            nrows as f64 * ROW,
            escape(&format!("{} {} – {}", f.detail, f.start, f.end)),
            top - 4.0,
            escape(&f.kind)
        );
    }
    for s in 0..=10 {
        let ns = r.end_ns / 10 * s;
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="12">{2:.0}s</text>"##,
            x(ns),
            top + nrows as f64 * ROW,
            ns as f64 / 1e9
        );
    }
    // A bar from call to return; an unknown outcome has no end: a short
    // stub at its call.
    let bar = |svg: &mut String,
               row: usize,
               call: u64,
               ret: Option<u64>,
               fill: &str,
               extra: &str,
               title: &str| {
        let (y, a) = (top + row as f64 * ROW + 1.0, x(call));
        let b = ret.map_or(a + 4.0, x);
        let _ = write!(
            svg,
            r#"<rect x="{a:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}"{extra}><title>{}</title></rect>"#,
            (b - a).max(1.0),
            ROW - 2.0,
            escape(title)
        );
    };
    for (i, op) in r.ops.iter().enumerate() {
        let color = match op.output {
            Outcome::Ok(_) => "#3a3",
            Outcome::Unknown => "#e9a23b",
            Outcome::Failed => "#999",
        };
        let stroke = if highlighted.contains(&i) {
            r#" stroke="red" stroke-width="2" class="minimal""#
        } else {
            ""
        };
        let row = rows[&row_of(op.client)];
        bar(
            &mut svg,
            row,
            op.call,
            op.ret,
            color,
            stroke,
            &format!("#{i} {op}"),
        );
    }
    for h in r.holds {
        let row = hold_rows[&row_of(h.client)];
        let y = top + row as f64 * ROW + 1.0;
        let a = x(h.acquired_at_ms * 1_000_000);
        let _ = write!(
            svg,
            r##"<rect x="{a:.1}" y="{y:.1}" width="4" height="{:.1}" fill="#36c"><title>{}</title></rect>"##,
            ROW - 2.0,
            escape(&format!(
                "client {} holds {} token {} writes {:?} release {}",
                h.client, h.key, h.token, h.writes, h.release
            ))
        );
    }
    for (i, o) in r.lease_ops.iter().enumerate() {
        let color = match o.output {
            LeaseOutcome::Ok(_) => "#7a4fc9",
            LeaseOutcome::Unknown => "#e9a23b",
            LeaseOutcome::Failed => "#999",
        };
        let row = lease_rows[&row_of(o.client)];
        bar(
            &mut svg,
            row,
            o.call,
            o.ret,
            color,
            "",
            &format!("lease #{i} {o}"),
        );
    }
    svg.push_str("</svg>");

    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>body{{font-family:sans-serif;margin:1em}}td,th{{padding:2px 8px;text-align:left;vertical-align:top}}.ok{{color:#2a2}}.bad{{color:#c00;font-weight:bold}}.meh{{color:#b80}}pre{{white-space:pre-wrap}}</style></head><body><h1>{0}</h1>",
        escape(&r.title)
    );
    html.push_str("<table>");
    for (k, v) in &r.settings {
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(v)
        );
    }
    html.push_str("</table><h2>Checks</h2><table>");
    for c in r.checks {
        let (class, status) = match c.status {
            Status::Ok => ("ok", "ok"),
            Status::Skipped => ("meh", "skipped"),
            Status::Inconclusive => ("meh", "inconclusive"),
            Status::Violation => ("bad", "VIOLATION"),
            Status::Malformed => ("bad", "MALFORMED"),
        };
        let mut text = format!("{}: {status}", c.name);
        for d in &c.details {
            text.push_str("\n  ");
            text.push_str(d);
        }
        let _ = write!(
            html,
            "<tr><td class=\"{class}\">{}</td><td><pre>{}</pre></td></tr>",
            escape(&c.name),
            escape(&text)
        );
    }
    html.push_str("</table>");
    if !r.notes.is_empty() {
        html.push_str("<h2>Notes</h2><ul>");
        for n in r.notes {
            let _ = write!(html, "<li>{}</li>", escape(n));
        }
        html.push_str("</ul>");
    }
    let _ = write!(
        html,
        "<h2>Timeline</h2><p>{} operations, one row per client ({} rows); green ok, amber unknown (a stub at the call: it may take effect any time later), grey failed, blue lock acquisitions, purple lease calls; shaded: faults (hover for details).</p>",
        r.ops.len(),
        rows.len()
    );
    html.push_str("<div style=\"overflow-x:auto\">");
    html.push_str(&svg);
    html.push_str("</div>");
    if let Some(m) = r.minimal {
        let _ = write!(
            html,
            "<h2>Minimal set showing the violation</h2><p>{} of {} operations (outlined in red above): without any one of them the history is linearizable again. Delta debugging over the {} operations the checker named and their neighbours, {} checker runs{}. Operations outside the set keep only what they must: acknowledged writes still take effect at their revision, but need not precede anything.</p><ol>",
            m.ops.len(),
            r.ops.len(),
            m.universe,
            m.checks,
            if m.complete { "" } else { " (stopped by its time budget: small, maybe not minimal)" }
        );
        for i in &highlighted {
            let _ = write!(html, "<li>#{i} {}</li>", escape(&r.ops[*i].to_string()));
        }
        html.push_str("</ol>");
    } else if !highlighted.is_empty() {
        html.push_str("<h2>Operations named by a violation</h2><ul>");
        for i in &highlighted {
            let _ = write!(html, "<li>#{i} {}</li>", escape(&r.ops[*i].to_string()));
        }
        html.push_str("</ul>");
    }
    let _ = write!(
        html,
        "<h2>Faults</h2><table><tr><th>start ({0})</th><th>end ({0})</th><th>kind</th><th>what</th></tr>",
        escape(r.time_axis)
    );
    for f in r.faults {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.start),
            escape(&f.end),
            escape(&f.kind),
            escape(&f.detail)
        );
    }
    html.push_str("</table></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Request, Response, Revision};

    #[test]
    fn the_report_shades_faults_and_outlines_named_operations() {
        let ops = vec![
            Operation::ok(
                1,
                0,
                1_000_000_000,
                Request::put("k", "a<b"),
                Response::Put {
                    header_revision: Revision(2),
                },
            ),
            Operation::unknown(2, 500_000_000, Request::put("k", "c")),
        ];
        let faults = vec![FaultSpan {
            kind: "kill".into(),
            detail: "kill -9 n2".into(),
            start_ns: 200_000_000,
            end_ns: 800_000_000,
            start: "2026-01-01T00:00:00.000Z".into(),
            end: "2026-01-01T00:00:00.600Z".into(),
        }];
        let verdicts = vec![CheckRow::from(&Verdict {
            check: "linearizable",
            status: Status::Violation,
            details: vec!["cannot linearize #1 client 2".into()],
        })];
        let html = render(&ReportInput {
            title: "t".into(),
            settings: vec![("seed".into(), "1".into())],
            ops: &ops,
            holds: &[],
            lease_ops: &[],
            faults: &faults,
            checks: &verdicts,
            notes: &[],
            end_ns: 2_000_000_000,
            minimal: None,
            clients_per_row: 1,
            time_axis: "UTC",
        });
        assert!(html.contains("kill -9 n2"));
        assert!(html.contains("<th>start (UTC)</th>"));
        assert_eq!(html.matches("class=\"fault\"").count(), 1);
        assert!(
            html.contains("<td class=\"bad\">linearizable</td>"),
            "{html}"
        );
        assert!(html.contains("linearizable: VIOLATION\n  cannot linearize #1"));
        assert_eq!(html.matches("stroke=\"red\"").count(), 1, "{html}");
        assert!(html.contains("a&lt;b"), "escaped");
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "nothing fetched"
        );
        assert!(!html.contains("<script"), "no script");
        assert_eq!(named_ops(&verdicts, 2), BTreeSet::from([1]));
        assert!(named_ops(&verdicts, 1).is_empty());
    }

    #[test]
    fn a_minimal_set_is_what_is_outlined_and_listed() {
        let ops: Vec<Operation> = (0..4)
            .map(|i| {
                Operation::ok(
                    i,
                    i * 10,
                    i * 10 + 5,
                    Request::put("k", &format!("v{i}")),
                    Response::Put {
                        header_revision: Revision(i + 2),
                    },
                )
            })
            .collect();
        let verdicts = vec![CheckRow {
            name: "linearizable".into(),
            status: Status::Violation,
            details: vec!["cannot linearize #3, too late for #0".into()],
        }];
        let minimal = Minimal {
            ops: vec![1, 3],
            universe: 4,
            checks: 7,
            complete: true,
        };
        let html = render(&ReportInput {
            title: "t".into(),
            settings: vec![],
            ops: &ops,
            holds: &[],
            lease_ops: &[],
            faults: &[],
            checks: &verdicts,
            notes: &[],
            end_ns: 100,
            minimal: Some(&minimal),
            clients_per_row: 1,
            time_axis: "simulated",
        });
        assert_eq!(html.matches("class=\"minimal\"").count(), 2, "{html}");
        assert!(html.contains("<title>#1 ") && html.contains("<title>#3 "));
        assert!(html.contains("Minimal set showing the violation</h2><p>2 of 4"));
        let listed = html.split("<ol>").nth(1).unwrap_or_default();
        assert_eq!(listed.matches("<li>").count(), 2, "{listed}");
        assert!(
            listed.contains("<li>#1 ") && listed.contains("<li>#3 "),
            "{listed}"
        );
    }
}
