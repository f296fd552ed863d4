//! `check perf` and `check datascale` with etcdctl 3.4's loads, prefixes,
//! `--auto-compact`/`--auto-defrag`, progress line and verdict lines.
//!
//! `check perf` writes 1 KiB values under 256-byte random keys at the load's
//! rate for 60 seconds, at most the load's client count in flight, and
//! passes when the throughput reached is over 90 % of the rate, the slowest
//! write under 0.5 s and the latencies' standard deviation under 0.1 s.
//! Unlike etcdctl's rate limiter (whose ticks a busy 2-core machine loses),
//! the load here is an open-loop schedule: write `i` is due at `i / rate`
//! seconds and a late one goes out at once, never dropped, over a few
//! HTTP/2 connections; the throughput printed is the one reached
//! (completed writes over the time until the last one answered). A
//! write's latency runs from when it went out. `CAIRNCTL_CHECK_PERF_DURATION`
//! (seconds, not an etcdctl option) shortens the run for tests.
//!
//! `check datascale` writes the load's count of 512-byte values under
//! 512-byte keys with the load's client count in flight, and reports the
//! growth of the first endpoint's `process_resident_memory_bytes` (its
//! `/metrics`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::client::{defrag_member, dial_until, endpoint_url, Client, Ctx, Global};
use super::flags::{switch, value, Flags, Spec};
use super::kv::prefix_end;
use super::{Failure, EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT, PROGRAM};

pub const PERF_FLAGS: &[Spec] = &[
    value("load"),
    value("prefix"),
    switch("auto-compact"),
    switch("auto-defrag"),
];

pub const DATASCALE_FLAGS: &[Spec] = PERF_FLAGS;

/// The test's own duration of `check perf`, in seconds (hidden).
pub const PERF_DURATION_ENV: &str = "CAIRNCTL_CHECK_PERF_DURATION";

/// A load's name: `s`, `m`, `l`, `xl` or their long forms.
fn model(load: &str) -> Result<usize, Failure> {
    match load {
        "s" | "small" => Ok(0),
        "m" | "medium" => Ok(1),
        "l" | "large" => Ok(2),
        "xl" | "xLarge" => Ok(3),
        _ => Err(Failure(
            EXIT_BAD_FEATURE,
            format!("unknown load option {load}"),
        )),
    }
}

/// `check perf`'s loads: writes per second, clients, seconds.
const PERF_LOADS: [(u32, usize, u64); 4] = [
    (150, 50, 60),
    (1000, 200, 60),
    (8000, 500, 60),
    (15000, 1000, 60),
];

/// `check datascale`'s loads: keys, bytes per key-value, clients.
const DATASCALE_LOADS: [(usize, usize, usize); 4] = [
    (10_000, 1024, 50),
    (100_000, 1024, 200),
    (1_000_000, 1024, 500),
    (3_000_000, 1024, 1000),
];

/// Clients share one HTTP/2 connection per this many.
const CLIENTS_PER_CONNECTION: usize = 64;

/// `cairnctl check perf|datascale`.
pub fn run(sub: &str, g: Global, f: &Flags, rest: &[String]) -> Result<(), Failure> {
    let _ = rest;
    let (name, default_prefix) = match sub {
        "perf" => ("perf", "/etcdctl-check-perf/"),
        _ => ("datascale", "/etcdctl-check-datascale/"),
    };
    let m = model(&f.str_or("load", "s"))?;
    let prefix = f.str_or("prefix", default_prefix).into_bytes();
    let opts = After {
        compact: f.bool("auto-compact")?,
        defrag: f.bool("auto-defrag")?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure(EXIT_ERROR, format!("cannot start the async runtime: {e}")))?;
    if name == "perf" {
        let duration = match std::env::var(PERF_DURATION_ENV) {
            Ok(v) => Duration::from_secs_f64(v.parse::<f64>().map_err(|_| {
                Failure(EXIT_ERROR, format!("{PERF_DURATION_ENV}: bad number {v:?}"))
            })?),
            Err(_) => Duration::from_secs(PERF_LOADS[m].2),
        };
        rt.block_on(perf(g, PERF_LOADS[m], duration, prefix, opts))
    } else {
        rt.block_on(datascale(g, DATASCALE_LOADS[m], prefix, opts))
    }
}

/// What to do once the keys are deleted.
struct After {
    compact: bool,
    defrag: bool,
}

/// The answers: each success's latency in seconds, each error's count.
#[derive(Default)]
struct Results {
    lats: Vec<f64>,
    errors: BTreeMap<String, usize>,
}

