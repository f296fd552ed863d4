//! From raw settings (text, each with where it came from) to a validated
//! [`Config`]: defaults, parsing, then the cross-setting checks in etcd's
//! order (flag checks of `embed.Config.Validate`, then the bootstrap checks of
//! `VerifyBootstrap` / `VerifyJoinExisting`). The first failure is returned.
//! Tests: `super::tests`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::error::ConfigError;
use super::spec::FlagSpec;
use super::url::{self, Url};
use super::values::{self, AuthToken, ClusterState};
use super::{Config, TlsSettings};

/// Where a setting's text came from, for error messages.
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    Flag(&'static str),
    Env(String),
    File { key: &'static str, path: String },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag(name) => write!(f, "flag --{name}"),
            Origin::Env(var) => f.write_str(var),
            Origin::File { key, path } => write!(f, "{key} in {path}"),
        }
    }
}

/// The settings given explicitly, by flag name. Invariant: all come from one
/// world — the config file, or flags and `CAIRN_*` / `ETCD_*` variables
/// (never both).
#[derive(Debug, Default)]
pub(crate) struct Settings {
    values: BTreeMap<&'static str, (String, Origin)>,
    pub from_file: bool,
    pub config_file: Option<PathBuf>,
    pub warnings: Vec<String>,
}

impl Settings {
    /// Settings read from the config file at `path`.
    pub fn for_file(path: &str) -> Settings {
        Settings {
            from_file: true,
            config_file: Some(PathBuf::from(path)),
            ..Settings::default()
        }
    }

    /// Records `flag = text` unless it is already set (the caller adds the
    /// stronger source first).
    pub fn set_if_unset(&mut self, flag: &FlagSpec, text: String, origin: Origin) {
        self.values.entry(flag.name).or_insert((text, origin));
    }

    /// Records `flag = text`, replacing an earlier value (repeated flags).
    pub fn set(&mut self, flag: &FlagSpec, text: String, origin: Origin) {
        self.values.insert(flag.name, (text, origin));
    }

    /// The text of setting `name` and where it came from, if it is set.
    pub fn get(&self, name: &str) -> Option<(&str, &Origin)> {
        self.values
            .get(name)
            .map(|(text, origin)| (text.as_str(), origin))
    }

    fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|(text, _)| text.as_str())
    }

    /// Parses setting `name` (or `default` when unset) with `parse`.
    /// Defaults are built-in constants, so a default that fails is a bug.
    fn parse<T>(
        &self,
        name: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let Some((text, origin)) = self.values.get(name) else {
            return Ok(parse(default).unwrap_or_else(|e| {
                panic!("built-in default {default:?} of --{name} must parse: {e}")
            }));
        };
        parse(text).map_err(|reason| ConfigError::InvalidValue {
            value: text.clone(),
            origin: origin.to_string(),
            reason,
        })
    }

    /// Parses URL list `name`.
    fn urls(&self, name: &'static str, default: &str, bind: bool) -> Result<Vec<Url>, ConfigError> {
        self.parse(name, default, |text| {
            let urls = url::parse_url_list(text)?;
            if bind {
                urls.iter().try_for_each(Url::check_bindable)?;
            }
            Ok(urls)
        })
    }

    /// A path setting; unset or empty is `None`.
    fn path(&self, name: &str) -> Option<PathBuf> {
        self.text(name).filter(|t| !t.is_empty()).map(PathBuf::from)
    }

    /// One side's TLS settings; `prefix` is `""` or `"peer-"`.
    fn tls(&self, prefix: &str) -> Result<TlsSettings, ConfigError> {
        let name = |n: &str| format!("{prefix}{n}");
        let flag = |n: &str| {
            super::spec::lookup(&name(n))
                .expect("every TLS setting has a row in the flag table")
                .name
        };
        Ok(TlsSettings {
            cert_file: self.path(&name("cert-file")),
            key_file: self.path(&name("key-file")),
            trusted_ca_file: self.path(&name("trusted-ca-file")),
            client_cert_auth: self.parse(flag("client-cert-auth"), "false", values::parse_bool)?,
            auto_tls: self.parse(flag("auto-tls"), "false", values::parse_bool)?,
        })
    }
}

fn parse_cipher_suites(text: &str) -> Result<Vec<String>, String> {
    Ok(text
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect())
}

fn non_empty(text: &str) -> Result<String, String> {
    match text {
        "" => Err("must not be empty".to_string()),
        _ => Ok(text.to_string()),
    }
}

