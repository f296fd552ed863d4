//! Shared helpers of the integration tests: start the real `cairn` binary (and
//! etcd 3.4, the oracle) on free loopback ports, run the real etcdctl.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod sessions;

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

thread_local! {
    static CTL: std::cell::RefCell<String> = std::cell::RefCell::new("etcdctl".to_owned());
}

/// The command line [`etcdctl`] runs on this thread: etcdctl 3.4, or
/// another (cairnctl) inside [`with_ctl`].
pub fn ctl_program() -> String {
    CTL.with(|c| c.borrow().clone())
}

/// cairn's own etcdctl.
pub fn cairnctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairnctl")
}

/// Runs `f` with [`etcdctl`] running `program` instead of etcdctl 3.4 on
/// this thread (each test has a thread of its own).
pub fn with_ctl<T>(program: &str, f: impl FnOnce() -> T) -> T {
    let old = CTL.with(|c| c.replace(program.to_owned()));
    let r = f();
    CTL.with(|c| *c.borrow_mut() = old);
    r
}

/// Runs etcdctl (API v3) against `endpoints` with `args`, feeding `stdin`
/// (or, inside [`with_ctl`], that program: its name in what it prints is
/// masked as `etcdctl`).
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let program = ctl_program();
    let mut child = Command::new(&program)
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
    let mut out = child.wait_with_output().expect("etcdctl output");
    if program != "etcdctl" {
        let name = Path::new(&program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for text in [&mut out.stdout, &mut out.stderr] {
            if let Ok(s) = String::from_utf8(text.clone()) {
                *text = s.replace(&name, "etcdctl").into_bytes();
            }
        }
    }
    out
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

/// A CLI's output without what differs from run to run: etcdctl's JSON
/// log lines (retries: times and client ids) dropped, `endpoint health`'s
/// `took = …` masked.
pub fn mask_ctl_noise(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("{\"level\":"))
        .map(|l| match l.split_once(" took = ") {
            Some((head, _)) => format!("{head} took = T\n"),
            None => format!("{l}\n"),
        })
        .collect()
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

// ---- clusters of either server, for the membership tests ----

/// The server a scenario runs against: cairn, or etcd 3.4 (Debian's
/// etcd-server) as the oracle. Both take etcd's flags and `ETCD_*` variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Etcd,
    Cairn,
}

impl Server {
    pub fn label(self) -> &'static str {
        match self {
            Server::Etcd => "etcd",
            Server::Cairn => "cairn",
        }
    }

    fn program(self) -> String {
        match self {
            Server::Etcd => etcd_bin(),
            Server::Cairn => cairn_bin().to_owned(),
        }
    }

    /// The server the membership property tests run against: cairn, or etcd
    /// 3.4 when `MEMBERSHIP_TESTS_SERVER=etcd` (a check of the tests themselves).
    pub fn under_test() -> Server {
        match std::env::var("MEMBERSHIP_TESTS_SERVER").as_deref() {
            Ok("etcd") => Server::Etcd,
            _ => Server::Cairn,
        }
    }
}

/// Starts `server` as member `name` with its data directory
/// (`<dir>/<name>.<server>`) and its client and peer URLs on the loopback
/// ports given, plus `flags`; `env` are its only `ETCD_*` / `CAIRN_*`
/// variables (inherited ones are removed). Everything else — name, initial
/// cluster, cluster state — comes from `flags` or `env`, as an operator gives
/// it. Logs (stderr) go to `<dir>/<name>.<n>.log`, a new file per start.
pub fn spawn_member(
    server: Server,
    name: &str,
    dir: &Path,
    client_port: u16,
    peer_port: u16,
    flags: &[String],
    env: &[(String, String)],
) -> Proc {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data_dir = dir.join(format!("{name}.{}", server.label()));
    let log = (0..)
        .map(|n| dir.join(format!("{name}.{n}.log")))
        .find(|p| !p.exists())
        .expect("a free log file name");
    let mut cmd = Command::new(server.program());
    for (var, _) in std::env::vars() {
        if var.starts_with("ETCD_") || var.starts_with("CAIRN_") {
            cmd.env_remove(var);
        }
    }
    cmd.args([
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
    ])
    .args(flags)
    .envs(env.iter().map(|(k, v)| (k, v)))
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).expect("log file"));
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", server.label()));
    Proc {
        child,
        client_url,
        peer_url,
        name: name.to_owned(),
        data_dir,
        log,
    }
}

