//! Linearizability checker: a Wing & Gong search with Lowe's memoisation (the
//! algorithm porcupine popularised), over the etcd model in `model`.
//!
//! Preparation:
//! - `Failed` operations are dropped: they had no effect.
//! - `Unknown` read-only operations are dropped: with no observed response
//!   and no effect, they constrain nothing.
//! - Other `Unknown` operations ("uncertain") have no return bound: they may
//!   be linearized at any point after their call, or never. Their response is
//!   not checked; their effect on the model is.
//! - Everything else ("definite") must be linearized between its call and its
//!   return, with the model's response equal to the observed one.
//!
//! Search: definite calls and returns form a doubly linked event list ordered
//! by time (at equal times calls come first: equal times are concurrent);
//! uncertain calls form a second list. The candidates at a point are the
//! definite calls before the first remaining return, then the uncertain calls
//! made no later than that return. Depth-first: linearize a candidate whose
//! model response matches, unlink it, restart from the head; when no candidate
//! works, pop the last choice and try the next candidate after it. The
//! history is linearizable when no definite operation remains.
//!
//! Pruning:
//! - deadlines: a definite operation's observed header revision fixes the
//!   revision the store must be at just before it (header − 1 if its response
//!   shows a write, else header); revisions never decrease, so a state beyond
//!   the smallest deadline of any pending definite operation is dead. This is
//!   what keeps uncertain writes from being tried where no revision gap is;
//! - an uncertain operation that would not change the state is not
//!   linearized: leaving it pending loses nothing;
//! - unread values are replaced by a placeholder (`canonical`), and of
//!   several pending uncertain operations with identical requests only the
//!   earliest-called is tried: any completion using a later one can use the
//!   earlier one in its place (it is enabled wherever the later one is);
//! - memo: a (linearized set, model state) already entered is never entered
//!   again (it failed, or it is an ancestor — impossible, sets only grow);
//! - eager reads: a read-only candidate whose response matches is linearized
//!   without trying alternatives first *and* without trying alternatives
//!   after it fails — moving a state-preserving, already-enabled operation to
//!   the front of any valid completion keeps it valid, so if it fails here the
//!   whole point fails (and the same holds when its successor is memoised).
//!
//! Bounded: after `CheckOptions::max_steps` model steps the answer is
//! `Inconclusive`, never a guess.
//!
//! Partitioning: none — etcd's revision is global, so every operation
//! constrains every other.
//!
//! Against the committed history (`check_linearizable_against`): when the
//! store's complete committed history is known (the simulation's raft
//! oracle), every change is pinned to its revision first
//! (`committed::resolve`): an acknowledged write to its header revision, an
//! indeterminate one whose values committed to that revision (with a return
//! bound: the first return of an operation that observed that revision or a
//! later one), and each revision no operation claims becomes a change from
//! outside the history (a lease expiry, the lock service, a delete that timed
//! out), replayed at exactly that revision with its call and return bounded
//! the same way. Indeterminate writes that did not commit are dropped. The
//! search then may only bump the revision with the entry pinned to it, and
//! every pinned entry's effect must equal the committed changes at its
//! revision; reads are pinned by their header revision already. What is left
//! to search is the order of reads and compactions within one revision, so
//! the search is close to linear. This checks the history against the order
//! the cluster really committed (not against any order that would explain the
//! observations), which is what a linearizable store must have served.
//!
//! Tests: `tests` below; whole histories in `tests/checker_histories.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::hash::DefaultHasher;

use super::canonical::{canonical, read_values};
use super::committed::{resolve, ChangesByRevision, CommittedHistory, Resolution, Resolved};
use super::history::{
    validate, Key, Operation, Outcome, Request, Response, Revision, Txn, TxnOp, TxnOpResult, Value,
};
use super::model::{matches, EtcdState};

/// How much work the search may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Model steps (attempts to linearize an operation) before giving up.
    /// Memory grows with the steps too (one memo entry per accepted step).
    pub max_steps: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps: 2_000_000,
        }
    }
}

/// The verdict on a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    Ok,
    /// Not linearizable; the explanation shows the longest linearizable prefix
    /// found and the operation that could not follow it.
    Violation {
        explanation: String,
    },
    /// The step budget ran out.
    Inconclusive {
        reason: String,
    },
    /// The history breaks `history::validate` (a harness bug).
    Malformed {
        reason: String,
    },
}

impl CheckResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }

    pub fn is_violation(&self) -> bool {
        matches!(self, CheckResult::Violation { .. })
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => write!(f, "linearizable"),
            CheckResult::Violation { explanation } => write!(f, "NOT linearizable: {explanation}"),
            CheckResult::Inconclusive { reason } => write!(f, "inconclusive: {reason}"),
            CheckResult::Malformed { reason } => write!(f, "malformed history: {reason}"),
        }
    }
}

/// Checks `history` with the default budget.
pub fn check_linearizable(history: &[Operation]) -> CheckResult {
    check_linearizable_with(history, &CheckOptions::default())
}

pub fn check_linearizable_with(history: &[Operation], options: &CheckOptions) -> CheckResult {
    if let Err(reason) = validate(history) {
        return CheckResult::Malformed { reason };
    }
    let entries = prepare(history);
    Search::new(history, &entries, options).run()
}

/// The client whose operations in an explanation are changes from outside
/// the history (see the module header).
pub const ENVIRONMENT_CLIENT: u64 = u64::MAX;