/// Builds and validates the configuration.
pub(crate) fn build(settings: Settings) -> Result<Config, ConfigError> {
    let s = &settings;
    let name = s.parse("name", super::DEFAULT_NAME, non_empty)?;
    let data_dir = match s.text("data-dir") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(format!("{name}.cairn")),
    };
    let heartbeat_ms = s.parse("heartbeat-interval", "100", values::parse_u64)?;
    let election_ms = s.parse("election-timeout", "1000", values::parse_u64)?;
    let listen_peer_urls = s.urls("listen-peer-urls", super::DEFAULT_PEER_URL, true)?;
    let listen_client_urls = s.urls("listen-client-urls", super::DEFAULT_CLIENT_URL, true)?;
    let initial_advertise_peer_urls = s.urls(
        "initial-advertise-peer-urls",
        super::DEFAULT_PEER_URL,
        false,
    )?;
    let advertise_client_urls =
        s.urls("advertise-client-urls", super::DEFAULT_CLIENT_URL, false)?;
    let initial_cluster = match s.is_set("initial-cluster") {
        true => s.parse("initial-cluster", "", url::parse_initial_cluster)?,
        // etcd's default: this member alone, at its advertised peer URLs.
        false => BTreeMap::from([(name.clone(), initial_advertise_peer_urls.clone())]),
    };
    let mode = s.parse(
        "auto-compaction-mode",
        "periodic",
        values::parse_compaction_mode,
    )?;
    s.parse("logger", "zap", values::parse_logger)?;
    let auth_token_spec = s.parse("auth-token", "simple", |t| Ok(t.to_string()))?;
    let bcrypt_cost_given = s.parse("bcrypt-cost", "10", values::parse_u64)?;
    let config = Config {
        client_tls: s.tls("")?,
        peer_tls: s.tls("peer-")?,
        cipher_suites: s.parse("cipher-suites", "", parse_cipher_suites)?,
        auth_token: AuthToken::Simple,
        auth_token_spec,
        auth_token_ttl_secs: s.parse("auth-token-ttl", "300", values::parse_u64)?,
        bcrypt_cost: match bcrypt_cost_given {
            c @ values::MIN_BCRYPT_COST..=values::MAX_BCRYPT_COST => {
                u32::try_from(c).expect("at most 31")
            }
            _ => values::DEFAULT_BCRYPT_COST,
        },
        initial_cluster_state: s.parse(
            "initial-cluster-state",
            "new",
            values::parse_cluster_state,
        )?,
        initial_cluster_token: s.parse(
            "initial-cluster-token",
            super::DEFAULT_CLUSTER_TOKEN,
            |t| Ok(t.to_string()),
        )?,
        snapshot_count: match s.parse("snapshot-count", "100000", values::parse_u64)? {
            0 => super::DEFAULT_SNAPSHOT_COUNT,
            n => n,
        },
        max_txn_ops: s.parse("max-txn-ops", "128", parse_usize)?,
        max_request_bytes: s.parse("max-request-bytes", "1572864", parse_usize)?,
        quota_backend_bytes: match s.parse("quota-backend-bytes", "0", values::parse_u64)? {
            0 => super::DEFAULT_QUOTA_BACKEND_BYTES,
            n => n,
        },
        auto_compaction: s.parse("auto-compaction-retention", "0", |t| {
            values::parse_retention(mode, t)
        })?,
        log_level: s.parse("log-level", "info", values::parse_log_level)?,
        log_format: s.parse("log-format", "json", values::parse_log_format)?,
        log_outputs: s.parse("log-outputs", "default", values::parse_log_outputs)?,
        enable_pprof: s.parse("enable-pprof", "false", values::parse_bool)?,
        enable_v2: s.parse("enable-v2", "false", values::parse_bool)?,
        discovery: Some(s.parse("discovery", "", |t| Ok(t.to_string()))?).filter(|d| !d.is_empty()),
        discovery_fallback: s.parse("discovery-fallback", "proxy", |t| match t {
            "exit" | "proxy" => Ok(t.to_string()),
            _ => Err("valid values are \"exit\" and \"proxy\"".to_string()),
        })?,
        discovery_srv: Some(s.parse("discovery-srv", "", |t| Ok(t.to_string()))?)
            .filter(|d| !d.is_empty()),
        discovery_srv_name: s.parse("discovery-srv-name", "", |t| Ok(t.to_string()))?,
        listen_metrics_urls: match s.text("listen-metrics-urls") {
            Some(t) if !t.trim().is_empty() => s.urls("listen-metrics-urls", "", true)?,
            _ => Vec::new(),
        },
        metrics_extensive: s.parse("metrics", "basic", values::parse_metrics_level)?,
        watch_progress_notify_interval: match s.parse(
            "experimental-watch-progress-notify-interval",
            "10m",
            values::parse_go_duration,
        )? {
            d if d.is_zero() => super::DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            d => d,
        },
        heartbeat_interval: Duration::from_millis(heartbeat_ms),
        election_timeout: Duration::from_millis(election_ms),
        pre_vote: s.parse("pre-vote", "true", values::parse_bool)?,
        check_quorum: s.parse("check-quorum", "true", values::parse_bool)?,
        initial_corrupt_check: s.parse(
            "experimental-initial-corrupt-check",
            "true",
            values::parse_bool,
        )?,
        corrupt_check_time: s.parse(
            "experimental-corrupt-check-time",
            "1m",
            values::parse_go_duration,
        )?,
        name,
        data_dir,
        listen_client_urls,
        advertise_client_urls,
        listen_peer_urls,
        initial_advertise_peer_urls,
        initial_cluster,
        config_file: settings.config_file.clone(),
        warnings: Vec::new(),
    };
    validate(s, &config, heartbeat_ms, election_ms)?;
    validate_tls(&config)?;
    let auth_token = auth_token(&config.auth_token_spec)?;
    let mut warnings = tls_warnings(&config);
    if bcrypt_cost_given != u64::from(config.bcrypt_cost) {
        // etcd 3.4's warning, word for word.
        warnings.push(format!(
            "Use default bcrypt-cost {} instead of the invalid value {bcrypt_cost_given}",
            values::DEFAULT_BCRYPT_COST
        ));
    }
    let mut config = Config {
        auth_token,
        ..config
    };
    warnings.splice(0..0, collect_warnings(settings, &config));
    config.warnings = warnings;
    Ok(config)
}

