//! The table of settings cairn accepts, and the `--help` / `--version` texts
//! generated from it.
//!
//! Invariant: every setting has exactly one row here; the command-line parser,
//! the `CAIRN_*` / `ETCD_*` environment lookup, the config-file reader and the
//! help text all read this table, so a setting cannot be accepted in one place and
//! forgotten in another. `--help`, `-h` and `--version` are not rows: they are
//! actions, not settings, and are never read from the environment or the file.

/// How a setting's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Free text: names, paths, URL lists, enumerations.
    Text,
    /// A non-negative decimal integer.
    Number,
    /// A Go-style boolean: `--flag` alone means true.
    Bool,
}

/// The group a setting is listed under in `--help` (etcd's groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Member,
    Clustering,
    Security,
    Auth,
    Logging,
    Other,
}

/// One setting: its flag name (also its config-file key and, upper-snake-cased
/// behind `CAIRN_` or `ETCD_`, its environment variables).
#[derive(Debug)]
pub(crate) struct FlagSpec {
    pub name: &'static str,
    pub kind: Kind,
    /// The default as shown in `--help`; derived defaults are resolved in
    /// `build.rs`, this string only describes them.
    pub default: &'static str,
    pub section: Section,
    pub help: &'static str,
    /// Whether the config file has a key of this name at its top level (all
    /// but `config-file` and the TLS settings, which etcd's file keeps in its
    /// `client-transport-security` / `peer-transport-security` maps: see
    /// [`transport_security_key`]).
    pub in_file: bool,
}

const fn spec(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    section: Section,
    help: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        kind,
        default,
        section,
        help,
        in_file: true,
    }
}

/// A TLS setting: its file key lives in a transport-security map.
const fn tls_spec(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
) -> FlagSpec {
    FlagSpec {
        name,
        kind,
        default,
        section: Section::Security,
        help,
        in_file: false,
    }
}

use Kind::{Bool, Number, Text};
use Section::{Auth, Clustering, Logging, Member, Other};

