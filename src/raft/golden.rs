//! Golden interaction scripts: every `src/raft/testdata/*.txt` is a sequence
//! of commands, each followed by `----` and its expected output, separated by
//! blank lines. The test replays each file on a `testkit::Cluster` and fails
//! with a readable diff. After a deliberate change, rewrite with
//! `REWRITE=1 cargo test -p cairn --lib raft::golden` and review every line.
//!
//! Commands (ids are node ids; lists are `(1,2,3)`):
//! - `add-nodes N voters=(..) [learners=(..)] [index=I] [prevote=B] [checkquorum=B]
//!    [election=T] [heartbeat=T] [inflight=N] [inflight-bytes=N] [max-msg-bytes=N] [seed=S]`
//!   creates nodes 1..=N; founding members start from a snapshot at `index`.
//! - `campaign ID`, `tick ID [N]`, `tick-heartbeat ID`, `tick-election ID`
//!   (ticks until it campaigns or steps down, at most 2 election timeouts).
//! - `propose ID DATA`, `conf-change ID add=X|remove=X|add-learner=X`,
//!   `read-index ID CTX`, `transfer-leader ID TO`, `report-unreachable ID TO`.
//! - `process-ready ID..` (one Ready each), `deliver-msgs [ID..] [drop=(..)] [type=MsgX] [from=ID]`
//!   (all in-flight messages to those nodes, or to everyone), `stabilize [ID..]`.
//! - `partition (..) (..)`, `isolate ID`, `heal`.
//! - `compact ID`, `restart ID`, `crash ID`, `recover ID`.
//! - `status ID`, `raft-log ID`, `applied ID`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cairn_proto::raftpb::{ConfChange, ConfChangeType, Entry, Message, MessageType, Snapshot};

use super::testkit::{Cluster, Delivery};
use super::{decode_conf_change, Config, ProgressState, Ready};

struct Command {
    /// Comment lines before the command, kept on rewrite.
    preamble: String,
    line: String,
    expected: String,
}

fn parse_file(text: &str) -> Vec<Command> {
    let mut out = Vec::new();
    let mut preamble = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with('#') {
            preamble.push_str(line);
            preamble.push('\n');
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut expected = String::new();
        if lines.peek() == Some(&"----") {
            lines.next();
            while let Some(l) = lines.peek() {
                if l.is_empty() {
                    break;
                }
                expected.push_str(l);
                expected.push('\n');
                lines.next();
            }
        }
        out.push(Command {
            preamble: std::mem::take(&mut preamble),
            line: line.to_owned(),
            expected,
        });
    }
    out
}

/// Splits `add-nodes 3 voters=(1,2,3) index=10` into words, keeping lists whole.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for ch in line.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if ch == ' ' && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(ch);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_list(s: &str) -> Vec<u64> {
    s.trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.trim().parse().unwrap_or_else(|_| panic!("bad id {x:?}")))
        .collect()
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("bad number {s:?}"))
}

// ---- rendering ----------------------------------------------------------------

fn render_list(ids: &[u64]) -> String {
    let v: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("({})", v.join(","))
}

fn render_entry(e: &Entry) -> String {
    let mut s = format!("{}/{}", e.term, e.index);
    if let Some(cc) = decode_conf_change(e) {
        let kind = match cc.change_type() {
            ConfChangeType::AddNode => "add",
            ConfChangeType::RemoveNode => "remove",
            ConfChangeType::AddLearnerNode => "add-learner",
        };
        write!(s, " {kind}={}", cc.node_id).expect("string write");
    } else if !e.data.is_empty() {
        write!(s, " {}", String::from_utf8_lossy(&e.data)).expect("string write");
    }
    s
}

fn render_entries(es: &[Entry]) -> String {
    let v: Vec<String> = es.iter().map(render_entry).collect();
    format!("[{}]", v.join(", "))
}

