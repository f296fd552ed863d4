//! v2 keys clients: in a share of the seeds (`draw_v2`) the members run
//! with `--enable-v2` and two clients write and read the v2 store under the
//! seed's faults — sets, creates, compare-and-swaps on the index they read,
//! deletes, in-order POSTs, keys with TTLs the leader's sweep expires, and
//! quorum reads. The simulated network carries no plain HTTP, so the
//! clients call each member's `Server` directly (`cluster::Servers`): the
//! v2 handlers' parsing is tested over real HTTP in `tests/v2_api.rs`; here
//! the store, its replication, persistence, snapshots and sweep are.
//!
//! What must hold, besides the raft oracle's equal effects at equal indexes
//! (which compares every member's v2 events) and the v2 store's invariants
//! after every apply:
//! - each acknowledged write has an index of its own, equal to the store
//!   index it answered, and writes acknowledged one after the other got
//!   growing indexes (the v2 store is a single linearizable register file);
//! - a quorum read answers a store index at least that of every write
//!   acknowledged before it started, and never a value of a key older than
//!   a write to that key acknowledged before it started;
//! - a read's value and index belong together: a value some acknowledged
//!   write wrote was written at that index;
//! - a successful compare-and-swap replaced the node at the index it named;
//! - after healing, every member's quorum read of the whole store is the
//!   same tree, and each key holds its last acknowledged write or a later
//!   change (durability).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::v2store::{self, NodeView};
use cairn_proto::cairnpb::V2Request;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cluster::Servers;

/// The keys the clients use; `t` gets TTLs (it may expire).
const KEYS: &[&str] = &["/a", "/b", "/dir/c", "/t"];
const TTL_KEY: &str = "/t";
const QUEUE: &str = "/queue";

/// Whether this seed runs v2 clients: a third of the seeds, from a stream
/// of their own (the seed's other draws do not move).
pub fn draw_v2(master_seed: u64) -> bool {
    StdRng::seed_from_u64(master_seed ^ 0x510e_527f_ade6_82d1).random_bool(0.33)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Set,
    Create,
    Cas { prev_index: u64 },
    Delete,
    Post,
    Get,
}

/// What an answered v2 call said.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The event: its node's value, modified index, the store index, and
    /// the previous node's modified index.
    Ok {
        key: String,
        value: Option<String>,
        modified: u64,
        etcd_index: u64,
        prev_modified: Option<u64>,
    },
    /// A v2 error from the store (no effect) and the store index it named.
    Failed { code: u32, index: u64 },
    /// No answer (timeout, member stopped): may or may not have happened;
    /// why.
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: u64,
    pub call: Duration,
    pub ret: Option<Duration>,
    pub kind: Kind,
    pub key: String,
    pub value: String,
    pub ttl: bool,
    pub outcome: Outcome,
}

impl Op {
    fn is_write(&self) -> bool {
        self.kind != Kind::Get
    }

    /// The index an acknowledged write took.
    fn write_index(&self) -> Option<u64> {
        match (&self.outcome, self.is_write()) {
            (Outcome::Ok { modified, .. }, true) => Some(*modified),
            _ => None,
        }
    }
}

pub type Log = Arc<Mutex<Vec<Op>>>;

fn outcome_of(r: Result<cairn::server::v2::V2Answer, v2store::Error>) -> Outcome {
    match r {
        Ok(a) => Outcome::Ok {
            key: a.event.node.key.clone(),
            value: a.event.node.value.clone(),
            modified: a.event.node.modified_index,
            etcd_index: a.event.etcd_index,
            prev_modified: a.event.prev_node.as_ref().map(|p| p.modified_index),
        },
        Err(e) if e.code == v2store::ECODE_RAFT_INTERNAL => Outcome::Unknown(e.cause),
        Err(e) => Outcome::Failed {
            code: e.code,
            index: e.index,
        },
    }
}

fn pick_server(servers: &Servers, rng: &mut StdRng) -> Option<cairn::server::Server> {
    let all: Vec<cairn::server::Server> = servers
        .lock()
        .expect("servers lock")
        .values()
        .cloned()
        .collect();
    if all.is_empty() {
        return None;
    }
    let i = rng.random_range(0..all.len());
    all.into_iter().nth(i)
}