/// Checks `history` against the order of `committed`, the store's complete
/// committed history (module header). Every write the store committed must be
/// in `committed`; `history` need not hold every write.
pub fn check_linearizable_against(
    history: &[Operation],
    committed: &CommittedHistory,
    options: &CheckOptions,
) -> CheckResult {
    if let Err(reason) = validate(history) {
        return CheckResult::Malformed { reason };
    }
    let resolution = match resolve(history, committed) {
        Ok(resolution) => resolution,
        Err(e) => {
            return CheckResult::Malformed {
                reason: e.to_string(),
            }
        }
    };
    if !resolution.violations.is_empty() {
        let shown: Vec<&str> = resolution
            .violations
            .iter()
            .take(SHOWN)
            .map(String::as_str)
            .collect();
        return CheckResult::Violation {
            explanation: format!(
                "{} writes contradict the committed history:\n  {}",
                resolution.violations.len(),
                shown.join("\n  ")
            ),
        };
    }
    let (extended, entries) = match prepare_pinned(history, &resolution) {
        Ok(prepared) => prepared,
        Err(explanation) => return CheckResult::Violation { explanation },
    };
    let mut search = Search::new(&extended, &entries, options);
    search.committed = Some(&resolution.changes);
    search.run()
}

/// Where an operation with an observed header revision sits in the
/// revision order: a write at its revision before the reads at it.
fn order_key(op: &Operation) -> Option<(u64, u8)> {
    let Outcome::Ok(response) = &op.output else {
        return None;
    };
    let header = response.header_revision()?.0;
    Some(if shows_write(response) {
        (header, 0)
    } else {
        (header, 1)
    })
}

/// Time bounds implied by the observed header revisions for a write at
/// revision r: it must come after every operation ordered before it (so not
/// before their calls) and before every one ordered after it (so not after
/// their returns).
struct Bounds {
    keys: Vec<(u64, u8)>,
    /// max call of keys[..=i]
    max_call: Vec<u64>,
    /// min ret of keys[i..]
    min_ret: Vec<u64>,
}

impl Bounds {
    fn new(history: &[Operation]) -> Bounds {
        let mut ordered: Vec<((u64, u8), u64, u64)> = history
            .iter()
            .filter_map(|op| Some((order_key(op)?, op.call, op.ret?)))
            .collect();
        ordered.sort_unstable();
        let keys = ordered.iter().map(|o| o.0).collect();
        let max_call = ordered
            .iter()
            .scan(0, |max, o| {
                *max = (*max).max(o.1);
                Some(*max)
            })
            .collect();
        let mut min_ret: Vec<u64> = ordered
            .iter()
            .rev()
            .scan(u64::MAX, |min, o| {
                *min = (*min).min(o.2);
                Some(*min)
            })
            .collect();
        min_ret.reverse();
        Bounds {
            keys,
            max_call,
            min_ret,
        }
    }

    /// (earliest call, latest return) for a write at `revision`.
    fn write_at(&self, revision: u64) -> (u64, u64) {
        let split = self.keys.partition_point(|k| *k < (revision, 0));
        let call = split.checked_sub(1).map_or(0, |i| self.max_call[i]);
        let ret = self.min_ret.get(split).copied().unwrap_or(u64::MAX);
        (call, ret.max(call))
    }
}

/// The search's history (the caller's, resolved writes given their return
/// bound, then one operation per unclaimed revision) and its entries.
fn prepare_pinned(
    history: &[Operation],
    resolution: &Resolution,
) -> Result<(Vec<Operation>, Vec<Entry>), String> {
    let bounds = Bounds::new(history);
    let mut extended = history.to_vec();
    let mut entries = Vec::new();
    let mut claims: BTreeMap<u64, usize> = BTreeMap::new();
    let mut classes: HashMap<Request, usize> = HashMap::new();
    let mut claim = |revision: u64, index: usize, extended: &[Operation]| {
        if let Some(other) = claims.insert(revision, index) {
            return Err(format!(
                "two writes took revision {revision}: #{other} {} and #{index} {}",
                extended[other], extended[index]
            ));
        }
        Ok(())
    };
    for (index, (op, resolved)) in history.iter().zip(&resolution.ops).enumerate() {
        let (uncertain, pin) = match (resolved, &op.output) {
            (Resolved::NoEffect | Resolved::Unattributed, _) | (_, Outcome::Failed) => continue,
            (Resolved::AsObserved, Outcome::Unknown) => (true, None),
            (Resolved::AsObserved, Outcome::Ok(response)) => {
                let pin = shows_write(response)
                    .then(|| response.header_revision().map(|h| h.0))
                    .flatten();
                (false, pin)
            }
            (Resolved::CommittedAt(revision), _) => {
                let (_, ret) = bounds.write_at(revision.0);
                extended[index].ret = Some(ret.max(op.call));
                (false, Some(revision.0))
            }
        };
        if let Some(pin) = pin {
            claim(pin, index, &extended)?;
        }
        let next_class = classes.len();
        let class = *classes.entry(op.input.clone()).or_insert(next_class);
        entries.push(Entry {
            index,
            uncertain,
            read_only: op.input.is_read_only(),
            deadline: match pin {
                Some(pin) => pin.saturating_sub(1),
                None => deadline(op),
            },
            request: op.input.clone(),
            class,
            pin,
        });
    }
    for (revision, changes) in &resolution.changes {
        if claims.contains_key(&revision.0) {
            continue;
        }
        let (call, ret) = bounds.write_at(revision.0);
        let request = Request::Txn(Txn {
            compares: Vec::new(),
            success: changes.iter().map(raw_change).collect(),
            failure: Vec::new(),
        });
        extended.push(Operation {
            client: ENVIRONMENT_CLIENT,
            call,
            ret: Some(ret),
            input: request.clone(),
            output: Outcome::Unknown,
        });
        entries.push(Entry {
            index: extended.len() - 1,
            uncertain: false,
            read_only: false,
            deadline: revision.0 - 1,
            request,
            class: 0,
            pin: Some(revision.0),
        });
    }
    Ok((extended, entries))
}

