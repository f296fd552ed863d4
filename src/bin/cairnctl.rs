//! cairnctl: cairn's etcdctl-compatible command line (DESIGN §1). So far its
//! `snapshot` commands, with etcdctl 3.4's flags, output and exit codes:
//!
//! - `cairnctl [--endpoints HOST:PORT] [--user NAME[:PASSWORD]] [--password
//!   PASSWORD] snapshot save FILE`: streams a backup from one member (cairn
//!   or etcd) into FILE, checking its SHA-256; with auth enabled the server
//!   wants a user holding `root`, whose token the save gets first;
//! - `cairnctl snapshot status FILE [-w simple|table|json|fields]`: hash,
//!   revision, total keys and size of a snapshot (cairn's or etcd's);
//! - `cairnctl snapshot restore FILE [--name] [--data-dir]
//!   [--initial-cluster] [--initial-cluster-token]
//!   [--initial-advertise-peer-urls] [--skip-hash-check]`: a new member's
//!   data directory from a snapshot (`cairn::backup::restore`), with the
//!   snapshot's users, roles and auth state.
//!
//! Errors print `Error: <message>` on stderr; exit status 1, or 128 for bad
//! arguments (etcdctl's codes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn::backup::{self, etcd, RestoreOptions, SHA256_LEN};
use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{AuthenticateRequest, SnapshotRequest};

const EXIT_ERROR: u8 = 1;
const EXIT_BAD_ARGS: u8 = 128;

struct Failure(u8, String);

fn bad_args(msg: impl Into<String>) -> Failure {
    Failure(EXIT_BAD_ARGS, msg.into())
}

fn error(msg: impl Into<String>) -> Failure {
    Failure(EXIT_ERROR, msg.into())
}

/// The command line: global flags, the words of the command, its flags.
#[derive(Default)]
struct Line {
    endpoints: Vec<String>,
    write_out: String,
    dial_timeout: Duration,
    command_timeout: Duration,
    /// `--user` (`name` or `name:password`) and `--password`.
    user: Option<String>,
    password: Option<String>,
    words: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

/// Flags that take no value.
const SWITCHES: &[&str] = &["skip-hash-check", "debug", "insecure-skip-tls-verify"];

fn parse_duration(flag: &str, v: &str) -> Result<Duration, Failure> {
    let bad = || bad_args(format!("invalid argument {v:?} for \"--{flag}\" flag"));
    let (num, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((v, "s"), |i| v.split_at(i));
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse(args: Vec<String>) -> Result<Line, Failure> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut line = Line {
        user: env("ETCDCTL_USER"),
        password: env("ETCDCTL_PASSWORD"),
        endpoints: env("ETCDCTL_ENDPOINTS")
            .unwrap_or_else(|| "127.0.0.1:2379".into())
            .split(',')
            .map(str::to_owned)
            .collect(),
        write_out: env("ETCDCTL_WRITE_OUT").unwrap_or_else(|| "simple".into()),
        dial_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(5),
        ..Line::default()
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            line.words.push(a);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (flag.to_owned(), None),
        };
        let value = if SWITCHES.contains(&name.as_str()) {
            inline
        } else {
            match inline {
                Some(v) => Some(v),
                None => Some(
                    it.next()
                        .ok_or_else(|| bad_args(format!("flag needs an argument: --{name}")))?,
                ),
            }
        };
        match name.as_str() {
            "endpoints" => {
                line.endpoints = value
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect()
            }
            "w" | "write-out" => line.write_out = value.unwrap_or_default(),
            "dial-timeout" => {
                line.dial_timeout = parse_duration(&name, &value.unwrap_or_default())?
            }
            "command-timeout" => {
                line.command_timeout = parse_duration(&name, &value.unwrap_or_default())?
            }
            "user" => line.user = value.filter(|v| !v.is_empty()),
            "password" => line.password = value,
            _ => line.flags.push((name, value)),
        }
    }
    Ok(line)
}

impl Line {
    /// The user and password to authenticate as (etcdctl's rules: with
    /// `--password`, `--user` is the whole name; else `name:password`).
    fn credentials(&self) -> Result<Option<(String, String)>, Failure> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        if let Some(p) = self.password.as_ref().filter(|p| !p.is_empty()) {
            return Ok(Some((user.clone(), p.clone())));
        }
        match user.split_once(':') {
            Some((name, password)) => Ok(Some((name.to_owned(), password.to_owned()))),
            None => Err(bad_args(
                "no password for --user: give --user NAME:PASSWORD or --password",
            )),
        }
    }

    /// The value of command flag `name`, and that no other flag was given.
    fn take(&mut self, name: &str) -> Option<String> {
        let i = self.flags.iter().position(|(n, _)| n == name)?;
        Some(self.flags.remove(i).1.unwrap_or_default())
    }

