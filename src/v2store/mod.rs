//! etcd's v2 keys store (the `/v2/keys` API behind `--enable-v2`): a tree of
//! directories and keys, each with the store index that created and last
//! modified it and an optional expiry; a store index counting every change;
//! the last 1 000 changes kept for `wait=true` watches.
//!
//! Sans-IO like the rest of the core: time comes in as an argument (Unix
//! nanoseconds; an expiry is an absolute wall-clock time computed by the
//! member that accepted the request, so every member applies the same entry
//! the same way), nothing here touches storage. What changed is handed out
//! by `take_dirty` and persisted by the server in the same batch as the
//! applied index (`encode_node` / `Store::load`).
//!
//! Semantics follow etcd 3.4's v2 store: `set` replaces a key (new created
//! index), intermediate directories are created as needed, the root is read
//! only, names starting with `_` are hidden from listings and from recursive
//! watches above them, expiries delete whole subtrees as one `expire` event.
//! Errors carry etcd's codes, messages, causes and the store index.
//!
//! Tests: `src/v2store/tests.rs`; the HTTP API against etcd 3.4 in
//! `tests/v2_api.rs`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

mod json;
#[cfg(test)]
mod tests;

pub use json::{event_without_nodes, go_quote, rfc3339_nanos};

/// The column family holding the v2 store (one record per node, plus the
/// store index under `INDEX_KEY`).
pub const CF_V2: &str = "v2";
const INDEX_KEY: &[u8] = b"index";
/// How many changes a watch can look back over.
pub const HISTORY_LEN: usize = 1000;
/// Expiry times before 2000-01-01 mean "no expiry" (as etcd: a zero time
/// serialised by a client).
const MIN_EXPIRE_NANOS: i64 = 946_684_800_000_000_000;

pub const ECODE_KEY_NOT_FOUND: u32 = 100;
pub const ECODE_TEST_FAILED: u32 = 101;
pub const ECODE_NOT_FILE: u32 = 102;
pub const ECODE_NOT_DIR: u32 = 104;
pub const ECODE_NODE_EXIST: u32 = 105;
pub const ECODE_ROOT_RONLY: u32 = 107;
pub const ECODE_DIR_NOT_EMPTY: u32 = 108;
pub const ECODE_UNAUTHORIZED: u32 = 110;
pub const ECODE_PREV_VALUE_REQUIRED: u32 = 201;
pub const ECODE_TTL_NAN: u32 = 202;
pub const ECODE_INDEX_NAN: u32 = 203;
pub const ECODE_INVALID_FIELD: u32 = 209;
pub const ECODE_INVALID_FORM: u32 = 210;
pub const ECODE_REFRESH_VALUE: u32 = 211;
pub const ECODE_REFRESH_TTL_REQUIRED: u32 = 212;
pub const ECODE_RAFT_INTERNAL: u32 = 300;
pub const ECODE_LEADER_ELECT: u32 = 301;
pub const ECODE_EVENT_INDEX_CLEARED: u32 = 401;

/// A v2 error: etcd's code, its fixed message, a cause and the store index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: u32,
    pub cause: String,
    pub index: u64,
}

impl Error {
    pub fn new(code: u32, cause: impl Into<String>, index: u64) -> Error {
        Error {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// etcd's message for the code.
    pub fn message(&self) -> &'static str {
        match self.code {
            100 => "Key not found",
            101 => "Compare failed",
            102 => "Not a file",
            103 => "Reached the max number of peers in the cluster",
            104 => "Not a directory",
            105 => "Key already exists",
            106 => "The prefix of given key is a keyword in etcd",
            107 => "Root is read only",
            108 => "Directory not empty",
            109 => "Peer address has existed",
            110 => "The request requires user authentication",
            200 => "Value is Required in POST form",
            201 => "PrevValue is Required in POST form",
            202 => "The given TTL in POST form is not a number",
            203 => "The given index in POST form is not a number",
            204 => "Value or TTL is required in POST form",
            205 => "The given timeout in POST form is not a number",
            206 => "Name is required in POST form",
            207 => "Index or value is required",
            208 => "Index and value cannot both be specified",
            209 => "Invalid field",
            210 => "Invalid POST form",
            211 => "Value provided on refresh",
            212 => "A TTL must be provided on refresh",
            300 => "Raft Internal Error",
            301 => "During Leader Election",
            400 => "watcher is cleared due to etcd recovery",
            401 => "The event in requested index is outdated and cleared",
            _ => "",
        }
    }

    /// The HTTP status etcd answers the error with.
    pub fn status(&self) -> u16 {
        match self.code {
            100 => 404,
            102 | 108 => 403,
            110 => 401,
            101 | 105 => 412,
            300 | 301 => 500,
            _ => 400,
        }
    }

    /// etcd's JSON body (one line, with its newline).
    pub fn to_json(&self) -> String {
        let mut out = format!(
            "{{\"errorCode\":{},\"message\":{}",
            self.code,
            go_quote(self.message())
        );
        if !self.cause.is_empty() {
            out.push_str(",\"cause\":");
            out.push_str(&go_quote(&self.cause));
        }
        out.push_str(&format!(",\"index\":{}}}\n", self.index));
        out
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message(), self.cause)
    }
}