fn raw_change((key, value): &(Key, Option<Value>)) -> TxnOp {
    match value {
        Some(value) => TxnOp::Put {
            key: key.clone(),
            value: value.clone(),
        },
        None => TxnOp::Delete { key: key.clone() },
    }
}

/// The keys a request may write.
fn write_keys(request: &Request) -> Vec<&Key> {
    match request {
        Request::Put { key, .. } | Request::Delete { key } => vec![key],
        Request::Txn(txn) => txn
            .success
            .iter()
            .chain(&txn.failure)
            .filter_map(|op| match op {
                TxnOp::Put { key, .. } | TxnOp::Delete { key } => Some(key),
                TxnOp::Get { .. } => None,
            })
            .collect(),
        Request::Get { .. } | Request::Compact { .. } => Vec::new(),
    }
}

/// Did going from `before` to `after` (a bump to `revision`) make exactly the
/// committed `changes` (on the keys `request` may write)?
fn effects_match(
    before: &EtcdState,
    after: &EtcdState,
    request: &Request,
    revision: Revision,
    changes: &[(Key, Option<Value>)],
) -> bool {
    if after.revision() != revision {
        return false;
    }
    let committed_ok = changes.iter().all(|(key, value)| match value {
        Some(value) => after
            .kv(key)
            .is_some_and(|kv| &kv.value == value && kv.mod_revision == revision),
        None => after.kv(key).is_none() && before.kv(key).is_some(),
    });
    committed_ok
        && write_keys(request)
            .into_iter()
            .filter(|key| !changes.iter().any(|(k, _)| k == *key))
            .all(|key| before.kv(key) == after.kv(key))
}

/// An operation that takes part in the search.
struct Entry {
    /// Index in the caller's history (for explanations).
    index: usize,
    uncertain: bool,
    read_only: bool,
    /// The highest revision the store may be at just before this operation.
    deadline: u64,
    /// The request with unread values canonicalised; what the search applies.
    request: Request,
    /// Uncertain entries with equal `request`s share a class.
    class: usize,
    /// Against the committed history: the revision this write committed at.
    pin: Option<u64>,
}

fn prepare(history: &[Operation]) -> Vec<Entry> {
    let keep = |op: &Operation| match op.output {
        Outcome::Ok(_) => true,
        Outcome::Failed => false,
        Outcome::Unknown => !op.input.is_read_only(),
    };
    let read = read_values(history);
    let mut classes: HashMap<Request, usize> = HashMap::new();
    let mut entry = |(index, op): (usize, &Operation)| {
        let request = read
            .as_ref()
            .map_or_else(|| op.input.clone(), |read| canonical(&op.input, read));
        let next_class = classes.len();
        let class = *classes.entry(request.clone()).or_insert(next_class);
        Entry {
            index,
            uncertain: op.output == Outcome::Unknown,
            read_only: op.input.is_read_only(),
            deadline: deadline(op),
            request,
            class,
            pin: None,
        }
    };
    history
        .iter()
        .enumerate()
        .filter(|(_, op)| keep(op))
        .map(&mut entry)
        .collect()
}

/// Per class, its uncertain entries by (call time, entry).
fn class_members(history: &[Operation], entries: &[Entry]) -> Vec<Vec<usize>> {
    let classes = entries.iter().map(|e| e.class + 1).max().unwrap_or(0);
    let mut members = vec![Vec::new(); classes];
    for (e, entry) in entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| entry.uncertain)
    {
        members[entry.class].push(e);
    }
    for list in &mut members {
        list.sort_by_key(|&e| (history[entries[e].index].call, e));
    }
    members
}

/// From the observed response: header − 1 if it shows a write, else header;
/// unconstrained for uncertain operations and errors (no header).
fn deadline(op: &Operation) -> u64 {
    let Outcome::Ok(response) = &op.output else {
        return u64::MAX;
    };
    let Some(header) = response.header_revision() else {
        return u64::MAX;
    };
    if shows_write(response) {
        header.0.saturating_sub(1)
    } else {
        header.0
    }
}

fn shows_write(response: &Response) -> bool {
    match response {
        Response::Put { .. } => true,
        Response::Delete { deleted, .. } => *deleted > 0,
        Response::Txn { results, .. } => results.iter().any(|result| match result {
            TxnOpResult::Put => true,
            TxnOpResult::Delete { deleted } => *deleted > 0,
            TxnOpResult::Get(_) => false,
        }),
        Response::Get { .. } | Response::Compact { .. } | Response::Error(_) => false,
    }
}

/// A multiset of the deadlines of pending definite operations.
#[derive(Default)]
struct Deadlines(BTreeMap<u64, u32>);

impl Deadlines {
    fn insert(&mut self, deadline: u64) {
        *self.0.entry(deadline).or_default() += 1;
    }

    fn remove(&mut self, deadline: u64) {
        let count = self
            .0
            .get_mut(&deadline)
            .expect("removing a deadline that was inserted");
        *count -= 1;
        if *count == 0 {
            self.0.remove(&deadline);
        }
    }

    /// The smallest deadline once one occurrence of `own` is left out.
    fn min_without(&self, own: u64) -> u64 {
        let mut smallest = self.0.iter();
        match smallest.next() {
            Some((&first, &count)) if first == own && count == 1 => {
                smallest.next().map_or(u64::MAX, |(&d, _)| d)
            }
            Some((&first, _)) => first,
            None => u64::MAX,
        }
    }
}

