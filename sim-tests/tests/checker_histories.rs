//! Whole histories through the checkers: known-legal histories must be
//! accepted, known violations (stale read, lost update, read of an
//! uncommitted write, revisions going backwards, …) must be flagged, and
//! random histories generated from the model — sequential, then widened into
//! concurrency, with timeouts and failures — must be accepted, and rejected
//! once one read is corrupted in a certainly illegal way.

use std::collections::BTreeSet;
use std::time::Instant;

use cairn_sim_tests::checker::{
    acknowledged_writes, check_durability, check_linearizable, check_serializable_reads,
    possibly_written_values, CheckResult, CommittedHistory, Compare, CompareOp, CompareTarget,
    EtcdError, EtcdState, KeyValue, Operation, Outcome, Request, Response, Revision, Txn, TxnOp,
    TxnOpResult,
};

// ---------------------------------------------------------------- helpers

fn kv(value: &str, create: u64, modified: u64, version: u64) -> Option<KeyValue> {
    Some(KeyValue::new(value, create, modified, version))
}

/// `if version(key) == version then put key=value else get key`.
fn cas(key: &str, version: u64, value: &str) -> Request {
    Request::Txn(Txn {
        compares: vec![Compare::new(
            key,
            CompareTarget::Version(version),
            CompareOp::Equal,
        )],
        success: vec![TxnOp::Put {
            key: key.into(),
            value: value.into(),
        }],
        failure: vec![TxnOp::Get { key: key.into() }],
    })
}

fn txn_ok(revision: u64, succeeded: bool, results: Vec<TxnOpResult>) -> Response {
    Response::Txn {
        header_revision: Revision(revision),
        succeeded,
        results,
    }
}

fn assert_linearizable(history: &[Operation]) {
    let result = check_linearizable(history);
    assert_eq!(result, CheckResult::Ok, "{result}");
}

fn assert_violation(history: &[Operation]) {
    let result = check_linearizable(history);
    assert!(result.is_violation(), "expected a violation, got: {result}");
}

// ---------------------------------------------------------------- legal histories

#[test]
fn sequential_puts_and_gets_are_linearizable() {
    assert_linearizable(&[
        Operation::get_ok(1, 1, 2, "a", 1, None),
        Operation::put_ok(1, 3, 4, "a", "1", 2),
        Operation::put_ok(2, 5, 6, "b", "2", 3),
        Operation::get_ok(2, 7, 8, "a", 3, kv("1", 2, 2, 1)),
        Operation::put_ok(1, 9, 10, "a", "3", 4),
        Operation::get_ok(1, 11, 12, "a", 4, kv("3", 2, 4, 2)),
    ]);
}

#[test]
fn concurrent_get_may_see_the_old_value() {
    assert_linearizable(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::put_ok(1, 3, 10, "a", "2", 3),
        Operation::get_ok(2, 4, 5, "a", 2, kv("1", 2, 2, 1)),
    ]);
}

#[test]
fn concurrent_get_may_see_the_new_value() {
    assert_linearizable(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::put_ok(1, 3, 10, "a", "2", 3),
        Operation::get_ok(2, 4, 5, "a", 3, kv("2", 2, 3, 2)),
    ]);
}

#[test]
fn concurrent_get_may_be_linearized_before_a_put_that_returned_earlier() {
    // The get is called before the put returns, and the put's response is the
    // only thing that orders them.
    assert_linearizable(&[
        Operation::get_ok(2, 1, 10, "a", 1, None),
        Operation::put_ok(1, 2, 3, "a", "1", 2),
    ]);
}

#[test]
fn timed_out_put_that_took_effect_is_linearizable() {
    assert_linearizable(&[
        Operation::unknown(1, 1, Request::put("a", "1")),
        Operation::get_ok(2, 5, 6, "a", 1, None),
        Operation::get_ok(2, 20, 21, "a", 2, kv("1", 2, 2, 1)),
        Operation::put_ok(2, 22, 23, "a", "2", 3),
    ]);
}

#[test]
fn timed_out_put_that_never_took_effect_is_linearizable() {
    assert_linearizable(&[
        Operation::unknown(1, 1, Request::put("a", "1")),
        Operation::put_ok(2, 5, 6, "a", "2", 2),
        Operation::get_ok(2, 20, 21, "a", 2, kv("2", 2, 2, 1)),
    ]);
}

#[test]
fn failed_put_never_seen_is_linearizable() {
    assert_linearizable(&[
        Operation::failed(1, 1, 2, Request::put("a", "1")),
        Operation::get_ok(2, 3, 4, "a", 1, None),
        Operation::put_ok(2, 5, 6, "a", "2", 2),
        Operation::get_ok(1, 7, 8, "a", 2, kv("2", 2, 2, 1)),
    ]);
}

