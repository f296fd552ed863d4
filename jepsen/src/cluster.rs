//! The members: the server binary (cairn's release build, or etcd) started in
//! each member's namespace with its data on the real disk, and the signals
//! the nemesis sends them (kill -9, SIGSTOP, SIGCONT, restart).
//! Clock faults: when enabled, each member runs under libfaketime
//! (`LD_PRELOAD`) reading its offset from a file of its own, so a nemesis
//! moves one member's clocks (wall and monotonic, as the process sees them
//! through libc) without touching the host's. Go binaries (etcd) read the
//! clock through the vDSO without libc, so libfaketime does not reach them.
//!
//! Membership churn (the `member` nemesis): a member removed through the
//! Cluster API, killed and wiped, then added back (learner then promoted, or
//! voter) and started empty with `--initial-cluster-state existing`.
//!
//! Tests: the smoke run (`jepsen/smoke.sh`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use etcd_client as ec;

use tokio::process::{Child, Command};

use crate::lazyfs::{LazyFs, Mounted};
use crate::net::{Net, SUBNET};
use crate::workload::connect;

pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Which server the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cairn,
    Etcd,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Cairn => "cairn",
            Target::Etcd => "etcd",
        }
    }
}

pub struct Member {
    pub index: usize,
    pub ns: String,
    pub ip: String,
    pub data: PathBuf,
    pub log: PathBuf,
    pub clock_file: Option<PathBuf>,
    pub child: Option<Child>,
    pub paused: bool,
    /// After the member was added back: the `--initial-cluster` it joins
    /// (with `--initial-cluster-state existing`).
    pub rejoin: Option<String>,
}

pub struct Cluster {
    pub target: Target,
    pub binary: PathBuf,
    pub members: Vec<Member>,
    /// Per member, the lost-unsynced-writes file system under its data
    /// directory (the `lose` nemesis); after `members` so that the
    /// processes are gone before the file systems unmount.
    pub lazy: Vec<Option<Mounted>>,
    token: String,
    initial: String,
    /// Each member's clock offset (`clock` nemesis), and when the real
    /// clock catches up with the furthest any member's clock has read: the
    /// latest real instant plus the offset then in force.
    clock_high: std::sync::Mutex<(Vec<i64>, Option<Instant>)>,
}

impl Cluster {
    /// Members of `net`, data and logs under `dir` (which must exist).
    pub fn new(target: Target, binary: PathBuf, net: &Net, dir: &Path, clocks: bool) -> Cluster {
        let members = (0..net.members)
            .map(|i| Member {
                index: i,
                ns: net.member_ns(i),
                ip: net.member_ip(i),
                data: dir.join(format!("n{}.data", i + 1)),
                log: dir.join(format!("n{}.log", i + 1)),
                clock_file: clocks.then(|| dir.join(format!("n{}.faketime", i + 1))),
                child: None,
                paused: false,
                rejoin: None,
            })
            .collect();
        let initial = (0..net.members)
            .map(|i| format!("n{}=http://{SUBNET}.{}:2380", i + 1, i + 1))
            .collect::<Vec<_>>()
            .join(",");
        Cluster {
            target,
            binary,
            lazy: (0..net.members).map(|_| None).collect(),
            members,
            token: net.prefix.clone(),
            initial,
            clock_high: std::sync::Mutex::new((vec![0; net.members], None)),
        }
    }

    /// Mounts a lost-unsynced-writes file system at every member's data
    /// directory, backed by `n<i>.backing` beside it.
    pub fn mount_lazyfs(&mut self) -> Result<(), String> {
        for (i, m) in self.members.iter().enumerate() {
            let backing = m.data.with_extension("backing");
            self.lazy[i] = Some(LazyFs::mount(&backing, &m.data)?);
        }
        Ok(())
    }

    /// kill -9 member `i`, then drop every write its file system holds
    /// unsynced; returns (bytes, files) dropped.
    pub async fn crash_losing_writes(&mut self, i: usize) -> Result<(u64, usize), String> {
        self.kill(i).await?;
        let fs = self.lazy[i]
            .as_ref()
            .ok_or("the lose nemesis needs --nemesis lose at start")?;
        fs.fs.crash()
    }

    pub fn client_url(&self, i: usize) -> String {
        format!("http://{}:2379", self.members[i].ip)
    }

