//! Watchers under faults, checked against the committed history.
//!
//! Every client node runs a watcher: it opens a Watch stream on a random
//! member, watches all keys, the `k` prefix or one key, from a random past
//! revision or resuming after the last revision it saw, sometimes with
//! prev_kv, always with progress notifications; it reads with a deadline on
//! every message, and after a while (or when the stream fails) drops it and
//! starts another segment, usually resuming on another member.
//!
//! etcd's watch guarantees, checked per segment against the committed
//! history (`check_segments`):
//! - ordered and unique: event revisions strictly increase (equal revisions
//!   only within one response, keys distinct);
//! - atomic: all matching changes of a revision arrive in one response;
//! - resumable and reliable: the events are exactly the matching committed
//!   changes from the start revision up to the last revision the segment
//!   vouched for (its last event, or a later progress notification);
//! - bookmarkable: progress notifications never go backwards;
//! - prev_kv: the previous value is the key's committed value just before
//!   (or absent where a compaction removed it, as etcd sends it then);
//! - a start below a compaction is cancelled with a compact revision at or
//!   above the start; a start exactly at it replays the puts compaction kept
//!   there, not the deletes (as etcd).
//! Tests: `tests/sim.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, WatchCreateRequest, WatchRequest,
};
use cairn_proto::mvccpb::event::EventType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::workload::{Endpoints, Shared};
use crate::checker::CommittedHistory;

/// One event as a watcher received it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeenEvent {
    pub revision: i64,
    pub key: String,
    /// `None` for a delete.
    pub value: Option<String>,
    /// The previous value if prev_kv was asked for and the key existed.
    pub prev: Option<String>,
}

/// One response with events, or a progress notification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SeenResponse {
    Events(Vec<SeenEvent>),
    Progress(i64),
}

/// One watch stream's life.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    pub watcher: u64,
    pub member: String,
    pub key: String,
    /// Empty: one key; "\0": every key from `key` on; otherwise the range end.
    pub range_end: String,
    pub start_revision: i64,
    pub prev_kv: bool,
    pub created: bool,
    /// Cancelled by the server with this compact revision (0 if none given).
    pub canceled: Option<i64>,
    pub responses: Vec<SeenResponse>,
}

impl Segment {
    fn matches(&self, key: &str) -> bool {
        match self.range_end.as_str() {
            "" => key == self.key,
            "\0" => key >= self.key.as_str(),
            end => key >= self.key.as_str() && key < end,
        }
    }

    fn events(&self) -> impl Iterator<Item = &SeenEvent> {
        self.responses.iter().flat_map(|r| match r {
            SeenResponse::Events(e) => e.as_slice(),
            SeenResponse::Progress(_) => &[],
        })
    }

    /// The last revision up to which the segment saw every matching change.
    fn vouched_until(&self) -> i64 {
        let mut until = self.start_revision - 1;
        for r in &self.responses {
            match r {
                SeenResponse::Events(e) => {
                    if let Some(last) = e.last() {
                        until = until.max(last.revision);
                    }
                }
                SeenResponse::Progress(rev) => until = until.max(*rev),
            }
        }
        until
    }
}

#[derive(Default)]
pub struct WatchLog {
    pub segments: Mutex<Vec<Segment>>,
}