fn render_snapshot(s: &Snapshot) -> String {
    let m = s.metadata.clone().unwrap_or_default();
    let cs = m.conf_state.unwrap_or_default();
    let mut out = format!("{}/{} voters={}", m.term, m.index, render_list(&cs.voters));
    if !cs.learners.is_empty() {
        write!(out, " learners={}", render_list(&cs.learners)).expect("string write");
    }
    out
}

fn type_name(t: MessageType) -> String {
    // "MsgApp" from the prost variant name "MsgApp".
    format!("{t:?}")
}

pub(crate) fn render_message(m: &Message) -> String {
    let t = m.msg_type();
    let mut s = format!("{}->{} {} term={}", m.from, m.to, type_name(t), m.term);
    match t {
        MessageType::MsgVote | MessageType::MsgPreVote => {
            write!(s, " log={}/{}", m.log_term, m.index).expect("w");
            if !m.context.is_empty() {
                s.push_str(" transfer");
            }
        }
        MessageType::MsgApp => {
            write!(s, " log={}/{} commit={}", m.log_term, m.index, m.commit).expect("w");
            if !m.entries.is_empty() {
                write!(s, " entries={}", render_entries(&m.entries)).expect("w");
            }
        }
        MessageType::MsgAppResp => {
            write!(s, " index={}", m.index).expect("w");
            if m.reject {
                write!(s, " rejected hint={}/{}", m.reject_hint_term, m.reject_hint).expect("w");
            }
        }
        MessageType::MsgHeartbeat => write!(s, " commit={}", m.commit).expect("w"),
        MessageType::MsgSnap => {
            let snap = m.snapshot.clone().unwrap_or_default();
            write!(s, " snap={}", render_snapshot(&snap)).expect("w");
        }
        MessageType::MsgReadIndexResp => write!(s, " index={}", m.index).expect("w"),
        MessageType::MsgProp => write!(s, " entries={}", render_entries(&m.entries)).expect("w"),
        _ => {}
    }
    if matches!(t, MessageType::MsgVoteResp | MessageType::MsgPreVoteResp) && m.reject {
        s.push_str(" rejected");
    }
    if !m.context.is_empty() && !matches!(t, MessageType::MsgVote | MessageType::MsgPreVote) {
        write!(s, " ctx={}", String::from_utf8_lossy(&m.context)).expect("w");
    }
    s
}

fn render_ready(id: u64, rd: &Ready, out: &mut String) {
    writeln!(out, "> {id} handling Ready").expect("w");
    if let Some(ss) = &rd.soft_state {
        writeln!(out, "  role={:?} leader={}", ss.role, ss.leader_id).expect("w");
    }
    if let Some(hs) = &rd.hard_state {
        writeln!(
            out,
            "  hard-state term={} vote={} commit={}",
            hs.term, hs.vote, hs.commit
        )
        .expect("w");
    }
    if let Some(s) = &rd.snapshot {
        writeln!(out, "  snapshot {}", render_snapshot(s)).expect("w");
    }
    if !rd.entries.is_empty() {
        writeln!(out, "  entries {}", render_entries(&rd.entries)).expect("w");
    }
    if !rd.committed_entries.is_empty() {
        writeln!(out, "  committed {}", render_entries(&rd.committed_entries)).expect("w");
    }
    for m in rd.messages.iter().chain(&rd.persisted_messages) {
        writeln!(out, "  send {}", render_message(m)).expect("w");
    }
    for r in &rd.read_states {
        writeln!(
            out,
            "  read-state index={} ctx={}",
            r.index,
            String::from_utf8_lossy(&r.request_ctx)
        )
        .expect("w");
    }
    if rd.must_sync {
        writeln!(out, "  must-sync").expect("w");
    }
    if !rd.messages.is_empty() {
        // These went before the write (`Ready::messages`); the others after it.
        writeln!(out, "  send-first").expect("w");
    }
}

fn render_deliveries(to: u64, ds: &[Delivery], out: &mut String) {
    if ds.is_empty() {
        return;
    }
    writeln!(out, "> {to} receiving messages").expect("w");
    for d in ds {
        match d {
            Delivery::Stepped(m, None) => writeln!(out, "  {}", render_message(m)).expect("w"),
            Delivery::Stepped(m, Some(err)) => {
                writeln!(out, "  {} ({err})", render_message(m)).expect("w")
            }
            Delivery::Dropped(m) => writeln!(out, "  {} DROPPED", render_message(m)).expect("w"),
        }
    }
}

