//! `/metrics` as operators use it (issue 23): etcd's metric families with
//! etcd's types and labels, counting what etcd counts, and the alerting
//! rules of `deploy/prometheus/` checked by promtool and fired by a real
//! Prometheus scraping a real 3-member cluster.
//!
//! etcd 3.4 (Debian's etcd-server) is the oracle: the families the alerting
//! rules and the dashboard query are checked on etcd too (so the list itself
//! is right), every family cairn exposes that etcd has must have etcd's type
//! and label names, and one etcdctl session must move cairn's counters as it
//! moves etcd's.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// One scrape: each family's type, and its samples (name, labels, value).
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line: name and type");
                s.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .expect("sample line: series and value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("value of {line:?}: {e}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => (name.to_owned(), parse_labels(rest.trim_end_matches('}'))),
            };
            s.samples.push((name, labels, value));
        }
        s
    }

    /// The family a sample belongs to (histograms' `_bucket`, `_sum`,
    /// `_count`; summaries' `_sum`, `_count`).
    fn family_of(&self, sample: &str) -> Option<String> {
        if self.types.contains_key(sample) {
            return Some(sample.to_owned());
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = sample.strip_suffix(suffix)?;
            matches!(
                self.types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
            .then(|| base.to_owned())
        })
    }

    /// Each family with samples: its type and the names of its labels (`le` aside).
    fn families(&self) -> BTreeMap<String, (String, BTreeSet<String>)> {
        self.families_and_buckets()
            .into_iter()
            .map(|(name, (kind, labels, _))| (name, (kind, labels)))
            .collect()
    }

    /// `families`, with each histogram's bucket bounds (`le` values).
    fn families_and_buckets(
        &self,
    ) -> BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)> {
        let mut out: BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)> =
            BTreeMap::new();
        for (name, labels, _) in &self.samples {
            let family = self
                .family_of(name)
                .unwrap_or_else(|| panic!("sample {name} has no # TYPE line"));
            let entry = out.entry(family.clone()).or_insert_with(|| {
                (
                    self.types[&family].clone(),
                    BTreeSet::new(),
                    BTreeSet::new(),
                )
            });
            entry
                .1
                .extend(labels.keys().filter(|k| *k != "le").cloned());
            entry.2.extend(labels.get("le").cloned());
        }
        out
    }

    /// The sum of the samples named `name` whose labels include `with`.
    fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, labels, _)| labels.get(label).cloned())
            .collect()
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label: key=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("label value ends with a quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}

fn scrape(endpoint: &str) -> Scrape {
    let (status, body) =
        http_get(endpoint, "/metrics").unwrap_or_else(|| panic!("GET /metrics from {endpoint}"));
    assert_eq!(status, 200, "GET /metrics from {endpoint}: {body}");
    Scrape::parse(&body)
}

/// The families etcd's alerting rules and its Grafana dashboard query, and
/// the others the issue names, with etcd's type and label names. Families
/// that exist only once something happened are checked after it did.
const REQUIRED: &[(&str, &str, &[&str])] = &[
    ("etcd_server_has_leader", "gauge", &[]),
    ("etcd_server_leader_changes_seen_total", "counter", &[]),
    ("etcd_server_proposals_committed_total", "gauge", &[]),
    ("etcd_server_proposals_applied_total", "gauge", &[]),
    ("etcd_server_proposals_pending", "gauge", &[]),
    ("etcd_server_proposals_failed_total", "counter", &[]),
    ("etcd_disk_wal_fsync_duration_seconds", "histogram", &[]),
    (
        "etcd_disk_backend_commit_duration_seconds",
        "histogram",
        &[],
    ),
    ("etcd_mvcc_db_total_size_in_bytes", "gauge", &[]),
    ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge", &[]),
    (
        "etcd_network_peer_round_trip_time_seconds",
        "histogram",
        &["To"],
    ),
    ("etcd_network_peer_sent_bytes_total", "counter", &["To"]),
    (
        "etcd_network_peer_received_bytes_total",
        "counter",
        &["From"],
    ),
    (
        "etcd_network_client_grpc_received_bytes_total",
        "counter",
        &[],
    ),
    ("etcd_network_client_grpc_sent_bytes_total", "counter", &[]),
    ("etcd_server_quota_backend_bytes", "gauge", &[]),
    ("etcd_mvcc_put_total", "counter", &[]),
    ("etcd_mvcc_delete_total", "counter", &[]),
    ("etcd_mvcc_range_total", "counter", &[]),
    ("etcd_mvcc_txn_total", "counter", &[]),
    ("etcd_debugging_mvcc_keys_total", "gauge", &[]),
    ("etcd_server_id", "gauge", &["server_id"]),
    ("etcd_server_version", "gauge", &["server_version"]),
    (
        "grpc_server_started_total",
        "counter",
        &["grpc_method", "grpc_service", "grpc_type"],
    ),
    (
        "grpc_server_handled_total",
        "counter",
        &["grpc_code", "grpc_method", "grpc_service", "grpc_type"],
    ),
    (
        "grpc_server_handling_seconds",
        "histogram",
        &["grpc_method", "grpc_service", "grpc_type"],
    ),
    ("process_resident_memory_bytes", "gauge", &[]),
    ("process_cpu_seconds_total", "counter", &[]),
    ("process_open_fds", "gauge", &[]),
];

/// Families cairn may expose that etcd 3.4 did not show in the same scrape,
/// and why.
const NOT_IN_ETCD_SCRAPE: &[(&str, &str)] = &[
    (
        "etcd_network_peer_received_failures_total",
        "etcd shows it only once a peer's message was refused",
    ),
    (
        "etcd_network_peer_sent_failures_total",
        "shown only after a failed send (checked after a kill below)",
    ),
];

fn check_required(server: &str, families: &BTreeMap<String, (String, BTreeSet<String>)>) {
    for (name, kind, labels) in REQUIRED {
        let (got_kind, got_labels) = families
            .get(*name)
            .unwrap_or_else(|| panic!("{server} does not expose {name}"));
        assert_eq!(got_kind, kind, "{server}: type of {name}");
        let want: BTreeSet<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        assert_eq!(got_labels, &want, "{server}: label names of {name}");
    }
}

/// The index in `members` of the one whose metrics say it leads (waits up to
/// 10 s for one to).
fn leader_of(members: &[Proc]) -> usize {
    poll_until(Duration::from_secs(10), "a leader", || {
        members
            .iter()
            .position(|m| scrape(&m.endpoint()).sum("etcd_server_is_leader", &[]) == 1.0)
            .ok_or_else(|| "no member says it leads".to_owned())
    })
}

/// Starts a 3-member cluster of `server` with `flags` on every member.
fn start_cluster(server: Server, dir: &Path, flags: &[&str]) -> Vec<Proc> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let members: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| {
            let name = format!("m{i}");
            let mut f = founding_flags(&name, &format!("http://127.0.0.1:{p}"), &initial);
            f.extend(flags.iter().map(|s| (*s).to_owned()));
            spawn_member(server, &name, dir, *c, *p, &f, &[])
        })
        .collect();
    for m in &members {
        wait_healthy(m);
    }
    members
}

