//! Configuration of the `cairn` server: etcd 3.5's flags, `CAIRN_*` and
//! etcd's `ETCD_*` environment variables and a YAML `--config-file` with
//! etcd's keys, parsed and validated into a [`Config`] the server can use
//! without further checks.
//!
//! # Where settings come from (etcd 3.5's rules)
//! - With `--config-file <path>` (or `CAIRN_CONFIG_FILE`, then
//!   `ETCD_CONFIG_FILE`, read only when the flag is absent), the file is the
//!   whole configuration: every other flag and variable is ignored, as etcd
//!   ignores them. cairn lists what it ignored in [`Config::warnings`] for the
//!   server to log.
//! - Otherwise, strongest first: a flag, then `CAIRN_<FLAG>`, then
//!   `ETCD_<FLAG>`, then the default. Variable names are the prefix + the flag
//!   in upper snake case (`CAIRN_DATA_DIR`, `ETCD_DATA_DIR`); an empty variable
//!   counts as unset (as in etcd). `ETCD_*` is read so that etcd's own
//!   deployments — and the `ETCD_NAME`, `ETCD_INITIAL_CLUSTER`,
//!   `ETCD_INITIAL_ADVERTISE_PEER_URLS`, `ETCD_INITIAL_CLUSTER_STATE` lines
//!   `etcdctl member add` prints — work unchanged; `CAIRN_*` beats it so an
//!   operator can override one setting of such an environment. A variable
//!   that loses to a stronger source with a different value is listed in the
//!   warnings; an error names the variable whose value was used.
//! - Flags use Go's syntax (`--a=b`, `--a b`, `-a b`, `-a=b`, bare booleans),
//!   see `args.rs`. Unknown flags are errors; unknown config-file keys are
//!   ignored (etcd reads the file leniently) and listed in the warnings.
//!
//! # Invariants of a `Config`
//! Every URL is `http://host:port` or `https://host:port`; listen URLs have
//! an IP or `localhost` host; URL lists are sorted and
//! free of duplicates; `initial_cluster` contains `name`, and for a new
//! cluster at exactly `initial_advertise_peer_urls`; no URL belongs to two
//! members; `election_timeout` ≥ 5 × `heartbeat_interval` > 0 and ≤ 50 s;
//! `max_txn_ops`, `max_request_bytes`, `snapshot_count` and
//! `quota_backend_bytes` are positive (0 given for the last two means etcd's
//! default, resolved here). A side (client, peer) with an `https://` listen
//! URL has a certificate and key, or auto TLS ([`TlsSettings::uses_tls`]);
//! client-certificate auth on such a side has a trusted CA file; every
//! cipher suite named is one rustls has. TLS files are not read here: the
//! member reads them when it starts (`process.rs`), and again when they
//! change.
//!
//! # Errors
//! One line each, starting with `cairn: `, in etcd's words where etcd has a
//! message for the same mistake ([`ConfigError`]). `--help` and `--version`
//! come back as `ConfigError::Help` / `ConfigError::Version` holding the text
//! to print on stdout; [`ConfigError::exit_code`] says 0 for those, 1 otherwise.
//!
//! Tests: `src/config/tests.rs` (`cargo test --workspace --lib config`).

mod args;
mod build;
mod error;
mod file;
mod ids;
mod spec;
mod url;
mod values;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cairn_runtime::NodeId;

pub use error::ConfigError;
pub use ids::{cluster_id, member_id, ClusterId};
pub(crate) use url::parse_initial_cluster;
pub use url::{Scheme, Url};
pub use values::{
    AuthToken, AutoCompaction, ClusterState, LogFormat, LogLevel, DEFAULT_BCRYPT_COST,
    JWT_SIGN_METHODS, MAX_BCRYPT_COST, MIN_BCRYPT_COST,
};

use build::{Origin, Settings};

/// `--name` when none is given.
pub const DEFAULT_NAME: &str = "default";
/// Default listen and advertise client URL.
pub const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";
/// Default listen and advertise peer URL.
pub const DEFAULT_PEER_URL: &str = "http://localhost:2380";
/// `--initial-cluster-token` when none is given.
pub const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";
/// `--snapshot-count` when none (or 0) is given.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// Above this quota (etcd's 8 GiB), the member warns at start, as etcd does.
pub const MAX_RECOMMENDED_QUOTA_BACKEND_BYTES: u64 = 8 << 30;
/// The backend quota `--quota-backend-bytes=0` stands for: 2 GiB, as etcd.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// `--experimental-watch-progress-notify-interval` when none (or 0) is given.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// etcd's upper bound on `--election-timeout`.
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;

