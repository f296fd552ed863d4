//! History types: what clients asked for and what they observed.
//!
//! An `Operation` is one client call: its request, when it was called, when
//! (if ever) it returned, and its `Outcome`:
//! - `Ok(response)`: the client saw this response (which may itself be an
//!   etcd error such as "compacted" — that is an observed, checkable answer);
//! - `Failed`: a definite failure — the request certainly had no effect (an
//!   error etcd returns before proposing, e.g. a validation error);
//! - `Unknown`: a timeout or lost connection — the request may take effect at
//!   any time after its call, or never. `ret` is then only informative.
//!
//! Requests model etcd's KV API over a small key space: single-key `Get`
//! (optionally at a past revision), `Put`, `Delete`, `Txn` and `Compact`.
//! Values must be unique per write (the harness generates them so), which is
//! what lets the checkers tell which write a read observed.
//!
//! Invariants the harness must uphold (checked by `validate`): an `Ok` outcome
//! has `ret = Some(r)` with `r >= call`. Times are any monotone clock; equal
//! times count as concurrent, so give sequential events distinct times (e.g. a
//! global event counter) to get the strictest check.
//!
//! Tests: `tests` below; histories in `tests/checker_histories.rs`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Keys are short strings (the workloads use a small key space).
pub type Key = String;
/// Values are short strings, unique per write.
pub type Value = String;

/// An etcd main revision. Revision 1 is the empty store; every write bumps it by one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// In a `Get`, "the latest revision".
    pub const LATEST: Revision = Revision(0);

    pub fn next(self) -> Revision {
        Revision(self.0 + 1)
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One client request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Range over a single key; `revision` 0 means the latest.
    Get {
        key: Key,
        #[serde(default)]
        revision: Revision,
    },
    Put {
        key: Key,
        value: Value,
    },
    Delete {
        key: Key,
    },
    Txn(Txn),
    Compact {
        revision: Revision,
    },
}

/// etcd's `TxnRequest`: if every compare holds run `success`, else `failure`.
/// The harness must not put two writes to one key in a txn (etcd rejects it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// An operation inside a txn branch. A `Get` here reads the latest state,
/// including earlier writes of the same txn (as etcd does).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOp {
    Get { key: Key },
    Put { key: Key, value: Value },
    Delete { key: Key },
}

/// etcd's `Compare`: `<target of key> <op> <operand>`; the operand travels in
/// the target (as in etcd's `target_union`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Compare {
    pub key: Key,
    pub target: CompareTarget,
    pub op: CompareOp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareTarget {
    Value(Value),
    Version(u64),
    ModRevision(Revision),
    CreateRevision(Revision),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// A key's state as etcd reports it (the key itself is implied by the request).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    pub value: Value,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// 1 on creation, +1 per put, back to 1 after a delete and a new put.
    pub version: u64,
}

/// What etcd answered. Every successful response carries the header revision:
/// the store's revision after the request (for reads: when it was served).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Get {
        header_revision: Revision,
        kv: Option<KeyValue>,
    },
    Put {
        header_revision: Revision,
    },
    Delete {
        header_revision: Revision,
        deleted: u64,
    },
    Txn {
        header_revision: Revision,
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
    Compact {
        header_revision: Revision,
    },
    Error(EtcdError),
}

/// The result of one op of the executed txn branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOpResult {
    Get(Option<KeyValue>),
    Put,
    Delete { deleted: u64 },
}

/// The etcd errors the model predicts (both are definite: nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcdError {
    /// "mvcc: required revision has been compacted"
    Compacted,
    /// "mvcc: required revision is a future revision"
    FutureRevision,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(Response),
    /// Definitely had no effect.
    Failed,
    /// May have taken effect at any time after the call, or never.
    Unknown,
}

/// One client call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    pub client: u64,
    /// When the client issued the request.
    pub call: u64,
    /// When the client got an answer; `None` if it never did.
    #[serde(default)]
    pub ret: Option<u64>,
    pub input: Request,
    pub output: Outcome,
}

impl Request {
    pub fn get(key: &str) -> Request {
        Request::Get {
            key: key.to_owned(),
            revision: Revision::LATEST,
        }
    }

    pub fn get_at(key: &str, revision: u64) -> Request {
        Request::Get {
            key: key.to_owned(),
            revision: Revision(revision),
        }
    }