#[test]
fn cas_race_with_exactly_one_winner_is_linearizable() {
    assert_linearizable(&[
        Operation::put_ok(1, 1, 2, "a", "0", 2),
        Operation::ok(
            1,
            3,
            10,
            cas("a", 1, "x"),
            txn_ok(3, false, vec![TxnOpResult::Get(kv("y", 2, 3, 2))]),
        ),
        Operation::ok(
            2,
            4,
            9,
            cas("a", 1, "y"),
            txn_ok(3, true, vec![TxnOpResult::Put]),
        ),
        Operation::get_ok(3, 11, 12, "a", 3, kv("y", 2, 3, 2)),
    ]);
}

#[test]
fn read_at_past_revision_returns_the_old_value() {
    let at = |rev, header, kv| {
        Operation::ok(
            3,
            10,
            11,
            Request::get_at("a", rev),
            Response::Get {
                header_revision: Revision(header),
                kv,
            },
        )
    };
    assert_linearizable(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::put_ok(1, 3, 4, "a", "2", 3),
        at(2, 3, kv("1", 2, 2, 1)),
        at(1, 3, None),
    ]);
}

#[test]
fn read_at_compacted_revision_errors_after_compaction() {
    assert_linearizable(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::put_ok(1, 3, 4, "a", "2", 3),
        Operation::ok(
            1,
            5,
            6,
            Request::compact(3),
            Response::Compact {
                header_revision: Revision(3),
            },
        ),
        Operation::ok(
            2,
            7,
            8,
            Request::get_at("a", 2),
            Response::Error(EtcdError::Compacted),
        ),
        Operation::ok(
            2,
            9,
            10,
            Request::get_at("a", 3),
            Response::Get {
                header_revision: Revision(3),
                kv: kv("2", 2, 3, 2),
            },
        ),
        Operation::ok(
            2,
            11,
            12,
            Request::compact(2),
            Response::Error(EtcdError::Compacted),
        ),
    ]);
}

#[test]
fn timed_out_compaction_may_explain_a_compacted_error() {
    assert_linearizable(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::put_ok(1, 3, 4, "a", "2", 3),
        Operation::unknown(1, 5, Request::compact(3)),
        Operation::ok(
            2,
            7,
            8,
            Request::get_at("a", 2),
            Response::Error(EtcdError::Compacted),
        ),
    ]);
}

// ---------------------------------------------------------------- violations

#[test]
fn stale_read_is_a_violation() {
    assert_violation(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::put_ok(1, 3, 4, "a", "2", 3),
        Operation::get_ok(2, 5, 6, "a", 2, kv("1", 2, 2, 1)),
    ]);
}

#[test]
fn stale_read_with_current_header_is_a_violation() {
    assert_violation(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::put_ok(1, 3, 4, "a", "2", 3),
        Operation::get_ok(2, 5, 6, "a", 3, kv("1", 2, 2, 1)),
    ]);
}

#[test]
fn lost_update_two_cas_winners_is_a_violation() {
    assert_violation(&[
        Operation::put_ok(1, 1, 2, "a", "0", 2),
        Operation::ok(
            1,
            3,
            10,
            cas("a", 1, "x"),
            txn_ok(3, true, vec![TxnOpResult::Put]),
        ),
        Operation::ok(
            2,
            4,
            9,
            cas("a", 1, "y"),
            txn_ok(4, true, vec![TxnOpResult::Put]),
        ),
    ]);
}

#[test]
fn lost_update_hidden_by_shared_revision_is_a_violation() {
    assert_violation(&[
        Operation::put_ok(1, 1, 2, "a", "0", 2),
        Operation::ok(
            1,
            3,
            10,
            cas("a", 1, "x"),
            txn_ok(3, true, vec![TxnOpResult::Put]),
        ),
        Operation::ok(
            2,
            4,
            9,
            cas("a", 1, "y"),
            txn_ok(3, true, vec![TxnOpResult::Put]),
        ),
    ]);
}

#[test]
fn read_of_a_failed_write_is_a_violation() {
    assert_violation(&[
        Operation::failed(1, 1, 4, Request::put("a", "1")),
        Operation::get_ok(2, 2, 3, "a", 2, kv("1", 2, 2, 1)),
    ]);
}

#[test]
fn read_of_a_never_issued_write_is_a_violation() {
    assert_violation(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::get_ok(2, 3, 4, "a", 2, kv("ghost", 2, 2, 1)),
    ]);
}

