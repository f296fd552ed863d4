//! cairnctl: cairn's etcdctl (DESIGN §1). etcdctl 3.4's commands, flags,
//! `ETCDCTL_*` variables, output in every `-w` format, error lines and exit
//! codes, against cairn or etcd. `src/bin/cairnctl.rs` only calls [`main`].
//!
//! - [`flags`]: the command line as cobra/pflag read it;
//! - [`client`]: the connection (endpoints in turn, login, token, errors);
//! - [`output`]: Go's quoting and JSON, tables, durations;
//! - [`kv`]: get, put, del, txn, compaction;
//! - [`auth`]: auth enable/disable, user and role commands;
//! - [`watch`]: watch, interactive or running a command per event;
//! - [`mirror`]: make-mirror;
//! - [`check`]: check perf and check datascale;
//! - [`lock`]: lock and elect (clientv3's concurrency recipes);
//! - [`lease`]: lease grant, revoke, timetolive, list, keep-alive;
//! - [`cluster`]: member, endpoint, alarm, move-leader, version;
//! - [`snapshot`]: snapshot save, status, restore and defrag, with a
//!   progress line on a terminal (`crate::backup::progress`).
//!
//! Errors print `Error: <message>` on stderr with etcdctl's exit codes:
//! 1 error, 2 bad connection (a refused login), 3 invalid input (txn),
//! 4 a format a command does not print in, 128 bad arguments.

pub mod auth;
pub mod check;
pub mod client;
pub mod cluster;
pub mod flags;
pub mod help;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod mirror;
pub mod output;
pub mod snapshot;
pub mod watch;

use std::io::Write;

use client::Global;
use flags::{switch, value, Flags, Spec, GLOBAL};

pub const EXIT_ERROR: u8 = 1;
pub const EXIT_BAD_CONNECTION: u8 = 2;
pub const EXIT_INVALID_INPUT: u8 = 3;
pub const EXIT_BAD_FEATURE: u8 = 4;
pub const EXIT_BAD_ARGS: u8 = 128;

/// An exit status and the message printed as `Error: <message>` (none when
/// empty: the command has already said what failed).
#[derive(Debug)]
pub struct Failure(pub u8, pub String);

/// Writes `bytes` to stdout as they are.
pub fn out(bytes: &[u8]) -> Result<(), Failure> {
    let mut o = std::io::stdout().lock();
    o.write_all(bytes)
        .and_then(|_| o.flush())
        .map_err(|e| Failure(EXIT_ERROR, format!("write stdout: {e}")))
}

/// The commands, by their words, with their own flags.
pub const COMMANDS: &[(&[&str], &[Spec])] = &[
    (&["get"], kv::GET_FLAGS),
    (&["put"], kv::PUT_FLAGS),
    (&["del"], kv::DEL_FLAGS),
    (&["txn"], kv::TXN_FLAGS),
    (&["compaction"], kv::COMPACTION_FLAGS),
    (&["watch"], watch::WATCH_FLAGS),
    (&["lock"], lock::LOCK_FLAGS),
    (&["elect"], lock::ELECT_FLAGS),
    (&["lease", "grant"], &[]),
    (&["lease", "revoke"], &[]),
    (&["lease", "timetolive"], &[switch("keys")]),
    (&["lease", "list"], &[]),
    (&["lease", "keep-alive"], &[switch("once")]),
    (&["member", "add"], &[value("peer-urls"), switch("learner")]),
    (&["member", "remove"], &[]),
    (&["member", "update"], &[value("peer-urls")]),
    (&["member", "list"], &[]),
    (&["member", "promote"], &[]),
    (&["endpoint", "health"], &[switch("cluster")]),
    (&["endpoint", "status"], &[switch("cluster")]),
    (&["endpoint", "hashkv"], &[switch("cluster"), value("rev")]),
    (&["alarm", "disarm"], &[]),
    (&["alarm", "list"], &[]),
    (&["move-leader"], &[]),
    (&["version"], &[]),
    (&["defrag"], &[switch("cluster"), value("data-dir")]),
    (&["make-mirror"], mirror::MIRROR_FLAGS),
    (&["check", "perf"], check::PERF_FLAGS),
    (&["check", "datascale"], check::DATASCALE_FLAGS),
    (&["snapshot", "save"], &[]),
    (&["snapshot", "status"], &[]),
    (
        &["snapshot", "restore"],
        &[
            value("name"),
            value("data-dir"),
            value("wal-dir"),
            value("initial-cluster"),
            value("initial-cluster-token"),
            value("initial-advertise-peer-urls"),
            switch("skip-hash-check"),
        ],
    ),
    (&["auth", "enable"], &[]),
    (&["auth", "disable"], &[]),
    (&["user", "add"], auth::USER_ADD_FLAGS),
    (&["user", "delete"], &[]),
    (&["user", "get"], auth::USER_GET_FLAGS),
    (&["user", "list"], &[]),
    (&["user", "passwd"], auth::USER_PASSWD_FLAGS),
    (&["user", "grant-role"], &[]),
    (&["user", "revoke-role"], &[]),
    (&["role", "add"], &[]),
    (&["role", "delete"], &[]),
    (&["role", "get"], &[]),
    (&["role", "list"], &[]),
    (&["role", "grant-permission"], auth::ROLE_PERM_FLAGS),
    (&["role", "revoke-permission"], auth::ROLE_PERM_FLAGS),
];