/// The flags of a founding member of a new cluster `initial_cluster`
/// (`name=url,...`), as etcd's docs give them.
pub fn founding_flags(name: &str, peer_url: &str, initial_cluster: &str) -> Vec<String> {
    vec![
        format!("--name={name}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={initial_cluster}"),
        "--initial-cluster-state=new".to_owned(),
    ]
}

/// The flags of a member joining a running cluster after `member add`:
/// `initial_cluster` lists every current member and the new one.
pub fn joining_flags(name: &str, peer_url: &str, initial_cluster: &str) -> Vec<String> {
    vec![
        format!("--name={name}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster={initial_cluster}"),
        "--initial-cluster-state=existing".to_owned(),
    ]
}

impl Proc {
    /// The exit status, once the process has exited within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Calls `probe` until it returns `Ok`, at most for `within`; panics with
/// `what` and the last `Err` (the state seen) if it never does.
pub fn poll_until<T>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(t) => return t,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting until {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// etcdctl's stdout and stderr together, and whether it succeeded.
pub fn ctl_text(endpoints: &str, args: &[&str]) -> (bool, String) {
    let out = etcdctl(endpoints, args, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One row of `etcdctl member list` (simple format).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    /// In hex, as etcdctl prints it.
    pub id: String,
    pub started: bool,
    pub name: String,
    pub peer_urls: String,
    pub client_urls: String,
    pub is_learner: bool,
}

/// `etcdctl member list` as rows, or the error text.
pub fn member_list(endpoints: &str) -> Result<Vec<MemberRow>, String> {
    let (ok, text) = ctl_text(endpoints, &["member", "list"]);
    if !ok {
        return Err(text);
    }
    text.lines()
        .filter(|l| !l.starts_with('{') && !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(", ").collect();
            match f.as_slice() {
                [id, status, name, peer, client, learner] => Ok(MemberRow {
                    id: id.to_string(),
                    started: *status == "started",
                    name: name.to_string(),
                    peer_urls: peer.to_string(),
                    client_urls: client.to_string(),
                    is_learner: *learner == "true",
                }),
                _ => Err(format!("unexpected member list line {line:?}")),
            }
        })
        .collect()
}

/// The id (hex) of the member whose peer URLs are `peer_url`, per `endpoints`.
pub fn member_id_by_peer(endpoints: &str, peer_url: &str) -> Result<String, String> {
    let rows = member_list(endpoints)?;
    rows.iter()
        .find(|r| r.peer_urls == peer_url)
        .map(|r| r.id.clone())
        .ok_or_else(|| format!("no member at {peer_url} in {rows:?}"))
}

/// Waits until the member at `peer_url` is listed as started with `name`
/// (it has published itself), as seen through `endpoints`.
pub fn wait_started(endpoints: &str, name: &str, peer_url: &str, within: Duration) {
    poll_until(within, &format!("{name} is listed as started"), || {
        let rows = member_list(endpoints)?;
        match rows.iter().find(|r| r.peer_urls == peer_url) {
            Some(r) if r.started && r.name == name => Ok(()),
            _ => Err(format!("{rows:?}")),
        }
    })
}

/// (member id, leader id, is learner) from `etcdctl endpoint status`, ids in hex.
pub fn endpoint_status(endpoint: &str) -> Result<(String, String, bool), String> {
    let (ok, text) = ctl_text(endpoint, &["endpoint", "status", "-w", "fields"]);
    if !ok {
        return Err(text);
    }
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("\"{name}\" : ")))
            .and_then(|l| l.split(" : ").nth(1))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| format!("no {name} in {text}"))
    };
    let hex = |dec: String| {
        dec.parse::<u64>()
            .map(|n| format!("{n:x}"))
            .map_err(|e| format!("{dec}: {e}"))
    };
    Ok((
        hex(field("MemberID")?)?,
        hex(field("Leader")?)?,
        field("IsLearner")? == "true",
    ))
}