const NIL: usize = usize::MAX;
const MAIN_HEAD: usize = 0;
const UNCERTAIN_HEAD: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Head,
    Call(usize),
    Return(usize),
    UncertainCall(usize),
}

/// The two event lists (dancing links: unlinked nodes keep their pointers, so
/// relinking in reverse order restores the list exactly).
struct Events {
    kind: Vec<NodeKind>,
    time: Vec<u64>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per entry: its call node (or uncertain node) and return node (NIL if uncertain).
    call_node: Vec<usize>,
    return_node: Vec<usize>,
}

impl Events {
    fn build(history: &[Operation], entries: &[Entry]) -> Events {
        let mut events = Events {
            kind: vec![NodeKind::Head, NodeKind::Head],
            time: vec![0, 0],
            next: vec![NIL, NIL],
            prev: vec![NIL, NIL],
            call_node: vec![NIL; entries.len()],
            return_node: vec![NIL; entries.len()],
        };
        let mut main = Vec::new();
        let mut uncertain = Vec::new();
        for (e, entry) in entries.iter().enumerate() {
            let op = &history[entry.index];
            if entry.uncertain {
                events.call_node[e] = events.push(NodeKind::UncertainCall(e), op.call);
                uncertain.push((op.call, 0, e, events.call_node[e]));
            } else {
                let ret = op.ret.expect("validated: an Ok outcome has a return time");
                events.call_node[e] = events.push(NodeKind::Call(e), op.call);
                events.return_node[e] = events.push(NodeKind::Return(e), ret);
                main.push((op.call, 0, e, events.call_node[e]));
                main.push((ret, 1, e, events.return_node[e]));
            }
        }
        events.link(MAIN_HEAD, main);
        events.link(UNCERTAIN_HEAD, uncertain);
        events
    }

    fn push(&mut self, kind: NodeKind, time: u64) -> usize {
        self.kind.push(kind);
        self.time.push(time);
        self.next.push(NIL);
        self.prev.push(NIL);
        self.kind.len() - 1
    }

    /// Links `nodes` after `head`, sorted by (time, calls first, entry).
    fn link(&mut self, head: usize, mut nodes: Vec<(u64, u8, usize, usize)>) {
        nodes.sort_unstable();
        let mut last = head;
        for (_, _, _, node) in nodes {
            self.next[last] = node;
            self.prev[node] = last;
            last = node;
        }
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    fn lift(&mut self, e: usize) {
        self.unlink(self.call_node[e]);
        if self.return_node[e] != NIL {
            self.unlink(self.return_node[e]);
        }
    }

    fn unlift(&mut self, e: usize) {
        if self.return_node[e] != NIL {
            self.relink(self.return_node[e]);
        }
        self.relink(self.call_node[e]);
    }

    /// The time of the first remaining definite return (the window's bound).
    fn first_return_time(&self) -> u64 {
        let mut node = self.next[MAIN_HEAD];
        while node != NIL {
            if let NodeKind::Return(_) = self.kind[node] {
                return self.time[node];
            }
            node = self.next[node];
        }
        u64::MAX
    }
}

/// Where the candidate scan is: in the definite list, or in the uncertain
/// list up to `bound` (the first remaining definite return).
#[derive(Debug, Clone, Copy)]
enum Cursor {
    Main(usize),
    Uncertain { node: usize, bound: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)])
    }

    fn with(&self, bit: usize) -> Bitset {
        let mut set = self.clone();
        set.0[bit / 64] |= 1 << (bit % 64);
        set
    }

    fn remove(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }

    fn contains(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }
}

/// A choice on the current path, with what it replaced.
struct Frame {
    entry: usize,
    prev_state: EtcdState,
    /// An eagerly linearized read: when it fails, its parent fails too.
    forced: bool,
}

enum Attempt {
    Entered,
    Rejected,
    /// A forced read's successor is already memoised: this point fails.
    DeadEnd,
}

fn pending_deadlines(entries: &[Entry]) -> Deadlines {
    let mut deadlines = Deadlines::default();
    entries
        .iter()
        .filter(|e| !e.uncertain)
        .for_each(|e| deadlines.insert(e.deadline));
    deadlines
}

type Memo = HashSet<(Bitset, EtcdState), BuildHasherDefault<DefaultHasher>>;

struct Search<'a> {
    history: &'a [Operation],
    entries: &'a [Entry],
    events: Events,
    state: EtcdState,
    linearized: Bitset,
    stack: Vec<Frame>,
    /// Of the definite entries not linearized.
    deadlines: Deadlines,
    class_members: Vec<Vec<usize>>,
    memo: Memo,
    steps: u64,
    max_steps: u64,
    /// The longest path seen, for the explanation.
    best: Vec<usize>,
    best_state: EtcdState,
    /// Against the committed history: its changes by revision (every
    /// revision is pinned to one entry).
    committed: Option<&'a ChangesByRevision>,
}