// ---- interpreter ------------------------------------------------------------

struct Interp {
    cluster: Option<Cluster>,
}

impl Interp {
    fn c(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("add-nodes first")
    }

    fn run(&mut self, line: &str) -> String {
        let w = words(line);
        let args: Vec<&str> = w.iter().skip(1).map(String::as_str).collect();
        let mut out = String::new();
        match w[0].as_str() {
            "add-nodes" => self.add_nodes(&args, &mut out),
            "campaign" => {
                let id = num(args[0]);
                self.c().node_mut(id).campaign();
                out.push_str("ok\n");
            }
            "tick" => {
                let id = num(args[0]);
                let n = args.get(1).map_or(1, |s| num(s));
                for _ in 0..n {
                    self.c().tick(id);
                }
                out.push_str("ok\n");
            }
            "tick-heartbeat" => {
                let id = num(args[0]);
                for _ in 0..self.c().config().heartbeat_tick {
                    self.c().tick(id);
                }
                out.push_str("ok\n");
            }
            "tick-election" => self.tick_election(num(args[0]), &mut out),
            "propose" => {
                let id = num(args[0]);
                let res = self.c().node_mut(id).propose(args[1].as_bytes().to_vec());
                ok_or_err(res, &mut out);
            }
            "conf-change" => self.conf_change(&args, &mut out),
            "read-index" => {
                let id = num(args[0]);
                let res = self
                    .c()
                    .node_mut(id)
                    .read_index(args[1].as_bytes().to_vec());
                ok_or_err(res, &mut out);
            }
            "transfer-leader" => {
                let (id, to) = (num(args[0]), num(args[1]));
                let res = self.c().node_mut(id).transfer_leader(to);
                ok_or_err(res, &mut out);
            }
            "report-unreachable" => {
                let (id, to) = (num(args[0]), num(args[1]));
                self.c().node_mut(id).report_unreachable(to);
                out.push_str("ok\n");
            }
            "process-ready" => {
                for a in &args {
                    let id = num(a);
                    match self.c().handle_ready(id) {
                        Some(rd) => render_ready(id, &rd, &mut out),
                        None => writeln!(out, "> {id} no Ready").expect("w"),
                    }
                }
            }
            "deliver-msgs" => self.deliver_msgs(&args, &mut out),
            "stabilize" => self.stabilize(&args, &mut out),
            "partition" => {
                let groups: Vec<Vec<u64>> = args.iter().map(|a| parse_list(a)).collect();
                self.c().partition(&groups);
                out.push_str("ok\n");
            }
            "isolate" => {
                let id = num(args[0]);
                self.c().isolate(id);
                out.push_str("ok\n");
            }
            "heal" => {
                self.c().heal();
                out.push_str("ok\n");
            }
            "compact" => {
                let id = num(args[0]);
                match self.c().compact(id) {
                    Some(s) => writeln!(out, "snapshot {}", render_snapshot(&s)).expect("w"),
                    None => out.push_str("nothing to compact\n"),
                }
            }
            "restart" => {
                let id = num(args[0]);
                self.c().restart(id);
                self.status(id, &mut out);
            }
            "crash" => {
                let id = num(args[0]);
                self.c().crash(id);
                out.push_str("ok\n");
            }
            "recover" => {
                let id = num(args[0]);
                self.c().recover(id);
                self.status(id, &mut out);
            }
            "status" => self.status(num(args[0]), &mut out),
            "raft-log" => {
                let id = num(args[0]);
                let n = self.c().node(id);
                let (si, st) = n.snapshot_index_term();
                writeln!(out, "snapshot {st}/{si}").expect("w");
                for e in n.raft().log.all_entries() {
                    writeln!(out, "{}", render_entry(e)).expect("w");
                }
            }
            "applied" => {
                let id = num(args[0]);
                let app = &self.c().nodes[&id].app;
                writeln!(
                    out,
                    "applied-index={} entries={}",
                    app.applied_index,
                    render_entries(&app.applied)
                )
                .expect("w");
            }
            other => panic!("unknown command {other:?}"),
        }
        self.c().check_invariants();
        if out.is_empty() {
            out.push_str("ok\n");
        }
        out
    }