/// The validated configuration of one cairn member (invariants: module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--name`: this member's name, a key of `initial_cluster`. Never empty.
    pub name: String,
    /// `--data-dir`; defaults to `<name>.cairn`.
    pub data_dir: PathBuf,
    /// `--listen-client-urls`: where to serve clients (IP or localhost hosts).
    pub listen_client_urls: Vec<Url>,
    /// `--advertise-client-urls`: how clients reach this member.
    pub advertise_client_urls: Vec<Url>,
    /// `--listen-peer-urls`: where to serve other members (IP or localhost hosts).
    pub listen_peer_urls: Vec<Url>,
    /// `--initial-advertise-peer-urls`: how other members reach this one.
    pub initial_advertise_peer_urls: Vec<Url>,
    /// `--initial-cluster`: member name → its peer URLs (sorted), for bootstrap.
    pub initial_cluster: BTreeMap<String, Vec<Url>>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`: part of the member and cluster ids.
    pub initial_cluster_token: String,
    /// `--heartbeat-interval`: one Raft tick. > 0.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`: ≥ 5 × `heartbeat_interval`, ≤ 50 s.
    pub election_timeout: Duration,
    /// `--pre-vote` (etcd 3.5's default: on).
    pub pre_vote: bool,
    /// `--check-quorum` (cairn's own; on, as etcd always runs it).
    pub check_quorum: bool,
    /// `--snapshot-count`: applied entries between snapshots. > 0.
    pub snapshot_count: u64,
    /// `--max-txn-ops`. > 0.
    pub max_txn_ops: usize,
    /// `--max-request-bytes`. > 0.
    pub max_request_bytes: usize,
    /// `--quota-backend-bytes`, with 0 resolved to 2 GiB. > 0.
    pub quota_backend_bytes: u64,
    /// `--auto-compaction-mode` and `--auto-compaction-retention` together.
    pub auto_compaction: AutoCompaction,
    /// `--log-level`.
    pub log_level: LogLevel,
    /// `--log-format` (cairn's own): JSON lines (etcd's fields) or text.
    pub log_format: LogFormat,
    /// `--log-outputs`: `stderr`, `stdout` or file paths (`default` is
    /// stderr), in order, without repeats.
    pub log_outputs: Vec<String>,
    /// `--enable-pprof`: accepted, no effect (cairn serves no Go profiles).
    pub enable_pprof: bool,
    /// `--enable-v2`: serve the v2 keys API.
    pub enable_v2: bool,
    /// `--discovery`: bootstrap through etcd's v2 discovery protocol.
    pub discovery: Option<String>,
    /// `--discovery-fallback`: `exit` or `proxy` (both exit in cairn).
    pub discovery_fallback: String,
    /// `--discovery-srv` and `--discovery-srv-name`.
    pub discovery_srv: Option<String>,
    pub discovery_srv_name: String,
    /// `--listen-metrics-urls`: more URLs serving the client port's HTTP
    /// endpoints (`/metrics`, `/health`, `/livez`, `/readyz`) only.
    pub listen_metrics_urls: Vec<Url>,
    /// `--metrics extensive` (`basic` otherwise): keep gRPC handling times.
    pub metrics_extensive: bool,
    /// `--experimental-watch-progress-notify-interval`, with 0 resolved to
    /// etcd's 10 minutes. > 0.
    pub watch_progress_notify_interval: Duration,
    /// `--experimental-initial-corrupt-check` (on by default here; etcd's
    /// default is off).
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time` (1 minute by default here, etcd's
    /// default 0 = off); zero turns the periodic check off.
    pub corrupt_check_time: Duration,
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`,
    /// `--auto-tls`: TLS of the client URLs.
    pub client_tls: TlsSettings,
    /// `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`,
    /// `--peer-client-cert-auth`, `--peer-auto-tls`: TLS of the peer URLs.
    pub peer_tls: TlsSettings,
    /// `--cipher-suites`: Go's names, each one rustls has; empty: the defaults.
    pub cipher_suites: Vec<String>,
    /// `--auth-token` as given (`simple` by default).
    pub auth_token_spec: String,
    /// `--auth-token`, parsed (JWT key files checked readable).
    pub auth_token: AuthToken,
    /// `--auth-token-ttl`: seconds a simple token lives after its last use.
    pub auth_token_ttl_secs: u64,
    /// `--bcrypt-cost`, within 4..=31 (another value given means 10, with a
    /// warning, as etcd 3.4).
    pub bcrypt_cost: u32,
    /// The config file read, if any (then flags and variables were ignored).
    pub config_file: Option<PathBuf>,
    /// Settings accepted but without effect (ignored flags and variables,
    /// unknown file keys, no-op flags), one sentence each, for the server to log.
    pub warnings: Vec<String>,
}

