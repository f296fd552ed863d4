//! `cairn-stalls`: how long writes stall during maintenance, on cairn or on
//! etcd, started from their binaries on loopback with the same flags.
//!
//! ```text
//! cairn-stalls rolling-restart --server cairn|etcd [--bin PATH] [--writers 6] [--rounds 1]
//! cairn-stalls defrag --server cairn|etcd [--bin PATH] [--fill-mb 1024] [--writers 8]
//! cairn-stalls snapshot --server cairn|etcd [--bin PATH] [--fill-mb 1024] [--writers 8]
//! ```
//!
//! - `rolling-restart`: a 3-member cluster (heartbeat 100 ms, election
//!   timeout 1 000 ms, etcd's defaults), `--writers` writers spread over
//!   the members putting without pause; each member in turn gets SIGTERM,
//!   is waited for, restarted on its data and waited for until it serves.
//!   Reports the longest time during the restarts in which no writer got a
//!   put acknowledged, and the slowest acknowledged put.
//! - `defrag`: one member filled with `--fill-mb` MB of 4 KiB values
//!   written twice (so half of it is history) and compacted, then
//!   `--writers` writers put 256-byte values while one Defragment runs.
//!   Reports the defrag's duration and put latency before and during it.
//! - `snapshot`: the same store, while one `Maintenance.Snapshot` streams the
//!   whole database to this process (and is thrown away). Reports its
//!   duration and size, put latency before and during it, and the server's
//!   resident memory (VmRSS) and peak (VmHWM) before and after.
//!
//! See docs/benchmarks.md for the figures. Not compiled under madsim.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-stalls: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(stalls::main(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-stalls: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
mod stalls {
    use std::net::TcpListener;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use cairn_benches::histogram::Histogram;
    use cairn_proto::etcdserverpb::kv_client::KvClient;
    use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
    use cairn_proto::etcdserverpb::{CompactionRequest, DefragmentRequest, PutRequest};
    use tonic::transport::{Channel, Endpoint};

    const USAGE: &str = "usage: cairn-stalls rolling-restart|defrag|snapshot --server cairn|etcd [--bin PATH] [--writers N] [--rounds N] [--fill-mb MB]";

    struct Opts {
        server: String,
        bin: String,
        writers: usize,
        rounds: usize,
        fill_mb: u64,
    }

