//! etcd's watch response fragmentation: a watcher created with `fragment`
//! gets a response larger than `--max-request-bytes` as several responses,
//! each but the last marked `fragment`, each with at least one event, cut
//! where adding the next event would reach the limit. Without `fragment`
//! (or with fewer than two events) the response goes out whole, as in etcd.
//! Tests: `super::tests` (`fragment_*`).

use cairn_proto::etcdserverpb::WatchResponse;
use prost::Message as _;

/// Bytes reserved for the header the API layer fills in (cluster and member
/// id, raft term: up to 11 bytes each as varints, plus tags and length).
pub const HEADER_ALLOWANCE: usize = 48;

/// Splits `resp` into fragments no larger than `max_bytes` (each fragment
/// keeps at least one event, so one huge event still goes out).
pub fn fragment(resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if resp.events.len() < 2 || resp.encoded_len() + HEADER_ALLOWANCE < max_bytes {
        return vec![resp];
    }
    let mut events = resp.events;
    let mut base = WatchResponse {
        events: Vec::new(),
        ..resp
    };
    base.fragment = true;
    let base_len = base.encoded_len() + HEADER_ALLOWANCE;
    let mut out: Vec<WatchResponse> = Vec::new();
    let mut current = base.clone();
    let mut current_len = base_len;
    for ev in events.drain(..) {
        let len = ev.encoded_len();
        // field tag (1 byte for field 11) + length prefix + message
        let cost = 1 + prost::length_delimiter_len(len) + len;
        if !current.events.is_empty() && current_len + cost >= max_bytes {
            out.push(std::mem::replace(&mut current, base.clone()));
            current_len = base_len;
        }
        current.events.push(ev);
        current_len += cost;
    }
    current.fragment = false;
    out.push(current);
    out
}