/// One side's TLS settings (client or peer), as given. Which are used is
/// decided by the side's URLs: see [`TlsSettings::uses_tls`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    pub auto_tls: bool,
}

impl TlsSettings {
    /// No certificate or key given (etcd's `TLSInfo.Empty()`).
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Whether a self-signed certificate is to be made: auto TLS asked and
    /// no certificate given (given ones win, as in etcd).
    pub fn uses_auto_tls(&self) -> bool {
        self.auto_tls && self.is_empty()
    }

    /// Whether this side can serve TLS: a certificate and key, or auto TLS.
    pub fn uses_tls(&self) -> bool {
        (self.cert_file.is_some() && self.key_file.is_some()) || self.uses_auto_tls()
    }
}

/// One member of the initial cluster, with its bootstrap id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub id: NodeId,
    pub name: String,
    pub peer_urls: Vec<Url>,
}

impl Config {
    /// Parses the process's own arguments and environment (for the binary).
    pub fn from_env_and_args() -> Result<Config, ConfigError> {
        parse_args(std::env::args().skip(1), &|key| std::env::var(key).ok())
    }

    /// Raft ticks in an election timeout: `election_timeout / heartbeat_interval`
    /// (≥ 5 by the invariants).
    pub fn election_ticks(&self) -> usize {
        let ticks = self.election_timeout.as_millis() / self.heartbeat_interval.as_millis();
        usize::try_from(ticks).expect("election timeout ≤ 50 s keeps ticks ≤ 50000")
    }

    /// The addresses to serve clients on (`localhost` is 127.0.0.1).
    pub fn listen_client_addrs(&self) -> Vec<SocketAddr> {
        bind_addrs(&self.listen_client_urls)
    }

    /// The addresses to serve peers on (`localhost` is 127.0.0.1).
    pub fn listen_peer_addrs(&self) -> Vec<SocketAddr> {
        bind_addrs(&self.listen_peer_urls)
    }

    /// Whether any client URL this member listens on is `https://`.
    pub fn serves_client_tls(&self) -> bool {
        self.listen_client_urls.iter().any(Url::is_tls)
    }

    /// Whether any peer URL this member listens on is `https://`.
    pub fn serves_peer_tls(&self) -> bool {
        self.listen_peer_urls.iter().any(Url::is_tls)
    }

    /// The hosts a self-signed certificate of the client side names: the
    /// listen and advertise client URLs' hosts.
    pub fn client_hosts(&self) -> Vec<String> {
        hosts_of(
            self.listen_client_urls
                .iter()
                .chain(&self.advertise_client_urls),
        )
    }

    /// The hosts a self-signed peer certificate names: the listen and
    /// advertise peer URLs' hosts.
    pub fn peer_hosts(&self) -> Vec<String> {
        hosts_of(
            self.listen_peer_urls
                .iter()
                .chain(&self.initial_advertise_peer_urls),
        )
    }

    /// Whether this member bootstraps a new cluster.
    pub fn is_new_cluster(&self) -> bool {
        self.initial_cluster_state == ClusterState::New
    }

    /// This member's bootstrap id (see `member_id`; a member joining an
    /// existing cluster learns its real id from the cluster).
    pub fn member_id(&self) -> NodeId {
        let urls = self
            .initial_cluster
            .get(&self.name)
            .expect("validated: name is in initial_cluster");
        member_id(urls, &self.initial_cluster_token)
    }

    /// The id of the cluster `initial_cluster` bootstraps.
    pub fn cluster_id(&self) -> ClusterId {
        cluster_id(&self.initial_cluster, &self.initial_cluster_token)
    }

