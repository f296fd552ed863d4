//! Shared helpers of the integration tests: start the real `cairn` binary (and
//! etcd 3.4, the oracle) on free loopback ports, run the real etcdctl.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on, for a server about to be started.
/// Below the kernel's ephemeral range (32768 and up here), so no outgoing
/// connection of a test running in parallel can take it before the server
/// binds it (a port from `bind(0)` could be: `client_crate` once failed with
/// "address already in use"); and never the same twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test processes started one after another begin at different places.
    let offset = std::process::id() % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(
            n < SPAN,
            "no free loopback port left below {}",
            FIRST + SPAN
        );
        let port = (FIRST + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A server process, killed (SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub client_url: String,
    pub peer_url: String,
    pub name: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn endpoint(&self) -> String {
        self.client_url.trim_start_matches("http://").to_owned()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn cairn_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

/// Starts `cairn` with `args` (plus `--data-dir` in `dir` unless given), logging to a file.
pub fn spawn_cairn(
    name: &str,
    dir: &Path,
    client_port: u16,
    peer_port: u16,
    extra: &[String],
) -> Proc {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data_dir = dir.join(format!("{name}.cairn"));
    let log = dir.join(format!("{name}.log"));
    let mut args = vec![
        format!("--name={name}"),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
    ];
    if !extra.iter().any(|a| a.starts_with("--initial-cluster=")) {
        args.push(format!("--initial-cluster={name}={peer_url}"));
    }
    args.extend(extra.iter().cloned());
    let child = Command::new(cairn_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn cairn");
    Proc {
        child,
        client_url,
        peer_url,
        name: name.to_owned(),
        data_dir,
        log,
    }
}

/// Starts a single cairn member and waits until it has a leader.
pub fn start_cairn(dir: &Path) -> Proc {
    let p = spawn_cairn("c1", dir, free_port(), free_port(), &[]);
    wait_healthy(&p);
    p
}

/// Starts etcd 3.4 (Debian's etcd-server) as the oracle.
pub fn start_etcd(dir: &Path) -> Proc {
    let (cp, pp) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{cp}");
    let peer_url = format!("http://127.0.0.1:{pp}");
    let data_dir = dir.join("etcd.data");
    let log = dir.join("etcd.log");
    let child = Command::new(etcd_bin())
        .args([
            "--name=c1".to_owned(),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=c1={peer_url}"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn etcd (install the Debian package etcd-server)");
    let p = Proc {
        child,
        client_url,
        peer_url,
        name: "c1".into(),
        data_dir,
        log,
    };
    wait_healthy(&p);
    p
}

pub fn etcd_bin() -> String {
    for c in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(c).exists() {
            return c.to_owned();
        }
    }
    "etcd".to_owned()
}

/// GET `path` over HTTP/1.1 from `endpoint` (host:port); (status, body).
pub fn http_get(endpoint: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = endpoint.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some((status, body))
}

/// The body of a `Transfer-Encoding: chunked` response (etcd sends /metrics
/// so, in 2 KiB chunks: a metric line can straddle two of them).
fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

pub fn wait_healthy(p: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some((200, _)) = http_get(&p.endpoint(), "/health") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} did not become healthy; log:\n{}", p.name, p.log_text());
}

/// Runs etcdctl (API v3) against `endpoints` with `args`, feeding `stdin`.
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl (install the Debian package etcd-client)");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        // etcdctl may exit before reading all of its input; that is its answer.
        let _ = input.write_all(s.as_bytes());
    }
    drop(input);
    child.wait_with_output().expect("etcdctl output")
}

/// etcdctl's stdout, asserting it succeeded.
pub fn ctl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoints, args, None);
    assert!(
        out.status.success(),
        "etcdctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Replaces the digits that follow each occurrence of `pat` with `N`
/// (a sign is kept: etcd's TTL -1 of a missing lease stays visible).
pub fn mask_digits_after(text: &str, pat: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(pat) {
        out.push_str(&rest[..i + pat.len()]);
        rest = &rest[i + pat.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            out.push('N');
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Masks the JSON header fields that legitimately differ between servers
/// (`cluster_id`, `member_id`, `raft_term`).
pub fn mask_json_ids(text: &str) -> String {
    ["cluster_id", "member_id", "raft_term"]
        .iter()
        .fold(text.to_owned(), |out, field| {
            mask_digits_after(&out, &format!("\"{field}\":"))
        })
}