/// One client until `stop`.
pub async fn run(
    client: u64,
    servers: Servers,
    mut rng: StdRng,
    started: tokio::time::Instant,
    log: Log,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    // The last index this client read per key (for its compare-and-swaps).
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        let Some(server) = pick_server(&servers, &mut rng) else {
            continue;
        };
        n += 1;
        let key = KEYS[rng.random_range(0..KEYS.len())].to_owned();
        let value = format!("c{client}-{n}");
        let ttl = key == TTL_KEY && rng.random_bool(0.7);
        let kind = match rng.random_range(0..100) {
            0..=29 => Kind::Set,
            30..=39 => Kind::Create,
            40..=54 => match seen.get(&key) {
                Some(i) => Kind::Cas { prev_index: *i },
                None => Kind::Get,
            },
            55..=62 => Kind::Delete,
            63..=69 => Kind::Post,
            _ => Kind::Get,
        };
        let key = if kind == Kind::Post {
            QUEUE.to_owned()
        } else {
            key
        };
        let expiration = if ttl {
            server.v2_now() + rng.random_range(1..3) * 1_000_000_000
        } else {
            0
        };
        let write = |method: &str| V2Request {
            method: method.to_owned(),
            path: key.clone(),
            val: value.clone(),
            expiration,
            ..Default::default()
        };
        let call = started.elapsed();
        let r = match &kind {
            Kind::Get => server.v2_get(&key, false, true).await,
            Kind::Set => server.v2_write(write("PUT")).await,
            Kind::Create => {
                server
                    .v2_write(V2Request {
                        prev_exist: Some(false),
                        ..write("PUT")
                    })
                    .await
            }
            Kind::Cas { prev_index } => {
                server
                    .v2_write(V2Request {
                        prev_index: *prev_index,
                        ..write("PUT")
                    })
                    .await
            }
            Kind::Delete => {
                server
                    .v2_write(V2Request {
                        val: String::new(),
                        expiration: 0,
                        ..write("DELETE")
                    })
                    .await
            }
            Kind::Post => server.v2_write(write("POST")).await,
        };
        let outcome = outcome_of(r);
        let ret = (!matches!(outcome, Outcome::Unknown(_))).then(|| started.elapsed());
        if let Outcome::Ok { modified, .. } = &outcome {
            if kind == Kind::Get {
                seen.insert(key.clone(), *modified);
            }
        }
        log.lock().expect("v2 log").push(Op {
            client,
            call,
            ret,
            kind,
            key,
            value,
            ttl,
            outcome,
        });
    }
}

/// A tree without its TTL countdowns (member-local readings).
fn tree(n: &NodeView, out: &mut String) {
    out.push_str(&format!(
        "{} {:?} {} {:?} {} {}\n",
        n.key, n.value, n.dir, n.expiration, n.modified_index, n.created_index
    ));
    for c in &n.nodes {
        tree(c, out);
    }
}