/// `--auth-token` parsed, its key files checked, errors in etcd's words.
fn auth_token(spec: &str) -> Result<AuthToken, ConfigError> {
    let refused = |e: values::AuthTokenError| match e {
        values::AuthTokenError::Invalid(detail) => ConfigError::InvalidAuthOptions(detail),
        values::AuthTokenError::MissingKeyData => ConfigError::MissingKeyData,
    };
    let token = values::parse_auth_token(spec).map_err(refused)?;
    values::check_auth_token_files(&token).map_err(refused)?;
    Ok(token)
}

/// etcd's TLS checks, in its order: cipher suites when the flags are read,
/// then the peer listeners, then the client listeners. cairn also refuses
/// client-certificate auth without a CA file on a side that serves TLS.
fn validate_tls(c: &Config) -> Result<(), ConfigError> {
    cairn_runtime::tls::check_cipher_suites(&c.cipher_suites).map_err(ConfigError::CipherSuite)?;
    if let Some(url) = c.listen_peer_urls.iter().find(|u| u.is_tls()) {
        if c.peer_tls.is_empty() && !c.peer_tls.auto_tls {
            return Err(ConfigError::PeerTlsMissing {
                addr: format!("{}:{}", url.host, url.port),
            });
        }
        check_side(&c.peer_tls, "peer-client-cert-auth", "peer-trusted-ca-file")?;
    }
    if let Some(url) = c.listen_client_urls.iter().find(|u| u.is_tls()) {
        if c.client_tls.is_empty() && !c.client_tls.auto_tls {
            return Err(ConfigError::ClientTlsMissing {
                url: url.to_string(),
            });
        }
        check_side(&c.client_tls, "client-cert-auth", "trusted-ca-file")?;
    }
    Ok(())
}

/// A side that serves TLS: both files or neither, a CA for client certs.
fn check_side(
    tls: &TlsSettings,
    auth_flag: &'static str,
    ca_flag: &'static str,
) -> Result<(), ConfigError> {
    if !tls.is_empty() && (tls.cert_file.is_none() || tls.key_file.is_none()) {
        let shown = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        return Err(ConfigError::KeyCertIncomplete {
            key: shown(&tls.key_file),
            cert: shown(&tls.cert_file),
        });
    }
    if tls.client_cert_auth && tls.trusted_ca_file.is_none() {
        return Err(ConfigError::ClientCertAuthWithoutCa { auth_flag, ca_flag });
    }
    Ok(())
}

/// etcd's warnings for TLS settings without effect.
fn tls_warnings(c: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if !c.client_tls.is_empty() {
        for url in c.listen_client_urls.iter().filter(|u| !u.is_tls()) {
            warnings.push(format!(
                "The scheme of client url {url} is HTTP while key/cert files are presented. Ignored key/cert files."
            ));
        }
    }
    if !c.peer_tls.is_empty() {
        for url in c.listen_peer_urls.iter().filter(|u| !u.is_tls()) {
            warnings.push(format!(
                "The scheme of peer url {url} is HTTP while peer key/cert files are presented. Ignored peer key/cert files."
            ));
        }
    }
    if c.client_tls.auto_tls && !c.client_tls.is_empty() {
        warnings.push("ignoring client auto TLS since certs given".to_string());
    }
    if c.peer_tls.auto_tls && !c.peer_tls.is_empty() {
        warnings.push("ignoring peer auto TLS since certs given".to_string());
    }
    warnings
}

fn parse_usize(text: &str) -> Result<usize, String> {
    let n = values::parse_u64(text)?;
    usize::try_from(n).map_err(|_| "value out of range".to_string())
}

