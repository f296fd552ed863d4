//! The watch checker: every event a watch stream delivered against the
//! committed history. For a stream on a key prefix from `start_revision`:
//! - ordered and unique: event revisions never decrease, no (revision, key)
//!   twice, none below the start revision, none outside the prefix;
//! - exact: each event is the committed change at its (revision, key) — no
//!   invented events, no wrong values, nothing beyond the current revision;
//! - reliable and atomic: every committed change under the prefix between
//!   the start revision and the last revision the stream reached (its last
//!   event, or a later `progress` revision it reported) was delivered — no
//!   gap, no half of a transaction.
//! A client that reconnects records a new stream starting after the last
//! revision it saw, so resumption is checked by the same rules.
//! Changes at or below the compact revision are not required (compaction may
//! have removed them from the committed history).
//!
//! Tests: `tests` below.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::committed::{CommittedChange, CommittedHistory, HistoryError};
use super::history::Revision;

/// One watch stream, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStream {
    pub client: u64,
    /// Keys starting with this are watched.
    pub prefix: String,
    pub start_revision: Revision,
    /// In the order they arrived.
    pub events: Vec<CommittedChange>,
    /// A revision the stream reported being caught up to (a progress
    /// notification's header), if beyond its last event.
    #[serde(default)]
    pub progress: Option<Revision>,
}

/// Checks every stream; an empty list means every stream was exact.
pub fn check_watches(
    streams: &[WatchStream],
    committed: &CommittedHistory,
) -> Result<Vec<String>, HistoryError> {
    let by_revision = committed.validate()?;
    let mut failures = Vec::new();
    for (index, stream) in streams.iter().enumerate() {
        check_stream(stream, committed, &by_revision, &mut failures, index);
        if failures.len() >= 20 {
            failures.truncate(20);
            break;
        }
    }
    Ok(failures)
}

fn check_stream(
    s: &WatchStream,
    committed: &CommittedHistory,
    by_revision: &BTreeMap<(Revision, String), Option<String>>,
    failures: &mut Vec<String>,
    index: usize,
) {
    let name = format!(
        "watch #{index} (client {}, prefix {:?}, from revision {})",
        s.client, s.prefix, s.start_revision
    );
    let mut seen: BTreeMap<(Revision, String), Option<String>> = BTreeMap::new();
    let mut last = Revision(0);
    for e in &s.events {
        if e.revision < last {
            failures.push(format!("{name}: {e} after an event at revision {last}"));
        }
        if e.revision < s.start_revision {
            failures.push(format!("{name}: {e} is before the start revision"));
        }
        if !e.key.starts_with(&s.prefix) {
            failures.push(format!("{name}: {e} is outside the watched prefix"));
        }
        if e.revision > committed.current_revision {
            failures.push(format!(
                "{name}: {e} is beyond the committed revision {}",
                committed.current_revision
            ));
        }
        if seen
            .insert((e.revision, e.key.clone()), e.value.clone())
            .is_some()
        {
            failures.push(format!("{name}: {e} delivered twice"));
        }
        last = last.max(e.revision);
        match by_revision.get(&(e.revision, e.key.clone())) {
            Some(value) if *value == e.value => {}
            Some(value) => failures.push(format!(
                "{name}: {e}, but the committed change there is {}",
                CommittedChange {
                    revision: e.revision,
                    key: e.key.clone(),
                    value: value.clone()
                }
            )),
            None if e.revision <= committed.compact_revision => {}
            None => failures.push(format!("{name}: {e}, but nothing committed that change")),
        }
    }
    let reached = s.progress.map_or(last, |p| p.max(last));
    let missing: Vec<String> = by_revision
        .range((s.start_revision, String::new())..)
        .take_while(|((rev, _), _)| *rev <= reached)
        .filter(|((rev, key), _)| {
            key.starts_with(&s.prefix)
                && *rev > committed.compact_revision
                && !seen.contains_key(&(*rev, key.clone()))
        })
        .map(|((rev, key), value)| {
            CommittedChange {
                revision: *rev,
                key: key.clone(),
                value: value.clone(),
            }
            .to_string()
        })
        .collect();
    if !missing.is_empty() {
        failures.push(format!(
            "{name}: reached revision {reached} but missed {} committed change(s): {}",
            missing.len(),
            missing
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committed::change;

    fn committed() -> CommittedHistory {
        CommittedHistory::complete(vec![
            change(2, "a/1", Some("x")),
            change(3, "a/2", Some("y")),
            change(3, "b/1", Some("z")),
            change(4, "a/1", None),
            change(5, "b/1", Some("w")),
        ])
    }

    fn stream(start: u64, events: Vec<CommittedChange>) -> WatchStream {
        WatchStream {
            client: 1,
            prefix: "a/".into(),
            start_revision: Revision(start),
            events,
            progress: None,
        }
    }

    #[test]
    fn an_exact_stream_passes() {
        let s = stream(
            2,
            vec![
                change(2, "a/1", Some("x")),
                change(3, "a/2", Some("y")),
                change(4, "a/1", None),
            ],
        );
        assert_eq!(check_watches(&[s], &committed()), Ok(vec![]));
        let resumed = stream(4, vec![change(4, "a/1", None)]);
        assert_eq!(check_watches(&[resumed], &committed()), Ok(vec![]));
    }

    #[test]
    fn a_gap_a_duplicate_a_wrong_value_and_disorder_are_caught() {
        let gap = stream(2, vec![change(2, "a/1", Some("x")), change(4, "a/1", None)]);
        let f = check_watches(&[gap], &committed()).expect("valid history");
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("missed 1"), "{f:?}");

        let dup = stream(
            2,
            vec![change(2, "a/1", Some("x")), change(2, "a/1", Some("x"))],
        );
        let f = check_watches(&[dup], &committed()).expect("valid history");
        assert!(f.iter().any(|m| m.contains("twice")), "{f:?}");

        let wrong = stream(2, vec![change(2, "a/1", Some("q"))]);
        let f = check_watches(&[wrong], &committed()).expect("valid history");
        assert!(
            f.iter().any(|m| m.contains("committed change there")),
            "{f:?}"
        );

        let disorder = stream(
            2,
            vec![change(3, "a/2", Some("y")), change(2, "a/1", Some("x"))],
        );
        let f = check_watches(&[disorder], &committed()).expect("valid history");
        assert!(f.iter().any(|m| m.contains("after an event")), "{f:?}");
    }

    #[test]
    fn progress_beyond_the_last_event_requires_everything_up_to_it() {
        let mut s = stream(2, vec![change(2, "a/1", Some("x"))]);
        s.progress = Some(Revision(5));
        let f = check_watches(&[s], &committed()).expect("valid history");
        assert!(f.iter().any(|m| m.contains("missed 2")), "{f:?}");
    }
}
