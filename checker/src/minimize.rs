//! The smallest set of operations that still shows a linearizability
//! violation, for the report: delta debugging (Zeller's ddmin) over the
//! operations the checker's explanation names plus their neighbours, each
//! candidate set judged by re-running the linearizability checker.
//!
//! The model counts etcd's global revision, so operations cannot simply be
//! dropped: a history missing a write is violated by every later revision.
//! A candidate set S is therefore judged on the history where
//! - the operations of S keep their call and return times;
//! - every other read (a get, a txn without writes) is dropped;
//! - every other write that returned before the universe's first call (the
//!   settled past) is kept as it is;
//! - every other acknowledged write keeps its response but loses its return
//!   time (it must still take effect, after its call, at its revision — but
//!   it no longer has to precede anything);
//! - every other unknown write stays unknown; operations called after the
//!   universe's last return are dropped.
//!
//! S "shows the anomaly" when that history is not linearizable; so the
//! operations in S, with their real-time order, are what makes it fail.
//! The universe: the named operations; for every key they touch, the eight
//! operations on it that returned last before the first named call and the
//! four that began first after the last named return; and every operation on
//! those keys overlapping the named ones; at most 48 — past that the named
//! operations, then the others by how close in time they come to a named
//! one.
//!
//! Tests: `tests` below (a stale read minimised to the write it missed and
//! the read).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::history::{Operation, Outcome, Request, TxnOp};
use crate::{check_linearizable_with, CheckOptions, CheckResult};

/// A minimised set and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minimal {
    /// Indices into the history, ascending.
    pub ops: Vec<usize>,
    /// How many operations delta debugging started from.
    pub universe: usize,
    /// How many times the checker ran.
    pub checks: usize,
    /// Whether the search finished (1-minimal) or ran out of time.
    pub complete: bool,
}

fn keys(r: &Request) -> Vec<&str> {
    match r {
        Request::Get { key, .. } | Request::Put { key, .. } | Request::Delete { key } => {
            vec![key.as_str()]
        }
        Request::Txn(t) => t
            .compares
            .iter()
            .map(|c| c.key.as_str())
            .chain(t.success.iter().chain(&t.failure).map(|o| match o {
                TxnOp::Get { key } | TxnOp::Put { key, .. } | TxnOp::Delete { key } => key.as_str(),
            }))
            .collect(),
        Request::Compact { .. } => Vec::new(),
    }
}

/// The named operations and their neighbours (module header).
pub fn universe(ops: &[Operation], named: &BTreeSet<usize>) -> Vec<usize> {
    const MAX: usize = 48;
    let named: Vec<usize> = named.iter().copied().filter(|i| *i < ops.len()).collect();
    let Some(t0) = named.iter().map(|i| ops[*i].call).min() else {
        return Vec::new();
    };
    let t1 = named
        .iter()
        .map(|i| ops[*i].ret.unwrap_or(ops[*i].call))
        .max()
        .unwrap_or(t0);
    let touched: BTreeSet<&str> = named.iter().flat_map(|i| keys(&ops[*i].input)).collect();
    let mut out: BTreeSet<usize> = named.iter().copied().collect();
    for k in touched {
        let on_key: Vec<usize> = (0..ops.len())
            .filter(|i| ops[*i].output != Outcome::Failed && keys(&ops[*i].input).contains(&k))
            .collect();
        let mut before: Vec<usize> = on_key
            .iter()
            .copied()
            .filter(|i| ops[*i].ret.is_some_and(|r| r < t0))
            .collect();
        before.sort_by_key(|i| std::cmp::Reverse(ops[*i].ret));
        out.extend(before.into_iter().take(8));
        let mut after: Vec<usize> = on_key
            .iter()
            .copied()
            .filter(|i| ops[*i].call > t1)
            .collect();
        after.sort_by_key(|i| ops[*i].call);
        out.extend(after.into_iter().take(4));
        out.extend(on_key.iter().copied().filter(|i| {
            let o = &ops[*i];
            o.call <= t1 && o.ret.is_none_or(|r| r >= t0)
        }));
    }
    // If there are too many: the named operations, then the others by how
    // close they come in time to a named one (0 when they overlap one).
    let mut v: Vec<usize> = out.into_iter().collect();
    if v.len() > MAX {
        // An unknown operation counts as the moment of its call.
        let span = |i: usize| (ops[i].call, ops[i].ret.unwrap_or(ops[i].call));
        let gap = |(a0, a1): (u64, u64), (b0, b1): (u64, u64)| {
            if a1 < b0 {
                b0 - a1
            } else if b1 < a0 {
                a0 - b1
            } else {
                0
            }
        };
        let key = |i: &usize| {
            if named.contains(i) {
                (0, 0)
            } else {
                let d = named.iter().map(|n| gap(span(*i), span(*n))).min();
                (1, d.unwrap_or(u64::MAX))
            }
        };
        v.sort_by_key(key);
        v.truncate(MAX);
        v.sort_unstable();
    }
    v
}

