//! Tests of `cairn::config`: defaults, every flag form, environment and
//! config-file precedence, every validation error with its exact message, and
//! the ids. Run with `cargo test --workspace --lib config`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn_runtime::NodeId;

use super::spec::{self, FLAGS};
use super::values::{parse_go_duration, LogLevel};
use super::*;

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(list: &[&str]) -> Result<Config, ConfigError> {
    parse_args(owned(list), &no_env)
}

fn parse_with_env(list: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_args(owned(list), &move |key: &str| env.get(key).cloned())
}

fn ok(list: &[&str]) -> Config {
    parse(list).unwrap_or_else(|e| panic!("{list:?} should parse: {e}"))
}

fn err(list: &[&str]) -> String {
    match parse(list) {
        Ok(config) => panic!("{list:?} should fail, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn url(text: &str) -> Url {
    Url::parse(text).unwrap_or_else(|e| panic!("{text} should parse: {e}"))
}

fn yaml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file can be created");
    file.write_all(text.as_bytes())
        .expect("temp file can be written");
    file
}

fn path_of(file: &tempfile::NamedTempFile) -> String {
    file.path()
        .to_str()
        .expect("temp paths are UTF-8")
        .to_string()
}

const THREE: &str =
    "infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra2=http://10.0.1.12:2380";

// ---- defaults ----

#[test]
fn defaults_match_etcd_with_cairn_data_dir() {
    let c = ok(&[]);
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir, PathBuf::from("default.cairn"));
    assert_eq!(c.listen_client_urls, vec![url("http://localhost:2379")]);
    assert_eq!(c.advertise_client_urls, vec![url("http://localhost:2379")]);
    assert_eq!(c.listen_peer_urls, vec![url("http://localhost:2380")]);
    assert_eq!(
        c.initial_advertise_peer_urls,
        vec![url("http://localhost:2380")]
    );
    let expected = BTreeMap::from([("default".to_string(), vec![url("http://localhost:2380")])]);
    assert_eq!(c.initial_cluster, expected);
    assert_eq!(c.initial_cluster_state, ClusterState::New);
    assert!(c.is_new_cluster());
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
    assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(c.election_timeout, Duration::from_millis(1000));
    assert_eq!(c.snapshot_count, 100_000);
    assert_eq!(c.max_txn_ops, 128);
    assert_eq!(c.max_request_bytes, 1_572_864);
    assert_eq!(c.quota_backend_bytes, 2 * 1024 * 1024 * 1024);
    assert_eq!(c.auto_compaction, AutoCompaction::Disabled);
    assert_eq!(c.log_level, LogLevel::Info);
    assert!(!c.enable_pprof);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(600));
    assert_eq!(c.config_file, None);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn defaults_listen_on_loopback_2379_and_2380() {
    let c = ok(&[]);
    assert_eq!(
        c.listen_client_addrs(),
        vec!["127.0.0.1:2379".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(
        c.listen_peer_addrs(),
        vec!["127.0.0.1:2380".parse::<SocketAddr>().expect("addr")]
    );
}

#[test]
fn name_derives_data_dir_and_initial_cluster() {
    let c = ok(&["--name", "infra0"]);
    assert_eq!(c.data_dir, PathBuf::from("infra0.cairn"));
    assert_eq!(
        c.initial_cluster.get("infra0"),
        Some(&vec![url("http://localhost:2380")])
    );
    assert_eq!(c.initial_cluster.len(), 1);
}

#[test]
fn initial_cluster_defaults_to_advertised_peer_urls() {
    let c = ok(&[
        "--name",
        "n1",
        "--initial-advertise-peer-urls",
        "http://10.0.0.2:2380,http://10.0.0.1:2380",
    ]);
    assert_eq!(
        c.initial_cluster.get("n1"),
        Some(&vec![
            url("http://10.0.0.1:2380"),
            url("http://10.0.0.2:2380")
        ])
    );
}

#[test]
fn name_with_separators_does_not_break_the_default_cluster() {
    let c = ok(&["--name", "a,b=c"]);
    assert!(c.initial_cluster.contains_key("a,b=c"));
}

#[test]
fn explicit_data_dir_wins_and_empty_means_default() {
    assert_eq!(
        ok(&["--data-dir", "/var/lib/cairn"]).data_dir,
        PathBuf::from("/var/lib/cairn")
    );
    assert_eq!(
        ok(&["--data-dir="]).data_dir,
        PathBuf::from("default.cairn")
    );
}

// ---- flag forms ----

#[test]
fn flag_forms_all_set_the_value() {
    for form in [
        &["--name=a"][..],
        &["--name", "a"],
        &["-name", "a"],
        &["-name=a"],
    ] {
        assert_eq!(ok(form).name, "a", "{form:?}");
    }
}

#[test]
fn flag_forms_work_for_numbers() {
    for form in [
        &["--heartbeat-interval=50", "--election-timeout=500"][..],
        &["--heartbeat-interval", "50", "--election-timeout", "500"],
        &["-heartbeat-interval", "50", "-election-timeout=500"],
    ] {
        let c = ok(form);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(50), "{form:?}");
        assert_eq!(c.election_timeout, Duration::from_millis(500), "{form:?}");
    }
}

#[test]
fn flag_value_is_the_next_argument_even_with_a_dash() {
    // Go's flag package takes the next argument as the value, whatever it is.
    assert_eq!(
        ok(&["--initial-cluster-token", "-x"]).initial_cluster_token,
        "-x"
    );
}

#[test]
fn flag_value_may_contain_equals() {
    let c = ok(&["--initial-cluster=default=http://localhost:2380"]);
    assert!(c.initial_cluster.contains_key("default"));
}

#[test]
fn flag_forms_for_booleans() {
    assert!(ok(&[]).pre_vote, "etcd 3.5's default");
    assert!(!ok(&["--pre-vote=false"]).pre_vote);
    assert!(ok(&["--pre-vote"]).pre_vote);
    assert!(ok(&["--enable-pprof"]).enable_pprof);
    assert!(ok(&["-enable-pprof"]).enable_pprof);
    assert!(ok(&["--enable-pprof=true"]).enable_pprof);
    assert!(ok(&["-enable-pprof=1"]).enable_pprof);
    assert!(ok(&["--enable-pprof=T"]).enable_pprof);
    assert!(!ok(&["--enable-pprof=false"]).enable_pprof);
    assert!(!ok(&["--enable-pprof=0"]).enable_pprof);
    assert!(!ok(&["--enable-pprof=FALSE"]).enable_pprof);
    // A bare boolean does not consume the next argument (Go's rule).
    assert_eq!(
        err(&["--enable-pprof", "false"]),
        "cairn: \"false\" is not a valid flag"
    );
    assert_eq!(
        err(&["--enable-pprof=maybe"]),
        "cairn: invalid value \"maybe\" for flag --enable-pprof: expected true or false"
    );
}

#[test]
fn enable_pprof_is_a_documented_no_op() {
    let c = ok(&["--enable-pprof"]);
    assert_eq!(
        c.warnings,
        vec!["--enable-pprof is accepted for compatibility; cairn serves no Go profiles"]
    );
}

#[test]
fn repeated_flag_keeps_the_last_value() {
    assert_eq!(ok(&["--name", "a", "--name=b"]).name, "b");
}

#[test]
fn unknown_flag_is_an_error() {
    assert_eq!(err(&["--foo"]), "cairn: unknown flag: --foo");
    assert_eq!(err(&["-foo=1"]), "cairn: unknown flag: -foo");
    assert_eq!(
        err(&["--experimental-enable-v2v3=/v2"]),
        "cairn: unknown flag: --experimental-enable-v2v3"
    );
    assert_eq!(err(&["--Name=a"]), "cairn: unknown flag: --Name");
}

#[test]
fn corruption_checks_are_on_by_default_and_can_be_turned_off() {
    let c = ok(&[]);
    assert!(c.initial_corrupt_check);
    assert_eq!(c.corrupt_check_time, Duration::from_secs(60));
    let c = ok(&[
        "--experimental-initial-corrupt-check=false",
        "--experimental-corrupt-check-time=0s",
    ]);
    assert!(!c.initial_corrupt_check);
    assert_eq!(c.corrupt_check_time, Duration::ZERO);
    assert_eq!(
        ok(&["--experimental-corrupt-check-time=30s"]).corrupt_check_time,
        Duration::from_secs(30)
    );
}

#[test]
fn bad_flag_syntax_is_an_error() {
    assert_eq!(err(&["---name=a"]), "cairn: bad flag syntax: ---name=a");
    assert_eq!(err(&["-=a"]), "cairn: bad flag syntax: -=a");
}

#[test]
fn flag_without_its_value_is_an_error() {
    assert_eq!(err(&["--name"]), "cairn: flag needs an argument: --name");
    assert_eq!(
        err(&["-data-dir"]),
        "cairn: flag needs an argument: -data-dir"
    );
}

#[test]
fn positional_arguments_are_errors() {
    assert_eq!(err(&["serve"]), "cairn: \"serve\" is not a valid flag");
    assert_eq!(
        err(&["--name", "a", "-"]),
        "cairn: \"-\" is not a valid flag"
    );
    assert_eq!(err(&["--", "x"]), "cairn: \"x\" is not a valid flag");
    assert_eq!(ok(&["--name", "a", "--"]).name, "a");
}

#[test]
fn errors_are_one_line_and_exit_1() {
    for args in [
        &["--foo"][..],
        &["--heartbeat-interval=0"],
        &["--initial-cluster=x"],
    ] {
        let e = parse(args).expect_err("invalid");
        assert!(!e.to_string().contains('\n'), "{e}");
        assert!(e.to_string().starts_with("cairn: "), "{e}");
        assert_eq!(e.exit_code(), 1);
        assert!(!e.is_informational());
    }
}

// ---- help and version ----

#[test]
fn help_flags_return_the_help_text() {
    for form in ["-h", "--help", "-help", "--h"] {
        let e = parse(&[form]).expect_err("help is not a config");
        assert!(matches!(e, ConfigError::Help(_)), "{form}: {e:?}");
        assert_eq!(e.exit_code(), 0);
        assert!(e.is_informational());
    }
    // Scanning stops at the help flag, as Go's does; errors before it win.
    assert!(matches!(
        parse(&["--name", "a", "-h", "--foo"]),
        Err(ConfigError::Help(_))
    ));
    assert_eq!(err(&["--foo", "-h"]), "cairn: unknown flag: --foo");
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let help = spec::help_text();
    for flag in FLAGS {
        let entry = match flag.kind {
            spec::Kind::Text => format!("--{} '{}'\n", flag.name, flag.default),
            _ => format!("--{} {}\n", flag.name, flag.default),
        };
        assert!(help.contains(&entry), "help lacks {entry:?}");
    }
    for words in [
        "--name 'default'",
        "--data-dir '${name}.cairn'",
        "--heartbeat-interval 100",
        "--version",
    ] {
        assert!(help.contains(words), "help lacks {words:?}");
    }
}

#[test]
fn version_flag_returns_the_version_text() {
    let e = parse(&["--version"]).expect_err("version is not a config");
    let ConfigError::Version(text) = &e else {
        panic!("expected Version, got {e:?}")
    };
    assert!(
        text.starts_with(&format!("cairn Version: {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert_eq!(e.exit_code(), 0);
    assert!(ok(&["--version=false"]).name == "default");
    // The version is an action, never read from the environment.
    assert!(parse_with_env(&[], &[("CAIRN_VERSION", "true")]).is_ok());
}

// ---- environment ----

#[test]
fn env_vars_set_every_kind_of_setting() {
    let c = parse_with_env(
        &[],
        &[
            ("CAIRN_NAME", "infra1"),
            ("CAIRN_DATA_DIR", "/data/infra1"),
            ("CAIRN_INITIAL_CLUSTER", THREE),
            ("CAIRN_INITIAL_ADVERTISE_PEER_URLS", "http://10.0.1.11:2380"),
            ("CAIRN_LISTEN_PEER_URLS", "http://10.0.1.11:2380"),
            ("CAIRN_LISTEN_CLIENT_URLS", "http://10.0.1.11:2379"),
            ("CAIRN_ADVERTISE_CLIENT_URLS", "http://10.0.1.11:2379"),
            ("CAIRN_INITIAL_CLUSTER_STATE", "existing"),
            ("CAIRN_INITIAL_CLUSTER_TOKEN", "tok"),
            ("CAIRN_HEARTBEAT_INTERVAL", "50"),
            ("CAIRN_ELECTION_TIMEOUT", "500"),
            ("CAIRN_SNAPSHOT_COUNT", "5000"),
            ("CAIRN_MAX_TXN_OPS", "64"),
            ("CAIRN_MAX_REQUEST_BYTES", "1024"),
            ("CAIRN_QUOTA_BACKEND_BYTES", "8589934592"),
            ("CAIRN_AUTO_COMPACTION_MODE", "revision"),
            ("CAIRN_AUTO_COMPACTION_RETENTION", "1000"),
            ("CAIRN_LOG_LEVEL", "warn"),
            ("CAIRN_LOGGER", "zap"),
            ("CAIRN_ENABLE_PPROF", "true"),
        ],
    )
    .expect("valid environment");
    assert_eq!(c.name, "infra1");
    assert_eq!(c.data_dir, PathBuf::from("/data/infra1"));
    assert_eq!(c.initial_cluster.len(), 3);
    assert_eq!(c.listen_client_urls, vec![url("http://10.0.1.11:2379")]);
    assert_eq!(c.initial_cluster_state, ClusterState::Existing);
    assert_eq!(c.initial_cluster_token, "tok");
    assert_eq!(c.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(c.election_timeout, Duration::from_millis(500));
    assert_eq!(c.snapshot_count, 5000);
    assert_eq!(c.max_txn_ops, 64);
    assert_eq!(c.max_request_bytes, 1024);
    assert_eq!(c.quota_backend_bytes, 8 * 1024 * 1024 * 1024);
    assert_eq!(c.auto_compaction, AutoCompaction::Revision(1000));
    assert_eq!(c.log_level, LogLevel::Warn);
    assert!(c.enable_pprof);
}

#[test]
fn env_var_names_are_cairn_then_etcd_upper_snake() {
    assert_eq!(
        spec::env_names("initial-advertise-peer-urls"),
        [
            "CAIRN_INITIAL_ADVERTISE_PEER_URLS",
            "ETCD_INITIAL_ADVERTISE_PEER_URLS"
        ]
    );
    assert_eq!(spec::env_names("name"), ["CAIRN_NAME", "ETCD_NAME"]);
}

#[test]
fn flag_beats_env_var_beats_default() {
    let c = parse_with_env(
        &["--name", "from-flag"],
        &[
            ("CAIRN_NAME", "from-env"),
            ("CAIRN_INITIAL_CLUSTER_TOKEN", "env-token"),
        ],
    )
    .expect("valid");
    assert_eq!(c.name, "from-flag");
    assert_eq!(c.initial_cluster_token, "env-token");
    assert_eq!(c.snapshot_count, 100_000);
}

#[test]
fn empty_env_var_counts_as_unset() {
    let c = parse_with_env(&[], &[("CAIRN_NAME", ""), ("CAIRN_HEARTBEAT_INTERVAL", "")])
        .expect("valid");
    assert_eq!(c.name, "default");
    assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
}

// What etcdctl 3.4's `member add` prints after the "Member ... added" line,
// byte for byte (captured from `etcdctl member add infra3
// --peer-urls=http://10.0.1.13:2380` against a 3-member etcd 3.4 cluster).
const MEMBER_ADD_LINES: &str = "ETCD_NAME=\"infra3\"\n\
    ETCD_INITIAL_CLUSTER=\"infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra3=http://10.0.1.13:2380\"\n\
    ETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://10.0.1.13:2380\"\n\
    ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n";

/// `VAR="value"` lines as a shell's `export` (or a systemd EnvironmentFile)
/// reads them: the double quotes are the shell's, not part of the value.
fn shell_assignments(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            let (var, quoted) = line.split_once('=').expect("VAR=value");
            let value = quoted
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .expect("etcdctl quotes every value");
            (var.to_string(), value.to_string())
        })
        .collect()
}

#[test]
fn the_environment_lines_etcdctl_member_add_prints_configure_the_joining_member() {
    let vars = shell_assignments(MEMBER_ADD_LINES);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(vars.len(), 4);
    let c = parse_with_env(&["--listen-peer-urls", "http://10.0.1.13:2380"], &vars)
        .expect("etcdctl's lines are a valid configuration");
    assert_eq!(c.name, "infra3");
    assert_eq!(c.initial_cluster_state, ClusterState::Existing);
    assert!(!c.is_new_cluster());
    assert_eq!(
        c.initial_advertise_peer_urls,
        vec![url("http://10.0.1.13:2380")]
    );
    assert_eq!(
        c.initial_cluster.keys().collect::<Vec<_>>(),
        ["infra0", "infra1", "infra3"]
    );
    assert_eq!(
        c.initial_cluster["infra3"],
        vec![url("http://10.0.1.13:2380")]
    );
    assert_eq!(c.data_dir, PathBuf::from("infra3.cairn"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn etcd_env_vars_set_every_kind_of_setting() {
    let c = parse_with_env(
        &[],
        &[
            ("ETCD_NAME", "infra1"),
            ("ETCD_DATA_DIR", "/data/infra1"),
            ("ETCD_INITIAL_CLUSTER", THREE),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://10.0.1.11:2380"),
            ("ETCD_LISTEN_CLIENT_URLS", "http://10.0.1.11:2379"),
            ("ETCD_ADVERTISE_CLIENT_URLS", "http://10.0.1.11:2379"),
            ("ETCD_HEARTBEAT_INTERVAL", "50"),
            ("ETCD_ELECTION_TIMEOUT", "500"),
            ("ETCD_SNAPSHOT_COUNT", "5000"),
            ("ETCD_ENABLE_PPROF", "true"),
            ("ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", "30s"),
        ],
    )
    .expect("valid environment");
    assert_eq!(c.name, "infra1");
    assert_eq!(c.data_dir, PathBuf::from("/data/infra1"));
    assert_eq!(c.initial_cluster.len(), 3);
    assert_eq!(c.listen_client_urls, vec![url("http://10.0.1.11:2379")]);
    assert_eq!(c.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(c.election_timeout, Duration::from_millis(500));
    assert_eq!(c.snapshot_count, 5000);
    assert!(c.enable_pprof);
    assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(30));
}

#[test]
fn every_flag_has_a_cairn_and_an_etcd_variable_cairn_first() {
    for flag in FLAGS {
        let snake = flag.name.to_ascii_uppercase().replace('-', "_");
        assert_eq!(
            spec::env_names(flag.name),
            [format!("CAIRN_{snake}"), format!("ETCD_{snake}")]
        );
    }
}

#[test]
fn cairn_var_beats_etcd_var_and_the_loser_is_warned_about() {
    let c = parse_with_env(
        &[],
        &[
            ("CAIRN_NAME", "from-cairn"),
            ("ETCD_NAME", "from-etcd"),
            ("ETCD_INITIAL_CLUSTER_TOKEN", "etcd-token"),
            // Same value in both: nothing to warn about.
            ("CAIRN_SNAPSHOT_COUNT", "7"),
            ("ETCD_SNAPSHOT_COUNT", "7"),
        ],
    )
    .expect("valid");
    assert_eq!(c.name, "from-cairn");
    assert_eq!(c.data_dir, PathBuf::from("from-cairn.cairn"));
    assert_eq!(c.initial_cluster_token, "etcd-token");
    assert_eq!(c.snapshot_count, 7);
    assert_eq!(
        c.warnings,
        vec!["ignoring ETCD_NAME: CAIRN_NAME is set and wins"]
    );
}

#[test]
fn flag_beats_both_vars() {
    let c = parse_with_env(
        &["--name", "from-flag", "--heartbeat-interval=20"],
        &[
            ("CAIRN_NAME", "from-cairn"),
            ("ETCD_NAME", "from-etcd"),
            ("ETCD_HEARTBEAT_INTERVAL", "50"),
        ],
    )
    .expect("valid");
    assert_eq!(c.name, "from-flag");
    assert_eq!(c.heartbeat_interval, Duration::from_millis(20));
    assert_eq!(
        c.warnings,
        vec![
            "ignoring CAIRN_NAME: flag --name is set and wins",
            "ignoring ETCD_NAME: flag --name is set and wins",
            "ignoring ETCD_HEARTBEAT_INTERVAL: flag --heartbeat-interval is set and wins",
        ]
    );
}

#[test]
fn empty_cairn_var_lets_the_etcd_var_through_and_empty_etcd_var_is_unset() {
    let c = parse_with_env(
        &[],
        &[
            ("CAIRN_NAME", ""),
            ("ETCD_NAME", "from-etcd"),
            ("ETCD_HEARTBEAT_INTERVAL", ""),
        ],
    )
    .expect("valid");
    assert_eq!(c.name, "from-etcd");
    assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn a_bad_value_in_a_shadowed_variable_is_never_parsed() {
    let c = parse_with_env(
        &[],
        &[
            ("CAIRN_HEARTBEAT_INTERVAL", "50"),
            ("ETCD_HEARTBEAT_INTERVAL", "abc"),
            ("CAIRN_ELECTION_TIMEOUT", "500"),
        ],
    )
    .expect("ETCD_HEARTBEAT_INTERVAL loses, so its value does not matter");
    assert_eq!(c.heartbeat_interval, Duration::from_millis(50));
}

#[test]
fn etcd_var_errors_name_the_etcd_variable() {
    let e = parse_with_env(&[], &[("ETCD_HEARTBEAT_INTERVAL", "abc")]).expect_err("bad number");
    assert_eq!(
        e.to_string(),
        "cairn: invalid value \"abc\" for ETCD_HEARTBEAT_INTERVAL: expected a non-negative decimal integer"
    );
    let e = parse_with_env(
        &[],
        &[
            ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
            ("CAIRN_INITIAL_CLUSTER_STATE", "old"),
        ],
    )
    .expect_err("bad state");
    assert!(
        e.to_string()
            .starts_with("cairn: invalid value \"old\" for CAIRN_INITIAL_CLUSTER_STATE: "),
        "{e}"
    );
    let e = parse_with_env(&[], &[("ETCD_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379")])
        .expect_err("etcd rule");
    assert_eq!(e, ConfigError::UnsetAdvertiseClientUrls);
}

#[test]
fn help_says_which_variables_are_read_and_which_wins() {
    let help = spec::help_text();
    for words in [
        "CAIRN_<FLAG_IN_UPPER_SNAKE>",
        "ETCD_<FLAG_IN_UPPER_SNAKE>",
        "etcdctl member add",
        "beats both",
        "CAIRN_* beats ETCD_*",
        "empty variable counts as unset",
    ] {
        assert!(help.contains(words), "help lacks {words:?}:\n{help}");
    }
}

#[test]
fn env_var_errors_name_the_variable() {
    let e = parse_with_env(&[], &[("CAIRN_HEARTBEAT_INTERVAL", "abc")]).expect_err("bad number");
    assert_eq!(
        e.to_string(),
        "cairn: invalid value \"abc\" for CAIRN_HEARTBEAT_INTERVAL: expected a non-negative decimal integer"
    );
    let e = parse_with_env(&[], &[("CAIRN_ENABLE_PPROF", "yes")]).expect_err("bad bool");
    assert_eq!(
        e.to_string(),
        "cairn: invalid value \"yes\" for CAIRN_ENABLE_PPROF: expected true or false"
    );
}

#[test]
fn listen_client_urls_from_env_also_needs_advertise() {
    let e = parse_with_env(&[], &[("CAIRN_LISTEN_CLIENT_URLS", "http://0.0.0.0:2379")])
        .expect_err("etcd rule");
    assert_eq!(e, ConfigError::UnsetAdvertiseClientUrls);
}

// ---- config file ----

#[test]
fn config_file_sets_settings_with_etcd_keys() {
    let file = yaml_file(&format!(
        "name: infra2\n\
         data-dir: /var/lib/cairn/infra2\n\
         listen-client-urls: http://0.0.0.0:2379\n\
         advertise-client-urls: http://10.0.1.12:2379\n\
         listen-peer-urls: http://10.0.1.12:2380\n\
         initial-advertise-peer-urls: http://10.0.1.12:2380\n\
         initial-cluster: {THREE}\n\
         initial-cluster-state: 'new'\n\
         initial-cluster-token: 'prod-1'\n\
         heartbeat-interval: 50\n\
         election-timeout: 600\n\
         snapshot-count: 10000\n\
         max-txn-ops: 256\n\
         max-request-bytes: 10485760\n\
         quota-backend-bytes: 0\n\
         auto-compaction-mode: periodic\n\
         auto-compaction-retention: \"1\"\n\
         log-level: debug\n\
         logger: zap\n\
         enable-pprof: false\n"
    ));
    let path = path_of(&file);
    let c = parse(&["--config-file", &path]).expect("valid file");
    assert_eq!(c.name, "infra2");
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/cairn/infra2"));
    assert_eq!(
        c.listen_client_addrs(),
        vec!["0.0.0.0:2379".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(c.initial_cluster.len(), 3);
    assert_eq!(c.initial_cluster_token, "prod-1");
    assert_eq!(c.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(c.election_timeout, Duration::from_millis(600));
    assert_eq!(c.election_ticks(), 12);
    assert_eq!(c.snapshot_count, 10_000);
    assert_eq!(c.max_txn_ops, 256);
    assert_eq!(c.max_request_bytes, 10 * 1024 * 1024);
    assert_eq!(
        c.auto_compaction,
        AutoCompaction::Periodic(Duration::from_secs(3600))
    );
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.config_file, Some(PathBuf::from(&path)));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn config_file_ignores_other_flags_and_env_vars_as_etcd() {
    let file = yaml_file("name: from-file\n");
    let path = path_of(&file);
    let c = parse_with_env(
        &[
            "--name",
            "from-flag",
            "--heartbeat-interval",
            "7",
            "--config-file",
            &path,
        ],
        &[
            ("CAIRN_DATA_DIR", "/from/env"),
            ("CAIRN_SNAPSHOT_COUNT", "5"),
        ],
    )
    .expect("flags and variables are ignored, not validated");
    assert_eq!(c.name, "from-file");
    assert_eq!(c.data_dir, PathBuf::from("from-file.cairn"));
    assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(c.snapshot_count, 100_000);
    assert_eq!(
        c.warnings,
        vec![
            "ignoring flag --heartbeat-interval because --config-file is given",
            "ignoring flag --name because --config-file is given",
            "ignoring CAIRN_DATA_DIR because --config-file is given",
            "ignoring CAIRN_SNAPSHOT_COUNT because --config-file is given",
        ]
    );
}

#[test]
fn config_file_from_env_var_when_flag_absent() {
    let file = yaml_file("name: env-file\n");
    let other = yaml_file("name: flag-file\n");
    let path = path_of(&file);
    let c = parse_with_env(&[], &[("CAIRN_CONFIG_FILE", &path)]).expect("valid");
    assert_eq!(c.name, "env-file");
    let c = parse_with_env(
        &["--config-file", &path_of(&other)],
        &[("CAIRN_CONFIG_FILE", &path)],
    )
    .expect("valid");
    assert_eq!(c.name, "flag-file");
}

#[test]
fn etcd_config_file_var_is_read_after_the_flag_and_the_cairn_var() {
    let etcd_file = yaml_file("name: etcd-file\n");
    let cairn_file = yaml_file("name: cairn-file\n");
    let c = parse_with_env(&[], &[("ETCD_CONFIG_FILE", &path_of(&etcd_file))]).expect("valid");
    assert_eq!(c.name, "etcd-file");
    let c = parse_with_env(
        &[],
        &[
            ("ETCD_CONFIG_FILE", &path_of(&etcd_file)),
            ("CAIRN_CONFIG_FILE", &path_of(&cairn_file)),
        ],
    )
    .expect("valid");
    assert_eq!(c.name, "cairn-file");
}

#[test]
fn config_file_ignores_etcd_vars_too() {
    let file = yaml_file("name: from-file\n");
    let c = parse_with_env(
        &["--config-file", &path_of(&file)],
        &[("ETCD_NAME", "from-etcd"), ("CAIRN_NAME", "from-cairn")],
    )
    .expect("valid");
    assert_eq!(c.name, "from-file");
    assert_eq!(
        c.warnings,
        vec![
            "ignoring CAIRN_NAME because --config-file is given",
            "ignoring ETCD_NAME because --config-file is given",
        ]
    );
}

#[test]
fn config_file_does_not_require_advertise_client_urls() {
    // etcd only enforces this for flags: the file keeps the default advertise URL.
    let file = yaml_file("listen-client-urls: http://0.0.0.0:2379\n");
    let c = parse(&["--config-file", &path_of(&file)]).expect("valid");
    assert_eq!(c.advertise_client_urls, vec![url("http://localhost:2379")]);
}

#[test]
fn config_file_unknown_keys_are_ignored_with_warnings() {
    let file = yaml_file(
        "name: a\nwal-dir: /wal\nmax-wals: 5\nclient-transport-security:\n  crl-file: x\n",
    );
    let c = parse(&["--config-file", &path_of(&file)]).expect("unknown keys are ignored");
    assert_eq!(c.name, "a");
    assert_eq!(
        c.warnings,
        vec![
            "ignoring config file key \"client-transport-security.crl-file\": cairn does not use it",
            "ignoring config file key \"max-wals\": cairn does not use it",
            "ignoring config file key \"wal-dir\": cairn does not use it",
        ]
    );
}

#[test]
fn config_file_shaped_like_etcds_sample_loads() {
    // The shape of etcd's etcd.conf.yml.sample: empty values, quoted strings,
    // nested maps, flow lists, keys cairn does not use.
    let file = yaml_file(
        "name: 'default'\ndata-dir:\nwal-dir:\nsnapshot-count: 10000\nheartbeat-interval: 100\n\
         election-timeout: 1000\nquota-backend-bytes: 0\nlisten-peer-urls: http://localhost:2380\n\
         listen-client-urls: http://localhost:2379\nmax-snapshots: 5\nmax-wals: 5\ncors:\n\
         initial-advertise-peer-urls: http://localhost:2380\n\
         advertise-client-urls: http://localhost:2379\ndiscovery:\ndiscovery-fallback: 'proxy'\n\
         initial-cluster:\ninitial-cluster-token: 'etcd-cluster'\ninitial-cluster-state: 'new'\n\
         strict-reconfig-check: false\nenable-pprof: true\nproxy: 'off'\n\
         client-transport-security:\n  cert-file:\n  client-cert-auth: false\n  auto-tls: false\n\
         log-level: debug\nlogger: zap\nlog-outputs: [stderr]\nforce-new-cluster: false\n\
         auto-compaction-mode: periodic\nauto-compaction-retention: \"1\"\n\
         cipher-suites: [\n  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n]\ntls-min-version: 'TLS1.2'\n",
    );
    let c = parse(&["--config-file", &path_of(&file)]).expect("etcd's sample shape loads");
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir, PathBuf::from("default.cairn"));
    assert_eq!(c.snapshot_count, 10_000);
    assert_eq!(c.initial_cluster.len(), 1);
    assert!(c.enable_pprof);
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(
        c.auto_compaction,
        AutoCompaction::Periodic(Duration::from_secs(3600))
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("\"wal-dir\"")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn config_file_empty_is_all_defaults() {
    let file = yaml_file("");
    let c = parse(&["--config-file", &path_of(&file)]).expect("empty file");
    assert_eq!(c.name, "default");
    assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
}

#[test]
fn config_file_value_type_errors_name_key_and_file() {
    let file = yaml_file("heartbeat-interval: \"abc\"\n");
    let path = path_of(&file);
    assert_eq!(
        err(&["--config-file", &path]),
        format!("cairn: invalid value \"abc\" for heartbeat-interval in {path}: expected a non-negative integer")
    );
    let file = yaml_file("election-timeout: -5\n");
    let path = path_of(&file);
    assert_eq!(
        err(&["--config-file", &path]),
        format!("cairn: invalid value \"-5\" for election-timeout in {path}: expected a non-negative integer")
    );
    let file = yaml_file("enable-pprof: 'yes'\n");
    let path = path_of(&file);
    assert_eq!(
        err(&["--config-file", &path]),
        format!("cairn: invalid value \"yes\" for enable-pprof in {path}: expected true or false")
    );
    let file = yaml_file("initial-cluster-state: join\n");
    let path = path_of(&file);
    assert_eq!(
        err(&["--config-file", &path]),
        format!(
            "cairn: invalid value \"join\" for initial-cluster-state in {path}: \
             valid values are \"new\" and \"existing\""
        )
    );
}

#[test]
fn config_file_validation_uses_etcd_flag_wording() {
    let file = yaml_file("heartbeat-interval: 300\nelection-timeout: 1000\n");
    assert_eq!(
        err(&["--config-file", &path_of(&file)]),
        "cairn: --election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"
    );
}

#[test]
fn config_file_missing_is_an_error() {
    assert_eq!(
        err(&["--config-file", "/nonexistent/cairn.yml"]),
        "cairn: cannot read config file \"/nonexistent/cairn.yml\": No such file or directory (os error 2)"
    );
}

#[test]
fn config_file_that_is_not_a_mapping_is_an_error() {
    let file = yaml_file("- name\n- data-dir\n");
    let path = path_of(&file);
    assert_eq!(
        err(&["--config-file", &path]),
        format!("cairn: cannot parse config file {path:?}: expected a mapping of etcd configuration keys")
    );
    let file = yaml_file("name: [unclosed\n");
    let message = err(&["--config-file", &path_of(&file)]);
    assert!(
        message.starts_with("cairn: cannot parse config file"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

// ---- URLs ----

#[test]
fn url_parse_and_display_round_trip() {
    for text in [
        "http://localhost:2379",
        "http://10.0.0.1:2380",
        "https://example.com:443",
        "http://[::1]:2379",
    ] {
        assert_eq!(url(text).to_string(), text);
    }
    let u = url(" HTTP://[fe80::1]:2380 ");
    assert_eq!(
        (u.scheme, u.host.as_str(), u.port),
        (Scheme::Http, "fe80::1", 2380)
    );
    assert!(url("https://a:1").is_tls());
}

#[test]
fn url_errors_have_exact_messages() {
    let cases = [
        (
            "localhost:2379",
            "URL scheme must be http or https: localhost:2379",
        ),
        (
            "unix://socket:1",
            "URL scheme must be http or https: unix://socket:1",
        ),
        (
            "http://10.0.0.1",
            "URL address does not have the form \"host:port\": http://10.0.0.1",
        ),
        (
            "http://:2380",
            "URL address does not have the form \"host:port\": http://:2380",
        ),
        (
            "http://::1:2380",
            "URL address does not have the form \"host:port\": http://::1:2380",
        ),
        (
            "http://10.0.0.1:2380/",
            "URL must not contain a path: http://10.0.0.1:2380/",
        ),
        (
            "http://10.0.0.1:2380/x",
            "URL must not contain a path: http://10.0.0.1:2380/x",
        ),
        (
            "http://10.0.0.1:99999",
            "URL port must be a number from 0 to 65535: http://10.0.0.1:99999",
        ),
        (
            "http://10.0.0.1:http",
            "URL port must be a number from 0 to 65535: http://10.0.0.1:http",
        ),
    ];
    for (text, reason) in cases {
        assert_eq!(Url::parse(text).expect_err(text), reason);
        let args = ["--initial-advertise-peer-urls", text];
        assert_eq!(
            err(&args),
            format!(
                "cairn: invalid value {text:?} for flag --initial-advertise-peer-urls: {reason}"
            )
        );
    }
}

#[test]
fn listen_urls_must_bind_an_ip_or_localhost() {
    assert_eq!(
        err(&["--listen-peer-urls", "http://example.com:2380"]),
        "cairn: invalid value \"http://example.com:2380\" for flag --listen-peer-urls: \
         expected IP in URL for binding (http://example.com:2380)"
    );
    // Advertise URLs may be host names.
    let c = ok(&["--advertise-client-urls", "http://example.com:2379"]);
    assert_eq!(c.advertise_client_urls[0].host, "example.com");
}

#[test]
fn empty_url_list_is_an_error() {
    assert_eq!(
        err(&["--listen-peer-urls="]),
        "cairn: invalid value \"\" for flag --listen-peer-urls: at least one URL is required"
    );
}

// ---- TLS (etcd 3.4's checks and words, observed with /usr/bin/etcd) ----

const HTTPS_CLIENT: [&str; 4] = [
    "--listen-client-urls",
    "https://127.0.0.1:2379",
    "--advertise-client-urls",
    "https://127.0.0.1:2379",
];

const HTTPS_PEER: [&str; 6] = [
    "--listen-peer-urls",
    "https://127.0.0.1:2380",
    "--initial-advertise-peer-urls",
    "https://127.0.0.1:2380",
    "--initial-cluster",
    "default=https://127.0.0.1:2380",
];

fn with(base: &[&str], more: &[&str]) -> Vec<String> {
    base.iter().chain(more).map(|s| s.to_string()).collect()
}

fn tls_err(base: &[&str], more: &[&str]) -> String {
    match parse_args(with(base, more), &no_env) {
        Ok(config) => panic!("{more:?} should fail, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn tls_ok(base: &[&str], more: &[&str]) -> Config {
    parse_args(with(base, more), &no_env).unwrap_or_else(|e| panic!("{more:?} should parse: {e}"))
}

#[test]
fn https_urls_with_certificates_are_accepted() {
    let c = tls_ok(
        &HTTPS_CLIENT,
        &[
            "--cert-file=/etc/cairn/server.pem",
            "--key-file=/etc/cairn/server-key.pem",
            "--trusted-ca-file=/etc/cairn/ca.pem",
            "--client-cert-auth",
        ],
    );
    assert!(c.serves_client_tls());
    assert!(!c.serves_peer_tls());
    assert_eq!(
        c.client_tls,
        TlsSettings {
            cert_file: Some(PathBuf::from("/etc/cairn/server.pem")),
            key_file: Some(PathBuf::from("/etc/cairn/server-key.pem")),
            trusted_ca_file: Some(PathBuf::from("/etc/cairn/ca.pem")),
            client_cert_auth: true,
            auto_tls: false,
        }
    );
    assert!(c.client_tls.uses_tls());
    assert_eq!(c.peer_tls, TlsSettings::default());
    assert_eq!(c.advertise_client_urls, vec![url("https://127.0.0.1:2379")]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn https_peer_urls_with_certificates_are_accepted() {
    let c = tls_ok(
        &HTTPS_PEER,
        &[
            "--peer-cert-file=p.pem",
            "--peer-key-file=p-key.pem",
            "--peer-trusted-ca-file=ca.pem",
            "--peer-client-cert-auth",
        ],
    );
    assert!(c.serves_peer_tls());
    assert_eq!(c.peer_tls.cert_file, Some(PathBuf::from("p.pem")));
    assert_eq!(c.peer_tls.key_file, Some(PathBuf::from("p-key.pem")));
    assert_eq!(c.peer_tls.trusted_ca_file, Some(PathBuf::from("ca.pem")));
    assert!(c.peer_tls.client_cert_auth);
    assert_eq!(c.client_tls, TlsSettings::default());
    // The ids hash the https URLs as etcd does.
    assert_eq!(
        c.initial_cluster.get("default"),
        Some(&vec![url("https://127.0.0.1:2380")])
    );
}

#[test]
fn https_client_url_without_certificate_is_etcds_error() {
    assert_eq!(
        tls_err(&HTTPS_CLIENT, &[]),
        "cairn: TLS key/cert (--cert-file, --key-file) must be provided for client url \
         https://127.0.0.1:2379 with HTTPS scheme"
    );
}

#[test]
fn https_peer_url_without_certificate_is_etcds_error() {
    assert_eq!(
        tls_err(&HTTPS_PEER, &[]),
        "cairn: cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
    );
}

#[test]
fn certificate_without_key_and_key_without_certificate_are_etcds_error() {
    assert_eq!(
        tls_err(&HTTPS_CLIENT, &["--cert-file", "srv.pem"]),
        "cairn: KeyFile and CertFile must both be present[key: , cert: srv.pem]"
    );
    assert_eq!(
        tls_err(&HTTPS_CLIENT, &["--key-file", "srv.key"]),
        "cairn: KeyFile and CertFile must both be present[key: srv.key, cert: ]"
    );
    assert_eq!(
        tls_err(&HTTPS_PEER, &["--peer-cert-file", "srv.pem"]),
        "cairn: KeyFile and CertFile must both be present[key: , cert: srv.pem]"
    );
}

#[test]
fn peer_errors_come_before_client_errors_as_in_etcd() {
    let both: Vec<&str> = HTTPS_PEER.iter().chain(&HTTPS_CLIENT).copied().collect();
    assert_eq!(
        tls_err(&both, &[]),
        "cairn: cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented"
    );
}

#[test]
fn client_cert_auth_needs_a_trusted_ca_file() {
    // etcd would fall back on the system's CA store; cairn refuses.
    assert_eq!(
        tls_err(
            &HTTPS_CLIENT,
            &["--cert-file=a", "--key-file=b", "--client-cert-auth"]
        ),
        "cairn: --client-cert-auth needs --trusted-ca-file: client certificates are verified \
         only against it"
    );
    assert_eq!(
        tls_err(
            &HTTPS_PEER,
            &[
                "--peer-cert-file=a",
                "--peer-key-file=b",
                "--peer-client-cert-auth"
            ]
        ),
        "cairn: --peer-client-cert-auth needs --peer-trusted-ca-file: client certificates are \
         verified only against it"
    );
    // On a side without https it has no effect, as in etcd.
    ok(&["--client-cert-auth"]);
}

#[test]
fn auto_tls_serves_https_without_certificate_files() {
    let c = tls_ok(&HTTPS_CLIENT, &["--auto-tls"]);
    assert!(c.client_tls.uses_auto_tls());
    assert!(c.client_tls.uses_tls());
    assert_eq!(c.client_hosts(), vec!["127.0.0.1".to_string()]);
    let p = tls_ok(&HTTPS_PEER, &["--peer-auto-tls"]);
    assert!(p.peer_tls.uses_auto_tls());
    assert_eq!(p.peer_hosts(), vec!["127.0.0.1".to_string()]);
}

#[test]
fn certificates_beside_auto_tls_win_with_etcds_warning() {
    let c = tls_ok(
        &HTTPS_CLIENT,
        &["--auto-tls", "--cert-file=a", "--key-file=b"],
    );
    assert!(!c.client_tls.uses_auto_tls());
    assert!(c
        .warnings
        .contains(&"ignoring client auto TLS since certs given".to_string()));
    let p = tls_ok(
        &HTTPS_PEER,
        &["--peer-auto-tls", "--peer-cert-file=a", "--peer-key-file=b"],
    );
    assert!(p
        .warnings
        .contains(&"ignoring peer auto TLS since certs given".to_string()));
}

#[test]
fn certificates_on_http_urls_are_ignored_with_etcds_warning() {
    let c = ok(&[
        "--cert-file=a",
        "--key-file=b",
        "--peer-cert-file=c",
        "--peer-key-file=d",
    ]);
    assert!(!c.serves_client_tls());
    assert!(c.warnings.contains(
        &"The scheme of client url http://localhost:2379 is HTTP while key/cert files are \
          presented. Ignored key/cert files."
            .to_string()
    ));
    assert!(c.warnings.contains(
        &"The scheme of peer url http://localhost:2380 is HTTP while peer key/cert files are \
          presented. Ignored peer key/cert files."
            .to_string()
    ));
}

#[test]
fn cipher_suites_are_go_names_rustls_has() {
    let c = ok(&[
        "--cipher-suites",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ]);
    assert_eq!(
        c.cipher_suites,
        owned(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
        ])
    );
    assert_eq!(ok(&[]).cipher_suites, Vec::<String>::new());
    // etcd's words for a name Go does not know.
    assert_eq!(
        err(&[
            "--cipher-suites",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,FOO"
        ]),
        "cairn: unexpected TLS cipher suite \"FOO\""
    );
    // etcd 3.4 panics at start on RC4; cairn refuses every suite rustls lacks.
    let e = err(&["--cipher-suites", "TLS_RSA_WITH_RC4_128_SHA"]);
    assert!(
        e.starts_with(
            "cairn: TLS cipher suite \"TLS_RSA_WITH_RC4_128_SHA\" is not supported by cairn"
        ),
        "{e}"
    );
}

#[test]
fn tls_settings_come_from_cairn_and_etcd_variables() {
    let c = parse_with_env(
        &[],
        &[
            ("ETCD_LISTEN_CLIENT_URLS", "https://127.0.0.1:2379"),
            ("ETCD_ADVERTISE_CLIENT_URLS", "https://127.0.0.1:2379"),
            ("ETCD_CERT_FILE", "etcd.pem"),
            ("CAIRN_CERT_FILE", "cairn.pem"),
            ("ETCD_KEY_FILE", "key.pem"),
            ("ETCD_TRUSTED_CA_FILE", "ca.pem"),
            ("ETCD_CLIENT_CERT_AUTH", "true"),
            ("CAIRN_PEER_AUTO_TLS", "true"),
            ("ETCD_CIPHER_SUITES", "TLS_AES_128_GCM_SHA256"),
        ],
    )
    .expect("TLS from the environment");
    assert_eq!(c.client_tls.cert_file, Some(PathBuf::from("cairn.pem")));
    assert_eq!(c.client_tls.key_file, Some(PathBuf::from("key.pem")));
    assert_eq!(c.client_tls.trusted_ca_file, Some(PathBuf::from("ca.pem")));
    assert!(c.client_tls.client_cert_auth);
    assert!(c.peer_tls.auto_tls);
    assert_eq!(c.cipher_suites, owned(&["TLS_AES_128_GCM_SHA256"]));
}

#[test]
fn config_file_transport_security_maps_set_tls() {
    let file = yaml_file(
        "listen-client-urls: https://127.0.0.1:2379\nadvertise-client-urls: https://127.0.0.1:2379\n\
         listen-peer-urls: https://127.0.0.1:2380\ninitial-advertise-peer-urls: https://127.0.0.1:2380\n\
         initial-cluster: default=https://127.0.0.1:2380\n\
         client-transport-security:\n  cert-file: /c/server.pem\n  key-file: /c/server-key.pem\n\
         \x20 client-cert-auth: true\n  trusted-ca-file: /c/ca.pem\n  auto-tls: false\n  crl-file:\n\
         peer-transport-security:\n  cert-file: /p/peer.pem\n  key-file: /p/peer-key.pem\n\
         \x20 client-cert-auth: true\n  trusted-ca-file: /p/ca.pem\n  auto-tls: true\n\
         cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n",
    );
    let c = parse(&["--config-file", &path_of(&file)]).expect("etcd's TLS keys load");
    assert_eq!(
        c.client_tls,
        TlsSettings {
            cert_file: Some(PathBuf::from("/c/server.pem")),
            key_file: Some(PathBuf::from("/c/server-key.pem")),
            trusted_ca_file: Some(PathBuf::from("/c/ca.pem")),
            client_cert_auth: true,
            auto_tls: false,
        }
    );
    assert_eq!(
        c.peer_tls,
        TlsSettings {
            cert_file: Some(PathBuf::from("/p/peer.pem")),
            key_file: Some(PathBuf::from("/p/peer-key.pem")),
            trusted_ca_file: Some(PathBuf::from("/p/ca.pem")),
            client_cert_auth: true,
            auto_tls: true,
        }
    );
    assert_eq!(
        c.cipher_suites,
        owned(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
        ])
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("\"client-transport-security.crl-file\"")),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings
            .contains(&"ignoring peer auto TLS since certs given".to_string()),
        "{:?}",
        c.warnings
    );
}

#[test]
fn tls_flag_names_are_not_top_level_config_file_keys() {
    // etcd's file has no top-level cert-file: it is ignored like any unknown key.
    let file = yaml_file("cert-file: /x.pem\n");
    let c = parse(&["--config-file", &path_of(&file)]).expect("loads");
    assert_eq!(c.client_tls.cert_file, None);
    assert!(
        c.warnings.iter().any(|w| w.contains("\"cert-file\"")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn config_file_transport_security_must_be_a_mapping() {
    let file = yaml_file("client-transport-security: yes-please\n");
    let path = path_of(&file);
    assert_eq!(
        parse(&["--config-file", &path])
            .expect_err("not a map")
            .to_string(),
        format!(
            "cairn: invalid value \"yes-please\" for client-transport-security in {path}: \
             expected a mapping (cert-file, key-file, client-cert-auth, trusted-ca-file, auto-tls)"
        )
    );
}

// ---- auth flags ----

#[test]
fn auth_defaults_are_etcds() {
    let c = ok(&[]);
    assert_eq!(c.auth_token, AuthToken::Simple);
    assert_eq!(c.auth_token_spec, "simple");
    assert_eq!(c.auth_token_ttl_secs, 300);
    assert_eq!(c.bcrypt_cost, 10);
}

#[test]
fn auth_token_jwt_is_parsed_with_etcds_syntax() {
    let key = yaml_file("not really a key, only read for presence");
    let path = path_of(&key);
    let spec = format!("jwt,pub-key={path},priv-key={path},sign-method=RS256,ttl=10m");
    let c = ok(&["--auth-token", &spec, "--auth-token-ttl", "60"]);
    assert_eq!(c.auth_token_spec, spec);
    assert_eq!(
        c.auth_token,
        AuthToken::Jwt {
            pub_key: PathBuf::from(&path),
            priv_key: Some(PathBuf::from(&path)),
            sign_method: "RS256".into(),
            ttl: Duration::from_secs(600),
        }
    );
    assert_eq!(c.auth_token_ttl_secs, 60);
    // Without ttl: etcd's 5 minutes; a verifying-only member has no priv-key.
    let c = ok(&[
        "--auth-token",
        &format!("jwt,pub-key={path},sign-method=ES256"),
    ]);
    assert_eq!(
        c.auth_token,
        AuthToken::Jwt {
            pub_key: PathBuf::from(&path),
            priv_key: None,
            sign_method: "ES256".into(),
            ttl: Duration::from_secs(300),
        }
    );
    // Options simple tokens do not use are ignored, as in etcd.
    assert_eq!(
        ok(&["--auth-token", "simple,foo=bar"]).auth_token,
        AuthToken::Simple
    );
}

#[test]
fn auth_token_errors_are_etcds() {
    let key = yaml_file("k");
    let path = path_of(&key);
    let cases = [
        ("bogus".to_string(), "cairn: auth: invalid auth options: unknown token type: bogus"),
        (
            "jwt".to_string(),
            "cairn: auth: invalid auth options: problem loading JWT options: auth: invalid auth signature method",
        ),
        ("jwt,sign-method=RS256".to_string(), "cairn: auth: missing key data"),
        (
            format!("jwt,pub-key={path},sign-method=XX"),
            "cairn: auth: invalid auth options: problem loading JWT options: auth: invalid auth signature method",
        ),
        (
            format!("jwt,pub-key={path},sign-method=RS256,ttl=abc"),
            "cairn: auth: invalid auth options: problem loading JWT options: time: invalid duration \"abc\"",
        ),
        (
            "jwt,pub-key=a,pub-key=a".to_string(),
            "cairn: auth: invalid auth options: invalid token specific option, duplicated parameters (pub-key): jwt,pub-key=a,pub-key=a",
        ),
        (
            "jwt,pub-key".to_string(),
            "cairn: auth: invalid auth options: invalid token specific option: jwt,pub-key",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(err(&["--auth-token", &spec]), want, "{spec}");
    }
    let missing = err(&[
        "--auth-token",
        "jwt,pub-key=/nonexistent/k.pem,sign-method=RS256",
    ]);
    assert!(
        missing.starts_with(
            "cairn: auth: invalid auth options: problem loading JWT options: open /nonexistent/k.pem: "
        ),
        "{missing}"
    );
}

#[test]
fn bcrypt_cost_out_of_range_means_the_default_with_etcds_warning() {
    for given in ["4", "31"] {
        let c = ok(&["--bcrypt-cost", given]);
        assert_eq!(c.bcrypt_cost.to_string(), given);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
    for given in ["3", "32", "0"] {
        let c = ok(&["--bcrypt-cost", given]);
        assert_eq!(c.bcrypt_cost, 10);
        assert_eq!(
            c.warnings,
            vec![format!(
                "Use default bcrypt-cost 10 instead of the invalid value {given}"
            )]
        );
    }
    assert_eq!(
        err(&["--bcrypt-cost", "-1"]),
        "cairn: invalid value \"-1\" for flag --bcrypt-cost: expected a non-negative decimal integer"
    );
}

#[test]
fn auth_settings_come_from_variables_and_the_config_file() {
    let c = parse_with_env(
        &[],
        &[("ETCD_AUTH_TOKEN_TTL", "42"), ("CAIRN_BCRYPT_COST", "12")],
    )
    .expect("auth from the environment");
    assert_eq!(c.auth_token_ttl_secs, 42);
    assert_eq!(c.bcrypt_cost, 12);
    let file = yaml_file("auth-token: simple\nauth-token-ttl: 77\nbcrypt-cost: 5\n");
    let c = parse(&["--config-file", &path_of(&file)]).expect("auth keys load");
    assert_eq!(c.auth_token_ttl_secs, 77);
    assert_eq!(c.bcrypt_cost, 5);
}

#[test]
fn listen_client_addrs_resolve_localhost_and_allow_any_address() {
    let c = ok(&[
        "--listen-client-urls",
        "http://localhost:2379,http://0.0.0.0:12379,http://[::1]:2379,http://localhost:2379",
        "--advertise-client-urls",
        "http://10.0.0.1:2379",
    ]);
    let addrs: Vec<SocketAddr> = ["0.0.0.0:12379", "[::1]:2379", "127.0.0.1:2379"]
        .iter()
        .map(|a| a.parse().expect("addr"))
        .collect();
    assert_eq!(
        c.listen_client_addrs(),
        addrs,
        "sorted by URL text, duplicates removed"
    );
}

#[test]
fn explicit_listen_client_urls_need_advertise_client_urls() {
    assert_eq!(
        err(&["--listen-client-urls", "http://0.0.0.0:2379"]),
        "cairn: --advertise-client-urls is required when --listen-client-urls is set explicitly"
    );
}

// ---- initial cluster ----

#[test]
fn initial_cluster_of_three_finds_this_member() {
    let c = ok(&[
        "--name",
        "infra1",
        "--initial-advertise-peer-urls",
        "http://10.0.1.11:2380",
        "--listen-peer-urls",
        "http://10.0.1.11:2380",
        "--initial-cluster",
        THREE,
        "--initial-cluster-token",
        "etcd-cluster-1",
    ]);
    let names: Vec<&str> = c.initial_cluster.keys().map(String::as_str).collect();
    assert_eq!(names, ["infra0", "infra1", "infra2"]);
    assert_eq!(
        c.initial_cluster["infra1"],
        vec![url("http://10.0.1.11:2380")]
    );
    let members = c.initial_members();
    assert_eq!(members.len(), 3);
    assert!(
        members.windows(2).all(|w| w[0].id < w[1].id),
        "ascending, distinct ids"
    );
    let me = members
        .iter()
        .find(|m| m.name == "infra1")
        .expect("this member is listed");
    assert_eq!(me.id, c.member_id());
}

#[test]
fn initial_cluster_name_may_repeat_for_several_urls() {
    let c = ok(&[
        "--initial-cluster",
        "default=http://10.0.0.2:2380,,default=http://10.0.0.1:2380",
        "--initial-advertise-peer-urls",
        "http://10.0.0.1:2380,http://10.0.0.2:2380",
    ]);
    assert_eq!(
        c.initial_cluster["default"],
        vec![url("http://10.0.0.1:2380"), url("http://10.0.0.2:2380")]
    );
}

#[test]
fn initial_cluster_syntax_errors() {
    assert_eq!(
        err(&["--initial-cluster", "infra0"]),
        "cairn: invalid value \"infra0\" for flag --initial-cluster: expected name=url, got \"infra0\""
    );
    assert_eq!(
        err(&["--initial-cluster", "=http://10.0.0.1:2380"]),
        "cairn: invalid value \"=http://10.0.0.1:2380\" for flag --initial-cluster: \
         member name must not be empty in \"=http://10.0.0.1:2380\""
    );
    assert_eq!(
        err(&["--initial-cluster", "a=10.0.0.1:2380"]),
        "cairn: invalid value \"a=10.0.0.1:2380\" for flag --initial-cluster: \
         URL scheme must be http or https: 10.0.0.1:2380"
    );
}

#[test]
fn this_member_missing_from_initial_cluster() {
    assert_eq!(
        err(&["--name", "infra9", "--initial-cluster", THREE]),
        "cairn: couldn't find local name \"infra9\" in the initial cluster configuration"
    );
    assert_eq!(
        err(&["--initial-cluster="]),
        "cairn: couldn't find local name \"default\" in the initial cluster configuration"
    );
}

#[test]
fn initial_cluster_url_not_advertised() {
    assert_eq!(
        err(&["--initial-cluster", "default=http://10.0.0.1:2380"]),
        "cairn: --initial-cluster has default=http://10.0.0.1:2380 but missing from \
         --initial-advertise-peer-urls=http://localhost:2380"
    );
}

#[test]
fn advertised_url_not_in_initial_cluster() {
    assert_eq!(
        err(&[
            "--initial-advertise-peer-urls",
            "http://10.0.0.1:2380,http://10.0.0.2:2380",
            "--initial-cluster",
            "default=http://10.0.0.1:2380",
        ]),
        "cairn: --initial-advertise-peer-urls has http://10.0.0.2:2380 but missing from \
         --initial-cluster=default=http://10.0.0.1:2380,default=http://10.0.0.2:2380"
    );
}

#[test]
fn joining_an_existing_cluster_skips_the_advertise_match() {
    // etcd's VerifyJoinExisting checks the local name and duplicates only.
    let c = ok(&[
        "--initial-cluster-state",
        "existing",
        "--initial-cluster",
        "default=http://10.0.0.1:2380,b=http://10.0.0.2:2380",
    ]);
    assert_eq!(c.initial_cluster_state, ClusterState::Existing);
    assert!(!c.is_new_cluster());
}

#[test]
fn duplicate_urls_across_members() {
    assert_eq!(
        err(&[
            "--name",
            "a",
            "--initial-advertise-peer-urls",
            "http://10.0.0.1:2380",
            "--initial-cluster",
            "a=http://10.0.0.1:2380,b=http://10.0.0.1:2380",
        ]),
        "cairn: initial cluster a=http://10.0.0.1:2380,b=http://10.0.0.1:2380 has duplicate url \
         http://10.0.0.1:2380"
    );
    assert_eq!(
        err(&[
            "--initial-cluster-state", "existing",
            "--initial-cluster", "default=http://10.0.0.1:2380,default=http://10.0.0.1:2380",
        ]),
        "cairn: initial cluster default=http://10.0.0.1:2380,default=http://10.0.0.1:2380 has duplicate \
         url http://10.0.0.1:2380"
    );
}

#[test]
fn initial_cluster_state_must_be_new_or_existing() {
    assert_eq!(
        err(&["--initial-cluster-state", "join"]),
        "cairn: invalid value \"join\" for flag --initial-cluster-state: valid values are \"new\" and \"existing\""
    );
}

// ---- timing and limits ----

#[test]
fn heartbeat_and_election_errors_use_etcd_messages() {
    assert_eq!(
        err(&["--heartbeat-interval=0"]),
        "cairn: --heartbeat-interval must be >0 (set to 0ms)"
    );
    assert_eq!(
        err(&["--election-timeout=0"]),
        "cairn: --election-timeout must be >0 (set to 0ms)"
    );
    assert_eq!(
        err(&["--heartbeat-interval=300"]),
        "cairn: --election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"
    );
    assert_eq!(
        err(&["--heartbeat-interval=2000"]),
        "cairn: --election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[2000ms]"
    );
    assert_eq!(
        err(&["--heartbeat-interval=1000", "--election-timeout=60000"]),
        "cairn: --election-timeout[60000ms] is too long, and should be set less than 50000ms"
    );
}

#[test]
fn election_ticks_is_timeout_over_heartbeat() {
    assert_eq!(ok(&[]).election_ticks(), 10);
    assert_eq!(ok(&["--heartbeat-interval=200"]).election_ticks(), 5);
    assert_eq!(
        ok(&["--heartbeat-interval=150", "--election-timeout=1000"]).election_ticks(),
        6
    );
    assert_eq!(
        ok(&["--heartbeat-interval=1000", "--election-timeout=50000"]).election_ticks(),
        50
    );
}

#[test]
fn zero_limits_are_refused_or_mean_the_default() {
    assert_eq!(
        err(&["--max-txn-ops=0"]),
        "cairn: --max-txn-ops must be >0 (set to 0)"
    );
    assert_eq!(
        err(&["--max-request-bytes=0"]),
        "cairn: --max-request-bytes must be >0 (set to 0)"
    );
    assert_eq!(
        ok(&["--snapshot-count=0"]).snapshot_count,
        DEFAULT_SNAPSHOT_COUNT
    );
    assert_eq!(
        ok(&["--quota-backend-bytes=0"]).quota_backend_bytes,
        DEFAULT_QUOTA_BACKEND_BYTES
    );
    assert_eq!(
        ok(&["--quota-backend-bytes=1048576"]).quota_backend_bytes,
        1_048_576
    );
}

#[test]
fn a_quota_above_8_gib_is_accepted_with_a_warning_as_etcd() {
    let at_max = ok(&["--quota-backend-bytes=8589934592"]);
    assert!(!at_max.warnings.iter().any(|w| w.contains("quota")));
    let above = ok(&["--quota-backend-bytes=8589934593"]);
    assert_eq!(above.quota_backend_bytes, 8_589_934_593);
    assert!(
        above
            .warnings
            .iter()
            .any(|w| w.contains("exceeds the maximum recommended quota")),
        "{:?}",
        above.warnings
    );
}

#[test]
fn bad_numbers_are_errors() {
    let digits = "expected a non-negative decimal integer";
    for (value, reason) in [
        ("abc", digits),
        ("-1", digits),
        ("1.5", digits),
        ("", digits),
        ("0x10", digits),
        ("99999999999999999999", "value out of range"),
    ] {
        assert_eq!(
            err(&["--snapshot-count", value]),
            format!("cairn: invalid value {value:?} for flag --snapshot-count: {reason}")
        );
    }
}

#[test]
fn empty_name_is_refused() {
    assert_eq!(
        err(&["--name="]),
        "cairn: invalid value \"\" for flag --name: must not be empty"
    );
}

// ---- logging and compaction ----

#[test]
fn log_levels_as_etcd() {
    for (text, level) in [
        ("debug", LogLevel::Debug),
        ("info", LogLevel::Info),
        ("warn", LogLevel::Warn),
        ("error", LogLevel::Error),
        ("dpanic", LogLevel::DPanic),
        ("panic", LogLevel::Panic),
        ("fatal", LogLevel::Fatal),
    ] {
        assert_eq!(ok(&["--log-level", text]).log_level, level);
    }
    assert_eq!(
        err(&["--log-level", "verbose"]),
        "cairn: invalid value \"verbose\" for flag --log-level: \
         unknown level; valid levels are debug, info, warn, error, dpanic, panic, fatal"
    );
    assert_eq!(LogLevel::Debug.tracing_level(), tracing::Level::DEBUG);
    assert_eq!(LogLevel::Fatal.tracing_level(), tracing::Level::ERROR);
}

#[test]
fn log_outputs_as_etcd_default_being_stderr() {
    assert_eq!(ok(&[]).log_outputs, vec!["stderr"]);
    assert_eq!(
        ok(&["--log-outputs", "default,stdout,/var/log/c.log,stderr"]).log_outputs,
        vec!["stderr", "stdout", "/var/log/c.log"]
    );
    let file = yaml_file("name: a\nlog-outputs: [stdout, /tmp/x.log]\n");
    let c = parse(&["--config-file", &path_of(&file)]).expect("a list in the file");
    assert_eq!(c.log_outputs, vec!["stdout", "/tmp/x.log"]);
}

#[test]
fn log_format_is_json_unless_text_is_asked_for() {
    assert_eq!(ok(&[]).log_format, LogFormat::Json);
    assert_eq!(ok(&["--log-format", "text"]).log_format, LogFormat::Text);
    assert_eq!(
        err(&["--log-format", "xml"]),
        "cairn: invalid value \"xml\" for flag --log-format: unknown log format; valid values are \"json\" and \"text\""
    );
}

#[test]
fn logger_accepts_only_zap() {
    assert!(parse(&["--logger", "zap"]).is_ok());
    assert_eq!(
        err(&["--logger", "capnslog"]),
        "cairn: invalid value \"capnslog\" for flag --logger: unknown logger option; the only valid value is \"zap\""
    );
}

#[test]
fn auto_compaction_as_etcd() {
    let compaction = |args: &[&str]| ok(args).auto_compaction;
    assert_eq!(
        compaction(&["--auto-compaction-retention=1"]),
        AutoCompaction::Periodic(Duration::from_secs(3600))
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention=30m"]),
        AutoCompaction::Periodic(Duration::from_secs(1800))
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention=0"]),
        AutoCompaction::Disabled
    );
    assert_eq!(
        compaction(&["--auto-compaction-retention=0s"]),
        AutoCompaction::Disabled
    );
    assert_eq!(
        compaction(&[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1000"
        ]),
        AutoCompaction::Revision(1000)
    );
    assert_eq!(
        err(&["--auto-compaction-mode=revision", "--auto-compaction-retention=5m"]),
        "cairn: invalid value \"5m\" for flag --auto-compaction-retention: revision mode takes a number of revisions"
    );
    assert_eq!(
        err(&["--auto-compaction-mode=daily"]),
        "cairn: invalid value \"daily\" for flag --auto-compaction-mode: \
         valid modes are \"periodic\" and \"revision\""
    );
    assert_eq!(
        err(&["--auto-compaction-retention=-1"]),
        "cairn: invalid value \"-1\" for flag --auto-compaction-retention: \
         expected a duration such as 1h, 30m or 90s, got \"-1\""
    );
}

#[test]
fn values_go_durations() {
    for (text, expected) in [
        ("0", Duration::ZERO),
        ("1h", Duration::from_secs(3600)),
        ("1.5h", Duration::from_secs(5400)),
        ("1h30m", Duration::from_secs(5400)),
        ("90s", Duration::from_secs(90)),
        ("+5m", Duration::from_secs(300)),
        ("500ms", Duration::from_millis(500)),
        ("2us", Duration::from_micros(2)),
        ("3µs", Duration::from_micros(3)),
        ("7ns", Duration::from_nanos(7)),
        (".5s", Duration::from_millis(500)),
    ] {
        assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
    }
    for bad in ["", "5", "h", "-1h", "1d", "1h 30m", ".s", "1..5s"] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?} should be refused");
    }
}

// ---- ids ----

#[test]
fn ids_sha1_test_vectors() {
    assert_eq!(
        ids::sha1_hex(b"abc"),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(
        ids::sha1_hex(b""),
        "da39a3ee5e6b4b0d3255bfef95601890afd80709"
    );
}

#[test]
fn ids_match_etcd_for_the_default_member() {
    // A default `etcd` logs member 8e9e05c52164694d of cluster cdf818194e3a8c32.
    let c = ok(&[]);
    assert_eq!(c.member_id(), NodeId(0x8e9e05c52164694d));
    assert_eq!(c.cluster_id(), ClusterId(0xcdf818194e3a8c32));
    assert_eq!(c.cluster_id().to_string(), "cdf818194e3a8c32");
}

#[test]
fn ids_are_stable_across_parses_and_url_order() {
    let a = ok(&[
        "--name",
        "infra0",
        "--initial-advertise-peer-urls",
        "http://10.0.1.10:2380",
        "--initial-cluster",
        THREE,
    ]);
    let b = ok(&[
        "--initial-cluster",
        THREE,
        "--initial-advertise-peer-urls",
        "http://10.0.1.10:2380",
        "-name=infra0",
    ]);
    assert_eq!(a.member_id(), b.member_id());
    assert_eq!(a.cluster_id(), b.cluster_id());
    let urls = [url("http://10.0.0.2:2380"), url("http://10.0.0.1:2380")];
    let reversed = [urls[1].clone(), urls[0].clone()];
    assert_eq!(member_id(&urls, "t"), member_id(&reversed, "t"));
}

#[test]
fn ids_are_distinct_across_members_tokens_and_clusters() {
    let c = ok(&[
        "--name",
        "infra0",
        "--initial-advertise-peer-urls",
        "http://10.0.1.10:2380",
        "--initial-cluster",
        THREE,
    ]);
    let ids: std::collections::BTreeSet<NodeId> =
        c.initial_members().iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&NodeId(0)));
    let other_token = ok(&[
        "--name",
        "infra0",
        "--initial-advertise-peer-urls",
        "http://10.0.1.10:2380",
        "--initial-cluster",
        THREE,
        "--initial-cluster-token",
        "other",
    ]);
    assert_ne!(c.member_id(), other_token.member_id());
    assert_ne!(c.cluster_id(), other_token.cluster_id());
    let mut two = c.initial_cluster.clone();
    two.remove("infra2");
    assert_ne!(cluster_id(&two, "etcd-cluster"), c.cluster_id());
    assert_eq!(
        cluster_id(&c.initial_cluster, "etcd-cluster"),
        c.cluster_id()
    );
}

#[test]
fn member_name_is_not_part_of_the_member_id() {
    // As in etcd: the id depends on peer URLs and token only.
    let a = ok(&["--name", "x"]);
    let b = ok(&["--name", "y"]);
    assert_eq!(a.member_id(), b.member_id());
}

#[test]
fn watch_progress_notify_interval_is_a_go_duration_with_zero_meaning_etcds_default() {
    let interval = |args: &[&str]| ok(args).watch_progress_notify_interval;
    let flag = "--experimental-watch-progress-notify-interval";
    assert_eq!(interval(&[&format!("{flag}=30s")]), Duration::from_secs(30));
    assert_eq!(interval(&[flag, "1m30s"]), Duration::from_secs(90));
    assert_eq!(interval(&[&format!("{flag}=0")]), Duration::from_secs(600));
    assert_eq!(
        parse_with_env(
            &[],
            &[("CAIRN_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL", "250ms")]
        )
        .expect("env")
        .watch_progress_notify_interval,
        Duration::from_millis(250)
    );
    assert_eq!(
        err(&[&format!("{flag}=10")]),
        "cairn: invalid value \"10\" for flag --experimental-watch-progress-notify-interval: \
         expected a duration such as 1h, 30m or 90s, got \"10\""
    );
}

#[test]
fn metrics_level_is_basic_unless_extensive_is_asked_for() {
    assert!(!ok(&[]).metrics_extensive);
    assert!(ok(&["--metrics", "extensive"]).metrics_extensive);
    assert!(!ok(&["--metrics=basic"]).metrics_extensive);
    assert_eq!(
        err(&["--metrics", "full"]),
        "cairn: invalid value \"full\" for flag --metrics: valid values are \"basic\" and \"extensive\""
    );
}

#[test]
fn listen_metrics_urls_are_none_by_default_and_must_be_bindable() {
    assert!(ok(&[]).listen_metrics_urls.is_empty());
    let c = ok(&[
        "--listen-metrics-urls",
        "http://127.0.0.1:2381,https://127.0.0.1:2382",
    ]);
    let urls: Vec<String> = c
        .listen_metrics_urls
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(urls, ["http://127.0.0.1:2381", "https://127.0.0.1:2382"]);
    let e = err(&["--listen-metrics-urls", "http://example.com:2381"]);
    assert!(e.starts_with("cairn: "), "{e}");
}