    /// Starts member `i` (first start or restart after a kill).
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let binary = self.binary.clone();
        let target = self.target;
        let (initial, state) = match &self.members[i].rejoin {
            Some(r) => (r.clone(), "existing"),
            None => (self.initial.clone(), "new"),
        };
        let token = self.token.clone();
        let m = &mut self.members[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|e| format!("{}: {e}", m.log.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let name = format!("n{}", i + 1);
        let client = format!("http://{}:2379", m.ip);
        let peer = format!("http://{}:2380", m.ip);
        let data = m.data.display().to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &m.ns])
            .arg(&binary)
            .args(["--name", &name, "--data-dir", &data])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                state,
            ])
            .args(["--initial-cluster-token", &token])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        if target == Target::Etcd {
            // etcd 3.4 logs through capnslog unless told otherwise.
            cmd.args(["--logger", "zap"]);
        }
        if let Some(f) = &m.clock_file {
            if !f.exists() {
                std::fs::write(f, "+0\n").map_err(|e| format!("{}: {e}", f.display()))?;
            }
            cmd.env("LD_PRELOAD", FAKETIME_LIB)
                .env("FAKETIME_TIMESTAMP_FILE", f)
                .env("FAKETIME_CACHE_DURATION", "1");
        }
        let child = cmd.spawn().map_err(|e| format!("start {name}: {e}"))?;
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    fn pid(&self, i: usize) -> Option<i32> {
        self.members[i]
            .child
            .as_ref()
            .and_then(Child::id)
            .and_then(|p| i32::try_from(p).ok())
    }

    fn signal(&self, i: usize, sig: i32) -> Result<(), String> {
        let pid = self
            .pid(i)
            .ok_or_else(|| format!("n{} is not running", i + 1))?;
        // SAFETY: kill(2) on a child process this harness started.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "kill n{}: {}",
                i + 1,
                std::io::Error::last_os_error()
            ))
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// kill -9 and reap.
    pub async fn kill(&mut self, i: usize) -> Result<(), String> {
        self.signal(i, libc::SIGKILL)?;
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.wait().await;
        }
        self.members[i].paused = false;
        Ok(())
    }

    pub fn pause(&mut self, i: usize) -> Result<(), String> {
        self.signal(i, libc::SIGSTOP)?;
        self.members[i].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> Result<(), String> {
        self.signal(i, libc::SIGCONT)?;
        self.members[i].paused = false;
        Ok(())
    }

    /// Sets member `i`'s clock offset (libfaketime's "+N"/"-N" seconds).
    pub fn set_clock(&self, i: usize, offset_s: i64) -> Result<(), String> {
        let f = self.members[i]
            .clock_file
            .as_ref()
            .ok_or("clock faults need --nemesis clock at start")?;
        std::fs::write(f, format!("{offset_s:+}\n")).map_err(|e| e.to_string())?;
        let mut guard = self.clock_high.lock().expect("clock_high lock");
        let (offsets, high) = &mut *guard;
        // The clock read furthest ahead just before this change.
        if let Ok(ahead) = u64::try_from(offsets[i]) {
            let at = Instant::now() + Duration::from_secs(ahead);
            *high = Some(high.map_or(at, |h| h.max(at)));
        }
        offsets[i] = offset_s;
        Ok(())
    }

    /// How long until every member's clock has caught up with the furthest
    /// it was stepped ahead. After a clock that stood ahead comes back, the
    /// process's monotonic clock has stepped back (libfaketime moves it; a
    /// real one never does), and until it catches up tokio's timer wheel
    /// fires every new timer at once: cairn's own timeouts stand still
    /// (`cairn_runtime::timer`), but the deadline a client sends in
    /// `grpc-timeout` expires on arrival in tonic, so such requests to that
    /// member fail. The read-back waits this out.
    pub fn clock_catch_up(&self) -> Option<Duration> {
        let high = self.clock_high.lock().expect("clock_high lock").1?;
        high.checked_duration_since(Instant::now())
    }

    /// A member that exited by itself (crashed) since the last look.
    pub fn exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for m in &mut self.members {
            if let Some(c) = &mut m.child {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push((m.index, status.to_string()));
                    m.child = None;
                }
            }
        }
        out
    }

    /// Every process down (SIGCONT first so none stays stopped), reaped.
    pub async fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].paused {
                let _ = self.resume(i);
            }
            if self.is_running(i) {
                let _ = self.kill(i).await;
            }
        }
    }

    fn peer_url(&self, i: usize) -> String {
        format!("http://{}:2380", self.members[i].ip)
    }

    /// A client of some running member other than `i`.
    async fn other_client(&self, i: usize) -> Result<ec::Client, String> {
        let mut last = String::from("no other member running");
        for j in (0..self.members.len()).filter(|j| *j != i) {
            if !self.is_running(j) || self.members[j].paused {
                continue;
            }
            match connect(&self.client_url(j), Duration::from_secs(5)).await {
                Ok(c) => return Ok(c),
                Err(e) => last = format!("n{}: {e}", j + 1),
            }
        }
        Err(last)
    }

    /// Retries `f` (a Cluster API call on another member's client) for up to
    /// `limit`: elections and "not enough started members" pass.
    async fn cluster_call<T, F, Fut>(&self, i: usize, limit: Duration, f: F) -> Result<T, String>
    where
        F: Fn(ec::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ec::Error>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            let err = match self.other_client(i).await {
                Ok(c) => match f(c).await {
                    Ok(v) => return Ok(v),
                    Err(e) => e.to_string(),
                },
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Removes member `i` from the cluster (Cluster API, through another
    /// member), kills it and wipes its data directory.
    pub async fn remove_member(&mut self, i: usize) -> Result<String, String> {
        let peer = self.peer_url(i);
        let list = self
            .cluster_call(i, Duration::from_secs(20), |mut c| async move {
                c.member_list().await
            })
            .await
            .map_err(|e| format!("member list: {e}"))?;
        let id = list
            .members()
            .iter()
            .find(|m| m.peer_urls().iter().any(|u| *u == peer))
            .map(ec::Member::id)
            .ok_or_else(|| format!("n{} ({peer}) is not in the member list", i + 1))?;
        self.cluster_call(i, Duration::from_secs(20), |mut c| async move {
            c.member_remove(id).await
        })
        .await
        .map_err(|e| format!("member remove {id:x}: {e}"))?;
        // A removed member may stop by itself; either way it is reaped here.
        if self.members[i].paused {
            let _ = self.resume(i);
        }
        if self.is_running(i) {
            let _ = self.signal(i, libc::SIGKILL);
            if let Some(mut c) = self.members[i].child.take() {
                let _ = c.wait().await;
            }
        }
        let data = &self.members[i].data;
        let mut wiped = 0;
        if data.exists() {
            // The data directory may be a mount point (`lose`): empty it.
            for e in std::fs::read_dir(data).map_err(|e| format!("{}: {e}", data.display()))? {
                let p = e.map_err(|e| e.to_string())?.path();
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                r.map_err(|e| format!("wipe {}: {e}", p.display()))?;
                wiped += 1;
            }
        }
        Ok(format!(
            "removed (id {id:x}), killed, data wiped ({wiped} entries)"
        ))
    }

    /// Adds member `i` back (as a learner, promoted once in sync, or as a
    /// voter) and starts it with an empty data directory.
    pub async fn readd_member(&mut self, i: usize, learner: bool) -> Result<String, String> {
        let peer = self.peer_url(i);
        let t0 = Instant::now();
        let added = self
            .cluster_call(i, Duration::from_secs(30), |mut c| {
                let peer = peer.clone();
                async move {
                    let opts = learner.then(|| ec::MemberAddOptions::new().with_is_learner());
                    c.member_add([peer], opts).await
                }
            })
            .await
            .map_err(|e| format!("member add: {e}"))?;
        let id = added
            .member()
            .map(ec::Member::id)
            .ok_or("member add: no member in the answer")?;
        let name = format!("n{}", i + 1);
        let initial = added
            .member_list()
            .iter()
            .filter_map(|m| {
                let url = m.peer_urls().first()?;
                let n = if m.id() == id || m.name().is_empty() {
                    name.clone()
                } else {
                    m.name().to_owned()
                };
                Some(format!("{n}={url}"))
            })
            .collect::<Vec<_>>()
            .join(",");
        self.members[i].rejoin = Some(initial);
        self.start(i)?;
        if !learner {
            return Ok(format!("added back as a voter (id {id:x}) and started"));
        }
        self.cluster_call(i, Duration::from_secs(40), |mut c| async move {
            c.member_promote(id).await
        })
        .await
        .map_err(|e| format!("member promote {id:x}: {e}"))?;
        Ok(format!(
            "added back as a learner (id {id:x}), started, promoted after {:.1}s",
            t0.elapsed().as_secs_f64()
        ))
    }

    /// The last lines of member `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = File::open(&self.members[i].log)
            .ok()
            .and_then(|mut f| {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut f, &mut s)
                    .ok()
                    .map(|_| s)
            })
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