impl std::error::Error for Error {}

/// A node as answered to a client (etcd's `NodeExtern`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    /// The path; empty for the root.
    pub key: String,
    pub value: Option<String>,
    pub dir: bool,
    /// Expiry (Unix nanoseconds) and the seconds left, rounded up.
    pub expiration: Option<i64>,
    pub ttl: i64,
    pub nodes: Vec<NodeView>,
    pub modified_index: u64,
    pub created_index: u64,
}

/// What a request did (etcd's v2 `Event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub action: &'static str,
    pub node: NodeView,
    pub prev_node: Option<NodeView>,
    /// The store index after the request (the `X-Etcd-Index` header).
    pub etcd_index: u64,
    /// A TTL refresh: kept in the history but not sent to watchers (and
    /// never shown in an answer, as etcd).
    pub refresh: bool,
    /// Every node a delete or expiry removed (their watchers are told).
    pub removed: Vec<String>,
}

impl Event {
    /// The index the event happened at.
    pub fn index(&self) -> u64 {
        self.node.modified_index
    }

    /// Whether it created the key (`201 Created` instead of `200`).
    pub fn is_created(&self) -> bool {
        self.action == "create" || (self.action == "set" && self.prev_node.is_none())
    }

    /// Whether a watcher on `key` (recursive or not) is told of it, as
    /// etcd's watcher hub decides for a live event.
    pub fn concerns(&self, key: &str, recursive: bool) -> bool {
        if self.refresh {
            return false;
        }
        let at = self.node.key.as_str();
        let at = if at.is_empty() { "/" } else { at };
        if at == key {
            return true;
        }
        if self.removed.iter().any(|p| p == key) {
            return true;
        }
        recursive && is_ancestor(key, at) && !is_hidden(key, at)
    }

    /// Whether a watch scanning the history from `key` matches it (etcd's
    /// history scan, which also matches a watched key inside a deleted
    /// directory).
    fn matches_history(&self, key: &str, recursive: bool) -> bool {
        if self.refresh {
            return false;
        }
        let at = if self.node.key.is_empty() {
            "/"
        } else {
            self.node.key.as_str()
        };
        if at == key {
            return true;
        }
        if recursive {
            let prefix = if key.ends_with('/') {
                key.to_owned()
            } else {
                format!("{key}/")
            };
            if at.starts_with(&prefix) {
                return true;
            }
        }
        matches!(self.action, "delete" | "expire")
            && self
                .prev_node
                .as_ref()
                .is_some_and(|p| p.dir && key.starts_with(&p.key))
    }

    /// etcd's JSON body (one line, with its newline).
    pub fn to_json(&self) -> String {
        json::event(self)
    }

    /// What the event says, without the TTL countdowns (which depend on
    /// when and where it is read): equal on every member that applied the
    /// same entry.
    pub fn digest(&self) -> String {
        let node = |n: &NodeView| {
            format!(
                "{} {:?} {} {:?} {} {}",
                n.key, n.value, n.dir, n.expiration, n.modified_index, n.created_index
            )
        };
        format!(
            "{} [{}] [{}] {} {:?}\n",
            self.action,
            node(&self.node),
            self.prev_node.as_ref().map(node).unwrap_or_default(),
            self.etcd_index,
            self.removed
        )
    }
}