    pub fn put(key: &str, value: &str) -> Request {
        Request::Put {
            key: key.to_owned(),
            value: value.to_owned(),
        }
    }

    pub fn delete(key: &str) -> Request {
        Request::Delete {
            key: key.to_owned(),
        }
    }

    pub fn compact(revision: u64) -> Request {
        Request::Compact {
            revision: Revision(revision),
        }
    }

    /// True if the request can never change the store, whatever its state:
    /// a `Get`, or a `Txn` with no write in either branch.
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Get { .. } => true,
            Request::Txn(txn) => txn
                .success
                .iter()
                .chain(&txn.failure)
                .all(|op| matches!(op, TxnOp::Get { .. })),
            Request::Put { .. } | Request::Delete { .. } | Request::Compact { .. } => false,
        }
    }
}

impl KeyValue {
    pub fn new(value: &str, create_revision: u64, mod_revision: u64, version: u64) -> KeyValue {
        KeyValue {
            value: value.to_owned(),
            create_revision: Revision(create_revision),
            mod_revision: Revision(mod_revision),
            version,
        }
    }
}

impl Response {
    /// The header revision, if the response has a header (errors do not).
    pub fn header_revision(&self) -> Option<Revision> {
        match self {
            Response::Get {
                header_revision, ..
            }
            | Response::Put { header_revision }
            | Response::Delete {
                header_revision, ..
            }
            | Response::Txn {
                header_revision, ..
            }
            | Response::Compact { header_revision } => Some(*header_revision),
            Response::Error(_) => None,
        }
    }
}

impl Compare {
    pub fn new(key: &str, target: CompareTarget, op: CompareOp) -> Compare {
        Compare {
            key: key.to_owned(),
            target,
            op,
        }
    }
}

impl Operation {
    /// A call that returned `response` at `ret`.
    pub fn ok(client: u64, call: u64, ret: u64, input: Request, response: Response) -> Operation {
        Operation {
            client,
            call,
            ret: Some(ret),
            input,
            output: Outcome::Ok(response),
        }
    }

    /// An acknowledged Put of `key` = `value` at `revision` (for tests and
    /// harnesses: here, in sim-tests and in the jepsen suite).
    pub fn put_ok(
        client: u64,
        call: u64,
        ret: u64,
        key: &str,
        value: &str,
        revision: u64,
    ) -> Operation {
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

    /// A Get of `key` answered at revision `header` with `kv` (as `put_ok`).
    pub fn get_ok(
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

    /// A call that definitely failed (no effect), reported at `ret`.
    pub fn failed(client: u64, call: u64, ret: u64, input: Request) -> Operation {
        Operation {
            client,
            call,
            ret: Some(ret),
            input,
            output: Outcome::Failed,
        }
    }

    /// A call whose outcome is unknown (timed out, connection lost).
    pub fn unknown(client: u64, call: u64, input: Request) -> Operation {
        Operation {
            client,
            call,
            ret: None,
            input,
            output: Outcome::Unknown,
        }
    }
}

/// Checks the invariants in the module header; the error names the operation.
pub fn validate(history: &[Operation]) -> Result<(), String> {
    history.iter().enumerate().try_for_each(|(index, op)| {
        validate_one(op).map_err(|why| format!("op #{index} ({op}): {why}"))
    })
}

fn validate_one(op: &Operation) -> Result<(), String> {
    match (op.ret, &op.output) {
        (None, Outcome::Ok(_)) => Err("an Ok outcome needs a return time".to_owned()),
        (Some(ret), _) if ret < op.call => {
            Err(format!("returns at {ret}, before its call at {}", op.call))
        }
        _ => Ok(()),
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Get { key, revision } if *revision == Revision::LATEST => {
                write!(f, "Get({key})")
            }
            Request::Get { key, revision } => write!(f, "Get({key} @{revision})"),
            Request::Put { key, value } => write!(f, "Put({key}={value})"),
            Request::Delete { key } => write!(f, "Delete({key})"),
            Request::Compact { revision } => write!(f, "Compact({revision})"),
            Request::Txn(txn) => write!(f, "{txn}"),
        }
    }
}

impl fmt::Display for Txn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Txn(if [{}] then [{}] else [{}])",
            join(&self.compares),
            join(&self.success),
            join(&self.failure)
        )
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            CompareOp::Equal => "==",
            CompareOp::NotEqual => "!=",
            CompareOp::Less => "<",
            CompareOp::Greater => ">",
        };
        match &self.target {
            CompareTarget::Value(v) => write!(f, "value({}) {op} {v}", self.key),
            CompareTarget::Version(v) => write!(f, "version({}) {op} {v}", self.key),
            CompareTarget::ModRevision(r) => write!(f, "mod({}) {op} {r}", self.key),
            CompareTarget::CreateRevision(r) => write!(f, "create({}) {op} {r}", self.key),
        }
    }
}