/// Runs one watcher until `stop`.
pub async fn run_watcher(
    id: u64,
    urls: Endpoints,
    seed: u64,
    shared: Arc<Shared>,
    log: Arc<WatchLog>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut resume_from: Option<i64> = None;
    while !stop.load(Ordering::SeqCst) {
        let member = urls.pick(&mut rng);
        let (key, range_end) = match rng.random_range(0..3) {
            0 => ("\0".to_owned(), "\0".to_owned()),
            1 => ("k".to_owned(), "l".to_owned()),
            _ => (
                format!("k{}", rng.random_range(0..super::workload::KV_KEYS)),
                String::new(),
            ),
        };
        let max = shared.max_seen.load(Ordering::SeqCst) as i64;
        let start_revision = match resume_from {
            Some(r) if rng.random_bool(0.7) => r,
            // Mostly recent history (older starts are mostly compacted away).
            _ => (max + 1 - rng.random_range(0..60)).max(1),
        };
        let mut seg = Segment {
            watcher: id,
            member,
            key,
            range_end,
            start_revision,
            prev_kv: rng.random_bool(0.5),
            created: false,
            canceled: None,
            responses: Vec::new(),
        };
        let lifetime = Duration::from_millis(rng.random_range(500..6000));
        watch_segment(&mut seg, lifetime, &stop).await;
        // Resume only where this segment vouched for everything before.
        if seg.created {
            resume_from = Some(seg.vouched_until() + 1);
        }
        log.segments.lock().expect("watch log lock").push(seg);
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..200))).await;
    }
}

async fn watch_segment(seg: &mut Segment, lifetime: Duration, stop: &AtomicBool) {
    let deadline = Duration::from_secs(2);
    let Ok(Ok(mut client)) =
        tokio::time::timeout(deadline, WatchClient::connect(seg.member.clone())).await
    else {
        return;
    };
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: seg.key.clone().into_bytes(),
            range_end: seg.range_end.clone().into_bytes(),
            start_revision: seg.start_revision,
            progress_notify: true,
            prev_kv: seg.prev_kv,
            ..Default::default()
        })),
    };
    // The request stream stays open (and the watch alive) while `_keep` lives.
    let (tx, rx) = tokio::sync::mpsc::channel::<WatchRequest>(4);
    if tx.send(create).await.is_err() {
        return;
    }
    let requests = tokio_stream_from(rx);
    let Ok(Ok(resp)) = tokio::time::timeout(deadline, client.watch(requests)).await else {
        return;
    };
    let mut stream = resp.into_inner();
    let end = tokio::time::Instant::now() + lifetime;
    while tokio::time::Instant::now() < end && !stop.load(Ordering::SeqCst) {
        let msg = match tokio::time::timeout(deadline, stream.message()).await {
            Ok(Ok(Some(m))) => m,
            _ => break, // error, end of stream, or silence past the deadline
        };
        if msg.created {
            seg.created = true;
        }
        if msg.canceled {
            seg.canceled = Some(msg.compact_revision);
            break;
        }
        if msg.events.is_empty() {
            if !msg.created {
                let rev = msg.header.as_ref().map_or(0, |h| h.revision);
                seg.responses.push(SeenResponse::Progress(rev));
            }
            continue;
        }
        let events = msg
            .events
            .iter()
            .filter_map(|e| {
                let kv = e.kv.as_ref()?;
                Some(SeenEvent {
                    revision: kv.mod_revision,
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    value: (e.r#type() == EventType::Put)
                        .then(|| String::from_utf8_lossy(&kv.value).into_owned()),
                    prev: e
                        .prev_kv
                        .as_ref()
                        .map(|p| String::from_utf8_lossy(&p.value).into_owned()),
                })
            })
            .collect();
        seg.responses.push(SeenResponse::Events(events));
    }
    drop(tx);
}

/// The changes of a complete committed history by revision: key → value
/// (`None`: deleted), and each key's value before every revision.
struct History {
    by_revision: BTreeMap<i64, BTreeMap<String, Option<String>>>,
}

impl History {
    fn new(h: &CommittedHistory) -> History {
        let mut by_revision: BTreeMap<i64, BTreeMap<String, Option<String>>> = BTreeMap::new();
        for c in &h.changes {
            by_revision
                .entry(c.revision.0 as i64)
                .or_default()
                .insert(c.key.clone(), c.value.clone());
        }
        History { by_revision }
    }

    /// The key's value just before `revision` (None: absent).
    fn value_before(&self, key: &str, revision: i64) -> Option<String> {
        self.by_revision
            .range(..revision)
            .rev()
            .find_map(|(_, changes)| changes.get(key).cloned())
            .flatten()
    }