    fn add_nodes(&mut self, args: &[&str], out: &mut String) {
        let n = num(args[0]);
        let mut cfg = Config {
            election_tick: 10,
            heartbeat_tick: 5,
            ..Config::new(1)
        };
        let (mut voters, mut learners, mut index, mut seed) = (Vec::new(), Vec::new(), 10, 1);
        for a in &args[1..] {
            let (k, v) = a
                .split_once('=')
                .unwrap_or_else(|| panic!("bad option {a:?}"));
            match k {
                "voters" => voters = parse_list(v),
                "learners" => learners = parse_list(v),
                "index" => index = num(v),
                "prevote" => cfg.pre_vote = v == "true",
                "checkquorum" => cfg.check_quorum = v == "true",
                "election" => cfg.election_tick = num(v) as usize,
                "heartbeat" => cfg.heartbeat_tick = num(v) as usize,
                "inflight" => cfg.max_inflight_msgs = num(v) as usize,
                "inflight-bytes" => cfg.max_inflight_bytes = num(v),
                "max-msg-bytes" => cfg.max_size_per_msg = num(v),
                "seed" => seed = num(v),
                _ => panic!("unknown option {k}"),
            }
        }
        let ids: Vec<u64> = (1..=n).collect();
        self.cluster = Some(Cluster::new(&ids, &voters, &learners, index, cfg, seed));
        out.push_str("ok\n");
    }

    fn tick_election(&mut self, id: u64, out: &mut String) {
        let before = self.c().node(id).soft_state();
        let limit = 2 * self.c().config().election_tick;
        for _ in 0..limit {
            self.c().tick(id);
            if self.c().node(id).soft_state() != before {
                break;
            }
        }
        let after = self.c().node(id).soft_state();
        writeln!(
            out,
            "role={:?} term={}",
            after.role,
            self.c().node(id).hard_state().term
        )
        .expect("w");
    }

    fn conf_change(&mut self, args: &[&str], out: &mut String) {
        let id = num(args[0]);
        let (k, v) = args[1].split_once('=').expect("kind=node");
        let change = match k {
            "add" => ConfChangeType::AddNode,
            "remove" => ConfChangeType::RemoveNode,
            "add-learner" => ConfChangeType::AddLearnerNode,
            _ => panic!("unknown conf change {k}"),
        };
        let mut cc = ConfChange {
            node_id: num(v),
            ..Default::default()
        };
        cc.set_change_type(change);
        let res = self.c().node_mut(id).propose_conf_change(cc);
        ok_or_err(res, out);
    }

    fn deliver_msgs(&mut self, args: &[&str], out: &mut String) {
        let mut targets: Vec<u64> = Vec::new();
        let mut drop = false;
        let mut only: Option<String> = None;
        let mut from: Option<u64> = None;
        for a in args {
            if let Some(v) = a.strip_prefix("drop=") {
                targets.extend(parse_list(v));
                drop = true;
            } else if let Some(v) = a.strip_prefix("from=") {
                from = Some(num(v));
            } else if let Some(v) = a.strip_prefix("type=") {
                only = Some(v.to_owned());
            } else {
                targets.push(num(a));
            }
        }
        if targets.is_empty() {
            targets = self.c().ids();
        }
        for to in targets {
            let c = self.c();
            let (mine, rest): (Vec<Message>, Vec<Message>) =
                std::mem::take(&mut c.network).into_iter().partition(|m| {
                    m.to == to
                        && only.as_ref().is_none_or(|t| type_name(m.msg_type()) == *t)
                        && from.is_none_or(|f| m.from == f)
                });
            c.network = rest;
            let ds: Vec<Delivery> = mine
                .into_iter()
                .map(|m| {
                    if drop {
                        Delivery::Dropped(c.drop_now(m))
                    } else {
                        c.deliver(m)
                    }
                })
                .collect();
            render_deliveries(to, &ds, out);
        }
    }