impl<'a> Search<'a> {
    fn new(history: &'a [Operation], entries: &'a [Entry], options: &CheckOptions) -> Search<'a> {
        Search {
            history,
            entries,
            events: Events::build(history, entries),
            state: EtcdState::new(),
            linearized: Bitset::new(entries.len()),
            stack: Vec::new(),
            deadlines: pending_deadlines(entries),
            class_members: class_members(history, entries),
            memo: Memo::default(),
            steps: 0,
            max_steps: options.max_steps,
            best: Vec::new(),
            best_state: EtcdState::new(),
            committed: None,
        }
    }

    fn run(mut self) -> CheckResult {
        let mut cursor = Cursor::Main(self.events.next[MAIN_HEAD]);
        loop {
            if self.events.next[MAIN_HEAD] == NIL {
                return CheckResult::Ok;
            }
            if self.steps >= self.max_steps {
                return self.inconclusive();
            }
            let attempt = match self.candidate(&mut cursor) {
                Some(entry) => self.attempt(entry),
                None => Attempt::DeadEnd,
            };
            cursor = match attempt {
                Attempt::Entered => Cursor::Main(self.events.next[MAIN_HEAD]),
                Attempt::Rejected => self.advance(cursor),
                Attempt::DeadEnd => match self.backtrack() {
                    Some(cursor) => cursor,
                    None => return self.violation(),
                },
            };
        }
    }

    /// The entry at `cursor`, moving into the uncertain list at the first
    /// definite return; `None` when the candidates are exhausted.
    fn candidate(&self, cursor: &mut Cursor) -> Option<usize> {
        if let Cursor::Main(node) = *cursor {
            match self.events.kind.get(node).copied() {
                Some(NodeKind::Call(entry)) => return Some(entry),
                Some(NodeKind::Return(_)) => {
                    let bound = self.events.time[node];
                    *cursor = Cursor::Uncertain {
                        node: self.events.next[UNCERTAIN_HEAD],
                        bound,
                    };
                }
                _ => return None,
            }
        }
        match *cursor {
            Cursor::Uncertain { node, bound } if node != NIL && self.events.time[node] <= bound => {
                match self.events.kind[node] {
                    NodeKind::UncertainCall(entry) => Some(entry),
                    kind => panic!("uncertain list holds {kind:?}"),
                }
            }
            _ => None,
        }
    }

    fn advance(&self, cursor: Cursor) -> Cursor {
        match cursor {
            Cursor::Main(node) => Cursor::Main(self.events.next[node]),
            Cursor::Uncertain { node, bound } => Cursor::Uncertain {
                node: self.events.next[node],
                bound,
            },
        }
    }

    /// Tries to linearize `entry` next.
    fn attempt(&mut self, entry: usize) -> Attempt {
        if self.entries[entry].uncertain && !self.first_pending_of_class(entry) {
            return Attempt::Rejected;
        }
        let pin = self.entries[entry].pin;
        if pin.is_some_and(|pin| pin != self.state.revision().0 + 1) {
            return Attempt::Rejected;
        }
        self.steps += 1;
        let op = &self.history[self.entries[entry].index];
        let (next_state, expected) = self.state.apply(&self.entries[entry].request);
        if let Outcome::Ok(observed) = &op.output {
            if !matches(&expected, observed) {
                return Attempt::Rejected;
            }
        }
        if let Some(committed) = self.committed {
            if !self.fits_committed(entry, &next_state, committed) {
                return Attempt::Rejected;
            }
        }
        let (own, uncertain) = (self.entries[entry].deadline, self.entries[entry].uncertain);
        if next_state.revision().0 > self.deadlines.min_without(own)
            || (uncertain && next_state == self.state)
        {
            return Attempt::Rejected;
        }
        let forced = self.entries[entry].read_only;
        let key = (self.linearized.with(entry), next_state);
        if self.memo.contains(&key) {
            return if forced {
                Attempt::DeadEnd
            } else {
                Attempt::Rejected
            };
        }
        self.memo.insert(key.clone());
        let (linearized, next_state) = key;
        let prev_state = std::mem::replace(&mut self.state, next_state);
        self.linearized = linearized;
        self.events.lift(entry);
        self.remove_deadline(entry);
        self.stack.push(Frame {
            entry,
            prev_state,
            forced,
        });
        self.record_best();
        Attempt::Entered
    }

    /// Undoes choices until one can be followed by another candidate.
    fn backtrack(&mut self) -> Option<Cursor> {
        while let Some(frame) = self.stack.pop() {
            self.events.unlift(frame.entry);
            self.insert_deadline(frame.entry);
            self.linearized.remove(frame.entry);
            self.state = frame.prev_state;
            if !frame.forced {
                return Some(self.cursor_after(frame.entry));
            }
        }
        None
    }

    /// Against the committed history: only the entry pinned to a revision
    /// may bump the store to it, and its effect must be the committed one.
    fn fits_committed(
        &self,
        entry: usize,
        next_state: &EtcdState,
        committed: &ChangesByRevision,
    ) -> bool {
        let bumps = next_state.revision() != self.state.revision();
        match self.entries[entry].pin {
            None => !bumps,
            Some(pin) => {
                let changes = committed.get(&Revision(pin)).map_or(&[][..], Vec::as_slice);
                effects_match(
                    &self.state,
                    next_state,
                    &self.entries[entry].request,
                    Revision(pin),
                    changes,
                )
            }
        }
    }

    fn first_pending_of_class(&self, entry: usize) -> bool {
        let members = &self.class_members[self.entries[entry].class];
        members.iter().find(|&&e| !self.linearized.contains(e)) == Some(&entry)
    }

    fn remove_deadline(&mut self, entry: usize) {
        if !self.entries[entry].uncertain {
            self.deadlines.remove(self.entries[entry].deadline);
        }
    }

    fn insert_deadline(&mut self, entry: usize) {
        if !self.entries[entry].uncertain {
            self.deadlines.insert(self.entries[entry].deadline);
        }
    }

    fn cursor_after(&self, entry: usize) -> Cursor {
        let node = self.events.call_node[entry];
        if self.entries[entry].uncertain {
            Cursor::Uncertain {
                node: self.events.next[node],
                bound: self.events.first_return_time(),
            }
        } else {
            Cursor::Main(self.events.next[node])
        }
    }

    fn record_best(&mut self) {
        if self.stack.len() > self.best.len() {
            self.best = self.stack.iter().map(|frame| frame.entry).collect();
            self.best_state = self.state.clone();
        }
    }

    fn inconclusive(&self) -> CheckResult {
        let reason = format!(
            "gave up after {} model steps ({} operations searched, longest linearizable prefix {})",
            self.steps,
            self.entries.len(),
            self.best.len()
        );
        CheckResult::Inconclusive { reason }
    }

    fn violation(&self) -> CheckResult {
        CheckResult::Violation {
            explanation: Explanation::new(self).to_string(),
        }
    }
}