fn hex_id_of(endpoints: &str, peer_url: &str) -> String {
    member_id_by_peer(endpoints, peer_url).expect("member id by peer URL")
}

/// Every family the alerting rules and dashboard need is there with etcd's
/// type and labels, on etcd 3.4 and on cairn; every family cairn exposes
/// that etcd exposes has etcd's type, label names and (histograms) bucket
/// bounds, which quantiles in the rules depend on; a killed member shows
/// up as send failures to it, labelled with its id, on both.
#[test]
fn families_have_etcds_names_types_and_labels_on_a_three_member_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut scrapes = Vec::new();
    for server in [Server::Etcd, Server::Cairn] {
        let sub = dir.path().join(server.label());
        std::fs::create_dir_all(&sub).expect("dir");
        let mut members = start_cluster(server, &sub, &["--metrics=extensive"]);
        let ep = members[0].endpoint();
        ctl_ok(&ep, &["put", "k", "v"]);
        ctl_ok(&ep, &["get", "k"]);
        ctl_ok(&ep, &["del", "k"]);
        // Peer round trips are measured (etcd probes every few seconds).
        let s = poll_until(Duration::from_secs(20), "peer round trips measured", || {
            let s = scrape(&ep);
            match s
                .types
                .contains_key("etcd_network_peer_round_trip_time_seconds")
            {
                true => Ok(s),
                false => Err("no etcd_network_peer_round_trip_time_seconds yet".to_owned()),
            }
        });
        let families = s.families_and_buckets();
        check_required(server.label(), &s.families());
        // A killed follower: the leader's sends to it fail, labelled with
        // its id (followers send nothing to each other).
        let leader = leader_of(&members);
        let victim = (leader + 1) % members.len();
        let leader_ep = members[leader].endpoint();
        let dead_id = hex_id_of(&leader_ep, &members[victim].peer_url);
        members[victim].kill9();
        let failed = poll_until(
            Duration::from_secs(30),
            "sends to a dead member fail",
            || {
                let s = scrape(&leader_ep);
                let to = s.label_values("etcd_network_peer_sent_failures_total", "To");
                match to.contains(&dead_id) {
                    true => Ok(s),
                    false => Err(format!(
                        "{}: sent failures to {to:?}, not {dead_id}",
                        server.label()
                    )),
                }
            },
        );
        let f = failed.families();
        assert_eq!(
            f.get("etcd_network_peer_sent_failures_total"),
            Some(&("counter".to_owned(), BTreeSet::from(["To".to_owned()]))),
            "{}",
            server.label()
        );
        scrapes.push(families);
    }
    let (etcd, cairn) = (&scrapes[0], &scrapes[1]);
    for (name, (kind, labels, buckets)) in cairn {
        match etcd.get(name) {
            Some((etcd_kind, etcd_labels, etcd_buckets)) => {
                assert_eq!(kind, etcd_kind, "type of {name}: cairn vs etcd");
                assert_eq!(labels, etcd_labels, "label names of {name}: cairn vs etcd");
                assert_eq!(
                    buckets, etcd_buckets,
                    "bucket bounds of {name}: cairn vs etcd"
                );
            }
            None => assert!(
                NOT_IN_ETCD_SCRAPE.iter().any(|(n, _)| n == name),
                "cairn exposes {name}, which etcd 3.4 does not: not an etcd family?"
            ),
        }
    }
}

