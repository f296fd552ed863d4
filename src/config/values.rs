//! Parsers for single values and the small enums they produce. Each returns
//! the reason as a `String`; the caller adds the value and where it came from.
//! Pure functions, tested in `super::tests` (`values_*`).

use std::time::Duration;

/// Go's `strconv.ParseBool`, which etcd's boolean flags use.
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

/// A non-negative decimal integer. (Go's flag package would also read `0x`,
/// `0o`, `0b` and leading-zero octal; cairn does not, so `0100` is 100.)
pub(crate) fn parse_u64(text: &str) -> Result<u64, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a non-negative decimal integer".to_string());
    }
    text.parse::<u64>()
        .map_err(|_| "value out of range".to_string())
}

/// A Go `time.ParseDuration` string such as `1h30m`, `90s`, `1.5h`, `0`.
/// Negative durations are refused (a retention cannot be negative).
pub(crate) fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 1h, 30m or 90s, got {text:?}");
    let body = text.strip_prefix('+').unwrap_or(text);
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(bad());
    }
    let mut total_nanos: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let (nanos, after) = duration_term(rest).ok_or_else(bad)?;
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(bad)?;
        rest = after;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| bad())?;
    let sub = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, sub))
}

/// One `<decimal><unit>` term of a Go duration: its nanoseconds and the rest.
fn duration_term(text: &str) -> Option<(u128, &str)> {
    let number_len = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, rest) = text.split_at(number_len);
    let unit_len = rest
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .unwrap_or(rest.len());
    let (unit, rest) = rest.split_at(unit_len);
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(unit_nanos)?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).ok().filter(|d| *d <= 30)?;
        let fraction: u128 = fraction.parse().ok()?;
        nanos = nanos.checked_add(fraction.checked_mul(unit_nanos)? / 10u128.pow(digits))?;
    }
    Some((nanos, rest))
}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster this member was added to with `member add`.
    Existing,
}

pub(crate) fn parse_cluster_state(text: &str) -> Result<ClusterState, String> {
    match text {
        "new" => Ok(ClusterState::New),
        "existing" => Ok(ClusterState::Existing),
        _ => Err("valid values are \"new\" and \"existing\"".to_string()),
    }
}

/// `--log-format` (cairn's own flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines with etcd's field names (`level`, `ts`, `caller`, `msg`).
    Json,
    /// Lines for people.
    Text,
}

/// `--log-outputs`: the comma-separated list, in order, without repeats;
/// `default` is stderr (as etcd).
pub(crate) fn parse_log_outputs(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let item = if item == "default" { "stderr" } else { item };
        if !out.iter().any(|o| o == item) {
            out.push(item.to_owned());
        }
    }
    if out.is_empty() {
        return Err("no log output given".to_owned());
    }
    Ok(out)
}

/// `--metrics`: whether it is `extensive` (etcd's other value is `basic`).
pub(crate) fn parse_metrics_level(text: &str) -> Result<bool, String> {
    match text {
        "basic" => Ok(false),
        "extensive" => Ok(true),
        _ => Err("valid values are \"basic\" and \"extensive\"".to_owned()),
    }
}

/// `--log-format`.
pub(crate) fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err("unknown log format; valid values are \"json\" and \"text\"".to_owned()),
    }
}

/// `--log-level`, with zap's level names as etcd accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    /// zap's "development panic"; logs like `Error` outside development.
    DPanic,
    Panic,
    Fatal,
}

impl LogLevel {
    /// The `tracing` level the server filters at. `tracing` stops at ERROR;
    /// dpanic, panic and fatal keep only errors, the nearest it has.
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error | LogLevel::DPanic | LogLevel::Panic | LogLevel::Fatal => {
                tracing::Level::ERROR
            }
        }
    }
}

pub(crate) fn parse_log_level(text: &str) -> Result<LogLevel, String> {
    match text {
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" => Ok(LogLevel::Warn),
        "error" => Ok(LogLevel::Error),
        "dpanic" => Ok(LogLevel::DPanic),
        "panic" => Ok(LogLevel::Panic),
        "fatal" => Ok(LogLevel::Fatal),
        _ => Err(
            "unknown level; valid levels are debug, info, warn, error, dpanic, panic, fatal"
                .to_string(),
        ),
    }
}

/// `--logger`: etcd 3.5 knows only zap; cairn logs through `tracing` whatever it says.
pub(crate) fn parse_logger(text: &str) -> Result<(), String> {
    match text {
        "zap" => Ok(()),
        _ => Err("unknown logger option; the only valid value is \"zap\"".to_string()),
    }
}

/// What automatic compaction keeps, from `--auto-compaction-mode` and
/// `--auto-compaction-retention` together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Retention 0 (the default): no automatic compaction.
    Disabled,
    /// Keep this much history (periodic mode).
    Periodic(Duration),
    /// Keep this many revisions (revision mode).
    Revision(u64),
}

/// `--auto-compaction-mode`, before the retention is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompactionMode {
    Periodic,
    Revision,
}

pub(crate) fn parse_compaction_mode(text: &str) -> Result<CompactionMode, String> {
    match text {
        "periodic" => Ok(CompactionMode::Periodic),
        "revision" => Ok(CompactionMode::Revision),
        _ => Err("valid modes are \"periodic\" and \"revision\"".to_string()),
    }
}