    fn parse(args: &[String]) -> Result<(String, Opts), String> {
        let mode = args.first().cloned().ok_or(USAGE)?;
        let mut o = Opts {
            server: String::new(),
            bin: String::new(),
            writers: 0,
            rounds: 1,
            fill_mb: 1024,
        };
        let mut it = args[1..].iter();
        while let Some(flag) = it.next() {
            let v = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
            match flag.as_str() {
                "--server" => o.server = v.clone(),
                "--bin" => o.bin = v.clone(),
                "--writers" => o.writers = num(v)? as usize,
                "--rounds" => o.rounds = num(v)? as usize,
                "--fill-mb" => o.fill_mb = num(v)?,
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        if o.server != "cairn" && o.server != "etcd" {
            return Err(format!("--server cairn|etcd\n{USAGE}"));
        }
        if o.bin.is_empty() {
            o.bin = match o.server.as_str() {
                "cairn" => "target/release/cairn".into(),
                _ => "etcd".into(),
            };
        }
        Ok((mode, o))
    }

    pub async fn main(args: Vec<String>) -> Result<(), String> {
        let (mode, o) = parse(&args)?;
        match mode.as_str() {
            "rolling-restart" => rolling_restart(&o).await,
            "defrag" => maintenance(&o, false).await,
            "snapshot" => maintenance(&o, true).await,
            _ => Err(USAGE.into()),
        }
    }

    fn free_port() -> Result<u16, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        Ok(l.local_addr().map_err(|e| e.to_string())?.port())
    }

    struct Member {
        name: String,
        client: String,
        args: Vec<String>,
        log: PathBuf,
        child: Option<Child>,
    }

    impl Member {
        fn start(&mut self, bin: &str) -> Result<(), String> {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .map_err(|e| e.to_string())?;
            let child = Command::new(bin)
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("spawn {bin}: {e}"))?;
            self.child = Some(child);
            Ok(())
        }

        /// SIGTERM, then wait for the process to exit.
        fn stop(&mut self) -> Result<(), String> {
            if let Some(mut c) = self.child.take() {
                let status = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status()
                    .map_err(|e| e.to_string())?;
                if !status.success() {
                    return Err(format!("kill -TERM {} failed", self.name));
                }
                c.wait().map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }

    impl Drop for Member {
        fn drop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    fn members(o: &Opts, dir: &Path, n: usize, extra: &[String]) -> Result<Vec<Member>, String> {
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_, String>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{}=http://127.0.0.1:{p}", i + 1))
            .collect();
        Ok(ports
            .iter()
            .enumerate()
            .map(|(i, (c, p))| {
                let name = format!("m{}", i + 1);
                let client = format!("http://127.0.0.1:{c}");
                let peer = format!("http://127.0.0.1:{p}");
                let mut args = vec![
                    format!("--name={name}"),
                    format!("--data-dir={}", dir.join(&name).display()),
                    format!("--listen-client-urls={client}"),
                    format!("--advertise-client-urls={client}"),
                    format!("--listen-peer-urls={peer}"),
                    format!("--initial-advertise-peer-urls={peer}"),
                    format!("--initial-cluster={}", initial.join(",")),
                    "--initial-cluster-state=new".into(),
                    "--initial-cluster-token=stalls".into(),
                    "--heartbeat-interval=100".into(),
                    "--election-timeout=1000".into(),
                ];
                args.extend(extra.iter().cloned());
                Member {
                    log: dir.join(format!("{name}-{}.log", o.server)),
                    name,
                    client,
                    args,
                    child: None,
                }
            })
            .collect())
    }

    fn channel(url: &str) -> Result<Channel, String> {
        Ok(Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy())
    }

    /// Waits until a put through `url` is acknowledged.
    async fn wait_serving(url: &str, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut kv = KvClient::new(channel(url)?);
        loop {
            let put = PutRequest {
                key: b"ready".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), kv.put(put)).await {
                return Ok(());
            }
            if start.elapsed() > within {
                return Err(format!("{url} did not serve within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Acknowledged puts: (completion time, latency).
    type Acks = Arc<Mutex<Vec<(Instant, Duration)>>>;
    /// Failed puts, by error.
    type Failures = Arc<Mutex<std::collections::BTreeMap<String, u64>>>;

    fn top_failures(f: &Failures) -> String {
        let f = f.lock().expect("failures");
        let mut v: Vec<(&String, &u64)> = f.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        v.iter()
            .take(4)
            .map(|(e, n)| format!("{n}× {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn spawn_writers(
        urls: &[String],
        writers: usize,
        value_size: usize,
        stop: Arc<AtomicBool>,
    ) -> Result<(Acks, Failures, Vec<tokio::task::JoinHandle<()>>), String> {
        let acks: Acks = Arc::default();
        let failures: Failures = Arc::default();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let mut kv = KvClient::new(channel(&urls[w % urls.len()])?);
            let (acks, failures, stop) = (acks.clone(), failures.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let put = PutRequest {
                        key: format!("w{w}-{}", n % 1000).into_bytes(),
                        value: vec![b'x'; value_size],
                        ..Default::default()
                    };
                    let start = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(5), kv.put(put)).await {
                        Ok(Ok(_)) => {
                            let now = Instant::now();
                            acks.lock().expect("acks").push((now, now - start));
                        }
                        other => {
                            let e = match other {
                                Ok(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
                                _ => "timeout".to_owned(),
                            };
                            *failures.lock().expect("failures").entry(e).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await
                        }
                    }
                }
            }));
        }
        Ok((acks, failures, tasks))
    }

    /// The longest time within [from, to] without an acknowledged put.
    fn longest_gap(acks: &[(Instant, Duration)], from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = acks
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t >= from && *t <= to)
            .collect();
        times.sort();
        let mut last = from;
        let mut gap = Duration::ZERO;
        for t in times.into_iter().chain([to]) {
            gap = gap.max(t.saturating_duration_since(last));
            last = t;
        }
        gap
    }

    fn latencies(acks: &[(Instant, Duration)], from: Instant, to: Instant) -> Histogram {
        let mut h = Histogram::new();
        for (t, l) in acks {
            if *t >= from && *t <= to {
                h.record(l.as_micros() as u64);
            }
        }
        h
    }

    fn ms(us: u64) -> f64 {
        us as f64 / 1000.0
    }

    async fn rolling_restart(o: &Opts) -> Result<(), String> {
        let dir = tempdir()?;
        let mut ms_ = members(o, &dir, 3, &[])?;
        for m in &mut ms_ {
            m.start(&o.bin)?;
        }
        let urls: Vec<String> = ms_.iter().map(|m| m.client.clone()).collect();
        for u in &urls {
            wait_serving(u, Duration::from_secs(30)).await?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writers = if o.writers == 0 { 6 } else { o.writers };
        let (acks, failures, tasks) = spawn_writers(&urls, writers, 256, stop.clone())?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let from = Instant::now();
        let mut per_member = Vec::new();
        for _ in 0..o.rounds {
            for m in ms_.iter_mut() {
                let t0 = Instant::now();
                m.stop()?;
                let stopped = t0.elapsed();
                m.start(&o.bin)?;
                wait_serving(&m.client, Duration::from_secs(60)).await?;
                let back = t0.elapsed();
                // Let the restarted member catch up before the next one goes.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let gap = longest_gap(&acks.lock().expect("acks"), t0, Instant::now());
                per_member.push((m.name.clone(), stopped, back, gap));
            }
        }
        let to = Instant::now();
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            let _ = t.await;
        }
        let acks = acks.lock().expect("acks").clone();
        let gap = longest_gap(&acks, from, to);
        let h = latencies(&acks, from, to);
        println!(
            "{}: rolling restart of 3 members with SIGTERM, {writers} writers: longest time without an acknowledged put {:.1} ms; puts acknowledged {} (p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms)",
            o.server,
            gap.as_secs_f64() * 1000.0,
            h.count(),
            ms(h.quantile(0.5)),
            ms(h.quantile(0.99)),
            ms(h.max()),
        );
        println!("  failed puts (retried): {}", top_failures(&failures));
        for (name, stopped, back, gap) in per_member {
            println!(
                "  {name}: exited {:.0} ms after SIGTERM, serving again after {:.0} ms; longest stall {:.1} ms",
                stopped.as_secs_f64() * 1000.0,
                back.as_secs_f64() * 1000.0,
                gap.as_secs_f64() * 1000.0
            );
        }
        Ok(())
    }

    /// The server's resident and peak memory in MB (`/proc/<pid>/status`).
    fn memory_mb(m: &Member) -> String {
        let Some(pid) = m.child.as_ref().map(Child::id) else {
            return "?".into();
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or("?".to_string(), |kb| format!("{:.0}", kb / 1024.0))
        };
        format!("VmRSS {} MB, VmHWM {} MB", field("VmRSS:"), field("VmHWM:"))
    }

    /// Streams a whole snapshot and drops it; its size in bytes.
    async fn snapshot_size(mt: &mut MaintenanceClient<Channel>) -> Result<u64, String> {
        let mut stream = mt
            .snapshot(cairn_proto::etcdserverpb::SnapshotRequest {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let mut size = 0u64;
        while let Some(m) = stream.message().await.map_err(|e| e.to_string())? {
            size += m.blob.len() as u64;
        }
        Ok(size)
    }

    /// A defragmentation (`snapshot` false) or a snapshot save under writes.
    async fn maintenance(o: &Opts, snapshot: bool) -> Result<(), String> {
        let op = if snapshot { "snapshot" } else { "defragment" };
        let dir = tempdir()?;
        let extra = vec![
            format!("--quota-backend-bytes={}", 8u64 << 30),
            "--snapshot-count=10000".to_string(),
        ];
        let mut ms_ = members(o, &dir, 1, &extra)?;
        ms_[0].start(&o.bin)?;
        let url = ms_[0].client.clone();
        wait_serving(&url, Duration::from_secs(30)).await?;
        // Fill: every key twice, so half of the data is history.
        const VALUE: usize = 4096;
        let keys = (o.fill_mb << 20) / 2 / VALUE as u64;
        let fill_start = Instant::now();
        let mut last_rev = 0;
        for pass in 0..2u8 {
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut tasks = Vec::new();
            for _ in 0..32 {
                let mut kv = KvClient::new(channel(&url)?);
                let next = next.clone();
                tasks.push(tokio::spawn(async move {
                    let mut rev = 0;
                    loop {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        if k >= keys {
                            return Ok::<i64, String>(rev);
                        }
                        let put = PutRequest {
                            key: format!("fill/{k:08}").into_bytes(),
                            value: vec![b'a' + pass; VALUE],
                            ..Default::default()
                        };
                        let r = kv.put(put).await.map_err(|e| e.to_string())?;
                        rev = rev.max(r.into_inner().header.map_or(0, |h| h.revision));
                    }
                }));
            }
            for t in tasks {
                last_rev = last_rev.max(t.await.map_err(|e| e.to_string())??);
            }
        }
        let mut kv = KvClient::new(channel(&url)?);
        kv.compact(CompactionRequest {
            revision: last_rev,
            physical: true,
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut mt = MaintenanceClient::new(channel(&url)?).max_decoding_message_size(usize::MAX);
        let size = |s: cairn_proto::etcdserverpb::StatusResponse| s.db_size;
        let before = size(
            mt.status(cairn_proto::etcdserverpb::StatusRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner(),
        );
        println!(
            "{}: filled {} keys × 2 × {VALUE} B in {:.0} s; compacted at {last_rev}; DB size {:.0} MB",
            o.server,
            keys,
            fill_start.elapsed().as_secs_f64(),
            before as f64 / 1e6
        );

        let stop = Arc::new(AtomicBool::new(false));
        let writers = if o.writers == 0 { 8 } else { o.writers };
        let (acks, failures, tasks) =
            spawn_writers(std::slice::from_ref(&url), writers, 256, stop.clone())?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let memory_before = memory_mb(&ms_[0]);
        let d0 = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(900), async {
            if snapshot {
                snapshot_size(&mut mt).await
            } else {
                mt.defragment(DefragmentRequest {})
                    .await
                    .map(|_| 0)
                    .map_err(|e| e.to_string())
            }
        })
        .await;
        let d1 = Instant::now();
        let memory_after = memory_mb(&ms_[0]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            let _ = t.await;
        }
        let streamed = match result {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(format!("{op}: {e}")),
            Err(_) => return Err(format!("{op} took over 15 minutes")),
        };
        let after = size(
            mt.status(cairn_proto::etcdserverpb::StatusRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner(),
        );
        let acks = acks.lock().expect("acks").clone();
        let base_from = d0 - Duration::from_secs(4);
        let base = latencies(&acks, base_from, d0);
        let during = latencies(&acks, d0, d1);
        println!(
            "{}: {op} took {:.1} s, DB size {:.0} MB -> {:.0} MB{}",
            o.server,
            (d1 - d0).as_secs_f64(),
            before as f64 / 1e6,
            after as f64 / 1e6,
            if snapshot {
                format!(", snapshot streamed {:.0} MB", streamed as f64 / 1e6)
            } else {
                String::new()
            }
        );
        println!("  server memory before: {memory_before}; after: {memory_after}");
        for (label, h) in [("before (4 s)", &base), ("during", &during)] {
            println!(
                "  puts {label}: {} acknowledged, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
                h.count(),
                ms(h.quantile(0.5)),
                ms(h.quantile(0.99)),
                ms(h.max())
            );
        }
        println!("  failed puts: {}", top_failures(&failures));
        println!(
            "  longest time without an acknowledged put during the {op}: {:.1} ms",
            longest_gap(&acks, d0, d1).as_secs_f64() * 1000.0
        );
        Ok(())
    }

    /// A fresh directory under the system's temp dir, removed at exit by
    /// nobody: the figures' logs stay for a look.
    fn tempdir() -> Result<PathBuf, String> {
        let dir = std::env::temp_dir().join(format!(
            "cairn-stalls-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        eprintln!("data and logs in {}", dir.display());
        Ok(dir)
    }
}