    fn stabilize(&mut self, args: &[&str], out: &mut String) {
        let ids: Vec<u64> = if args.is_empty() {
            self.c().ids()
        } else {
            args.iter().map(|a| num(a)).collect()
        };
        for _ in 0..1000 {
            let mut moved = false;
            for &id in &ids {
                if let Some(rd) = self.c().handle_ready(id) {
                    render_ready(id, &rd, out);
                    moved = true;
                }
            }
            for &id in &ids {
                let ds = self.c().deliver_to(id, false);
                moved |= !ds.is_empty();
                render_deliveries(id, &ds, out);
            }
            if !moved {
                return;
            }
        }
        panic!("stabilize did not converge");
    }

    fn status(&mut self, id: u64, out: &mut String) {
        let c = self.c();
        if !c.is_up(id) {
            writeln!(out, "{id} is down").expect("w");
            return;
        }
        let st = c.node(id).status();
        writeln!(
            out,
            "{id}: role={:?} term={} vote={} leader={} commit={} applied={} log={}..{}",
            st.soft_state.role,
            st.hard_state.term,
            st.hard_state.vote,
            st.soft_state.leader_id,
            st.hard_state.commit,
            st.applied,
            st.first_index,
            st.last_index
        )
        .expect("w");
        for (pid, p) in &st.progress {
            let state = match p.state {
                ProgressState::Probe => "probe",
                ProgressState::Replicate => "replicate",
                ProgressState::Snapshot => "snapshot",
            };
            let learner = if p.is_learner { " learner" } else { "" };
            write!(
                out,
                "  {pid}: {state} match={} next={}{learner}",
                p.matched, p.next
            )
            .expect("w");
            if p.inflights.count() > 0 {
                write!(out, " inflight={}", p.inflights.count()).expect("w");
            }
            if p.state == ProgressState::Snapshot {
                write!(out, " pending-snapshot={}", p.pending_snapshot).expect("w");
            }
            if p.probe_sent {
                write!(out, " paused").expect("w");
            }
            out.push('\n');
        }
    }
}

fn ok_or_err(res: Result<(), super::RaftError>, out: &mut String) {
    match res {
        Ok(()) => out.push_str("ok\n"),
        Err(e) => writeln!(out, "error: {e}").expect("w"),
    }
}

fn run_file(path: &Path) -> (String, String) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut interp = Interp { cluster: None };
    let mut actual = String::new();
    let mut expected = String::new();
    for cmd in parse_file(&text) {
        let out = interp.run(&cmd.line);
        for (buf, body) in [(&mut actual, &out), (&mut expected, &cmd.expected)] {
            buf.push_str(&cmd.preamble);
            buf.push_str(&cmd.line);
            buf.push_str("\n----\n");
            buf.push_str(body);
            buf.push('\n');
        }
    }
    (actual, expected)
}

fn testdata_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft/testdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                writeln!(
                    out,
                    "line {}:\n  - {}\n  + {}",
                    i + 1,
                    x.unwrap_or(&"<none>"),
                    y.unwrap_or(&"<none>")
                )
                .expect("w");
                break;
            }
        }
    }
    out
}

#[test]
fn golden_scripts() {
    let rewrite = std::env::var_os("REWRITE").is_some();
    let files = testdata_files();
    assert!(
        files.len() >= 25,
        "expected at least 25 golden scripts, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in files {
        let (actual, expected) = run_file(&path);
        if actual == expected {
            continue;
        }
        if rewrite {
            std::fs::write(&path, actual.trim_end().to_owned() + "\n")
                .expect("rewrite golden file");
        } else {
            failures.push(format!("{}:\n{}", path.display(), diff(&expected, &actual)));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (REWRITE=1 to update, then review):\n{}",
        failures.join("\n")
    );
}