/// Every setting cairn accepts, in `--help` order.
pub(crate) const FLAGS: &[FlagSpec] = &[
    spec(
        "name",
        Text,
        "default",
        Member,
        "Human-readable name of this member.",
    ),
    spec(
        "data-dir",
        Text,
        "${name}.cairn",
        Member,
        "Directory holding this member's data (Raft log, snapshots, key-value store).",
    ),
    spec(
        "snapshot-count",
        Number,
        "100000",
        Member,
        "Applied entries between two snapshots of the Raft log; 0 means the default.",
    ),
    spec(
        "heartbeat-interval",
        Number,
        "100",
        Member,
        "Milliseconds between two heartbeats of the leader (one Raft tick).",
    ),
    spec(
        "election-timeout",
        Number,
        "1000",
        Member,
        "Milliseconds a follower waits without hearing a leader before it campaigns; \
         at least 5 times --heartbeat-interval and at most 50000.",
    ),
    spec(
        "pre-vote",
        Bool,
        "true",
        Member,
        "Campaign with a pre-vote round first, so a member that cannot win (it was cut off) \
         does not disrupt the leader when it returns; etcd 3.5's default (3.4's was false).",
    ),
    spec(
        "check-quorum",
        Bool,
        "true",
        Clustering,
        "cairn's own: a leader that has not heard from a quorum within an election timeout \
         steps down (etcd always does; off only for testing).",
    ),
    spec(
        "listen-peer-urls",
        Text,
        "http://localhost:2380",
        Member,
        "Comma-separated URLs this member listens on for traffic from other members \
         (host must be an IP address or localhost).",
    ),
    spec(
        "listen-client-urls",
        Text,
        "http://localhost:2379",
        Member,
        "Comma-separated URLs this member listens on for client traffic \
         (host must be an IP address or localhost).",
    ),
    spec(
        "max-txn-ops",
        Number,
        "128",
        Member,
        "Largest number of operations a single transaction may carry.",
    ),
    spec(
        "max-request-bytes",
        Number,
        "1572864",
        Member,
        "Largest client request, in bytes, the server accepts.",
    ),
    spec(
        "quota-backend-bytes",
        Number,
        "0",
        Member,
        "Size of the key-value store, in bytes, past which the NOSPACE alarm is raised; \
         0 means the default of 2 GiB.",
    ),
    spec(
        "initial-advertise-peer-urls",
        Text,
        "http://localhost:2380",
        Clustering,
        "Comma-separated peer URLs of this member, as the other members reach it.",
    ),
    spec(
        "initial-cluster",
        Text,
        "${name}=${initial-advertise-peer-urls}",
        Clustering,
        "Every member of the cluster being bootstrapped, as comma-separated name=peer-url \
         pairs; a name may repeat to give a member several URLs.",
    ),
    spec(
        "discovery",
        Text,
        "",
        Clustering,
        "Discovery URL (etcd's v2 discovery protocol: a key directory with _config/size on a \
         cluster serving the v2 API) to bootstrap the cluster through, instead of \
         --initial-cluster.",
    ),
    spec(
        "discovery-fallback",
        Text,
        "proxy",
        Clustering,
        "What to do when discovery finds the cluster full: 'exit', or 'proxy' (etcd's v2 proxy, \
         which cairn does not have: it exits as with 'exit').",
    ),
    spec(
        "discovery-proxy",
        Text,
        "",
        Clustering,
        "HTTP proxy for the discovery service (accepted; cairn connects directly).",
    ),
    spec(
        "discovery-srv",
        Text,
        "",
        Clustering,
        "Domain whose DNS SRV records (_etcd-server-ssl._tcp, _etcd-server._tcp) list the \
         cluster's peers, instead of --initial-cluster.",
    ),
    spec(
        "discovery-srv-name",
        Text,
        "",
        Clustering,
        "Suffix of the SRV names queried with --discovery-srv (_etcd-server-<name>._tcp).",
    ),
    spec(
        "initial-cluster-state",
        Text,
        "new",
        Clustering,
        "'new' to bootstrap a new cluster, 'existing' to join one this member was added to. \
         Only read on the first start.",
    ),
    spec(
        "initial-cluster-token",
        Text,
        "etcd-cluster",
        Clustering,
        "Token distinguishing this cluster from others bootstrapped from the same peer URLs; \
         it goes into the cluster and member ids.",
    ),
    spec(
        "advertise-client-urls",
        Text,
        "http://localhost:2379",
        Clustering,
        "Comma-separated client URLs of this member, as clients reach it. Required when \
         --listen-client-urls is given on the command line or in the environment.",
    ),
    spec(
        "auto-compaction-retention",
        Text,
        "0",
        Clustering,
        "History kept by automatic compaction: hours (or a Go duration such as '30m') in \
         periodic mode, a number of revisions in revision mode; 0 disables it.",
    ),
    spec(
        "auto-compaction-mode",
        Text,
        "periodic",
        Clustering,
        "How --auto-compaction-retention is read: 'periodic' or 'revision'.",
    ),
    tls_spec(
        "cert-file",
        Text,
        "",
        "Path to the client server TLS certificate (PEM), for https:// client URLs.",
    ),
    tls_spec(
        "key-file",
        Text,
        "",
        "Path to the client server TLS key (PEM).",
    ),
    tls_spec(
        "client-cert-auth",
        Bool,
        "false",
        "Require clients to present a certificate signed by --trusted-ca-file; its Common \
         Name is the user when auth is enabled.",
    ),
    tls_spec(
        "trusted-ca-file",
        Text,
        "",
        "Path to the CA bundle (PEM) that client certificates must chain to.",
    ),
    tls_spec(
        "auto-tls",
        Bool,
        "false",
        "Serve https:// client URLs with a generated self-signed certificate \
         (in <data-dir>/fixtures/client) when no --cert-file is given.",
    ),
    tls_spec(
        "peer-cert-file",
        Text,
        "",
        "Path to the peer server TLS certificate (PEM), for https:// peer URLs; also \
         presented as client certificate when dialing peers.",
    ),
    tls_spec(
        "peer-key-file",
        Text,
        "",
        "Path to the peer server TLS key (PEM).",
    ),
    tls_spec(
        "peer-client-cert-auth",
        Bool,
        "false",
        "Require peers to present a certificate signed by --peer-trusted-ca-file.",
    ),
    tls_spec(
        "peer-trusted-ca-file",
        Text,
        "",
        "Path to the CA bundle (PEM) that peer certificates must chain to; also verifies \
         the peers this member dials.",
    ),
    tls_spec(
        "peer-auto-tls",
        Bool,
        "false",
        "Serve https:// peer URLs with a generated self-signed certificate \
         (in <data-dir>/fixtures/peer) when no --peer-cert-file is given.",
    ),
    FlagSpec {
        name: "cipher-suites",
        kind: Text,
        default: "",
        section: Section::Security,
        help: "Comma-separated TLS cipher suites by Go's names (e.g. \
               TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256) for client and peer TLS 1.2; empty \
               means the defaults. Suites rustls lacks (CBC, RC4, 3DES, RSA key exchange) \
               are refused.",
        in_file: true,
    },
    spec(
        "auth-token",
        Text,
        "simple",
        Auth,
        "Token type: 'simple', or 'jwt,pub-key=<path>,priv-key=<path>,sign-method=<alg>,ttl=<duration>'.",
    ),
    spec(
        "auth-token-ttl",
        Number,
        "300",
        Auth,
        "Seconds a simple token stays valid after its last use.",
    ),
    spec(
        "bcrypt-cost",
        Number,
        "10",
        Auth,
        "bcrypt cost of password hashes (4 to 31; another value means 10, as etcd).",
    ),
    spec(
        "logger",
        Text,
        "zap",
        Logging,
        "Accepted for compatibility with etcd; 'zap' is the only value.",
    ),
    spec(
        "log-level",
        Text,
        "info",
        Logging,
        "Lowest level logged: debug, info, warn, error, dpanic, panic or fatal.",
    ),
    spec(
        "log-outputs",
        Text,
        "default",
        Logging,
        "Where logs go, comma-separated: stderr, stdout, default (stderr) or file paths (appended to).",
    ),
    spec(
        "log-format",
        Text,
        "json",
        Logging,
        "cairn's own: 'json' (default) writes JSON lines with etcd's fields (level, ts, caller, msg, ...); 'text' writes lines for people.",
    ),
    spec(
        "experimental-initial-corrupt-check",
        Bool,
        "true",
        Other,
        "Before serving, a restarted member compares its HashKV with its peers' and refuses \
         to start on a mismatch (etcd's default is false; cairn's true).",
    ),
    spec(
        "experimental-corrupt-check-time",
        Text,
        "1m0s",
        Other,
        "How often the leader compares the members' HashKVs and raises the CORRUPT alarm \
         on a mismatch (a Go duration; 0s turns it off; etcd's default is 0s, cairn's 1m).",
    ),
    spec(
        "experimental-watch-progress-notify-interval",
        Text,
        "10m0s",
        Other,
        "How often an idle watcher created with progress_notify gets an empty response \
         carrying the current revision (a Go duration such as 10m or 30s); 0 means the default.",
    ),
    spec(
        "listen-metrics-urls",
        Text,
        "",
        Other,
        "Comma-separated URLs to serve /metrics and the health endpoints on, \
         besides the client URLs (https ones use the client TLS settings).",
    ),
    spec(
        "metrics",
        Text,
        "basic",
        Other,
        "'basic' or 'extensive' (adds gRPC handling-time histograms).",
    ),
    spec(
        "enable-v2",
        Bool,
        "false",
        Other,
        "Serve etcd's v2 keys API (/v2/keys, /v2/members, /v2/machines, /v2/stats) on the \
         client URLs, its store replicated through Raft. Off by default, as etcd 3.4.",
    ),
    spec(
        "enable-pprof",
        Bool,
        "false",
        Other,
        "Accepted for compatibility with etcd and ignored: cairn serves no Go profiles.",
    ),
    FlagSpec {
        name: "config-file",
        kind: Text,
        default: "",
        section: Other,
        help: "YAML file with etcd's configuration keys. When given, every other flag and \
               CAIRN_* or ETCD_* variable is ignored, as etcd does.",
        in_file: false,
    },
];