/// What the search saw at its deepest point.
struct Explanation<'a> {
    search: &'a Search<'a>,
    linearized: Bitset,
}

/// How many operations of the prefix and of the pending set to print.
const SHOWN: usize = 12;

impl<'a> Explanation<'a> {
    fn new(search: &'a Search<'a>) -> Explanation<'a> {
        let mut linearized = Bitset::new(search.entries.len());
        for &entry in &search.best {
            linearized = linearized.with(entry);
        }
        Explanation { search, linearized }
    }

    /// Definite entries left after the best prefix, by return time.
    fn pending(&self) -> Vec<usize> {
        let s = self.search;
        let mut pending: Vec<usize> = (0..s.entries.len())
            .filter(|&e| !s.entries[e].uncertain && !self.linearized.contains(e))
            .collect();
        pending.sort_by_key(|&e| (s.history[s.entries[e].index].ret, e));
        pending
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>, entry: usize) -> fmt::Result {
        let s = self.search;
        let index = s.entries[entry].index;
        let op = &s.history[index];
        match s.entries[entry].pin {
            Some(pin) if op.client == ENVIRONMENT_CLIENT => write!(
                f,
                "#{index} a change from outside the history [{}, {}] {} at revision {pin}",
                op.call,
                op.ret.unwrap_or(u64::MAX),
                op.input
            ),
            Some(pin) if op.output == Outcome::Unknown => {
                write!(f, "#{index} {op} (committed at revision {pin})")
            }
            _ => write!(f, "#{index} {op}"),
        }
    }

    /// Why `entry` cannot come next: the model answers differently, or
    /// answering the same would push the store past another operation's deadline.
    fn why_not(&self, pending: &[usize], entry: usize) -> String {
        let s = self.search;
        let op = &s.history[s.entries[entry].index];
        let (next, predicted) = s.best_state.apply(&s.entries[entry].request);
        if let Some(pin) = s.entries[entry].pin {
            if pin != s.best_state.revision().0 + 1 {
                return format!(
                    "it committed at revision {pin}, the store is at {}",
                    s.best_state.revision()
                );
            }
        }
        let observed = match &op.output {
            Outcome::Ok(observed) => Some(observed),
            _ => None,
        };
        if observed.is_some_and(|observed| !matches(&predicted, observed)) {
            return format!("the model answers: {predicted}");
        }
        if let (Some(committed), Some(pin)) = (s.committed, s.entries[entry].pin) {
            let changes = committed.get(&Revision(pin)).map_or(&[][..], Vec::as_slice);
            if !effects_match(
                &s.best_state,
                &next,
                &s.entries[entry].request,
                Revision(pin),
                changes,
            ) {
                return format!(
                    "the model's effect differs from the committed changes at revision {pin}: {changes:?}"
                );
            }
        }
        let revision = next.revision().0;
        let blocked = pending
            .iter()
            .find(|&&other| other != entry && s.entries[other].deadline < revision);
        match blocked {
            Some(&other) => {
                let index = s.entries[other].index;
                let deadline = s.entries[other].deadline;
                format!(
                    "the model agrees, but that takes the store to revision {revision}, \
                     too late for #{index} {} (needs revision <= {deadline} before it)",
                    s.history[index]
                )
            }
            None => format!("the model answers: {predicted}"),
        }
    }
}

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.search;
        let definite = s.entries.iter().filter(|e| !e.uncertain).count();
        writeln!(
            f,
            "the longest linearizable prefix has {} operations ({definite} definite in all):",
            s.best.len()
        )?;
        let skipped = s.best.len().saturating_sub(SHOWN);
        if skipped > 0 {
            writeln!(f, "  … {skipped} earlier operations")?;
        }
        for &entry in &s.best[skipped..] {
            write!(f, "  ")?;
            self.describe(f, entry)?;
            writeln!(f)?;
        }
        writeln!(
            f,
            "after it the store is at revision {}; no pending operation can come next:",
            s.best_state.revision()
        )?;
        let pending = self.pending();
        if let Some(&blocking) = pending.first() {
            write!(f, "  cannot linearize ")?;
            self.describe(f, blocking)?;
            writeln!(
                f,
                "\n    (the first to return; {})",
                self.why_not(&pending, blocking)
            )?;
        }
        for &entry in pending.iter().skip(1).take(SHOWN) {
            write!(f, "  pending ")?;
            self.describe(f, entry)?;
            writeln!(f, "\n    ({})", self.why_not(&pending, entry))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{KeyValue, Request, Revision};

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_linearizable(&[]), CheckResult::Ok);
    }

    #[test]
    fn sequential_put_then_get_is_linearizable() {
        let history = [
            Operation::put_ok(1, 1, 2, "a", "x", 2),
            Operation::get_ok(1, 3, 4, "a", 2, Some(KeyValue::new("x", 2, 2, 1))),
        ];
        assert_eq!(check_linearizable(&history), CheckResult::Ok);
    }

    #[test]
    fn stale_read_after_put_is_a_violation() {
        let history = [
            Operation::put_ok(1, 1, 2, "a", "x", 2),
            Operation::get_ok(2, 3, 4, "a", 1, None),
        ];
        let result = check_linearizable(&history);
        assert!(result.is_violation(), "{result}");
    }

    #[test]
    fn explanation_names_prefix_and_blocking_operation() {
        let history = [
            Operation::put_ok(1, 1, 2, "a", "x", 2),
            Operation::get_ok(2, 3, 4, "a", 1, None),
        ];
        let CheckResult::Violation { explanation } = check_linearizable(&history) else {
            panic!("expected a violation");
        };
        // The put cannot go first (the get needs revision 1), and the get
        // cannot precede a put that returned before it was called.
        assert!(
            explanation.contains("longest linearizable prefix has 0 operations"),
            "{explanation}"
        );
        assert!(
            explanation.contains("cannot linearize #0 client 1 [1, 2] Put(a=x) -> rev 2"),
            "{explanation}"
        );
        assert!(
            explanation.contains("too late for #1 client 2 [3, 4] Get(a) -> rev 1: <none>"),
            "{explanation}"
        );
    }

    #[test]
    fn equal_times_count_as_concurrent() {
        // The get is called at the put's return time: it may precede it.
        let history = [
            Operation::put_ok(1, 1, 3, "a", "x", 2),
            Operation::get_ok(2, 3, 4, "a", 1, None),
        ];
        assert_eq!(check_linearizable(&history), CheckResult::Ok);
    }

    #[test]
    fn uncertain_write_may_land_long_after_its_timeout() {
        let mut timed_out = Operation::unknown(1, 1, Request::put("a", "x"));
        timed_out.ret = Some(2);
        let history = [
            timed_out,
            Operation::get_ok(2, 10, 11, "a", 1, None),
            Operation::get_ok(2, 12, 13, "a", 2, Some(KeyValue::new("x", 2, 2, 1))),
        ];
        assert_eq!(check_linearizable(&history), CheckResult::Ok);
    }

    #[test]
    fn malformed_history_is_reported_not_checked() {
        let mut op = Operation::put_ok(1, 1, 2, "a", "x", 2);
        op.ret = None;
        assert!(matches!(
            check_linearizable(&[op]),
            CheckResult::Malformed { .. }
        ));
    }

    #[test]
    fn budget_exhaustion_is_inconclusive() {
        let history = [
            Operation::put_ok(1, 1, 2, "a", "x", 2),
            Operation::put_ok(1, 3, 4, "a", "y", 3),
        ];
        let result = check_linearizable_with(&history, &CheckOptions { max_steps: 1 });
        assert!(
            matches!(result, CheckResult::Inconclusive { .. }),
            "{result}"
        );
    }

    #[test]
    fn many_timed_out_writes_that_never_happened_stay_cheap() {
        // 40 pending uncertain puts (unread values, so one class per key) and
        // a stale read at the very end: the search must exhaust quickly.
        let mut history: Vec<Operation> = (0..40)
            .map(|i| {
                Operation::unknown(
                    9,
                    i,
                    Request::put(["a", "b"][i as usize % 2], &format!("t{i}")),
                )
            })
            .collect();
        for i in 0..200 {
            let value = format!("v{i}");
            history.push(Operation::put_ok(
                1,
                100 + 4 * i,
                101 + 4 * i,
                "a",
                &value,
                i + 2,
            ));
            history.push(Operation::get_ok(
                2,
                102 + 4 * i,
                103 + 4 * i,
                "a",
                i + 2,
                Some(KeyValue::new(&value, 2, i + 2, i + 1)),
            ));
        }
        assert_eq!(
            check_linearizable_with(&history, &CheckOptions { max_steps: 50_000 }),
            CheckResult::Ok
        );
        history.push(Operation::get_ok(
            3,
            10_000,
            10_001,
            "a",
            201,
            Some(KeyValue::new("v198", 2, 200, 199)),
        ));
        let result = check_linearizable_with(&history, &CheckOptions { max_steps: 50_000 });
        assert!(result.is_violation(), "{result}");
    }

    #[test]
    fn bitset_sets_and_clears_bits() {
        let set = Bitset::new(130).with(0).with(129);
        assert!(set.contains(0) && set.contains(129) && !set.contains(64));
        let mut cleared = set.clone();
        cleared.remove(129);
        assert!(!cleared.contains(129));
        assert_ne!(set, cleared);
    }

    mod against_committed {
        use super::*;
        use crate::committed::{change, CommittedHistory};

        fn check(history: &[Operation], changes: Vec<crate::CommittedChange>) -> CheckResult {
            check_linearizable_against(
                history,
                &CommittedHistory::complete(changes),
                &CheckOptions { max_steps: 10_000 },
            )
        }

        #[test]
        fn a_stale_read_is_caught_and_a_fresh_one_passes() {
            let fresh = [
                Operation::put_ok(1, 1, 2, "a", "x", 2),
                Operation::get_ok(2, 3, 4, "a", 2, Some(KeyValue::new("x", 2, 2, 1))),
            ];
            assert_eq!(
                check(&fresh, vec![change(2, "a", Some("x"))]),
                CheckResult::Ok
            );
            let stale = [
                Operation::put_ok(1, 1, 2, "a", "x", 2),
                Operation::get_ok(2, 3, 4, "a", 1, None),
            ];
            let result = check(&stale, vec![change(2, "a", Some("x"))]);
            assert!(result.is_violation(), "{result}");
        }

        #[test]
        fn timed_out_writes_are_placed_by_their_committed_values() {
            // u1 committed at 2, u2 never did; the read at 3 sees u1 and an
            // unclaimed revision 3 (a change from outside the history).
            let history = [
                Operation::unknown(1, 1, Request::put("a", "u1")),
                Operation::unknown(2, 2, Request::put("a", "u2")),
                Operation::get_ok(3, 10, 11, "a", 3, Some(KeyValue::new("u1", 2, 2, 1))),
            ];
            let changes = vec![change(2, "a", Some("u1")), change(3, "b", Some("lock"))];
            assert_eq!(check(&history, changes.clone()), CheckResult::Ok);
            // A read that returned before u1 was called cannot see it.
            let mut early = history.clone();
            early[0].call = 20;
            let result = check(&early, changes.clone());
            assert!(result.is_violation(), "{result}");
            // A value that committed after a read that returned nothing newer.
            let mut missed = history.clone();
            missed[2] = Operation::get_ok(3, 10, 11, "a", 3, None);
            let result = check(&missed, changes);
            assert!(result.is_violation(), "{result}");
        }

        #[test]
        fn changes_from_outside_the_history_are_replayed_at_their_revision() {
            // A lease expiry deletes a at 3: reads at 3 must not see it.
            let history = [
                Operation::put_ok(1, 1, 2, "a", "x", 2),
                Operation::get_ok(2, 5, 6, "a", 3, None),
                Operation::get_ok(2, 7, 8, "a", 2, Some(KeyValue::new("x", 2, 2, 1))),
            ];
            let changes = vec![change(2, "a", Some("x")), change(3, "a", None)];
            let result = check(&history, changes.clone());
            assert!(result.is_violation(), "{result}");
            assert!(
                result.to_string().contains("outside the history")
                    || result.to_string().contains("rev 2"),
                "{result}"
            );
            assert_eq!(check(&history[..2], changes), CheckResult::Ok);
        }

        #[test]
        fn writes_contradicting_the_committed_history_are_violations() {
            let failed = [Operation::failed(1, 1, 2, Request::put("a", "x"))];
            let result = check(&failed, vec![change(2, "a", Some("x"))]);
            assert!(result.to_string().contains("reported failed"), "{result}");
            let lost = [Operation::put_ok(1, 1, 2, "a", "x", 2)];
            let result = check(&lost, vec![change(2, "a", Some("y"))]);
            assert!(result.is_violation(), "{result}");
            // An acknowledged delete whose revision deleted another key.
            let delete = [Operation::ok(
                1,
                3,
                4,
                Request::delete("a"),
                Response::Delete {
                    header_revision: Revision(3),
                    deleted: 1,
                },
            )];
            let mut history = vec![Operation::put_ok(1, 1, 2, "a", "x", 2)];
            history.extend(delete);
            let changes = vec![change(2, "a", Some("x")), change(3, "b", None)];
            let result = check(&history, changes);
            assert!(!result.is_ok(), "{result}");
        }

        #[test]
        fn an_incomplete_committed_history_is_malformed() {
            let history = [Operation::put_ok(1, 1, 2, "a", "x", 3)];
            let result = check(&history, vec![change(3, "a", Some("x"))]);
            assert!(matches!(result, CheckResult::Malformed { .. }), "{result}");
        }

        #[test]
        fn long_histories_with_many_timed_out_writes_check_in_linear_steps() {
            // 2 000 acknowledged puts, each read back, 2 000 timed-out puts
            // of which every other committed, and 500 deletes from outside.
            let mut history = Vec::new();
            let mut changes = Vec::new();
            let mut revision = 1;
            let mut time = 0;
            for i in 0..2_000u64 {
                time += 10;
                revision += 1;
                let value = format!("v{i}");
                history.push(Operation::put_ok(1, time, time + 3, "a", &value, revision));
                changes.push(change(revision, "a", Some(&value)));
                let timed_out = format!("t{i}");
                history.push(Operation::unknown(
                    2,
                    time + 1,
                    Request::put("b", &timed_out),
                ));
                if i % 2 == 0 {
                    revision += 1;
                    changes.push(change(revision, "b", Some(&timed_out)));
                }
                if i % 4 == 0 {
                    revision += 1;
                    changes.push(change(revision, "c", Some(&format!("lease{i}"))));
                    revision += 1;
                    changes.push(change(revision, "c", None));
                }
                history.push(Operation::get_ok(
                    3,
                    time + 4,
                    time + 5,
                    "a",
                    revision,
                    Some(KeyValue::new(
                        &value,
                        2,
                        revision_of(&changes, &value),
                        i + 1,
                    )),
                ));
            }
            let options = CheckOptions { max_steps: 20_000 };
            let committed = CommittedHistory::complete(changes);
            assert_eq!(
                check_linearizable_against(&history, &committed, &options),
                CheckResult::Ok
            );
            // One stale read at the end is found as quickly.
            let last = history.len() - 1;
            let Outcome::Ok(Response::Get { kv, .. }) = history[last - 3].output.clone() else {
                panic!("a get");
            };
            history.push(Operation::get_ok(
                4,
                time + 100,
                time + 101,
                "a",
                revision,
                kv,
            ));
            let result = check_linearizable_against(&history, &committed, &options);
            assert!(result.is_violation(), "{result}");
        }

        fn revision_of(changes: &[crate::CommittedChange], value: &str) -> u64 {
            changes
                .iter()
                .find(|c| c.value.as_deref() == Some(value))
                .map_or(0, |c| c.revision.0)
        }
    }
}
