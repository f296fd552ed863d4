//! Unread values, for the linearizability search: a value no definite
//! response ever shows and no compare names cannot influence any check, so
//! the search may write a placeholder instead. Uncertain writes that differ
//! only in such values then become identical requests, and the search can
//! treat them as interchangeable (it only ever tries the earliest-called of
//! identical pending uncertain requests) and merge their states in its memo.
//!
//! Why it is sound: the model's responses to definite operations depend on a
//! stored value only through Get results (which would show it) and Txn
//! compares on values; an `Equal` / `NotEqual` compare against a value that is
//! not the stored one gives the same answer for the real value and for the
//! placeholder. `Less` / `Greater` compares on values would see the bytes, so
//! a history containing one is left untouched.
//!
//! Tests: `tests` below.

use std::collections::BTreeSet;

use super::history::{
    CompareOp, CompareTarget, Operation, Outcome, Request, Response, TxnOp, TxnOpResult, Value,
};

/// Stands for every unread value; cannot be a real compare operand or read
/// result, since those are all "read" and stay as they are.
pub const UNREAD: &str = "<unread value>";

/// The values the history reads or compares with, or `None` when values must
/// be kept as they are.
pub fn read_values(history: &[Operation]) -> Option<BTreeSet<Value>> {
    let mut read = BTreeSet::new();
    for op in history {
        if !collect_compares(&op.input, &mut read) {
            return None;
        }
        if let Outcome::Ok(response) = &op.output {
            collect_response(response, &mut read);
        }
    }
    Some(read)
}

/// Adds value operands; false if an ordering compare on a value is present.
fn collect_compares(request: &Request, read: &mut BTreeSet<Value>) -> bool {
    let Request::Txn(txn) = request else {
        return true;
    };
    for compare in &txn.compares {
        if let CompareTarget::Value(operand) = &compare.target {
            if !matches!(compare.op, CompareOp::Equal | CompareOp::NotEqual) {
                return false;
            }
            read.insert(operand.clone());
        }
    }
    true
}

fn collect_response(response: &Response, read: &mut BTreeSet<Value>) {
    match response {
        Response::Get { kv: Some(kv), .. } => {
            read.insert(kv.value.clone());
        }
        Response::Txn { results, .. } => {
            for result in results {
                if let TxnOpResult::Get(Some(kv)) = result {
                    read.insert(kv.value.clone());
                }
            }
        }
        _ => {}
    }
}

/// `request` with every value outside `read` replaced by `UNREAD`.
pub fn canonical(request: &Request, read: &BTreeSet<Value>) -> Request {
    let value = |v: &Value| {
        if read.contains(v) {
            v.clone()
        } else {
            UNREAD.to_owned()
        }
    };
    let op = |op: &TxnOp| match op {
        TxnOp::Put { key, value: v } => TxnOp::Put {
            key: key.clone(),
            value: value(v),
        },
        other => other.clone(),
    };
    match request {
        Request::Put { key, value: v } => Request::Put {
            key: key.clone(),
            value: value(v),
        },
        Request::Txn(txn) => {
            let mut txn = txn.clone();
            txn.success = txn.success.iter().map(op).collect();
            txn.failure = txn.failure.iter().map(op).collect();
            Request::Txn(txn)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Compare, KeyValue, Revision, Txn};

    fn get_seeing(value: &str) -> Operation {
        let kv = Some(KeyValue::new(value, 2, 2, 1));
        Operation::ok(
            1,
            1,
            2,
            Request::get("a"),
            Response::Get {
                header_revision: Revision(2),
                kv,
            },
        )
    }

    #[test]
    fn unread_put_values_become_the_placeholder() {
        let history = [
            get_seeing("seen"),
            Operation::unknown(1, 3, Request::put("a", "x")),
        ];
        let read = read_values(&history).expect("no ordering compare");
        assert_eq!(
            canonical(&Request::put("a", "x"), &read),
            Request::put("a", UNREAD)
        );
        assert_eq!(
            canonical(&Request::put("a", "seen"), &read),
            Request::put("a", "seen")
        );
    }

    #[test]
    fn compare_operands_count_as_read() {
        let txn = Txn {
            compares: vec![Compare::new(
                "a",
                CompareTarget::Value("x".into()),
                CompareOp::Equal,
            )],
            success: vec![TxnOp::Put {
                key: "a".into(),
                value: "y".into(),
            }],
            failure: vec![],
        };
        let read = read_values(&[Operation::unknown(1, 1, Request::Txn(txn.clone()))])
            .expect("equality only");
        assert!(read.contains("x"));
        let Request::Txn(canonical_txn) = canonical(&Request::Txn(txn), &read) else {
            panic!("still a txn")
        };
        assert_eq!(
            canonical_txn.success,
            vec![TxnOp::Put {
                key: "a".into(),
                value: UNREAD.into()
            }]
        );
    }

    #[test]
    fn ordering_compare_on_values_disables_canonicalisation() {
        let txn = Txn {
            compares: vec![Compare::new(
                "a",
                CompareTarget::Value("x".into()),
                CompareOp::Less,
            )],
            ..Txn::default()
        };
        assert_eq!(
            read_values(&[Operation::unknown(1, 1, Request::Txn(txn))]),
            None
        );
    }
}