impl fmt::Display for TxnOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnOp::Get { key } => write!(f, "get {key}"),
            TxnOp::Put { key, value } => write!(f, "put {key}={value}"),
            TxnOp::Delete { key } => write!(f, "delete {key}"),
        }
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (create {}, mod {}, version {})",
            self.value, self.create_revision, self.mod_revision, self.version
        )
    }
}

struct OptKv<'a>(&'a Option<KeyValue>);

impl fmt::Display for OptKv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(kv) => write!(f, "{kv}"),
            None => write!(f, "<none>"),
        }
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Get {
                header_revision,
                kv,
            } => write!(f, "rev {header_revision}: {}", OptKv(kv)),
            Response::Put { header_revision } => write!(f, "rev {header_revision}"),
            Response::Delete {
                header_revision,
                deleted,
            } => write!(f, "rev {header_revision}, deleted {deleted}"),
            Response::Compact { header_revision } => write!(f, "compacted, rev {header_revision}"),
            Response::Txn {
                header_revision,
                succeeded,
                results,
            } => {
                write!(
                    f,
                    "rev {header_revision}, succeeded {succeeded}, [{}]",
                    join(results)
                )
            }
            Response::Error(EtcdError::Compacted) => {
                write!(f, "error: required revision has been compacted")
            }
            Response::Error(EtcdError::FutureRevision) => {
                write!(f, "error: required revision is a future revision")
            }
        }
    }
}

impl fmt::Display for TxnOpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnOpResult::Get(kv) => write!(f, "{}", OptKv(kv)),
            TxnOpResult::Put => write!(f, "put"),
            TxnOpResult::Delete { deleted } => write!(f, "deleted {deleted}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(response) => write!(f, "{response}"),
            Outcome::Failed => write!(f, "failed"),
            Outcome::Unknown => write!(f, "unknown"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ret = self.ret.map_or_else(|| "…".to_owned(), |r| r.to_string());
        write!(
            f,
            "client {} [{}, {ret}] {} -> {}",
            self.client, self.call, self.input, self.output
        )
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_requests_are_gets_and_txns_without_writes() {
        assert!(Request::get("a").is_read_only());
        assert!(!Request::put("a", "1").is_read_only());
        assert!(!Request::compact(2).is_read_only());
        let reads = Txn {
            success: vec![TxnOp::Get { key: "a".into() }],
            ..Txn::default()
        };
        assert!(Request::Txn(reads).is_read_only());
        let writes = Txn {
            failure: vec![TxnOp::Delete { key: "a".into() }],
            ..Txn::default()
        };
        assert!(!Request::Txn(writes).is_read_only());
    }

    #[test]
    fn validate_rejects_ok_without_return_and_return_before_call() {
        let mut op = Operation::ok(
            1,
            5,
            6,
            Request::get("a"),
            Response::Put {
                header_revision: Revision(1),
            },
        );
        assert!(validate(std::slice::from_ref(&op)).is_ok());
        op.ret = None;
        assert!(validate(std::slice::from_ref(&op)).is_err());
        op.ret = Some(4);
        assert!(validate(std::slice::from_ref(&op)).is_err());
        assert!(validate(&[Operation::unknown(1, 5, Request::put("a", "1"))]).is_ok());
    }

    #[test]
    fn display_is_compact_and_readable() {
        let op = Operation::ok(
            3,
            1,
            2,
            Request::put("k", "v1"),
            Response::Put {
                header_revision: Revision(2),
            },
        );
        assert_eq!(op.to_string(), "client 3 [1, 2] Put(k=v1) -> rev 2");
        assert_eq!(
            Operation::unknown(1, 4, Request::get_at("k", 3)).to_string(),
            "client 1 [4, …] Get(k @3) -> unknown"
        );
    }
}