/// The history a candidate set is judged on (module header).
fn history_for(ops: &[Operation], universe: &[usize], keep: &BTreeSet<usize>) -> Vec<Operation> {
    let start = universe.iter().map(|i| ops[*i].call).min().unwrap_or(0);
    let end = universe
        .iter()
        .map(|i| ops[*i].ret.unwrap_or(ops[*i].call))
        .max()
        .unwrap_or(0);
    let horizon = ops
        .iter()
        .map(|o| o.ret.unwrap_or(o.call))
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if op.call > end {
            continue;
        }
        if keep.contains(&i) {
            out.push(op.clone());
        } else if op.input.is_read_only() {
            continue;
        } else if op.ret.is_some_and(|r| r < start) || !matches!(op.output, Outcome::Ok(_)) {
            out.push(op.clone());
        } else {
            let mut w = op.clone();
            w.ret = Some(horizon);
            out.push(w);
        }
    }
    out
}

/// Delta debugging over `universe`: the smallest subset (1-minimal: no
/// single operation can be left out) whose history is still not
/// linearizable. `None` if the universe itself does not show the violation
/// (the weakening lost it). Stops after `budget` with the smallest failing
/// set found so far.
pub fn minimize(
    ops: &[Operation],
    named: &BTreeSet<usize>,
    options: &CheckOptions,
    budget: Duration,
) -> Option<Minimal> {
    let universe = universe(ops, named);
    let started = Instant::now();
    let mut checks = 0usize;
    let mut fails = |set: &[usize]| -> bool {
        checks += 1;
        let keep: BTreeSet<usize> = set.iter().copied().collect();
        matches!(
            check_linearizable_with(&history_for(ops, &universe, &keep), options),
            CheckResult::Violation { .. }
        )
    };
    if universe.is_empty() || !fails(&universe) {
        return None;
    }
    let mut items = universe.clone();
    let mut n = 2usize;
    let mut complete = true;
    while items.len() >= 2 {
        if started.elapsed() > budget {
            complete = false;
            break;
        }
        let chunk = items.len().div_ceil(n);
        let chunks: Vec<Vec<usize>> = items.chunks(chunk).map(<[usize]>::to_vec).collect();
        let mut reduced = false;
        for c in &chunks {
            if fails(c) {
                items = c.clone();
                n = 2;
                reduced = true;
                break;
            }
        }
        if !reduced && chunks.len() > 2 {
            for (k, _) in chunks.iter().enumerate() {
                let complement: Vec<usize> = chunks
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .flat_map(|(_, c)| c.iter().copied())
                    .collect();
                if fails(&complement) {
                    items = complement;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
            }
        }
        if !reduced {
            if n >= items.len() {
                break;
            }
            n = (2 * n).min(items.len());
        }
    }
    Some(Minimal {
        ops: items,
        universe: universe.len(),
        checks,
        complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::KeyValue;

    /// A stale read (#5 answers at revision 3, after k=b at revision 4 was
    /// acknowledged) among writes and reads that are fine.
    fn stale_read() -> Vec<Operation> {
        vec![
            Operation::put_ok(1, 0, 10, "k", "a", 2),
            Operation::put_ok(2, 5, 15, "z", "x", 3),
            Operation::put_ok(1, 20, 30, "k", "b", 4),
            // Saw revision 4, but still reading when the stale read began.
            Operation::get_ok(2, 25, 65, "z", 4, Some(KeyValue::new("x", 3, 3, 1))),
            // Concurrent with the stale read: it does not precede it.
            Operation::put_ok(3, 55, 75, "z", "y", 5),
            Operation::get_ok(1, 60, 70, "k", 3, Some(KeyValue::new("a", 2, 2, 1))),
            Operation::get_ok(2, 80, 90, "k", 5, Some(KeyValue::new("b", 2, 4, 2))),
            Operation::get_ok(4, 95, 99, "z", 5, Some(KeyValue::new("y", 3, 5, 2))),
        ]
    }

    #[test]
    fn a_stale_read_minimises_to_the_write_it_missed_and_the_read() {
        let ops = stale_read();
        let options = CheckOptions::default();
        let CheckResult::Violation { explanation } = check_linearizable_with(&ops, &options) else {
            panic!("the stale read is a violation");
        };
        // What the checker names (as the report reads it), then minimised.
        let named: BTreeSet<usize> = explanation
            .split('#')
            .skip(1)
            .filter_map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .ok()
            })
            .collect();
        assert!(!named.is_empty(), "{explanation}");
        let m = minimize(&ops, &named, &options, Duration::from_secs(30)).expect("minimised");
        assert_eq!(m.ops, vec![2, 5], "{m:?} from {explanation}");
        assert!(m.complete && m.checks > 1, "{m:?}");
        // The universe reached the write even if the checker named only the read.
        assert_eq!(
            minimize(
                &ops,
                &BTreeSet::from([5]),
                &options,
                Duration::from_secs(30)
            )
            .map(|m| m.ops),
            Some(vec![2, 5])
        );
    }

    #[test]
    fn a_linearizable_history_has_no_minimal_set() {
        let mut ops = stale_read();
        ops[5] = Operation::get_ok(1, 60, 70, "k", 4, Some(KeyValue::new("b", 2, 4, 2)));
        let options = CheckOptions::default();
        assert!(check_linearizable_with(&ops, &options).is_ok());
        assert_eq!(
            minimize(&ops, &BTreeSet::from([5]), &options, Duration::from_secs(5)),
            None
        );
    }

    /// Regression (the local-reads mutant under jepsen, seed 1): a stale read
    /// that ran for seconds, named with operations seconds before it. Every
    /// operation between overlapped the named span, so all tied at distance 0
    /// and the cut to 48 kept the earliest — dropping the stale read itself,
    /// and no minimal set was found.
    #[test]
    fn a_long_stale_read_stays_in_the_universe_past_many_overlapping_writes() {
        let mut ops = vec![Operation::put_ok(1, 0, 10, "k", "a", 2)];
        for i in 0..60u64 {
            ops.push(Operation::put_ok(
                2,
                20 + i * 10,
                25 + i * 10,
                "k",
                &format!("v{i}"),
                3 + i,
            ));
        }
        // Began after every put returned, answered at revision 2.
        ops.push(Operation::get_ok(
            3,
            700,
            5_000,
            "k",
            2,
            Some(KeyValue::new("a", 2, 2, 1)),
        ));
        let read = ops.len() - 1;
        let named = BTreeSet::from([0, 1, read]);
        let u = universe(&ops, &named);
        assert!(
            u.len() <= 48 && named.iter().all(|n| u.contains(n)),
            "{u:?}"
        );
        let options = CheckOptions::default();
        let m = minimize(&ops, &named, &options, Duration::from_secs(30)).expect("minimised");
        assert_eq!(m.ops.len(), 2, "{m:?}");
        assert_eq!(m.ops[1], read, "{m:?}");
    }
}