/// Every command's flags at once, to find the command's words.
fn all_specs() -> Vec<&'static [Spec]> {
    let mut v: Vec<&'static [Spec]> = vec![GLOBAL];
    v.extend(COMMANDS.iter().map(|(_, s)| *s));
    v
}

/// What the words of a command line name.
enum Found {
    /// `COMMANDS[i]`, named by the first `used` words.
    Command(usize, usize),
    /// A group (`member`, `user`, …) without a subcommand it has.
    Group(&'static str),
}

/// Finds the command `words` start with (cobra's prefix matching: a unique
/// prefix of a command's word names it).
fn lookup(words: &[String]) -> Result<Found, Failure> {
    let Some(first) = words.first() else {
        return Err(Failure(EXIT_ERROR, String::new()));
    };
    let match_word = |candidates: Vec<&'static str>, w: &str| -> Option<&'static str> {
        if let Some(exact) = candidates.iter().find(|c| **c == w) {
            return Some(exact);
        }
        let hits: Vec<&&str> = candidates.iter().filter(|c| c.starts_with(w)).collect();
        match hits.as_slice() {
            [one] => Some(**one),
            _ => None,
        }
    };
    let mut tops: Vec<&'static str> = COMMANDS.iter().map(|(w, _)| w[0]).collect();
    tops.dedup();
    let top = match_word(tops, first).ok_or_else(|| {
        Failure(
            EXIT_ERROR,
            format!("unknown command {first:?} for \"{PROGRAM}\""),
        )
    })?;
    let group: Vec<usize> = (0..COMMANDS.len())
        .filter(|&i| COMMANDS[i].0[0] == top)
        .collect();
    if let [only] = group.as_slice() {
        if COMMANDS[*only].0.len() == 1 {
            return Ok(Found::Command(*only, 1));
        }
    }
    let sub = words
        .get(1)
        .and_then(|w| match_word(group.iter().map(|&i| COMMANDS[i].0[1]).collect(), w));
    // cobra: a group given no (or an unknown) subcommand prints its help.
    Ok(
        match sub.and_then(|s| group.iter().find(|&&i| COMMANDS[i].0[1] == s)) {
            Some(&i) => Found::Command(i, 2),
            None => Found::Group(top),
        },
    )
}

/// A group's subcommands, as cairnctl has them.
fn group_usage(top: &str) -> String {
    let subs: Vec<&str> = COMMANDS
        .iter()
        .filter(|(w, _)| w.len() == 2 && w[0] == top)
        .map(|(w, _)| w[1])
        .collect();
    help::group_usage(top, &subs, PROGRAM).unwrap_or_default()
}

/// Every command's words, for the top-level help.
fn top_usage(with_help: bool) -> String {
    let paths: Vec<String> = COMMANDS.iter().map(|(w, _)| w.join(" ")).collect();
    help::top_usage(&paths, PROGRAM, env!("CARGO_PKG_VERSION"), with_help)
}

/// `cairnctl help [command…]`: that command's (or group's) help; for no
/// command every command's; for one it does not know, cobra's complaint and
/// every command's.
fn help_command(topic: &[String]) -> Result<(), Failure> {
    if topic.is_empty() {
        return out(top_usage(true).as_bytes());
    }
    match lookup(topic) {
        Ok(Found::Command(i, _)) => out(help::usage(&COMMANDS[i].0.join(" "), PROGRAM)
            .unwrap_or_default()
            .as_bytes()),
        Ok(Found::Group(top)) => out(group_usage(top).as_bytes()),
        Err(_) => {
            let quoted: Vec<String> = topic.iter().map(|t| format!("`{t}`")).collect();
            eprintln!("Unknown help topic [{}]", quoted.join(" "));
            out(top_usage(false).as_bytes())
        }
    }
}

/// Runs cairnctl with `args` (without the program name); the exit status.
pub fn main(args: Vec<String>) -> u8 {
    match run(args) {
        Ok(()) => 0,
        Err(Failure(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("Error: {msg}");
            }
            code
        }
    }
}

/// The name this program prints in its usage and errors.
pub const PROGRAM: &str = "cairnctl";

/// `-h`, `--help`: every command has it.
const HELP: &[Spec] = &[flags::short(switch("help"), 'h')];

/// The flags of a command line; on a bad one cobra's answer: the error,
/// the usage (on stdout), an empty line — then etcdctl's own `Error:` line
/// (`main`'s).
fn parse_with_usage(args: &[String], specs: &[&[Spec]], usage: &str) -> Result<Flags, Failure> {
    flags::parse(args, specs).map_err(|Failure(code, msg)| {
        eprintln!("Error: {msg}");
        let _ = out(usage.as_bytes());
        eprintln!();
        Failure(code, msg)
    })
}

fn run(args: Vec<String>) -> Result<(), Failure> {
    let words = flags::words_only(&args, &all_specs());
    if words.is_empty() {
        // No command: cobra's root prints every command (after checking
        // the flags).
        return parse_with_usage(&args, &[GLOBAL, HELP], &top_usage(true))
            .and_then(|_| out(top_usage(true).as_bytes()));
    }
    if words[0] == "help" {
        return help_command(&words[1..]);
    }
    let (i, used) = match lookup(&words) {
        Ok(Found::Command(i, used)) => (i, used),
        Ok(Found::Group(top)) => {
            let usage = group_usage(top);
            return parse_with_usage(&args, &[GLOBAL, HELP], &usage)
                .and_then(|_| out(usage.as_bytes()));
        }
        Err(Failure(code, msg)) if !msg.is_empty() => {
            // cobra says it, then etcdctl says it again.
            eprintln!("Error: {msg}\nRun '{PROGRAM} --help' for usage.");
            return Err(Failure(code, msg));
        }
        Err(e) => return Err(e),
    };
    let (path, specs) = COMMANDS[i];
    let usage = help::usage(&path.join(" "), PROGRAM).unwrap_or_default();
    let f = parse_with_usage(&args, &[GLOBAL, specs, HELP], &usage)?;
    if f.bool("help").unwrap_or(false) {
        return out(usage.as_bytes());
    }
    // The command's own words are the first `used` positional ones.
    let rest: Vec<String> = f.words.iter().skip(used).cloned().collect();
    let own_endpoints =
        matches!(path, ["endpoint", _] | ["defrag"]) && !f.bool("cluster").unwrap_or(false);
    let g = Global::from_flags_discovering(&f, !own_endpoints)?;
    match path {
        ["get"] => kv::get(g, &f, &rest),
        ["put"] => kv::put(g, &f, &rest),
        ["del"] => kv::del(g, &f, &rest),
        ["txn"] => kv::txn(g, &f, &rest),
        ["compaction"] => kv::compaction(g, &f, &rest),
        ["watch"] => watch::run(g, &f, &args, &rest),
        ["lock"] => lock::lock(g, &f, &rest),
        ["elect"] => lock::elect(g, &f, &rest),
        ["auth", sub] => auth::auth(sub, g, &f, &rest),
        ["user", sub] => auth::user(sub, g, &f, &rest),
        ["role", sub] => auth::role(sub, g, &f, &rest),
        ["lease", sub] => lease::run(sub, g, &f, &rest),
        ["member", sub] => cluster::member(sub, g, &f, &rest),
        ["endpoint", sub] => cluster::endpoint(sub, g, &f, &rest),
        ["alarm", sub] => cluster::alarm(sub, g, &f, &rest),
        ["move-leader"] => cluster::move_leader(g, &f, &rest),
        ["version"] => cluster::version(),
        ["defrag"] => snapshot::defrag_command(g, &f, &rest),
        ["snapshot", sub] => snapshot::run(sub, g, &f, &rest),
        ["make-mirror"] => mirror::run(g, &f, &rest),
        ["check", sub] => check::run(sub, g, &f, &rest),
        _ => Err(Failure(
            EXIT_ERROR,
            format!("unknown command {:?}", path.join(" ")),
        )),
    }
}