/// The retention as etcd reads it: a bare integer is hours (periodic) or
/// revisions (revision); periodic also takes a Go duration.
pub(crate) fn parse_retention(mode: CompactionMode, text: &str) -> Result<AutoCompaction, String> {
    if let Ok(count) = parse_u64(text) {
        return Ok(match (count, mode) {
            (0, _) => AutoCompaction::Disabled,
            (n, CompactionMode::Revision) => AutoCompaction::Revision(n),
            (hours, CompactionMode::Periodic) => {
                AutoCompaction::Periodic(Duration::from_secs(hours.saturating_mul(3600)))
            }
        });
    }
    if mode == CompactionMode::Revision {
        return Err("revision mode takes a number of revisions".to_string());
    }
    match parse_go_duration(text)? {
        Duration::ZERO => Ok(AutoCompaction::Disabled),
        kept => Ok(AutoCompaction::Periodic(kept)),
    }
}

/// `--auth-token`: how the Auth service issues tokens (etcd's syntax:
/// `simple`, or `jwt,pub-key=<path>,priv-key=<path>,sign-method=<alg>,ttl=<duration>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthToken {
    /// etcd's simple tokens: random strings the member remembers, valid for
    /// `--auth-token-ttl` seconds after their last use.
    Simple,
    /// Signed JSON Web Tokens.
    Jwt {
        /// PEM public key that verifies tokens (for HS* the shared secret).
        pub_key: std::path::PathBuf,
        /// PEM private key that signs tokens; without it the member only
        /// verifies tokens.
        priv_key: Option<std::path::PathBuf>,
        /// One of [`JWT_SIGN_METHODS`].
        sign_method: String,
        /// Lifetime of a token (`ttl=`, default 5 minutes).
        ttl: Duration,
    },
}

/// The `sign-method` values etcd's JWT library knows.
pub const JWT_SIGN_METHODS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256",
    "HS384", "HS512", "EdDSA",
];

/// Why `--auth-token` was refused; the texts are etcd's (`Display` adds
/// the outer words: etcd logs the detail, then fails with
/// `auth: invalid auth options`, or with `auth: missing key data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthTokenError {
    /// Wrapped in `auth: invalid auth options`.
    Invalid(String),
    /// JWT without any key file: `auth: missing key data`.
    MissingKeyData,
}

/// Parses `--auth-token` as etcd does (`auth.NewTokenProvider`): the type,
/// then `key=value` options, each at most once; options a type does not use
/// are ignored. Files are not read here (see `check_auth_token_files`).
pub(crate) fn parse_auth_token(text: &str) -> Result<AuthToken, AuthTokenError> {
    let invalid = |detail: String| AuthTokenError::Invalid(detail);
    let mut parts = text.split(',');
    let kind = parts.next().unwrap_or("");
    let mut options = std::collections::BTreeMap::new();
    for option in parts {
        let pair: Vec<&str> = option.split('=').collect();
        let [key, value] = pair[..] else {
            return Err(invalid(format!("invalid token specific option: {text}")));
        };
        if options.insert(key, value).is_some() {
            return Err(invalid(format!(
                "invalid token specific option, duplicated parameters ({key}): {text}"
            )));
        }
    }
    match kind {
        // etcd's empty type is a provider that issues nothing; cairn keeps
        // simple tokens (an empty variable counts as unset anyway).
        "simple" | "" => Ok(AuthToken::Simple),
        "jwt" => parse_jwt(&options),
        other => Err(invalid(format!("unknown token type: {other}"))),
    }
}

fn parse_jwt(
    options: &std::collections::BTreeMap<&str, &str>,
) -> Result<AuthToken, AuthTokenError> {
    let loading =
        |detail: String| AuthTokenError::Invalid(format!("problem loading JWT options: {detail}"));
    let non_empty = |key: &str| options.get(key).copied().filter(|v| !v.is_empty());
    let ttl = match non_empty("ttl") {
        None => Duration::from_secs(300),
        Some(text) => parse_go_duration(text)
            .map_err(|_| loading(format!("time: invalid duration {text:?}")))?,
    };
    let sign_method = non_empty("sign-method")
        .filter(|m| JWT_SIGN_METHODS.contains(m))
        .ok_or_else(|| loading("auth: invalid auth signature method".to_string()))?;
    let priv_key = non_empty("priv-key").map(std::path::PathBuf::from);
    let pub_key = match (non_empty("pub-key"), &priv_key) {
        (Some(path), _) => std::path::PathBuf::from(path),
        (None, None) => return Err(AuthTokenError::MissingKeyData),
        // etcd derives the public key from the private one; cairn's token
        // code reads a public key file.
        (None, Some(_)) => {
            return Err(loading(
                "cairn needs pub-key= (the public key file) beside priv-key=".to_string(),
            ))
        }
    };
    Ok(AuthToken::Jwt {
        pub_key,
        priv_key,
        sign_method: sign_method.to_string(),
        ttl,
    })
}

/// The key files of a JWT `--auth-token` can be read (etcd reads them at
/// start and fails with the open error).
pub(crate) fn check_auth_token_files(token: &AuthToken) -> Result<(), AuthTokenError> {
    let AuthToken::Jwt {
        pub_key, priv_key, ..
    } = token
    else {
        return Ok(());
    };
    for path in std::iter::once(pub_key).chain(priv_key) {
        std::fs::File::open(path).map_err(|e| {
            AuthTokenError::Invalid(format!(
                "problem loading JWT options: open {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(())
}

/// etcd's bcrypt cost bounds; a cost outside them means the default (with
/// a warning, as etcd 3.4 does).
pub const MIN_BCRYPT_COST: u64 = 4;
pub const MAX_BCRYPT_COST: u64 = 31;
pub const DEFAULT_BCRYPT_COST: u32 = 10;