/// The counters a session moves, by how much.
fn deltas(before: &Scrape, after: &Scrape) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let plain = [
        "etcd_mvcc_put_total",
        "etcd_mvcc_delete_total",
        "etcd_mvcc_range_total",
        "etcd_mvcc_txn_total",
        "etcd_network_client_grpc_received_bytes_total",
    ];
    for name in plain {
        out.insert(
            name.to_owned(),
            after.sum(name, &[]) - before.sum(name, &[]),
        );
    }
    out.insert(
        "etcd_debugging_mvcc_keys_total".to_owned(),
        after.sum("etcd_debugging_mvcc_keys_total", &[]),
    );
    for method in [
        "Range",
        "Put",
        "DeleteRange",
        "Txn",
        "Compact",
        "LeaseGrant",
    ] {
        let m = [("grpc_method", method)];
        for name in [
            "grpc_server_started_total",
            "grpc_server_msg_received_total",
            "grpc_server_msg_sent_total",
        ] {
            out.insert(
                format!("{name}{{{method}}}"),
                after.sum(name, &m) - before.sum(name, &m),
            );
        }
        for code in after.label_values("grpc_server_handled_total", "grpc_code") {
            let m = [("grpc_method", method), ("grpc_code", code.as_str())];
            let d = after.sum("grpc_server_handled_total", &m)
                - before.sum("grpc_server_handled_total", &m);
            if d != 0.0 {
                out.insert(format!("grpc_server_handled_total{{{method},{code}}}"), d);
            }
        }
    }
    out
}

/// One etcdctl session — puts, gets, deletes, txns (both branches, nested
/// reads), failing requests — moves cairn's MVCC and gRPC counters exactly
/// as it moves etcd 3.4's.
#[test]
fn a_session_moves_the_counters_as_it_moves_etcds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut results = Vec::new();
    for server in [Server::Etcd, Server::Cairn] {
        let sub = dir.path().join(server.label());
        std::fs::create_dir_all(&sub).expect("dir");
        let (c, p) = (free_port(), free_port());
        let peer = format!("http://127.0.0.1:{p}");
        let flags = founding_flags("m0", &peer, &format!("m0={peer}"));
        let m = spawn_member(server, "m0", &sub, c, p, &flags, &[]);
        wait_healthy(&m);
        let ep = m.endpoint();
        let before = scrape(&ep);
        ctl_ok(&ep, &["put", "a", "1"]);
        ctl_ok(&ep, &["put", "b", "2"]);
        ctl_ok(&ep, &["put", "c", "3"]);
        ctl_ok(&ep, &["get", "a"]);
        ctl_ok(&ep, &["get", "", "--prefix", "--consistency=s"]);
        ctl_ok(&ep, &["del", "c"]);
        ctl_ok(&ep, &["del", "nothing-here"]);
        let txn = "value(\"a\") = \"1\"\n\nput d 4\nget b\n\nget a\n\n";
        let out = etcdctl(&ep, &["txn"], Some(txn));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let txn = "value(\"a\") = \"nope\"\n\nput e 5\n\nget a\nget b\n\n";
        let out = etcdctl(&ep, &["txn"], Some(txn));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A future revision: OutOfRange. A lease that does not exist: NotFound.
        let out = etcdctl(&ep, &["get", "a", "--rev=100000"], None);
        assert!(!out.status.success());
        let out = etcdctl(&ep, &["put", "x", "y", "--lease=1234abcd"], None);
        assert!(!out.status.success());
        let after = scrape(&ep);
        results.push(deltas(&before, &after));
    }
    let (etcd, cairn) = (&results[0], &results[1]);
    // The session did move them.
    assert_eq!(etcd.get("etcd_mvcc_put_total"), Some(&4.0), "{etcd:#?}");
    assert_eq!(
        cairn, etcd,
        "counter deltas: cairn (left) vs etcd 3.4 (right)"
    );
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool (Debian package prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn deploy_prometheus() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus")
}