    fn switch(&mut self, name: &str) -> Result<bool, Failure> {
        match self.take(name).as_deref() {
            None => Ok(false),
            Some("" | "true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(bad_args(format!(
                "invalid argument {v:?} for \"--{name}\" flag"
            ))),
        }
    }

    fn no_other_flags(&self) -> Result<(), Failure> {
        match self.flags.first() {
            None => Ok(()),
            Some((n, _)) => Err(bad_args(format!("unknown flag: --{n}"))),
        }
    }
}

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("Error: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), Failure> {
    let mut line = parse(args)?;
    let words: Vec<&str> = line.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["snapshot", "save", rest @ ..] => {
            let [file] = rest else {
                return Err(bad_args("snapshot save expects one argument"));
            };
            let file = PathBuf::from(file);
            line.no_other_flags()?;
            save(&line, &file)
        }
        ["snapshot", "status", rest @ ..] => {
            let [file] = rest else {
                return Err(bad_args("snapshot status requires exactly one argument"));
            };
            let file = PathBuf::from(file);
            line.no_other_flags()?;
            status(&line.write_out, &file)
        }
        ["snapshot", "restore", rest @ ..] => {
            let [file] = rest else {
                return Err(bad_args("snapshot restore requires exactly one argument"));
            };
            let mut o = RestoreOptions {
                snapshot: PathBuf::from(file),
                ..RestoreOptions::default()
            };
            if let Some(v) = line.take("name") {
                o.name = v;
            }
            o.data_dir = line
                .take("data-dir")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from);
            if let Some(v) = line.take("initial-cluster") {
                o.initial_cluster = v;
            }
            if let Some(v) = line.take("initial-cluster-token") {
                o.initial_cluster_token = v;
            }
            if let Some(v) = line.take("initial-advertise-peer-urls") {
                o.initial_advertise_peer_urls = v;
            }
            o.skip_hash_check = line.switch("skip-hash-check")?;
            if line.take("wal-dir").is_some_and(|w| !w.is_empty()) {
                eprintln!("ignoring --wal-dir: cairn keeps its log in the data directory");
            }
            line.no_other_flags()?;
            restore(&o)
        }
        ["snapshot", ..] => Err(bad_args(
            "unknown snapshot command (save, status or restore)",
        )),
        [] => Err(bad_args(
            "cairnctl: no command (so far: snapshot save | status | restore)",
        )),
        [cmd, ..] => Err(bad_args(format!(
            "unknown command {cmd:?} for \"cairnctl\" (so far: snapshot save | status | restore)"
        ))),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| error(format!("cannot start the async runtime: {e}")))
}

fn endpoint_url(ep: &str) -> String {
    if ep.contains("://") {
        ep.to_owned()
    } else {
        format!("http://{ep}")
    }
}