/// The summary of [`Results`] (etcd's `report.Stats`).
struct Stats {
    rps: f64,
    slowest: f64,
    stddev: f64,
    errors: BTreeMap<String, usize>,
}

impl Results {
    fn stats(self, total: Duration) -> Stats {
        let n = self.lats.len() as f64;
        let avg = self.lats.iter().sum::<f64>() / n;
        let var = self.lats.iter().map(|l| (l - avg) * (l - avg)).sum::<f64>() / n;
        Stats {
            rps: n / total.as_secs_f64(),
            slowest: self.lats.iter().cloned().fold(0.0, f64::max),
            stddev: var.sqrt(),
            errors: self.errors,
        }
    }
}

/// A key of `size` bytes: `prefix`, then a random positive number as Go's
/// `binary.PutVarint` writes it, then zeros up to `size` bytes after the
/// prefix.
fn random_key(prefix: &[u8], size: usize, rng: &mut impl Rng) -> Vec<u8> {
    let x: i64 = rng.random_range(0..i64::MAX);
    let mut ux = ((x << 1) ^ (x >> 63)) as u64;
    let mut k = prefix.to_vec();
    while ux >= 0x80 {
        k.push(ux as u8 | 0x80);
        ux >>= 7;
    }
    k.push(ux as u8);
    k.resize(prefix.len() + size, 0);
    k
}

/// pb's progress line (etcdctl's `pb.v1` bar, with no terminal width:
/// counts, percent, time left; the time taken when finished), redrawn on
/// stdout every 200 ms.
#[derive(Clone)]
struct Bar {
    total: u64,
    current: Arc<std::sync::atomic::AtomicU64>,
    start: std::time::Instant,
}

impl Bar {
    fn start(total: u64) -> (Bar, tokio::task::JoinHandle<()>) {
        let bar = Bar {
            total,
            current: Arc::default(),
            start: std::time::Instant::now(),
        };
        bar.draw(false);
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                b.draw(false);
            }
        });
        (bar, task)
    }

    fn add(&self, n: u64) {
        self.current
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn line(&self, done: bool) -> String {
        let cur = self
            .current
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(self.total);
        let pct = if self.total == 0 {
            100.0
        } else {
            cur as f64 * 100.0 / self.total as f64
        };
        let mut l = format!(" {cur} / {} {:>8}", self.total, format!("{pct:.2}%"));
        let elapsed = self.start.elapsed();
        if done {
            l += &format!(
                " {}",
                super::output::go_duration_string(Duration::from_secs(
                    elapsed.as_secs_f64().round() as u64
                ))
            );
        } else if cur > 0 && cur < self.total {
            let left = elapsed.as_secs_f64() / cur as f64 * (self.total - cur) as f64;
            let left = left as u64;
            if left > 0 {
                l += &format!(" {:02}m{:02}s", left / 60, left % 60);
            }
        }
        l
    }

    fn draw(&self, done: bool) {
        let mut o = std::io::stdout().lock();
        let _ = write!(o, "\r{}", self.line(done));
        if done {
            let _ = writeln!(o);
        }
        let _ = o.flush();
    }

    fn finish(&self, task: tokio::task::JoinHandle<()>) {
        task.abort();
        self.draw(true);
    }
}

/// A client logged in to the cluster, and `n` connections to the member
/// it reached, each with its token.
async fn connections(g: &Global, n: usize) -> Result<(Client, Vec<Ctx>), Failure> {
    let mut c = Client::new(g.clone());
    c.ensure_login().await?;
    let ctx = c
        .stream_ctx(g.dial_timeout)
        .await
        .map_err(|e| Failure(EXIT_ERROR, e))?;
    let ep = c.current_endpoint().unwrap_or_default().to_owned();
    let mut conns = vec![ctx.clone()];
    for _ in 1..n {
        let deadline = std::time::Instant::now() + g.dial_timeout;
        let channel = dial_until(g, &ep, deadline)
            .await
            .map_err(|e| Failure(EXIT_ERROR, e))?;
        let mut cx = ctx.clone();
        cx.channel = channel;
        conns.push(cx);
    }
    Ok((c, conns))
}

/// Fails with etcdctl's error when `prefix` already has keys.
async fn ensure_empty(c: &mut Client, prefix: &[u8], within: Duration) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + within;
    let r = c
        .range_until(
            deadline,
            RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                limit: 1,
                ..RangeRequest::default()
            },
        )
        .await
        .map_err(|e| Failure(EXIT_ERROR, e))?;
    if !r.kvs.is_empty() {
        let p = String::from_utf8_lossy(prefix);
        return Err(Failure(
            EXIT_INVALID_INPUT,
            format!(
                "prefix {} has keys. Delete with {PROGRAM} del --prefix {p} first",
                super::output::go_quote(&p)
            ),
        ));
    }
    Ok(())
}