#[test]
fn read_of_a_timed_out_write_before_its_call_is_a_violation() {
    assert_violation(&[
        Operation::get_ok(2, 1, 2, "a", 2, kv("1", 2, 2, 1)),
        Operation::unknown(1, 3, Request::put("a", "1")),
    ]);
}

#[test]
fn revision_going_backwards_for_one_client_is_a_violation() {
    assert_violation(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::put_ok(1, 3, 4, "b", "2", 3),
        Operation::get_ok(1, 5, 6, "a", 2, kv("1", 2, 2, 1)),
    ]);
}

#[test]
fn get_at_future_revision_returning_data_is_a_violation() {
    assert_violation(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::ok(
            1,
            3,
            4,
            Request::get_at("a", 5),
            Response::Get {
                header_revision: Revision(2),
                kv: kv("1", 2, 2, 1),
            },
        ),
    ]);
}

#[test]
fn duplicate_revision_for_two_writes_is_a_violation() {
    assert_violation(&[
        Operation::put_ok(1, 1, 2, "a", "1", 2),
        Operation::put_ok(2, 3, 4, "b", "1", 2),
    ]);
}

#[test]
fn wrong_version_after_delete_is_a_violation() {
    let delete = Operation::ok(
        1,
        3,
        4,
        Request::delete("a"),
        Response::Delete {
            header_revision: Revision(3),
            deleted: 1,
        },
    );
    let history = |observed| {
        [
            Operation::put_ok(1, 1, 2, "a", "1", 2),
            delete.clone(),
            Operation::put_ok(1, 5, 6, "a", "2", 4),
            Operation::get_ok(1, 7, 8, "a", 4, observed),
        ]
    };
    assert_linearizable(&history(kv("2", 4, 4, 1)));
    assert_violation(&history(kv("2", 2, 4, 2)));
    assert_violation(&history(kv("2", 4, 4, 2)));
}

#[test]
fn delete_of_missing_key_bumping_revision_is_a_violation() {
    let delete = Operation::ok(
        1,
        1,
        2,
        Request::delete("a"),
        Response::Delete {
            header_revision: Revision(2),
            deleted: 0,
        },
    );
    assert_violation(&[delete]);
}

// ---------------------------------------------------------------- random histories

/// A tiny seeded xorshift64*; the tests need no more.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

#[derive(Clone, Copy)]
struct Shape {
    ops: usize,
    clients: u64,
    keys: u64,
    /// How far calls and returns spread around the linearization point (0 = sequential).
    spread: u64,
    /// Percent of operations that time out (unknown) or fail definitely.
    unknown_percent: u64,
    failed_percent: u64,
}

struct Generated {
    ops: Vec<Operation>,
    state: EtcdState,
}

/// A history with a known linearization: operation i takes effect at time
/// 10·(i+1), inside its [call, return] interval, in the model's order.
fn generate(seed: u64, shape: Shape) -> Generated {
    let mut rng = Rng::new(seed);
    let mut state = EtcdState::new();
    let mut free_at = vec![0u64; shape.clients as usize];
    let mut ops = Vec::with_capacity(shape.ops);
    for i in 0..shape.ops {
        let point = 10 * (i as u64 + 1);
        let Some(client) = pick_client(&mut rng, &free_at, point) else {
            continue;
        };
        let call = point
            .saturating_sub(rng.below(shape.spread + 1))
            .max(free_at[client] + 1);
        let ret = point + rng.below(shape.spread + 1);
        free_at[client] = ret;
        let request = random_request(&mut rng, &state, shape.keys, i);
        ops.push(outcome_for(
            &mut rng,
            &mut state,
            shape,
            client as u64,
            call,
            ret,
            request,
        ));
    }
    Generated { ops, state }
}

fn pick_client(rng: &mut Rng, free_at: &[u64], point: u64) -> Option<usize> {
    let free: Vec<usize> = (0..free_at.len()).filter(|&c| free_at[c] < point).collect();
    (!free.is_empty()).then(|| free[rng.below(free.len() as u64) as usize])
}

/// Applies the request at its linearization point unless it failed (or timed
/// out and is chosen never to take effect).
fn outcome_for(
    rng: &mut Rng,
    state: &mut EtcdState,
    shape: Shape,
    client: u64,
    call: u64,
    ret: u64,
    input: Request,
) -> Operation {
    let roll = rng.below(100);
    let (next, response) = state.apply(&input);
    if roll < shape.failed_percent {
        return Operation::failed(client, call, ret, input);
    }
    if roll < shape.failed_percent + shape.unknown_percent {
        if rng.percent(50) {
            *state = next;
        }
        let ret = rng.percent(50).then_some(ret);
        return Operation {
            client,
            call,
            ret,
            input,
            output: Outcome::Unknown,
        };
    }
    *state = next;
    Operation::ok(client, call, ret, input, response)
}