    fn matching(&self, seg: &Segment, from: i64, to: i64) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        if from > to {
            return out;
        }
        for (rev, changes) in self.by_revision.range(from..=to) {
            for (k, v) in changes {
                if seg.matches(k) {
                    out.push((*rev, k.clone(), v.clone()));
                }
            }
        }
        out
    }
}

/// A watch may start exactly at the compact revision; etcd then replays
/// what compaction kept at that revision: its puts, not its deletes
/// (tombstones at or below the compact revision are gone). Removes from
/// `expected` the deletes at the start revision that the segment did not
/// get, when that revision may have been compacted — for every check that
/// counts a revision's changes (reliable, and atomic: lease3 seed 1030 got
/// the put of a put+delete txn at the compact revision it started from).
fn drop_compacted_deletes(
    seg: &Segment,
    max_compaction: i64,
    expected: &mut Vec<(i64, String, Option<String>)>,
) {
    let start = seg.start_revision;
    if start > max_compaction {
        return;
    }
    let delivered: Vec<&SeenEvent> = seg.events().filter(|e| e.revision == start).collect();
    expected.retain(|(rev, key, value)| {
        *rev != start || value.is_some() || delivered.iter().any(|e| &e.key == key)
    });
}

/// Checks every segment; returns one line per broken guarantee (at most 10).
/// `max_compaction` is the highest revision any client asked to compact to:
/// a prev_kv may be missing where compaction removed the previous value (etcd
/// then sends the event without it).
pub fn check_segments(
    segments: &[Segment],
    committed: &CommittedHistory,
    max_compaction: i64,
) -> Vec<String> {
    let history = History::new(committed);
    let mut failures = Vec::new();
    for (n, seg) in segments.iter().enumerate() {
        let who = format!(
            "watch segment #{n} (watcher {}, {} from rev {} on {}{})",
            seg.watcher,
            describe_range(seg),
            seg.start_revision,
            seg.member,
            if seg.prev_kv { ", prev_kv" } else { "" }
        );
        if let Some(compact) = seg.canceled {
            if compact != 0 && compact < seg.start_revision {
                failures.push(format!(
                    "{who}: cancelled with compact revision {compact} below its start"
                ));
            }
        }
        // Ordered (revisions never decrease), unique (no key twice in a
        // revision), atomic. Within a revision etcd keeps the order of the
        // changes, not of the keys.
        let mut last_rev = i64::MIN;
        let mut keys_at_rev: Vec<String> = Vec::new();
        for r in &seg.responses {
            let SeenResponse::Events(events) = r else {
                continue;
            };
            for e in events {
                if e.revision < last_rev {
                    failures.push(format!(
                        "{who}: event rev {} {} after rev {last_rev} (out of order)",
                        e.revision, e.key
                    ));
                }
                if e.revision != last_rev {
                    keys_at_rev.clear();
                }
                if keys_at_rev.contains(&e.key) {
                    failures.push(format!(
                        "{who}: event rev {} {} delivered twice",
                        e.revision, e.key
                    ));
                }
                keys_at_rev.push(e.key.clone());
                last_rev = e.revision;
            }
            if let (Some(first), Some(end)) = (events.first(), events.last()) {
                for rev in [first.revision, end.revision] {
                    let mut expected = history.matching(seg, rev, rev);
                    drop_compacted_deletes(seg, max_compaction, &mut expected);
                    let expected = expected.len();
                    let here = events.iter().filter(|e| e.revision == rev).count();
                    if here != expected {
                        failures.push(format!(
                            "{who}: revision {rev} split across responses ({here} of {expected} changes in one)"
                        ));
                    }
                }
            }
        }
        // Bookmarkable.
        let mut progress = i64::MIN;
        let mut seen_rev = i64::MIN;
        for r in &seg.responses {
            match r {
                SeenResponse::Progress(rev) => {
                    if *rev < progress || *rev < seen_rev {
                        failures.push(format!(
                            "{who}: progress notification at {rev} went backwards (after {})",
                            progress.max(seen_rev)
                        ));
                    }
                    progress = progress.max(*rev);
                }
                SeenResponse::Events(e) => {
                    if let Some(l) = e.last() {
                        seen_rev = seen_rev.max(l.revision);
                    }
                }
            }
        }
        // Resumable and reliable: exactly the committed changes.
        let until = seg.vouched_until();
        let mut expected = history.matching(seg, seg.start_revision, until);
        drop_compacted_deletes(seg, max_compaction, &mut expected);
        let mut got: Vec<(i64, String, Option<String>)> = seg
            .events()
            .map(|e| (e.revision, e.key.clone(), e.value.clone()))
            .collect();
        // Compared per revision as sets (`expected` is in key order).
        got.sort();
        if got != expected {
            let first_diff = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            failures.push(format!(
                "{who}: events up to rev {until} differ from the committed history at #{first_diff}: got {:?}, expected {:?}",
                got.get(first_diff),
                expected.get(first_diff)
            ));
        }
        // prev_kv.
        if seg.prev_kv {
            for e in seg.events() {
                let before = history.value_before(&e.key, e.revision);
                let compacted_away = e.prev.is_none() && e.revision <= max_compaction;
                if e.prev != before && !compacted_away {
                    failures.push(format!(
                        "{who}: prev_kv of rev {} {} is {:?}, committed value before was {:?}",
                        e.revision, e.key, e.prev, before
                    ));
                }
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    failures.truncate(10);
    failures
}

fn describe_range(seg: &Segment) -> String {
    match seg.range_end.as_str() {
        "" => format!("key {}", seg.key),
        "\0" => "all keys".to_owned(),
        end => format!("[{}, {end})", seg.key),
    }
}

/// A request stream for tonic from a channel.
fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<WatchRequest>,
) -> tokio_stream::wrappers::ReceiverStream<WatchRequest> {
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::committed::change;
    use crate::checker::history::Revision;

    fn event(rev: i64, key: &str, value: Option<&str>) -> SeenEvent {
        SeenEvent {
            revision: rev,
            key: key.to_owned(),
            value: value.map(str::to_owned),
            prev: None,
        }
    }

    /// Revision 3 is a txn putting k0 and deleting k9; the watcher on
    /// [k, l) starts at 3, the compact revision, and gets only the put.
    fn put_and_delete_at_3(responses: Vec<SeenResponse>) -> (Segment, CommittedHistory) {
        let seg = Segment {
            watcher: 1,
            member: "m1".into(),
            key: "k".into(),
            range_end: "l".into(),
            start_revision: 3,
            prev_kv: false,
            created: true,
            canceled: None,
            responses,
        };
        let history = CommittedHistory {
            compact_revision: Revision(3),
            current_revision: Revision(4),
            changes: vec![
                change(2, "k9", Some("a")),
                change(3, "k0", Some("b")),
                change(3, "k9", None),
                change(4, "k1", Some("c")),
            ],
        };
        (seg, history)
    }

    #[test]
    fn a_watch_from_the_compact_revision_may_miss_its_deletes_in_one_response() {
        let (seg, history) = put_and_delete_at_3(vec![SeenResponse::Events(vec![
            event(3, "k0", Some("b")),
            event(4, "k1", Some("c")),
        ])]);
        assert_eq!(check_segments(&[seg], &history, 3), Vec::<String>::new());
    }

    #[test]
    fn a_revision_split_across_responses_is_still_caught_above_the_compact_revision() {
        let (seg, history) = put_and_delete_at_3(vec![
            SeenResponse::Events(vec![event(3, "k0", Some("b"))]),
            SeenResponse::Events(vec![event(3, "k9", None)]),
            SeenResponse::Events(vec![event(4, "k1", Some("c"))]),
        ]);
        // Not compacted: all of revision 3 had to come in one response.
        let failures = check_segments(&[seg], &history, 0);
        assert!(
            failures
                .iter()
                .any(|f| f.contains("revision 3 split across responses")),
            "{failures:?}"
        );
    }
}