/// (hash, revision) of `etcdctl endpoint hashkv` on one endpoint.
pub fn hash_kv_of(endpoint: &str) -> Result<String, String> {
    let (ok, text) = ctl_text(endpoint, &["endpoint", "hashkv", "-w", "fields"]);
    if !ok {
        return Err(text);
    }
    Ok(text
        .lines()
        .filter(|l| l.contains("\"Hash\"") || l.contains("\"Revision\""))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Waits until every endpoint answers HashKV with one hash at one revision.
pub fn wait_equal_hash_kv(endpoints: &[String], within: Duration) -> String {
    poll_until(within, "every member has the same HashKV", || {
        let hashes: Vec<Result<String, String>> = endpoints.iter().map(|e| hash_kv_of(e)).collect();
        match hashes.first() {
            Some(Ok(first)) if hashes.iter().all(|h| h.as_ref() == Ok(first)) => Ok(first.clone()),
            _ => Err(format!("{hashes:?}")),
        }
    })
}

/// Writers putting keys `<prefix><writer>/<n>` = `v<n>` through the
/// `etcd-client` crate, as fast as the cluster acknowledges, until stopped.
/// A failed or timed-out put is retried (it may or may not have happened);
/// only acknowledged puts are recorded.
pub struct Writers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<(String, String)>>>,
}

impl Writers {
    pub fn start(endpoints: &[String], writers: usize, prefix: &str) -> Writers {
        use std::sync::atomic::AtomicBool;
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let threads = (0..writers)
            .map(|w| {
                let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
                let key_prefix = format!("{prefix}{w}/");
                let (stop, acked) = (stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for the writer")
                        .block_on(write_until_stopped(urls, key_prefix, stop, acked))
                })
            })
            .collect();
        Writers {
            stop,
            acked,
            threads,
        }
    }

    /// How many puts have been acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `more` further puts are acknowledged (writes go on).
    pub fn wait_progress(&self, more: usize, within: Duration, during: &str) {
        let target = self.acked() + more;
        poll_until(
            within,
            &format!("{more} more writes are acknowledged {during}"),
            || match self.acked() {
                n if n >= target => Ok(()),
                n => Err(format!("{n} acknowledged, want {target}")),
            },
        );
    }

    /// Stops the writers; every acknowledged (key, value).
    pub fn stop(self) -> Vec<(String, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("writer thread"))
            .collect()
    }
}

async fn write_until_stopped(
    urls: Vec<String>,
    prefix: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<(String, String)> {
    use std::sync::atomic::Ordering;
    let mut done = Vec::new();
    let mut client = None;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let c = match client.as_mut() {
            Some(c) => c,
            None => {
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(2))
                    .with_timeout(Duration::from_secs(5));
                match etcd_client::Client::connect(urls.clone(), Some(opts)).await {
                    Ok(c) => client.insert(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        let (key, value) = (format!("{prefix}{n:06}"), format!("v{n}"));
        match tokio::time::timeout(
            Duration::from_secs(6),
            c.put(key.clone(), value.clone(), None),
        )
        .await
        {
            Ok(Ok(_)) => {
                done.push((key, value));
                acked.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    done
}

/// Every acknowledged (key, value) is readable, by a linearizable read
/// through `endpoint`; panics naming the first one lost.
pub fn assert_all_readable(endpoint: &str, prefix: &str, acked: &[(String, String)]) {
    let (ok, text) = ctl_text(endpoint, &["get", prefix, "--prefix"]);
    assert!(
        ok,
        "reading back {prefix}* through {endpoint} failed: {text}"
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('{')).collect();
    let stored: std::collections::BTreeMap<&str, &str> = lines
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((*k, *v)),
            _ => None,
        })
        .collect();
    for (key, value) in acked {
        assert_eq!(
            stored.get(key.as_str()),
            Some(&value.as_str()),
            "acknowledged write {key}={value} is lost ({} keys stored, {} acknowledged)",
            stored.len(),
            acked.len()
        );
    }
}

/// The first number field `field` in etcdctl's `-w json` output.
pub fn json_number(text: &str, field: &str) -> u64 {
    let pat = format!("\"{field}\":");
    let at = text
        .find(&pat)
        .unwrap_or_else(|| panic!("no {field} in {text}"))
        + pat.len();
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a number")
}

/// Asserts two transcripts are equal step by step; on a difference the
/// message shows each differing pair of steps under its label.
pub fn assert_same_steps(want: &[String], got: &[String], labels: (&str, &str), what: &str) {
    assert_eq!(
        want.len(),
        got.len(),
        "{what}: sessions of different lengths"
    );
    let diffs: Vec<String> = want
        .iter()
        .zip(got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("--- {}\n{w}--- {}\n{g}", labels.0, labels.1))
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} of {} steps differ:\n{}",
        diffs.len(),
        want.len(),
        diffs.join("\n")
    );
}
