//! `HubConfig`: the hub's limits — how much a stream may have queued before
//! its watchers' new events are set aside, how many revisions one catch-up
//! step reads, and above which size a `fragment` watcher's responses are
//! split.
//!
//! Tests: `tests.rs` runs the hub with small limits (`small_config`) and
//! `model_tests.rs` with random ones.

/// Limits of the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Responses a stream may have queued before its watchers' new events
    /// are set aside for a later catch-up.
    pub max_queued_responses: usize,
    /// Bytes (encoded responses) a stream may have queued, likewise.
    pub max_queued_bytes: usize,
    /// Revisions one catch-up step reads from history at most.
    pub catch_up_revisions: i64,
    /// etcd's `--max-request-bytes`: a `fragment` watcher's responses are split above it.
    pub max_response_bytes: usize,
}

impl HubConfig {
    /// The limits a member uses.
    pub fn new(max_request_bytes: usize) -> HubConfig {
        HubConfig {
            max_queued_responses: 4096,
            max_queued_bytes: 4 * 1024 * 1024,
            // etcd's watchBatchMaxRevs.
            catch_up_revisions: 1000,
            max_response_bytes: max_request_bytes,
        }
    }
}