fn validate(
    s: &Settings,
    c: &Config,
    heartbeat_ms: u64,
    election_ms: u64,
) -> Result<(), ConfigError> {
    // etcd checks this only for flags and variables: a config file always has
    // the default advertise URL to fall back on.
    if !s.from_file && s.is_set("listen-client-urls") && !s.is_set("advertise-client-urls") {
        return Err(ConfigError::UnsetAdvertiseClientUrls);
    }
    validate_timing(heartbeat_ms, election_ms)?;
    if c.max_txn_ops == 0 {
        return Err(ConfigError::Zero("max-txn-ops"));
    }
    if c.max_request_bytes == 0 {
        return Err(ConfigError::Zero("max-request-bytes"));
    }
    let bootstraps = usize::from(s.is_set("initial-cluster"))
        + usize::from(c.discovery.is_some())
        + usize::from(c.discovery_srv.is_some());
    if bootstraps > 1 {
        return Err(ConfigError::MultipleBootstrap);
    }
    validate_membership(c)
}

/// etcd's bounds: both positive, election ≥ 5 heartbeats, election ≤ 50 s.
fn validate_timing(heartbeat_ms: u64, election_ms: u64) -> Result<(), ConfigError> {
    if heartbeat_ms == 0 {
        return Err(ConfigError::ZeroHeartbeat(heartbeat_ms));
    }
    if election_ms == 0 {
        return Err(ConfigError::ZeroElection(election_ms));
    }
    if heartbeat_ms.saturating_mul(5) > election_ms {
        return Err(ConfigError::ElectionTooShort {
            election_ms,
            heartbeat_ms,
        });
    }
    if election_ms > super::MAX_ELECTION_TIMEOUT_MS {
        return Err(ConfigError::ElectionTooLong(election_ms));
    }
    Ok(())
}

/// This member is in the initial cluster, (when bootstrapping) at exactly the
/// URLs it advertises, and no URL belongs to two entries.
fn validate_membership(c: &Config) -> Result<(), ConfigError> {
    let Some(listed) = c.initial_cluster.get(&c.name) else {
        return Err(ConfigError::LocalMemberMissing(c.name.clone()));
    };
    if c.initial_cluster_state == ClusterState::New {
        advertise_matches_cluster(&c.name, listed, &c.initial_advertise_peer_urls)?;
    }
    check_duplicate_urls(&c.initial_cluster)
}

fn advertise_matches_cluster(
    name: &str,
    listed: &[Url],
    advertised: &[Url],
) -> Result<(), ConfigError> {
    let listed_set: BTreeSet<String> = listed.iter().map(Url::to_string).collect();
    let advertised_set: BTreeSet<String> = advertised.iter().map(Url::to_string).collect();
    let not_advertised: Vec<String> = listed_set
        .difference(&advertised_set)
        .map(|u| format!("{name}={u}"))
        .collect();
    if !not_advertised.is_empty() {
        return Err(ConfigError::ClusterUrlNotAdvertised {
            missing: not_advertised.join(","),
            advertised: url::join_urls(advertised),
        });
    }
    let not_listed: Vec<&String> = advertised_set.difference(&listed_set).collect();
    if !not_listed.is_empty() {
        let entry = BTreeMap::from([(name.to_string(), advertised.to_vec())]);
        return Err(ConfigError::AdvertisedUrlNotInCluster {
            missing: not_listed
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(","),
            entry: url::format_initial_cluster(&entry),
        });
    }
    Ok(())
}

fn check_duplicate_urls(cluster: &BTreeMap<String, Vec<Url>>) -> Result<(), ConfigError> {
    let mut seen = BTreeSet::new();
    for url in cluster.values().flatten() {
        if !seen.insert(url.to_string()) {
            return Err(ConfigError::DuplicateUrl {
                cluster: url::format_initial_cluster(cluster),
                url: url.to_string(),
            });
        }
    }
    Ok(())
}

/// What was accepted but will have no effect, for the server to log.
fn collect_warnings(settings: Settings, c: &Config) -> Vec<String> {
    let mut warnings = settings.warnings;
    if c.quota_backend_bytes > super::MAX_RECOMMENDED_QUOTA_BACKEND_BYTES {
        // etcd 3.4 warns the same way and starts anyway.
        warnings.push(format!(
            "quota-backend-bytes ({}) exceeds the maximum recommended quota ({}): a larger store makes snapshots, restarts and defragmentation slow",
            c.quota_backend_bytes,
            super::MAX_RECOMMENDED_QUOTA_BACKEND_BYTES
        ));
    }
    if c.enable_pprof {
        warnings.push(
            "--enable-pprof is accepted for compatibility; cairn serves no Go profiles".into(),
        );
    }
    warnings
}