/// The flag a key of etcd's config-file map `map` (`client-transport-security`
/// or `peer-transport-security`) sets, if cairn has it.
pub(crate) fn transport_security_key(map: &str, key: &str) -> Option<&'static FlagSpec> {
    let name = match (map, key) {
        ("client-transport-security", "cert-file") => "cert-file",
        ("client-transport-security", "key-file") => "key-file",
        ("client-transport-security", "client-cert-auth") => "client-cert-auth",
        ("client-transport-security", "trusted-ca-file") => "trusted-ca-file",
        ("client-transport-security", "auto-tls") => "auto-tls",
        ("peer-transport-security", "cert-file") => "peer-cert-file",
        ("peer-transport-security", "key-file") => "peer-key-file",
        ("peer-transport-security", "client-cert-auth") => "peer-client-cert-auth",
        ("peer-transport-security", "trusted-ca-file") => "peer-trusted-ca-file",
        ("peer-transport-security", "auto-tls") => "peer-auto-tls",
        _ => return None,
    };
    lookup(name)
}

/// The row for flag `name`, if cairn accepts it.
pub(crate) fn lookup(name: &str) -> Option<&'static FlagSpec> {
    FLAGS.iter().find(|f| f.name == name)
}

/// The prefixes of the environment variables that can set a flag, strongest
/// first: cairn's own, then etcd's (so the lines `etcdctl member add` prints
/// work unchanged, and a `CAIRN_*` variable can still override one of them).
pub(crate) const ENV_PREFIXES: [&str; 2] = ["CAIRN_", "ETCD_"];

