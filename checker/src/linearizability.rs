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
//! Tests: `tests` below; whole histories in `tests/checker_histories.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasherDefault;
use std::hash::DefaultHasher;

use super::canonical::{canonical, read_values};
use super::history::{validate, Operation, Outcome, Request, Response, TxnOpResult};
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
        self.steps += 1;
        let op = &self.history[self.entries[entry].index];
        let (next_state, expected) = self.state.apply(&self.entries[entry].request);
        if let Outcome::Ok(observed) = &op.output {
            if !matches(&expected, observed) {
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
        write!(f, "#{index} {}", s.history[index])
    }

    /// Why `entry` cannot come next: the model answers differently, or
    /// answering the same would push the store past another operation's deadline.
    fn why_not(&self, pending: &[usize], entry: usize) -> String {
        let s = self.search;
        let op = &s.history[s.entries[entry].index];
        let (next, predicted) = s.best_state.apply(&s.entries[entry].request);
        let matching = matches!(&op.output, Outcome::Ok(observed) if matches(&predicted, observed));
        if !matching {
            return format!("the model answers: {predicted}");
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

    fn put(client: u64, call: u64, ret: u64, key: &str, value: &str, revision: u64) -> Operation {
        Operation::ok(
            client,
            call,
            ret,
            Request::put(key, value),
            Response::Put {
                header_revision: Revision(revision),
            },
        )
    }

    fn get(
        client: u64,
        call: u64,
        ret: u64,
        key: &str,
        header: u64,
        kv: Option<KeyValue>,
    ) -> Operation {
        Operation::ok(
            client,
            call,
            ret,
            Request::get(key),
            Response::Get {
                header_revision: Revision(header),
                kv,
            },
        )
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_linearizable(&[]), CheckResult::Ok);
    }

    #[test]
    fn sequential_put_then_get_is_linearizable() {
        let history = [
            put(1, 1, 2, "a", "x", 2),
            get(1, 3, 4, "a", 2, Some(KeyValue::new("x", 2, 2, 1))),
        ];
        assert_eq!(check_linearizable(&history), CheckResult::Ok);
    }

    #[test]
    fn stale_read_after_put_is_a_violation() {
        let history = [put(1, 1, 2, "a", "x", 2), get(2, 3, 4, "a", 1, None)];
        let result = check_linearizable(&history);
        assert!(result.is_violation(), "{result}");
    }

    #[test]
    fn explanation_names_prefix_and_blocking_operation() {
        let history = [put(1, 1, 2, "a", "x", 2), get(2, 3, 4, "a", 1, None)];
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
        let history = [put(1, 1, 3, "a", "x", 2), get(2, 3, 4, "a", 1, None)];
        assert_eq!(check_linearizable(&history), CheckResult::Ok);
    }

    #[test]
    fn uncertain_write_may_land_long_after_its_timeout() {
        let mut timed_out = Operation::unknown(1, 1, Request::put("a", "x"));
        timed_out.ret = Some(2);
        let history = [
            timed_out,
            get(2, 10, 11, "a", 1, None),
            get(2, 12, 13, "a", 2, Some(KeyValue::new("x", 2, 2, 1))),
        ];
        assert_eq!(check_linearizable(&history), CheckResult::Ok);
    }

    #[test]
    fn malformed_history_is_reported_not_checked() {
        let mut op = put(1, 1, 2, "a", "x", 2);
        op.ret = None;
        assert!(matches!(
            check_linearizable(&[op]),
            CheckResult::Malformed { .. }
        ));
    }

    #[test]
    fn budget_exhaustion_is_inconclusive() {
        let history = [put(1, 1, 2, "a", "x", 2), put(1, 3, 4, "a", "y", 3)];
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
            history.push(put(1, 100 + 4 * i, 101 + 4 * i, "a", &value, i + 2));
            history.push(get(
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
        history.push(get(
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
}