fn random_request(rng: &mut Rng, state: &EtcdState, keys: u64, i: usize) -> Request {
    let key = format!("k{}", rng.below(keys));
    let value = format!("v{i}");
    match rng.below(100) {
        0..=34 => Request::get(&key),
        35..=41 => Request::get_at(&key, rng.below(state.revision().0 + 3)),
        42..=69 => Request::put(&key, &value),
        70..=79 => Request::delete(&key),
        80..=93 => random_cas(rng, state, key, value),
        94..=95 => Request::compact(state.compact_revision().0 + rng.below(4)),
        _ => {
            let other = format!("k{}", rng.below(keys));
            // Keys ending in "x" are never the delete's key: no duplicate key in one txn.
            let success = vec![
                TxnOp::Delete { key: other },
                TxnOp::Put {
                    key: format!("{key}x"),
                    value,
                },
            ];
            Request::Txn(Txn {
                compares: vec![],
                success,
                failure: vec![],
            })
        }
    }
}

/// A CAS on the key's mod revision, right or stale half the time.
fn random_cas(rng: &mut Rng, state: &EtcdState, key: String, value: String) -> Request {
    let current = state.kv(&key).map_or(0, |kv| kv.mod_revision.0);
    let expected = if rng.percent(50) {
        current
    } else {
        current.saturating_sub(1 + rng.below(3))
    };
    Request::Txn(Txn {
        compares: vec![Compare::new(
            &key,
            CompareTarget::ModRevision(Revision(expected)),
            CompareOp::Equal,
        )],
        success: vec![TxnOp::Put {
            key: key.clone(),
            value,
        }],
        failure: vec![TxnOp::Get { key }],
    })
}

const SEQUENTIAL: Shape = Shape {
    ops: 150,
    clients: 3,
    keys: 4,
    spread: 0,
    unknown_percent: 0,
    failed_percent: 0,
};
const CONCURRENT: Shape = Shape {
    ops: 300,
    clients: 8,
    keys: 4,
    spread: 35,
    unknown_percent: 4,
    failed_percent: 3,
};

#[test]
fn random_sequential_histories_are_linearizable() {
    for seed in 0..20 {
        let generated = generate(seed, SEQUENTIAL);
        assert_eq!(
            check_linearizable(&generated.ops),
            CheckResult::Ok,
            "seed {seed}"
        );
    }
}

#[test]
fn random_concurrent_histories_are_linearizable() {
    for seed in 0..20 {
        let generated = generate(seed, CONCURRENT);
        let result = check_linearizable(&generated.ops);
        assert_eq!(result, CheckResult::Ok, "seed {seed}: {result}");
    }
}

/// Indexes of acknowledged single-key Gets.
fn ok_gets(ops: &[Operation]) -> Vec<usize> {
    let is_ok_get = |op: &Operation| matches!(op.output, Outcome::Ok(Response::Get { .. }));
    (0..ops.len()).filter(|&i| is_ok_get(&ops[i])).collect()
}

/// Corruptions no legal execution can produce.
fn corrupt(op: &mut Operation, how: u64) {
    let Outcome::Ok(Response::Get {
        header_revision,
        kv,
    }) = &mut op.output
    else {
        panic!("only Gets are corrupted")
    };
    match how {
        0 => *kv = Some(KeyValue::new("never-written", 2, 2, 1)),
        1 => *header_revision = Revision(1_000_000),
        _ => match kv {
            Some(kv) => kv.version += 1,
            None => *kv = Some(KeyValue::new("never-written", 2, 2, 1)),
        },
    }
}

#[test]
fn corrupted_random_histories_are_violations() {
    for seed in 0..30 {
        let mut generated = generate(seed, CONCURRENT);
        let gets = ok_gets(&generated.ops);
        let mut rng = Rng::new(seed ^ 0xC0FFEE);
        let victim = gets[rng.below(gets.len() as u64) as usize];
        corrupt(&mut generated.ops[victim], seed % 3);
        let result = check_linearizable(&generated.ops);
        assert!(
            result.is_violation(),
            "seed {seed}, corrupted #{victim}: {result}"
        );
    }
}

