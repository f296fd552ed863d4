//! Everything that can stop the configuration from being accepted.
//!
//! Invariant: every message is one line. Messages start with `cairn: ` and,
//! where etcd 3.5 has a message for the same mistake, reuse its wording (so
//! operators' searches and runbooks still find the cause). `Help` and `Version`
//! are not failures: they carry the text the binary prints to stdout before
//! exiting 0 (see [`ConfigError::exit_code`]).

use thiserror::Error;

/// Why `parse_args` did not produce a [`super::Config`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// `-h`, `--help`: the text to print on stdout.
    #[error("{0}")]
    Help(String),
    /// `--version`: the text to print on stdout.
    #[error("{0}")]
    Version(String),

    /// More than one way to find the initial members (etcd's words).
    #[error("cairn: multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"")]
    MultipleBootstrap,
    /// A flag cairn does not know, as the user typed it (`--foo`, `-foo`).
    #[error("cairn: unknown flag: {0}")]
    UnknownFlag(String),
    /// Go's flag package rejects `---x`, `-=x`.
    #[error("cairn: bad flag syntax: {0}")]
    BadFlagSyntax(String),
    /// A non-boolean flag last on the command line, without a value.
    #[error("cairn: flag needs an argument: {0}")]
    MissingValue(String),
    /// An argument that is not a flag (etcd takes no positional arguments).
    #[error("cairn: {0:?} is not a valid flag")]
    NotAFlag(String),

    /// A value that does not parse or is out of its allowed set. `origin`
    /// says where it came from: `flag --x`, `CAIRN_X`, `ETCD_X`, or `x in <file>`.
    #[error("cairn: invalid value {value:?} for {origin}: {reason}")]
    InvalidValue {
        value: String,
        origin: String,
        reason: String,
    },
    /// An `https://` client URL without a certificate (etcd's words).
    #[error("cairn: TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme")]
    ClientTlsMissing { url: String },
    /// An `https://` peer URL without a certificate (etcd's words).
    #[error("cairn: cannot listen on TLS for {addr}: KeyFile and CertFile are not presented")]
    PeerTlsMissing { addr: String },
    /// Only one of a side's certificate and key (etcd's words).
    #[error("cairn: KeyFile and CertFile must both be present[key: {key}, cert: {cert}]")]
    KeyCertIncomplete { key: String, cert: String },
    /// Client-certificate auth without the CA to verify with (etcd would
    /// use the system's CA store; cairn does not read it).
    #[error(
        "cairn: --{auth_flag} needs --{ca_flag}: client certificates are verified only against it"
    )]
    ClientCertAuthWithoutCa {
        auth_flag: &'static str,
        ca_flag: &'static str,
    },
    /// `--cipher-suites` names a suite Go does not know (etcd's words) or
    /// rustls does not have.
    #[error("cairn: {0}")]
    CipherSuite(String),
    /// `--auth-token` refused: etcd's `auth: invalid auth options`, with the
    /// detail etcd logs before it.
    #[error("cairn: auth: invalid auth options: {0}")]
    InvalidAuthOptions(String),
    /// A JWT `--auth-token` without key files (etcd's words).
    #[error("cairn: auth: missing key data")]
    MissingKeyData,

    /// The config file could not be read.
    #[error("cairn: cannot read config file {path:?}: {reason}")]
    ConfigFileRead { path: String, reason: String },
    /// The config file is not a YAML mapping.
    #[error("cairn: cannot parse config file {path:?}: {reason}")]
    ConfigFileParse { path: String, reason: String },

    #[error(
        "cairn: --advertise-client-urls is required when --listen-client-urls is set explicitly"
    )]
    UnsetAdvertiseClientUrls,
    #[error("cairn: --heartbeat-interval must be >0 (set to {0}ms)")]
    ZeroHeartbeat(u64),
    #[error("cairn: --election-timeout must be >0 (set to {0}ms)")]
    ZeroElection(u64),
    #[error(
        "cairn: --election-timeout[{election_ms}ms] should be at least as 5 times as \
         --heartbeat-interval[{heartbeat_ms}ms]"
    )]
    ElectionTooShort { election_ms: u64, heartbeat_ms: u64 },
    #[error("cairn: --election-timeout[{0}ms] is too long, and should be set less than 50000ms")]
    ElectionTooLong(u64),
    /// `--max-txn-ops` or `--max-request-bytes` of 0, which would refuse every request.
    #[error("cairn: --{0} must be >0 (set to 0)")]
    Zero(&'static str),

    #[error("cairn: couldn't find local name {0:?} in the initial cluster configuration")]
    LocalMemberMissing(String),
    /// `--initial-cluster` lists URLs for this member that it does not advertise.
    #[error("cairn: --initial-cluster has {missing} but missing from --initial-advertise-peer-urls={advertised}")]
    ClusterUrlNotAdvertised { missing: String, advertised: String },
    /// This member advertises URLs its `--initial-cluster` entry lacks.
    #[error("cairn: --initial-advertise-peer-urls has {missing} but missing from --initial-cluster={entry}")]
    AdvertisedUrlNotInCluster { missing: String, entry: String },
    #[error("cairn: initial cluster {cluster} has duplicate url {url}")]
    DuplicateUrl { cluster: String, url: String },
}

impl ConfigError {
    /// The status the binary exits with: 0 after `--help` / `--version`,
    /// 1 for every real error (etcd exits 1 on bad configuration).
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Help(_) | ConfigError::Version(_) => 0,
            _ => 1,
        }
    }

    /// Whether the message belongs on stdout (`--help`, `--version`) rather than stderr.
    pub fn is_informational(&self) -> bool {
        self.exit_code() == 0
    }
}