/// The alerting rules are valid, and their unit tests (made-up series and
/// the alerts that must fire on them) pass; so does the example config.
#[test]
fn promtool_checks_and_unit_tests_the_alerting_rules() {
    let dir = deploy_prometheus();
    let checked = promtool(&["check", "rules", "cairn-alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS: 15 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "cairn-alerts.test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
    promtool(&["check", "config", "prometheus.yml"], &dir);
}

/// A real Prometheus scraping a real 3-member cluster: with every member
/// up nothing fires; killing a follower fires etcdMembersDown; killing a second
/// leaves the last without a leader and fires etcdNoLeader. The rules are
/// deploy/prometheus's with their `for:` durations cut to 0 s and the job
/// scraped every second, so the test takes seconds rather than minutes.
#[test]
fn prometheus_fires_members_down_and_no_leader_on_a_live_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = start_cluster(Server::Cairn, dir.path(), &[]);
    let rules = std::fs::read_to_string(deploy_prometheus().join("cairn-alerts.yml"))
        .expect("read the rules");
    let quick: String = rules
        .lines()
        .map(|l| match l.trim_start().starts_with("for: ") {
            true => format!("{}for: 0s", &l[..l.len() - l.trim_start().len()]),
            false => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(quick, rules, "the rules have `for:` durations to cut");
    std::fs::write(dir.path().join("rules.yml"), quick).expect("write rules");
    let targets = members
        .iter()
        .map(|m| format!("'{}'", m.endpoint()))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - rules.yml\n\
         scrape_configs:\n  - job_name: cairn\n    static_configs:\n      - targets: [{targets}]\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
    let port = free_port();
    let web = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let mut prometheus = Command::new("prometheus")
        .args([
            "--config.file=prometheus.yml".to_owned(),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            format!("--web.listen-address={web}"),
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus (Debian package prometheus)");
    let _stop = KillOnDrop(&mut prometheus);
    let query = |q: &str| -> String {
        http_get(&web, &format!("/api/v1/query?query={q}"))
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let firing = || -> BTreeSet<String> {
        let body = http_get(&web, "/api/v1/alerts")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect()
    };
    // All three scraped and up, each with a leader.
    poll_until(
        Duration::from_secs(30),
        "three members scraped and up",
        || {
            let body = query("sum(up)");
            let leaders = query("sum(etcd_server_has_leader)");
            match (body.contains("\"3\""), leaders.contains("\"3\"")) {
                (true, true) => Ok(()),
                _ => Err(format!("up: {body}; has_leader: {leaders}")),
            }
        },
    );
    // Rules evaluate every second: give them a few rounds on healthy data.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        let now = firing();
        assert!(
            !now.contains("etcdMembersDown") && !now.contains("etcdNoLeader"),
            "alerts on a healthy cluster: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A follower first: killing the leader would leave the other two without
    // one for an election, and with `for: 0s` etcdNoLeader may fire then.
    let leader = leader_of(&members);
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    members[follower].kill9();
    poll_until(Duration::from_secs(30), "etcdMembersDown fires", || {
        let now = firing();
        match now.contains("etcdMembersDown") {
            true => Ok(()),
            false => Err(format!("firing: {now:?}")),
        }
    });
    assert!(
        !firing().contains("etcdNoLeader"),
        "two of three keep a leader"
    );
    members[other].kill9();
    poll_until(Duration::from_secs(30), "etcdNoLeader fires", || {
        let now = firing();
        match now.contains("etcdNoLeader") && now.contains("etcdInsufficientMembers") {
            true => Ok(()),
            false => Err(format!("firing: {now:?}")),
        }
    });
}

/// Kills the process when the test ends, however it ends.
struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