#[test]
fn large_history_checks_quickly() {
    let shape = Shape {
        ops: 2_000,
        clients: 10,
        keys: 10,
        spread: 60,
        unknown_percent: 3,
        failed_percent: 2,
    };
    let generated = generate(7, shape);
    let started = Instant::now();
    let result = check_linearizable(&generated.ops);
    let elapsed = started.elapsed();
    eprintln!(
        "{} operations from {} clients checked in {elapsed:?}",
        generated.ops.len(),
        shape.clients
    );
    assert_eq!(result, CheckResult::Ok, "{result}");
    // The corrupted twin: one read of a value never written, half way through.
    let mut corrupted = generated.ops.clone();
    let gets = ok_gets(&corrupted);
    corrupt(&mut corrupted[gets[gets.len() / 2]], 0);
    let started = Instant::now();
    let result = check_linearizable(&corrupted);
    eprintln!("corrupted twin rejected in {:?}", started.elapsed());
    assert!(result.is_violation(), "{result}");
}

// ---------------------------------------------------------------- serializable reads and durability

fn final_history(state: &EtcdState) -> CommittedHistory {
    CommittedHistory {
        compact_revision: Revision(0),
        current_revision: state.revision(),
        changes: state.committed_changes(),
    }
}

/// Serializable reads served at random past revisions (as a lagging member would).
fn stale_reads(rng: &mut Rng, state: &EtcdState, count: usize) -> Vec<Operation> {
    (0..count)
        .map(|i| {
            let key = format!("k{}", rng.below(4));
            let oldest = state.compact_revision().0.max(1);
            let header = oldest + rng.below(state.revision().0 - oldest + 1);
            let response = state.apply(&Request::get_at(&key, header)).1;
            let Response::Get { kv, .. } = response else {
                panic!("in range: {response}")
            };
            let response = Response::Get {
                header_revision: Revision(header),
                kv,
            };
            Operation::ok(100, i as u64, i as u64 + 1, Request::get(&key), response)
        })
        .collect()
}

#[test]
fn stale_serializable_reads_of_committed_states_pass() {
    let generated = generate(3, CONCURRENT);
    let reads = stale_reads(&mut Rng::new(3), &generated.state, 200);
    let violations = check_serializable_reads(&reads, &final_history(&generated.state))
        .expect("complete history");
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn serializable_read_of_a_state_never_committed_fails() {
    let generated = generate(4, CONCURRENT);
    let mut reads = stale_reads(&mut Rng::new(4), &generated.state, 50);
    for how in 0..3 {
        let mut read = reads[how as usize].clone();
        corrupt(&mut read, how);
        reads.push(read);
    }
    let violations = check_serializable_reads(&reads, &final_history(&generated.state))
        .expect("complete history");
    assert_eq!(
        violations.iter().map(|v| v.op).collect::<Vec<_>>(),
        vec![50, 51, 52],
        "{violations:?}"
    );
}

#[test]
fn acknowledged_writes_of_generated_histories_are_durable() {
    for seed in 0..10 {
        let generated = generate(seed, CONCURRENT);
        let acked = acknowledged_writes(&generated.ops);
        let written = possibly_written_values(&generated.ops);
        let violations = check_durability(&acked, &written, &final_history(&generated.state))
            .expect("valid history");
        assert!(violations.is_empty(), "seed {seed}: {violations:?}");
    }
}

#[test]
fn lost_acknowledged_write_is_a_durability_violation() {
    let generated = generate(5, CONCURRENT);
    let acked = acknowledged_writes(&generated.ops);
    let written = possibly_written_values(&generated.ops);
    // A crash that loses the revisions from the newest acknowledged one on.
    let newest = acked
        .iter()
        .map(|write| write.revision)
        .max()
        .expect("some write was acknowledged");
    let mut history = final_history(&generated.state);
    history.changes.retain(|change| change.revision < newest);
    history.current_revision = Revision(newest.0 - 1);
    let lost = acked
        .iter()
        .filter(|write| write.revision == newest)
        .count();
    let violations = check_durability(&acked, &written, &history).expect("valid history");
    assert_eq!(violations.len(), lost, "{violations:?}");
}

#[test]
fn value_from_a_failed_write_is_a_durability_violation() {
    let ops = [Operation::failed(1, 1, 2, Request::put("a", "1"))];
    let history = CommittedHistory::complete(vec![cairn_sim_tests::checker::CommittedChange::new(
        2,
        "a",
        Some("1"),
    )]);
    let written: BTreeSet<_> = possibly_written_values(&ops);
    let violations =
        check_durability(&acknowledged_writes(&ops), &written, &history).expect("valid history");
    assert_eq!(violations.len(), 1, "{violations:?}");
}
