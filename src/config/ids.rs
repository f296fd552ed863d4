//! Member and cluster ids, computed exactly as etcd 3.5 computes them when it
//! bootstraps, so the same `--initial-cluster` and token give the same ids
//! here as in etcd (the default single member is member 8e9e05c52164694d of
//! cluster cdf818194e3a8c32 in both), and a restart gives the same ids again.
//!
//! - member id: SHA-1 of the member's peer URLs, sorted and concatenated with
//!   no separator, followed by the cluster token; first 8 bytes, big-endian.
//! - cluster id: SHA-1 of every member id as 8 big-endian bytes, in ascending
//!   order; first 8 bytes, big-endian.
//!
//! Only bootstrap ids are computed here: a member that joins with `member add`
//! gets an id the cluster chose (etcd mixes in the time), which the server
//! learns from the cluster. Tests: `super::tests` (`ids_*`).

use std::collections::BTreeMap;
use std::fmt;

use cairn_runtime::NodeId;
use sha1::{Digest, Sha1};

use super::url::Url;

/// A cluster's id, carried in every response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The bootstrap id of the member with these peer URLs in the cluster named
/// by `cluster_token`. The member's name is not part of it (as in etcd).
pub fn member_id(peer_urls: &[Url], cluster_token: &str) -> NodeId {
    let mut texts: Vec<String> = peer_urls.iter().map(Url::to_string).collect();
    texts.sort();
    let mut input = texts.concat().into_bytes();
    input.extend_from_slice(cluster_token.as_bytes());
    NodeId(sha1_prefix(&input))
}

/// The id of the cluster bootstrapped from `initial_cluster` with `cluster_token`.
pub fn cluster_id(initial_cluster: &BTreeMap<String, Vec<Url>>, cluster_token: &str) -> ClusterId {
    let mut ids: Vec<u64> = initial_cluster
        .values()
        .map(|urls| member_id(urls, cluster_token).0)
        .collect();
    ids.sort_unstable();
    let input: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    ClusterId(sha1_prefix(&input))
}

/// The first 8 bytes of SHA-1(`input`) as a big-endian integer.
fn sha1_prefix(input: &[u8]) -> u64 {
    let digest = Sha1::digest(input);
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(prefix)
}

#[cfg(test)]
pub(crate) fn sha1_hex(input: &[u8]) -> String {
    Sha1::digest(input)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