/// One put on `ctx`, its latency or error recorded in `results`.
async fn timed_put(ctx: Ctx, key: Vec<u8>, value: Vec<u8>, results: &Mutex<Results>) {
    let req = ctx.req(PutRequest {
        key,
        value,
        ..PutRequest::default()
    });
    let st = Instant::now();
    let r = KvClient::new(ctx.channel).put(req).await;
    let took = st.elapsed().as_secs_f64();
    let mut res = results.lock().unwrap_or_else(|e| e.into_inner());
    match r {
        Ok(_) => res.lats.push(took),
        Err(s) => *res.errors.entry(super::client::rpc_error(&s)).or_default() += 1,
    }
}

/// Deletes the check's keys, then compacts and defragments if asked.
async fn clean_up(
    c: &mut Client,
    g: &Global,
    prefix: &[u8],
    opts: &After,
    within: Option<Duration>,
) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + within.unwrap_or(Duration::from_secs(3600));
    let d = c
        .call_until(deadline, |ctx| {
            let req = ctx.req(DeleteRangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                ..DeleteRangeRequest::default()
            });
            async move {
                KvClient::new(ctx.channel)
                    .delete_range(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
        .map_err(|e| Failure(EXIT_ERROR, e))?;
    if opts.compact {
        let rev = d.header.map_or(0, |h| h.revision);
        println!("Compacting with revision {rev}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        c.call_until(deadline, |ctx| {
            let req = ctx.req(CompactionRequest {
                revision: rev,
                physical: true,
            });
            async move { KvClient::new(ctx.channel).compact(req).await.map(|_| ()) }
        })
        .await
        .map_err(|e| Failure(EXIT_ERROR, e))?;
        println!("Compacted with revision {rev}");
    }
    if opts.defrag {
        for ep in &g.endpoints {
            println!("Defragmenting {}", super::output::go_quote(ep));
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            defrag_member(g, ep, g.credentials.as_ref(), deadline)
                .await
                .map_err(|e| Failure(EXIT_ERROR, e))?;
            println!("Defragmented {}", super::output::go_quote(ep));
        }
    }
    Ok(())
}

fn print_errors(errors: &BTreeMap<String, usize>) {
    println!("FAIL: too many errors");
    for (e, n) in errors {
        println!("FAIL: ERROR({e}) -> {n}");
    }
}

async fn perf(
    g: Global,
    (rate, clients, _): (u32, usize, u64),
    duration: Duration,
    prefix: Vec<u8>,
    opts: After,
) -> Result<(), Failure> {
    let (mut c, conns) = connections(&g, clients.div_ceil(CLIENTS_PER_CONNECTION)).await?;
    ensure_empty(&mut c, &prefix, duration).await?;
    let value = vec![0u8; 1024];
    let results = Arc::new(Mutex::new(Results::default()));
    let (bar, bar_task) = Bar::start(duration.as_secs_f64().ceil() as u64);
    let ticker = {
        let bar = bar.clone();
        let ticks = bar.total;
        tokio::spawn(async move {
            for _ in 0..ticks {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.add(1);
            }
        })
    };
    // The open-loop schedule: write i is due at start + i / rate; at most
    // `clients` in flight.
    let slots = Arc::new(tokio::sync::Semaphore::new(clients));
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let start = Instant::now();
    let end = start + duration;
    let mut i: u64 = 0;
    loop {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let ctx = conns[i as usize % conns.len()].clone();
        let key = random_key(&prefix, 256, &mut rng);
        let (value, results) = (value.clone(), results.clone());
        tokio::spawn(async move {
            timed_put(ctx, key, value, &results).await;
            drop(slot);
        });
        i += 1;
    }
    let _ = slots.acquire_many(clients as u32).await;
    let total = start.elapsed();
    let _ = ticker.await;
    bar.finish(bar_task);
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    let s = results.stats(total);
    clean_up(&mut c, &g, &prefix, &opts, Some(Duration::from_secs(30))).await?;
    let mut ok = true;
    if !s.errors.is_empty() {
        print_errors(&s.errors);
        ok = false;
    }
    // etcdctl prints the integer part plus one.
    let shown = s.rps as i64 + 1;
    if s.rps / rate as f64 <= 0.9 {
        println!("FAIL: Throughput too low: {shown} writes/s");
        ok = false;
    } else {
        println!("PASS: Throughput is {shown} writes/s");
    }
    if s.slowest > 0.5 {
        println!("Slowest request took too long: {:.6}s", s.slowest);
        ok = false;
    } else {
        println!("PASS: Slowest request took {:.6}s", s.slowest);
    }
    if s.stddev > 0.1 {
        println!("Stddev too high: {:.6}s", s.stddev);
        ok = false;
    } else {
        println!("PASS: Stddev is {:.6}s", s.stddev);
    }
    if ok {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL");
        Err(Failure(EXIT_ERROR, String::new()))
    }
}

/// The `process_resident_memory_bytes` of the member at `host` (its
/// `/metrics`), or 0 after printing why not (etcdctl's
/// `endpointMemoryMetrics`).
fn resident_memory(host: &str) -> f64 {
    const KEY: &str = "process_resident_memory_bytes";
    let url = format!("{}/metrics", endpoint_url(host));
    let body = match http_get(&url) {
        Ok(b) => b,
        Err(e) => {
            println!("fetch error: Get {}: {e}", super::output::go_quote(&url));
            return 0.0;
        }
    };
    let Some(line) = body.lines().find(|l| l.starts_with(KEY)) else {
        println!("could not find: {KEY}");
        return 0.0;
    };
    let v = line[KEY.len()..].trim();
    match v.parse::<f64>() {
        Ok(n) => n,
        Err(_) => {
            println!(
                "parse error: strconv.ParseFloat: parsing {}: invalid syntax",
                super::output::go_quote(v)
            );
            0.0
        }
    }
}

/// The body of a plain HTTP/1.1 GET of `url` (`http://host:port/path`),
/// chunked or not.
fn http_get(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("cairnctl reads /metrics over plain http only")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s =
        std::net::TcpStream::connect(host).map_err(|e| format!("dial tcp {host}: connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cairnctl\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    if !chunked {
        return Ok(body.to_owned());
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or("bad chunked body")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(after.get(..size).ok_or("short chunk")?);
        rest = after
            .get(size..)
            .and_then(|r| r.strip_prefix("\r\n"))
            .ok_or("bad chunk end")?;
    }
}

async fn datascale(
    g: Global,
    (limit, kv_size, clients): (usize, usize, usize),
    prefix: Vec<u8>,
    opts: After,
) -> Result<(), Failure> {
    let (mut c, conns) = connections(&g, clients.div_ceil(CLIENTS_PER_CONNECTION)).await?;
    ensure_empty(&mut c, &prefix, Duration::from_secs(3600)).await?;
    let first = g.endpoints.first().cloned().unwrap_or_default();
    let memory = |when: &str| {
        let first = first.clone();
        let when = when.to_owned();
        async move {
            // A blocking HTTP GET.
            let bytes = cairn_runtime::client_port::run_blocking(move || resident_memory(&first))
                .await
                .unwrap_or(0.0);
            if bytes == 0.0 {
                println!(
                    "FAIL: Could not read process_resident_memory_bytes {when} the put operations."
                );
                return Err(Failure(EXIT_ERROR, String::new()));
            }
            Ok(bytes)
        }
    };
    let bytes_before = memory("before").await?;
    println!(
        "Start data scale check for work load [{limit} key-value pairs, {kv_size} bytes per key-value, {clients} concurrent clients]."
    );
    let (bar, bar_task) = Bar::start(limit as u64);
    let value = vec![0u8; kv_size / 2];
    let results = Arc::new(Mutex::new(Results::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(clients));
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    for i in 0..limit {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let ctx = conns[i % conns.len()].clone();
        let key = random_key(&prefix, kv_size / 2, &mut rng);
        let (value, results, bar) = (value.clone(), results.clone(), bar.clone());
        tokio::spawn(async move {
            timed_put(ctx, key, value, &results).await;
            bar.add(1);
            drop(slot);
        });
    }
    let _ = slots.acquire_many(clients as u32).await;
    bar.finish(bar_task);
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    let bytes_after = memory("after").await?;
    clean_up(&mut c, &g, &prefix, &opts, None).await?;
    if !results.errors.is_empty() {
        print_errors(&results.errors);
        return Err(Failure(EXIT_ERROR, String::new()));
    }
    let mb = (bytes_after - bytes_before) / (1024.0 * 1024.0);
    println!("PASS: Approximate system memory used : {mb:.2} MB.");
    Ok(())
}