    /// Every initial member with its id, in ascending id order.
    pub fn initial_members(&self) -> Vec<InitialMember> {
        let mut members: Vec<InitialMember> = self
            .initial_cluster
            .iter()
            .map(|(name, urls)| InitialMember {
                id: member_id(urls, &self.initial_cluster_token),
                name: name.clone(),
                peer_urls: urls.clone(),
            })
            .collect();
        members.sort_by_key(|m| m.id);
        members
    }
}

fn hosts_of<'a>(urls: impl Iterator<Item = &'a Url>) -> Vec<String> {
    let hosts: std::collections::BTreeSet<String> = urls.map(|u| u.host.clone()).collect();
    hosts.into_iter().collect()
}

fn bind_addrs(urls: &[Url]) -> Vec<SocketAddr> {
    urls.iter()
        .map(|u| {
            u.socket_addr()
                .expect("validated: listen URL hosts are IPs or localhost")
        })
        .collect()
}

/// Parses `args` (without the program name) and the environment seen through
/// `env` (a fake in tests) into a validated [`Config`].
pub fn parse_args<I: IntoIterator<Item = String>>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let line = args::scan(args.into_iter().collect())?;
    if line.version {
        return Err(ConfigError::Version(spec::version_text()));
    }
    let settings = match config_file_path(&line, env) {
        Some(path) => settings_from_file(path, line, env)?,
        None => settings_from_line_and_env(line, env),
    };
    build::build(settings)
}

/// A variable's value, with empty meaning unset (as etcd's env lookup).
fn env_value(env: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    env(var).filter(|v| !v.is_empty())
}

/// The variables set (non-empty) for flag `name`, strongest first, each as
/// (variable, value): `CAIRN_<FLAG>`, then `ETCD_<FLAG>`.
fn env_values(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Vec<(String, String)> {
    spec::env_names(name)
        .into_iter()
        .filter_map(|var| env_value(env, &var).map(|value| (var, value)))
        .collect()
}

/// `--config-file` (last one wins), else `CAIRN_CONFIG_FILE`, else `ETCD_CONFIG_FILE`.
fn config_file_path(
    line: &args::CommandLine,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let from_flag = line.set.iter().rev().find(|(f, _)| f.name == "config-file");
    match from_flag {
        Some((_, path)) if !path.is_empty() => Some(path.clone()),
        _ => env_values(env, "config-file")
            .into_iter()
            .next()
            .map(|(_, path)| path),
    }
}

fn settings_from_line_and_env(
    line: args::CommandLine,
    env: &dyn Fn(&str) -> Option<String>,
) -> Settings {
    let mut settings = Settings::default();
    for (flag, text) in line.set {
        settings.set(flag, text, Origin::Flag(flag.name));
    }
    for flag in spec::FLAGS {
        for (var, text) in env_values(env, flag.name) {
            let shadowed = match settings.get(flag.name) {
                Some((winner, origin)) if winner != text.as_str() => Some(origin.to_string()),
                _ => None,
            };
            if let Some(winner) = shadowed {
                settings
                    .warnings
                    .push(format!("ignoring {var}: {winner} is set and wins"));
            }
            settings.set_if_unset(flag, text, Origin::Env(var));
        }
    }
    settings
}

fn settings_from_file(
    path: String,
    line: args::CommandLine,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let loaded = file::load(&path)?;
    let mut settings = Settings::for_file(&path);
    for (flag, text) in loaded.set {
        settings.set(
            flag,
            text,
            Origin::File {
                key: flag.name,
                path: path.clone(),
            },
        );
    }
    for key in loaded.unknown_keys {
        settings.warnings.push(format!(
            "ignoring config file key {key:?}: cairn does not use it"
        ));
    }
    let ignored_flags: std::collections::BTreeSet<&str> = line
        .set
        .iter()
        .map(|(f, _)| f.name)
        .filter(|n| *n != "config-file")
        .collect();
    for name in ignored_flags {
        settings.warnings.push(format!(
            "ignoring flag --{name} because --config-file is given"
        ));
    }
    for flag in spec::FLAGS.iter().filter(|f| f.name != "config-file") {
        for (var, _) in env_values(env, flag.name) {
            settings
                .warnings
                .push(format!("ignoring {var} because --config-file is given"));
        }
    }
    Ok(settings)
}