/// The variables that can set flag `name`, strongest first: `CAIRN_` and
/// `ETCD_` + the flag in upper snake case.
pub(crate) fn env_names(name: &str) -> [String; 2] {
    ENV_PREFIXES.map(|prefix| env_name_with(prefix, name))
}

fn env_name_with(prefix: &str, name: &str) -> String {
    format!("{prefix}{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// The `--help` text, etcd style: usage, then every flag with its default.
pub(crate) fn help_text() -> String {
    let mut out = String::from(
        "Usage:\n\n  cairn [flags]\n    Start a cairn server.\n\n  cairn --version\n    \
         Show the version of cairn.\n\n  cairn -h | --help\n    Show this help.\n\n  \
         cairn --config-file <path>\n    Read the configuration from a YAML file with etcd's \
         keys;\n    other flags and CAIRN_* / ETCD_* variables are then ignored.\n\n\
         Flags may be written --flag=value, --flag value, -flag=value or -flag value.\n\
         Every flag can also be set by the environment variable CAIRN_<FLAG_IN_UPPER_SNAKE>\n\
         (e.g. CAIRN_INITIAL_CLUSTER) or by etcd's ETCD_<FLAG_IN_UPPER_SNAKE> (e.g. the\n\
         ETCD_* lines 'etcdctl member add' prints). A flag on the command line beats both\n\
         variables, CAIRN_* beats ETCD_*, and an empty variable counts as unset.\n",
    );
    for (section, title) in [
        (Member, "Member"),
        (Clustering, "Clustering"),
        (Section::Security, "Security"),
        (Auth, "Auth"),
        (Logging, "Logging"),
        (Other, "Other"),
    ] {
        out.push_str(&format!("\n{title}:\n"));
        for flag in FLAGS.iter().filter(|f| f.section == section) {
            out.push_str(&help_entry(flag));
        }
    }
    out
}

fn help_entry(flag: &FlagSpec) -> String {
    let shown = match flag.kind {
        Number | Bool => flag.default.to_string(),
        Text => format!("'{}'", flag.default),
    };
    format!(
        "  --{} {}\n{}",
        flag.name,
        shown,
        wrap(flag.help, "    ", 80)
    )
}

/// `text` as lines of at most `width` columns (longer words stay whole),
/// each starting with `indent` and ending with a newline.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The `--version` text.
pub(crate) fn version_text() -> String {
    format!(
        "cairn Version: {}\netcd API Version: 3.5\nOS/Arch: {}/{}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