/// After healing: every running member's (`live`) quorum read of the whole
/// store, and each key's final node (from the first member that answers).
pub async fn final_reads(
    servers: Servers,
    live: std::collections::BTreeSet<u64>,
) -> (
    Vec<(u64, Result<String, String>)>,
    BTreeMap<String, Option<(String, u64)>>,
) {
    let all: Vec<(u64, cairn::server::Server)> = servers
        .lock()
        .expect("servers lock")
        .iter()
        .filter(|(id, _)| live.contains(id))
        .map(|(id, s)| (*id, s.clone()))
        .collect();
    let mut trees = Vec::new();
    let mut finals = BTreeMap::new();
    for (id, s) in &all {
        let mut last = Err("no answer".to_owned());
        for _ in 0..20 {
            match s.v2_get("/", true, true).await {
                Ok(a) => {
                    let mut out = format!("index {}\n", a.event.etcd_index);
                    tree(&a.event.node, &mut out);
                    last = Ok(out);
                    break;
                }
                Err(e) => {
                    last = Err(e.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        trees.push((*id, last));
    }
    if let Some((_, s)) = all.first() {
        for key in KEYS {
            for _ in 0..20 {
                match s.v2_get(key, false, true).await {
                    Ok(a) => {
                        let value = a.event.node.value.clone().unwrap_or_default();
                        finals.insert(
                            (*key).to_owned(),
                            Some((value, a.event.node.modified_index)),
                        );
                        break;
                    }
                    Err(e) if e.code == v2store::ECODE_KEY_NOT_FOUND => {
                        finals.insert((*key).to_owned(), None);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        }
    }
    (trees, finals)
}

/// The checks of the module header; (failures, a note for the report).
pub fn check(
    ops: &[Op],
    trees: &[(u64, Result<String, String>)],
    finals: &BTreeMap<String, Option<(String, u64)>>,
) -> (Vec<String>, String) {
    let mut failures = Vec::new();
    let writes: Vec<&Op> = ops.iter().filter(|o| o.write_index().is_some()).collect();
    // Unique indexes, equal to the store index answered.
    let mut by_index: BTreeMap<u64, &Op> = BTreeMap::new();
    for w in &writes {
        let i = w.write_index().unwrap_or(0);
        if let Outcome::Ok { etcd_index, .. } = &w.outcome {
            if *etcd_index != i {
                failures.push(format!(
                    "v2: client {} {:?} {} answered modifiedIndex {i} but X-Etcd-Index {etcd_index}",
                    w.client, w.kind, w.key
                ));
            }
        }
        if let Some(other) = by_index.insert(i, w) {
            failures.push(format!(
                "v2: two acknowledged writes got index {i}: client {} {:?} {} and client {} {:?} {}",
                other.client, other.kind, other.key, w.client, w.kind, w.key
            ));
        }
    }
    // Real-time order of acknowledged writes.
    for a in &writes {
        for b in &writes {
            if let (Some(ar), Some(ai), Some(bi)) = (a.ret, a.write_index(), b.write_index()) {
                if ar < b.call && ai >= bi {
                    failures.push(format!(
                        "v2: write at index {ai} (client {}, acknowledged at {ar:?}) is not before write at index {bi} (client {}, sent at {:?})",
                        a.client, b.client, b.call
                    ));
                }
            }
        }
    }
    // Reads.
    let value_index: BTreeMap<&str, u64> = writes
        .iter()
        .filter(|w| {
            matches!(
                w.kind,
                Kind::Set | Kind::Create | Kind::Cas { .. } | Kind::Post
            )
        })
        .filter_map(|w| Some((w.value.as_str(), w.write_index()?)))
        .collect();
    for r in ops.iter().filter(|o| o.kind == Kind::Get) {
        let (found, store_index) = match &r.outcome {
            Outcome::Ok {
                value,
                modified,
                etcd_index,
                ..
            } => (Some((value.clone(), *modified)), *etcd_index),
            Outcome::Failed { code: 100, index } => (None, *index),
            _ => continue,
        };
        for w in writes.iter().filter(|w| w.ret.is_some_and(|t| t < r.call)) {
            let wi = w.write_index().unwrap_or(0);
            if store_index < wi {
                failures.push(format!(
                    "v2: stale read: client {} read {} at store index {store_index}, after the write at index {wi} was acknowledged",
                    r.client, r.key
                ));
            }
            if w.key == r.key {
                if let Some((_, m)) = &found {
                    if *m < wi {
                        failures.push(format!(
                            "v2: stale read: client {} read {} modified at {m}, after the write to it at index {wi} was acknowledged",
                            r.client, r.key
                        ));
                    }
                }
            }
        }
        if let Some((Some(v), m)) = &found {
            if let Some(wi) = value_index.get(v.as_str()) {
                if wi != m {
                    failures.push(format!(
                        "v2: client {} read {} = {v} at index {m}, but that value was written at index {wi}",
                        r.client, r.key
                    ));
                }
            }
        }
    }
    // Compare-and-swaps.
    for o in ops {
        if let (Kind::Cas { prev_index }, Outcome::Ok { prev_modified, .. }) = (&o.kind, &o.outcome)
        {
            if *prev_modified != Some(*prev_index) {
                failures.push(format!(
                    "v2: compare-and-swap on {} at prevIndex {prev_index} replaced a node modified at {prev_modified:?}",
                    o.key
                ));
            }
        }
    }
    // Every member's store after healing.
    let answered: Vec<&(u64, Result<String, String>)> =
        trees.iter().filter(|(_, t)| t.is_ok()).collect();
    for (id, t) in trees {
        if let Err(e) = t {
            failures.push(format!(
                "v2: member {id:x} answered no quorum read after healing: {e}"
            ));
        }
    }
    if let Some((first_id, Ok(first))) = answered.first() {
        for (id, t) in &answered[1..] {
            if t.as_ref().ok() != Some(first) {
                failures.push(format!(
                    "v2: member {id:x}'s store differs from member {first_id:x}'s after healing"
                ));
            }
        }
    }
    // Durability of the last acknowledged write of each key.
    for key in KEYS {
        let last = writes
            .iter()
            .filter(|w| w.key == *key)
            .filter_map(|w| w.write_index())
            .max();
        let Some(last) = last else { continue };
        match finals.get(*key) {
            Some(Some((_, m))) if *m < last => failures.push(format!(
                "v2: {key} lost its write at index {last}: it holds the one at {m} after healing"
            )),
            Some(None) => {
                let removable = ops.iter().any(|o| {
                    o.key == *key
                        && (o.kind == Kind::Delete || o.ttl)
                        && !matches!(o.outcome, Outcome::Failed { .. })
                });
                if !removable {
                    failures.push(format!(
                        "v2: {key} is gone after healing, though nothing deleted it and it had no TTL"
                    ));
                }
            }
            _ => {}
        }
    }
    let mut why: BTreeMap<&str, usize> = BTreeMap::new();
    for o in ops {
        if let Outcome::Unknown(cause) = &o.outcome {
            *why.entry(cause.as_str()).or_default() += 1;
        }
    }
    let unknown: usize = why.values().sum();
    let failed = ops
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Failed { .. }))
        .count();
    let note = format!(
        "v2: {} operations ({} writes acknowledged, {failed} refused, {unknown} unknown: {why:?}), {} members compared after healing",
        ops.len(),
        writes.len(),
        answered.len()
    );
    (failures, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: Kind, key: &str, value: &str, call: u64, ret: u64, outcome: Outcome) -> Op {
        Op {
            client: 1,
            call: Duration::from_millis(call),
            ret: Some(Duration::from_millis(ret)),
            kind,
            key: key.into(),
            value: value.into(),
            ttl: false,
            outcome,
        }
    }

    fn ok(value: &str, modified: u64) -> Outcome {
        Outcome::Ok {
            key: "/a".into(),
            value: Some(value.into()),
            modified,
            etcd_index: modified,
            prev_modified: None,
        }
    }

    #[test]
    fn a_read_older_than_an_acknowledged_write_is_a_stale_read() {
        let ops = vec![
            op(Kind::Set, "/a", "x", 0, 10, ok("x", 1)),
            op(Kind::Set, "/a", "y", 20, 30, ok("y", 2)),
            op(Kind::Get, "/a", "", 40, 50, ok("x", 1)),
        ];
        let (failures, _) = check(&ops, &[], &BTreeMap::new());
        assert!(
            failures.iter().any(|f| f.contains("stale read")),
            "{failures:?}"
        );
        let fine = vec![
            ops[0].clone(),
            ops[1].clone(),
            op(Kind::Get, "/a", "", 40, 50, ok("y", 2)),
        ];
        assert_eq!(check(&fine, &[], &BTreeMap::new()).0, Vec::<String>::new());
    }

    #[test]
    fn writes_sharing_an_index_or_out_of_real_time_order_fail() {
        let ops = vec![
            op(Kind::Set, "/a", "x", 0, 10, ok("x", 3)),
            op(Kind::Set, "/b", "y", 20, 30, ok("y", 3)),
        ];
        let (failures, _) = check(&ops, &[], &BTreeMap::new());
        assert!(failures
            .iter()
            .any(|f| f.contains("two acknowledged writes")));
        assert!(failures.iter().any(|f| f.contains("is not before")));
    }

    #[test]
    fn a_lost_write_and_diverged_members_fail() {
        let ops = vec![op(Kind::Set, "/a", "x", 0, 10, ok("x", 5))];
        let finals = BTreeMap::from([("/a".to_owned(), Some(("old".to_owned(), 2)))]);
        let trees = vec![
            (1, Ok("index 5\n".to_owned())),
            (2, Ok("index 4\n".to_owned())),
        ];
        let (failures, _) = check(&ops, &trees, &finals);
        assert!(
            failures.iter().any(|f| f.contains("lost its write")),
            "{failures:?}"
        );
        assert!(
            failures.iter().any(|f| f.contains("differs")),
            "{failures:?}"
        );
    }
}