fn save(line: &Line, file: &std::path::Path) -> Result<(), Failure> {
    if line.endpoints.len() != 1 {
        return Err(error(format!(
            "snapshot must be requested to one selected node, not multiple {:?}",
            line.endpoints
        )));
    }
    let url = endpoint_url(&line.endpoints[0]);
    let part = PathBuf::from(format!("{}.part", file.display()));
    let credentials = line.credentials()?;
    let result = runtime()?.block_on(fetch(&url, line.dial_timeout, credentials.as_ref(), &part));
    match result {
        Ok(size) => {
            std::fs::rename(&part, file).map_err(|e| {
                error(format!(
                    "could not rename {} to {}: {e}",
                    part.display(),
                    file.display()
                ))
            })?;
            eprintln!("fetched snapshot from {url}: {size} bytes");
            println!("Snapshot saved at {}", file.display());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Streams a snapshot into `part` (as `credentials`' user when given),
/// checks its SHA-256 trailer, syncs it.
async fn fetch(
    url: &str,
    dial_timeout: Duration,
    credentials: Option<&(String, String)>,
    part: &std::path::Path,
) -> Result<u64, Failure> {
    use std::io::Write as _;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| error(format!("bad endpoint {url}: {e}")))?
        .connect_timeout(dial_timeout)
        .connect()
        .await
        .map_err(|e| {
            error(format!(
                "context deadline exceeded (connecting to {url}: {e})"
            ))
        })?;
    let mut request = tonic::Request::new(SnapshotRequest {});
    if let Some((name, password)) = credentials {
        let token = AuthClient::new(channel.clone())
            .authenticate(AuthenticateRequest {
                name: name.clone(),
                password: password.clone(),
            })
            .await
            .map_err(|s| error(s.message().to_owned()))?
            .into_inner()
            .token;
        let value = token.parse().map_err(|_| {
            error(format!(
                "the server's token {token:?} is not a header value"
            ))
        })?;
        request.metadata_mut().insert("token", value);
    }
    let mut client = MaintenanceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut stream = client
        .snapshot(request)
        .await
        .map_err(|s| error(s.message().to_owned()))?
        .into_inner();
    let mut f = std::fs::File::create(part)
        .map_err(|e| error(format!("could not open {}: {e}", part.display())))?;
    let mut hash = backup::StreamHash::default();
    // The last SHA256_LEN bytes received are the trailer, not the database.
    let mut tail: Vec<u8> = Vec::new();
    let mut size = 0u64;
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|s| error(s.message().to_owned()))?
    {
        tail.extend_from_slice(&msg.blob);
        if tail.len() > SHA256_LEN {
            let body = tail.len() - SHA256_LEN;
            hash.update(&tail[..body]);
            f.write_all(&tail[..body])
                .map_err(|e| error(format!("write {}: {e}", part.display())))?;
            size += body as u64;
            tail.drain(..body);
        }
    }
    if tail.len() != SHA256_LEN || (size + SHA256_LEN as u64) % 512 != SHA256_LEN as u64 {
        return Err(error("sha256 checksum not found"));
    }
    if hash.finish() != tail {
        return Err(error("sha256 checksum mismatch"));
    }
    f.write_all(&tail)
        .and_then(|_| f.sync_all())
        .map_err(|e| error(format!("write {}: {e}", part.display())))?;
    Ok(size + SHA256_LEN as u64)
}

/// go-humanize's `Bytes`: SI units, one decimal under 10.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = (n as f64 / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

fn status(write_out: &str, file: &std::path::Path) -> Result<(), Failure> {
    let snap = backup::open_snapshot(file, true).map_err(error)?;
    let s = etcd::status(&snap.db).map_err(|e| error(e.to_string()))?;
    let size = human_bytes(s.total_size);
    match write_out {
        "simple" => println!("{:x}, {}, {}, {}", s.hash, s.revision, s.total_key, size),
        "json" => println!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}",
            s.hash, s.revision, s.total_key, s.total_size
        ),
        "fields" => {
            println!("\"Hash\" : {}", s.hash);
            println!("\"Revision\" : {}", s.revision);
            println!("\"Keys\" : {}", s.total_key);
            println!("\"Size\" : {}", s.total_size);
        }
        "table" => print!(
            "{}",
            table(
                &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                &[
                    format!("{:x}", s.hash),
                    s.revision.to_string(),
                    s.total_key.to_string(),
                    size
                ]
            )
        ),
        other => return Err(bad_args(format!("unknown output format {other:?}"))),
    }
    Ok(())
}

/// One-row table as etcdctl draws it: centred headers, values to the right.
fn table(headers: &[&str], row: &[String]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .zip(row)
        .map(|(h, v)| h.len().max(v.len()))
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = rule.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let gap = w - h.len();
        let left = gap / 2;
        out += &format!("| {}{}{} ", " ".repeat(left), h, " ".repeat(gap - left));
    }
    out += "|\n";
    out += &rule;
    for (v, w) in row.iter().zip(&widths) {
        out += &format!("| {v:>w$} ");
    }
    out += "|\n";
    out += &rule;
    out
}

fn restore(o: &RestoreOptions) -> Result<(), Failure> {
    let restored = runtime()?.block_on(backup::restore(o)).map_err(error)?;
    let i = &restored.imported;
    eprintln!(
        "restored snapshot {} into {}: member {:x} of cluster {:x}, revision {}, {} revision records, {} leases, {} users, {} roles, auth {}",
        o.snapshot.display(),
        restored.data_dir.display(),
        restored.member_id,
        restored.cluster_id,
        i.revision,
        i.keys,
        i.leases,
        i.users,
        i.roles,
        if i.auth_enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> Line {
        match parse(args.iter().map(|a| a.to_string()).collect()) {
            Ok(l) => l,
            Err(Failure(code, msg)) => panic!("parse {args:?}: {code} {msg}"),
        }
    }

    #[test]
    fn credentials_follow_etcdctls_user_and_password_flags() {
        let creds = |args: &[&str]| match line(args).credentials() {
            Ok(c) => Ok(c),
            Err(Failure(code, _)) => Err(code),
        };
        let pair = |u: &str, p: &str| Ok(Some((u.to_owned(), p.to_owned())));
        assert_eq!(creds(&["snapshot", "save", "f"]), Ok(None));
        assert_eq!(
            creds(&["--user=root:pw", "snapshot", "save", "f"]),
            pair("root", "pw")
        );
        assert_eq!(creds(&["--user", "root:a:b"]), pair("root", "a:b"));
        assert_eq!(
            creds(&["--user=ro:ot", "--password=pw"]),
            pair("ro:ot", "pw")
        );
        assert_eq!(
            creds(&["--user=root:pw", "--password="]),
            pair("root", "pw")
        );
        assert_eq!(creds(&["--password=pw"]), Ok(None));
        assert_eq!(creds(&["--user=root"]), Err(EXIT_BAD_ARGS));
    }

    #[test]
    fn sizes_print_like_go_humanize() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(2_100_000), "2.1 MB");
        assert_eq!(human_bytes(4096), "4.1 kB");
    }
}