/// Whether `dir` is `path` itself or above it.
fn is_ancestor(dir: &str, path: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// Whether `path`, seen from a watcher on `watched`, lies under a hidden
/// name (one starting with `_`).
fn is_hidden(watched: &str, path: &str) -> bool {
    if watched.len() > path.len() {
        return false;
    }
    let after = clean(&format!("/{}", &path[watched.len()..]));
    after.contains("/_")
}

/// A path made absolute and clean (Go's `path.Clean(path.Join("/", p))`):
/// no empty, `.` or `..` components, no trailing slash.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        "/".to_owned()
    } else {
        let mut out = String::new();
        for c in parts {
            out.push('/');
            out.push_str(c);
        }
        out
    }
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `None` for a directory.
    pub value: Option<String>,
    pub created_index: u64,
    pub modified_index: u64,
    /// Unix nanoseconds; `None`: permanent.
    pub expire: Option<i64>,
    /// A directory's children, by name.
    children: BTreeSet<String>,
}

impl Node {
    fn is_dir(&self) -> bool {
        self.value.is_none()
    }

    fn new(value: Option<String>, index: u64, expire: Option<i64>) -> Node {
        Node {
            value,
            created_index: index,
            modified_index: index,
            expire,
            children: BTreeSet::new(),
        }
    }
}

/// The seconds left until `expire`, rounded up (etcd's `ttl`).
fn ttl_at(expire: i64, now: i64) -> i64 {
    let left = expire - now;
    let secs = left / 1_000_000_000;
    if left % 1_000_000_000 > 0 {
        secs + 1
    } else {
        secs
    }
}

/// An expiry as given: times before 2000 mean none.
fn expiry(expire: Option<i64>) -> Option<i64> {
    expire.filter(|t| *t >= MIN_EXPIRE_NANOS)
}

/// How a request's options set a node's expiry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ttl {
    /// Unix nanoseconds; `None`: permanent (a set without `ttl` clears one).
    pub expire: Option<i64>,
    /// Only the TTL changes; the value stays, watchers are not told.
    pub refresh: bool,
}

/// Counters of `/v2/stats/store`.
#[derive(Debug, Default)]
pub struct Stats {
    pub gets_success: AtomicU64,
    pub gets_fail: AtomicU64,
    pub sets_success: AtomicU64,
    pub sets_fail: AtomicU64,
    pub delete_success: AtomicU64,
    pub delete_fail: AtomicU64,
    pub update_success: AtomicU64,
    pub update_fail: AtomicU64,
    pub create_success: AtomicU64,
    pub create_fail: AtomicU64,
    pub compare_and_swap_success: AtomicU64,
    pub compare_and_swap_fail: AtomicU64,
    pub compare_and_delete_success: AtomicU64,
    pub compare_and_delete_fail: AtomicU64,
    pub expire_count: AtomicU64,
}

fn count<T, E>(r: &Result<T, E>, ok: &AtomicU64, fail: &AtomicU64) {
    let c = if r.is_ok() { ok } else { fail };
    c.fetch_add(1, Ordering::Relaxed);
}

/// The v2 store.
#[derive(Debug)]
pub struct Store {
    nodes: BTreeMap<String, Node>,
    index: u64,
    /// Nodes with an expiry, by expiry.
    ttl: BTreeSet<(i64, String)>,
    history: VecDeque<Event>,
    /// The oldest index a watch may ask for while the history is empty (the
    /// history of a store loaded from storage starts after its index).
    history_floor: u64,
    /// Paths changed since the last `take_dirty`.
    dirty: BTreeSet<String>,
    pub stats: Stats,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_owned(), Node::new(None, 0, None));
        Store {
            nodes,
            index: 0,
            ttl: BTreeSet::new(),
            history: VecDeque::new(),
            history_floor: 1,
            dirty: BTreeSet::new(),
            stats: Stats::default(),
        }
    }

    /// The store index: how many changes the store has applied.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// How many nodes there are (the root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    /// The earliest expiry, if any node has one.
    pub fn next_expiry(&self) -> Option<i64> {
        self.ttl.iter().next().map(|(t, _)| *t)
    }

    fn not_found(&self, path: &str) -> Error {
        Error::new(ECODE_KEY_NOT_FOUND, path, self.index)
    }

    /// The node at `path` (clean), with etcd's errors on the way: a file
    /// where a directory was needed, a missing component.
    fn lookup(&self, path: &str) -> Result<&Node, Error> {
        let mut at = "/".to_owned();
        for c in path.split('/').filter(|c| !c.is_empty()) {
            let node = self.nodes.get(&at).ok_or_else(|| self.not_found(&at))?;
            if !node.is_dir() {
                return Err(Error::new(ECODE_NOT_DIR, at, self.index));
            }
            at = join(&at, c);
            if !self.nodes.contains_key(&at) {
                return Err(self.not_found(&at));
            }
        }
        self.nodes.get(&at).ok_or_else(|| self.not_found(&at))
    }

    fn view(&self, path: &str, node: &Node, recursive: bool, now: i64) -> NodeView {
        let mut v = NodeView {
            key: if path == "/" {
                String::new()
            } else {
                path.to_owned()
            },
            value: node.value.clone(),
            dir: node.is_dir(),
            expiration: node.expire,
            ttl: node.expire.map_or(0, |t| ttl_at(t, now)),
            nodes: Vec::new(),
            modified_index: node.modified_index,
            created_index: node.created_index,
        };
        if recursive && node.is_dir() {
            v.nodes = self.children_views(path, node, true, now);
        }
        v
    }

    /// A directory's visible children, sorted by key (etcd sorts only on
    /// request and otherwise answers in map order; sorted is one such order).
    fn children_views(&self, path: &str, node: &Node, recursive: bool, now: i64) -> Vec<NodeView> {
        node.children
            .iter()
            .filter(|name| !name.starts_with('_'))
            .filter_map(|name| {
                let p = join(path, name);
                self.nodes
                    .get(&p)
                    .map(|child| self.view(&p, child, recursive, now))
            })
            .collect()
    }

    /// A GET: the node, a directory with its children (all levels when
    /// `recursive`).
    pub fn get(&self, path: &str, recursive: bool, now: i64) -> Result<Event, Error> {
        let path = clean(path);
        let r = self.lookup(&path).map(|node| {
            let mut v = self.view(&path, node, false, now);
            if node.is_dir() {
                v.nodes = self.children_views(&path, node, recursive, now);
            }
            Event {
                action: "get",
                node: v,
                prev_node: None,
                etcd_index: self.index,
                refresh: false,
                removed: Vec::new(),
            }
        });
        count(&r, &self.stats.gets_success, &self.stats.gets_fail);
        r
    }

    fn mark(&mut self, path: &str) {
        self.dirty.insert(path.to_owned());
    }

    /// The paths changed since the last call (to persist: a path absent from
    /// the store now was deleted).
    pub fn take_dirty(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    fn set_expire(&mut self, path: &str, expire: Option<i64>) {
        if let Some(node) = self.nodes.get_mut(path) {
            if let Some(old) = node.expire {
                self.ttl.remove(&(old, path.to_owned()));
            }
            node.expire = expire;
            if let Some(t) = expire {
                self.ttl.insert((t, path.to_owned()));
            }
        }
    }

    /// Inserts a new node under an existing directory.
    fn insert(&mut self, path: &str, node: Node) {
        let parent = parent_of(path).to_owned();
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.insert(name_of(path).to_owned());
        }
        if let Some(t) = node.expire {
            self.ttl.insert((t, path.to_owned()));
        }
        self.nodes.insert(path.to_owned(), node);
        self.mark(path);
    }

    /// Removes `path` and everything under it; returns the removed paths
    /// (deepest first).
    fn remove_tree(&mut self, path: &str) -> Vec<String> {
        let mut removed = Vec::new();
        let children: Vec<String> = self
            .nodes
            .get(path)
            .map(|n| n.children.iter().cloned().collect())
            .unwrap_or_default();
        for c in children {
            removed.extend(self.remove_tree(&join(path, &c)));
        }
        if let Some(node) = self.nodes.remove(path) {
            if let Some(t) = node.expire {
                self.ttl.remove(&(t, path.to_owned()));
            }
            let parent = parent_of(path).to_owned();
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.children.remove(name_of(path));
            }
            self.mark(path);
            removed.push(path.to_owned());
        }
        removed
    }

    /// Walks to the directory `dir`, creating missing directories (at index
    /// `next`, permanent); a file on the way is `104 Not a directory`.
    fn ensure_dir(&mut self, dir: &str, next: u64) -> Result<(), Error> {
        let mut at = "/".to_owned();
        for c in dir.split('/').filter(|c| !c.is_empty()) {
            let child = join(&at, c);
            match self.nodes.get(&child) {
                Some(n) if n.is_dir() => {}
                Some(_) => return Err(Error::new(ECODE_NOT_DIR, child, self.index)),
                None => self.insert(&child, Node::new(None, next, None)),
            }
            at = child;
        }
        Ok(())
    }

    fn record(&mut self, mut e: Event) -> Event {
        e.etcd_index = self.index;
        self.history.push_back(e.clone());
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
        e
    }

    fn event(action: &'static str, key: &str, modified: u64, created: u64) -> Event {
        Event {
            action,
            node: NodeView {
                key: key.to_owned(),
                modified_index: modified,
                created_index: created,
                ..NodeView::default()
            },
            prev_node: None,
            etcd_index: 0,
            refresh: false,
            removed: Vec::new(),
        }
    }

    /// Creates `path` (a key with `value`, or a directory), replacing a key
    /// there when `replace`; `unique` appends a name from the next index
    /// (POST's in-order keys).
    fn create_node(
        &mut self,
        path: &str,
        dir: bool,
        value: &str,
        unique: bool,
        replace: bool,
        expire: Option<i64>,
        action: &'static str,
        now: i64,
    ) -> Result<Event, Error> {
        let next = self.index + 1;
        let path = if unique {
            clean(&format!("{path}/{next:020}"))
        } else {
            clean(path)
        };
        if path == "/" {
            return Err(Error::new(ECODE_ROOT_RONLY, "/", self.index));
        }
        let expire = expiry(expire);
        self.ensure_dir(parent_of(&path), next)?;
        let mut e = Self::event(action, &path, next, next);
        if let Some(existing) = self.nodes.get(&path) {
            if !replace {
                return Err(Error::new(ECODE_NODE_EXIST, path, self.index));
            }
            if existing.is_dir() {
                return Err(Error::new(ECODE_NOT_FILE, path, self.index));
            }
            e.prev_node = Some(self.view(&path, existing, false, now));
            self.remove_tree(&path);
        }
        let value = (!dir).then(|| value.to_owned());
        e.node.value.clone_from(&value);
        e.node.dir = dir;
        if let Some(t) = expire {
            e.node.expiration = Some(t);
            e.node.ttl = ttl_at(t, now);
        }
        self.insert(&path, Node::new(value, next, expire));
        self.index = next;
        Ok(e)
    }

    /// POST (`unique`) or PUT with `prevExist=false`: fails if the key exists.
    pub fn create(
        &mut self,
        path: &str,
        dir: bool,
        value: &str,
        unique: bool,
        expire: Option<i64>,
        now: i64,
    ) -> Result<Event, Error> {
        let r = self
            .create_node(path, dir, value, unique, false, expire, "create", now)
            .map(|e| self.record(e));
        count(&r, &self.stats.create_success, &self.stats.create_fail);
        r
    }

    /// PUT: creates or replaces a key, or creates a directory.
    pub fn set(
        &mut self,
        path: &str,
        dir: bool,
        value: &str,
        ttl: Ttl,
        now: i64,
    ) -> Result<Event, Error> {
        let r = self.set_inner(path, dir, value, ttl, now);
        count(&r, &self.stats.sets_success, &self.stats.sets_fail);
        r
    }

    fn set_inner(
        &mut self,
        path: &str,
        dir: bool,
        value: &str,
        ttl: Ttl,
        now: i64,
    ) -> Result<Event, Error> {
        let path = clean(path);
        let existing = match self.lookup(&path) {
            Ok(n) => Some(n.clone()),
            Err(e) if e.code == ECODE_KEY_NOT_FOUND => None,
            Err(e) => return Err(e),
        };
        let value = if ttl.refresh {
            match &existing {
                Some(n) => n.value.clone().unwrap_or_default(),
                None => return Err(self.not_found(&path)),
            }
        } else {
            value.to_owned()
        };
        let mut e = self.create_node(&path, dir, &value, false, true, ttl.expire, "set", now)?;
        if let Some(n) = &existing {
            e.prev_node = Some(self.view(&path, n, false, now));
        }
        e.refresh = ttl.refresh;
        Ok(self.record(e))
    }

    /// PUT with `prevExist=true`: changes an existing key's value (or a
    /// directory's TTL).
    pub fn update(&mut self, path: &str, value: &str, ttl: Ttl, now: i64) -> Result<Event, Error> {
        let r = self.update_inner(path, value, ttl, now);
        count(&r, &self.stats.update_success, &self.stats.update_fail);
        r
    }

    fn update_inner(
        &mut self,
        path: &str,
        value: &str,
        ttl: Ttl,
        now: i64,
    ) -> Result<Event, Error> {
        let (path, node) = self.existing_below_root(path)?;
        if node.is_dir() && !value.is_empty() {
            return Err(Error::new(ECODE_NOT_FILE, path, self.index));
        }
        let next = self.index + 1;
        let mut e = Self::event("update", &path, next, node.created_index);
        e.prev_node = Some(self.view(&path, &node, false, now));
        let value = if ttl.refresh {
            node.value.clone().unwrap_or_default()
        } else {
            value.to_owned()
        };
        // As etcd: a directory's TTL changes, its modified index does not
        // (only the event carries the new index).
        if let Some(n) = self.nodes.get_mut(&path) {
            if !n.is_dir() {
                n.modified_index = next;
                n.value = Some(value.clone());
            }
        }
        if node.is_dir() {
            e.node.dir = true;
        } else {
            e.node.value = Some(value);
        }
        self.set_expire(&path, expiry(ttl.expire));
        let expire = self.nodes.get(&path).and_then(|n| n.expire);
        e.node.expiration = expire;
        e.node.ttl = expire.map_or(0, |t| ttl_at(t, now));
        e.refresh = ttl.refresh;
        self.mark(&path);
        self.index = next;
        Ok(self.record(e))
    }

    /// The clean path and a copy of the node a change to an existing node
    /// (update, compare-and-swap, delete) works on; the root is read only.
    fn existing_below_root(&self, path: &str) -> Result<(String, Node), Error> {
        let path = clean(path);
        if path == "/" {
            return Err(Error::new(ECODE_ROOT_RONLY, "/", self.index));
        }
        let node = self.lookup(&path)?.clone();
        Ok((path, node))
    }

    /// Why a compare failed (etcd's cause text).
    fn compare(node: &Node, prev_value: &str, prev_index: u64) -> Result<(), String> {
        let value = node.value.as_deref().unwrap_or("");
        let index_ok = prev_index == 0 || node.modified_index == prev_index;
        let value_ok = prev_value.is_empty() || value == prev_value;
        match (value_ok, index_ok) {
            (true, true) => Ok(()),
            (false, true) => Err(format!("[{prev_value} != {value}]")),
            (true, false) => Err(format!("[{prev_index} != {}]", node.modified_index)),
            (false, false) => Err(format!(
                "[{prev_value} != {value}] [{prev_index} != {}]",
                node.modified_index
            )),
        }
    }

    /// PUT with `prevValue` / `prevIndex`.
    pub fn compare_and_swap(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
        value: &str,
        ttl: Ttl,
        now: i64,
    ) -> Result<Event, Error> {
        let r = self.cas_inner(path, prev_value, prev_index, value, ttl, now);
        count(
            &r,
            &self.stats.compare_and_swap_success,
            &self.stats.compare_and_swap_fail,
        );
        r
    }

    fn cas_inner(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
        value: &str,
        ttl: Ttl,
        now: i64,
    ) -> Result<Event, Error> {
        let (path, node) = self.existing_below_root(path)?;
        if node.is_dir() {
            return Err(Error::new(ECODE_NOT_FILE, path, self.index));
        }
        if let Err(cause) = Self::compare(&node, prev_value, prev_index) {
            return Err(Error::new(ECODE_TEST_FAILED, cause, self.index));
        }
        let value = if ttl.refresh {
            node.value.clone().unwrap_or_default()
        } else {
            value.to_owned()
        };
        self.index += 1;
        let next = self.index;
        let mut e = Self::event("compareAndSwap", &path, next, node.created_index);
        e.prev_node = Some(self.view(&path, &node, false, now));
        if let Some(n) = self.nodes.get_mut(&path) {
            n.value = Some(value.clone());
            n.modified_index = next;
        }
        self.set_expire(&path, expiry(ttl.expire));
        self.mark(&path);
        let expire = self.nodes.get(&path).and_then(|n| n.expire);
        e.node.value = Some(value);
        e.node.expiration = expire;
        e.node.ttl = expire.map_or(0, |t| ttl_at(t, now));
        e.refresh = ttl.refresh;
        Ok(self.record(e))
    }

    /// DELETE: a key, an empty directory (`dir`), or a directory with all
    /// under it (`recursive`).
    pub fn delete(
        &mut self,
        path: &str,
        dir: bool,
        recursive: bool,
        now: i64,
    ) -> Result<Event, Error> {
        let r = self.delete_inner(path, dir || recursive, recursive, now);
        count(&r, &self.stats.delete_success, &self.stats.delete_fail);
        r
    }

    fn delete_inner(
        &mut self,
        path: &str,
        dir: bool,
        recursive: bool,
        now: i64,
    ) -> Result<Event, Error> {
        let (path, node) = self.existing_below_root(path)?;
        if node.is_dir() {
            if !dir {
                return Err(Error::new(ECODE_NOT_FILE, path, self.index));
            }
            if !node.children.is_empty() && !recursive {
                return Err(Error::new(ECODE_DIR_NOT_EMPTY, path, self.index));
            }
        }
        let next = self.index + 1;
        let mut e = Self::event("delete", &path, next, node.created_index);
        e.prev_node = Some(self.view(&path, &node, false, now));
        e.node.dir = node.is_dir();
        e.removed = self.remove_tree(&path);
        self.index = next;
        Ok(self.record(e))
    }

    /// DELETE with `prevValue` / `prevIndex` (keys only).
    pub fn compare_and_delete(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
        now: i64,
    ) -> Result<Event, Error> {
        let r = self.cad_inner(path, prev_value, prev_index, now);
        count(
            &r,
            &self.stats.compare_and_delete_success,
            &self.stats.compare_and_delete_fail,
        );
        r
    }

    fn cad_inner(
        &mut self,
        path: &str,
        prev_value: &str,
        prev_index: u64,
        now: i64,
    ) -> Result<Event, Error> {
        let path = clean(path);
        let node = self.lookup(&path)?.clone();
        if node.is_dir() {
            return Err(Error::new(ECODE_NOT_FILE, path, self.index));
        }
        if let Err(cause) = Self::compare(&node, prev_value, prev_index) {
            return Err(Error::new(ECODE_TEST_FAILED, cause, self.index));
        }
        self.index += 1;
        let mut e = Self::event("compareAndDelete", &path, self.index, node.created_index);
        e.prev_node = Some(self.view(&path, &node, false, now));
        e.removed = self.remove_tree(&path);
        Ok(self.record(e))
    }

    /// Deletes every node whose expiry is at or before `cutoff` (the time
    /// the leader proposed), one `expire` event each, earliest first.
    pub fn delete_expired(&mut self, cutoff: i64, now: i64) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some((t, path)) = self.ttl.iter().next().cloned() {
            if t > cutoff {
                break;
            }
            let Some(node) = self.nodes.get(&path).cloned() else {
                self.ttl.remove(&(t, path));
                continue;
            };
            self.index += 1;
            let mut e = Self::event("expire", &path, self.index, node.created_index);
            e.prev_node = Some(self.view(&path, &node, false, now));
            e.node.dir = node.is_dir();
            e.removed = self.remove_tree(&path);
            self.stats.expire_count.fetch_add(1, Ordering::Relaxed);
            events.push(self.record(e));
        }
        events
    }

    /// A watch from `since` (0: the next change): the first recorded change
    /// at or after it that concerns `key`, or `None` (wait for a live one).
    /// `401` when `since` is older than the history.
    pub fn watch_scan(
        &self,
        key: &str,
        recursive: bool,
        since: u64,
    ) -> Result<Option<Event>, Error> {
        let key = clean(key);
        let since = if since == 0 { self.index + 1 } else { since };
        let start = self
            .history
            .front()
            .map_or(self.history_floor, Event::index);
        if since < start {
            return Err(Error::new(
                ECODE_EVENT_INDEX_CLEARED,
                format!("the requested history has been cleared [{start}/{since}]"),
                self.index,
            ));
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.index() >= since)
            .find(|e| e.matches_history(&key, recursive))
            .cloned())
    }

    /// The record of node `path` for storage (`None`: deleted).
    pub fn encode_node(&self, path: &str) -> Option<Vec<u8>> {
        let n = self.nodes.get(path)?;
        let mut out = Vec::with_capacity(25 + n.value.as_ref().map_or(0, String::len));
        out.push(u8::from(n.is_dir()));
        out.extend_from_slice(&n.created_index.to_be_bytes());
        out.extend_from_slice(&n.modified_index.to_be_bytes());
        out.extend_from_slice(&n.expire.unwrap_or(0).to_be_bytes());
        if let Some(v) = &n.value {
            out.extend_from_slice(v.as_bytes());
        }
        Some(out)
    }

    /// The key and value of the store-index record.
    pub fn index_record(&self) -> (&'static [u8], Vec<u8>) {
        (INDEX_KEY, self.index.to_be_bytes().to_vec())
    }

    /// Rebuilds a store from its records (`(key, value)` pairs of `CF_V2`,
    /// any order). The history starts empty.
    pub fn load<I>(records: I) -> Result<Store, String>
    where
        I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    {
        let mut s = Store::new();
        for (k, v) in records {
            if k == INDEX_KEY {
                let b = <[u8; 8]>::try_from(v.as_slice())
                    .map_err(|_| "v2 store index record is not 8 bytes".to_owned())?;
                s.index = u64::from_be_bytes(b);
                continue;
            }
            let path = String::from_utf8(k).map_err(|_| "v2 node path is not UTF-8".to_owned())?;
            if v.len() < 25 {
                return Err(format!("v2 node {path}: record too short"));
            }
            let u = |r: std::ops::Range<usize>| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v[r]);
                b
            };
            let dir = v[0] == 1;
            let expire = i64::from_be_bytes(u(17..25));
            let value = if dir {
                None
            } else {
                Some(
                    String::from_utf8(v[25..].to_vec())
                        .map_err(|_| format!("v2 node {path}: value is not UTF-8"))?,
                )
            };
            let node = Node {
                value,
                created_index: u64::from_be_bytes(u(1..9)),
                modified_index: u64::from_be_bytes(u(9..17)),
                expire: (expire != 0).then_some(expire),
                children: BTreeSet::new(),
            };
            if let Some(t) = node.expire {
                s.ttl.insert((t, path.clone()));
            }
            s.nodes.insert(path, node);
        }
        s.history_floor = s.index + 1;
        let paths: Vec<String> = s.nodes.keys().filter(|p| *p != "/").cloned().collect();
        for p in paths {
            let parent = parent_of(&p).to_owned();
            match s.nodes.get_mut(&parent) {
                Some(d) if d.is_dir() => {
                    d.children.insert(name_of(&p).to_owned());
                }
                _ => return Err(format!("v2 node {p} has no parent directory")),
            }
        }
        Ok(s)
    }

    /// The checks that must hold after every apply: every node but the
    /// root has a directory as parent that lists it, every listed child
    /// exists, the expiry index is exactly the nodes with an expiry, and no
    /// node was created or modified after the store index.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (p, n) in &self.nodes {
            if n.created_index > self.index || n.modified_index > self.index {
                return Err(format!(
                    "v2 node {p} is ahead of the store index {}",
                    self.index
                ));
            }
            if n.modified_index < n.created_index {
                return Err(format!("v2 node {p} modified before it was created"));
            }
            if p != "/" {
                match self.nodes.get(parent_of(p)) {
                    Some(d) if d.is_dir() && d.children.contains(name_of(p)) => {}
                    _ => return Err(format!("v2 node {p} is not listed by a parent directory")),
                }
            }
            for c in &n.children {
                if !self.nodes.contains_key(&join(p, c)) {
                    return Err(format!("v2 directory {p} lists a missing child {c}"));
                }
            }
        }
        let with_ttl: BTreeSet<(i64, String)> = self
            .nodes
            .iter()
            .filter_map(|(p, n)| n.expire.map(|t| (t, p.clone())))
            .collect();
        if with_ttl != self.ttl {
            return Err("v2 expiry index differs from the nodes' expiries".into());
        }
        Ok(())
    }

    /// Every node, in path order (for digests and tests).
    pub fn nodes(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }
}
