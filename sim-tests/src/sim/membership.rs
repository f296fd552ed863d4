//! The membership driver of the `churn` scenario: an operator who changes
//! the cluster's membership through etcd's Cluster and Maintenance services
//! while the fault scheduler does its worst.
//!
//! Every 1–4 s of the fault phase it draws one action from the seed, among
//! those the current membership allows (3 to 5 voters, at most 5 members):
//! - add a learner (one at a time, as the cluster allows) or, less often, a
//!   voter at a fresh address, then start it on an empty disk with
//!   `--initial-cluster-state existing`;
//! - promote a learner (refused until it has caught up: tried again later);
//! - remove a random member — the leader 40 % of the time when it may be
//!   removed — and leave its process to stop by itself;
//! - replace a member: remove it, stop it and drop its disk, then add a fresh
//!   member at the same address (half the time) or a new one;
//! - move the leadership to a random other voter (MoveLeader to the leader
//!   named by a member's Status).
//!
//! Calls go to random current voters (learners answer only serializable
//! reads and Status) under a deadline. A call that fails
//! may still have taken effect (a timed-out MemberAdd can commit later), so
//! before each action the driver reads a linearizable member list and
//! reconciles: a member no longer listed was removed (the harness retires it:
//! no fault restarts it again); a listed member the harness has not started
//! is one of its own MemberAdds whose answer was lost, and is started now.
//! A listed member that was removed before, or that the harness never added,
//! is a failure. A current member whose process failed is started again then
//! (a join fails, as etcd's does, when the peer the new member asks has not
//! applied its addition yet: the operator retries); one that stopped by
//! itself before it ever ran under its own id is started again on a wiped
//! disk (a replacement at an old address that asked a peer which had not
//! applied the old member's removal takes the old member's id, and is
//! refused as removed — etcd's join matches peer URLs the same way).
//!
//! After healing, `settle` promotes every learner and starts every added
//! member, within 40 s (a liveness check). `finish` then restarts one removed
//! member that stopped by itself on its old disk — it must refuse to run,
//! "permanently removed" — and stops every removed member still running.
//! Every action and outcome goes to the run's timeline.
//! Tests: `tests/sim.rs` (scenario `churn`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::{
    cluster_client::ClusterClient, maintenance_client::MaintenanceClient, Member, MemberAddRequest,
    MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, MoveLeaderRequest, StatusRequest,
};
use rand::rngs::StdRng;
use rand::Rng;

use super::cluster::{member_ip, peer_url, SimCluster};
use super::faults::Timeline;
use super::workload::Endpoints;

/// The driver never removes a voter below this many voters.
pub const MIN_VOTERS: usize = 3;
/// Nor adds a member beyond this many members.
pub const MAX_MEMBERS: usize = 5;
/// Deadline of one membership call (the server's request timeout is 7 s).
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// How long the cluster has after healing to promote every learner.
const SETTLE_TIME: Duration = Duration::from_secs(40);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    AddLearner,
    AddVoter,
    Promote,
    Remove,
    Replace,
    MoveLeader,
}

/// A MemberAdd the harness sent and has not started a member for yet.
#[derive(Debug, Clone)]
struct PendingAdd {
    name: String,
    ip: IpAddr,
}

/// What one current member looks like to the driver.
#[derive(Debug, Clone)]
struct Current {
    index: usize,
    id: u64,
    name: String,
    learner: bool,
    client_url: String,
}

pub struct Membership {
    cluster: Arc<Mutex<SimCluster>>,
    endpoints: Endpoints,
    timeline: Timeline,
    rng: StdRng,
    /// Peer URL → the MemberAdd sent for it, until its member starts.
    pending: BTreeMap<String, PendingAdd>,
    next_name: usize,
    next_ip: usize,
    /// Action → (succeeded, failed).
    counts: BTreeMap<&'static str, (u32, u32)>,
    /// Error message → how often.
    errors: BTreeMap<String, u32>,
    pub failures: Vec<String>,
    pub notes: Vec<String>,
}

async fn within<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, String> {
    within_deadline(CALL_DEADLINE, what, call).await
}

/// `call`'s result, or an error naming `what` (its status, or the deadline).
pub(super) async fn within_deadline<T>(
    deadline: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(s)) => Err(format!("{what}: {:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("{what}: deadline exceeded")),
    }
}

async fn cluster_client(
    url: &str,
) -> Result<ClusterClient<tonic::transport::Channel>, tonic::Status> {
    ClusterClient::connect(url.to_owned())
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))
}

pub(super) async fn maintenance_client(
    url: &str,
) -> Result<MaintenanceClient<tonic::transport::Channel>, tonic::Status> {
    MaintenanceClient::connect(url.to_owned())
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))
}

/// A member's member list (`linearizable`: through a ReadIndex barrier).
pub async fn member_list(url: &str, linearizable: bool) -> Result<Vec<Member>, String> {
    within("member list", async {
        let r = cluster_client(url)
            .await?
            .member_list(MemberListRequest { linearizable })
            .await?;
        Ok(r.into_inner().members)
    })
    .await
}

impl Membership {
    /// A driver for `cluster`, whose members are the initial ones (`m1`…
    /// at the first addresses).
    pub fn new(
        cluster: Arc<Mutex<SimCluster>>,
        endpoints: Endpoints,
        timeline: Timeline,
        rng: StdRng,
    ) -> Membership {
        let n = cluster.lock().expect("cluster lock").members.len();
        Membership {
            cluster,
            endpoints,
            timeline,
            rng,
            pending: BTreeMap::new(),
            next_name: n + 1,
            next_ip: n,
            counts: BTreeMap::new(),
            errors: BTreeMap::new(),
            failures: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, SimCluster> {
        self.cluster.lock().expect("cluster lock")
    }

    fn log(&self, what: String) {
        self.timeline.membership(what);
    }

    fn count(&mut self, action: &'static str, result: &Result<(), String>) {
        let c = self.counts.entry(action).or_default();
        match result {
            Ok(()) => c.0 += 1,
            Err(e) => {
                c.1 += 1;
                // "member add: Unavailable: etcdserver: unhealthy cluster"
                // without the member-specific tail, so equal errors group.
                let key: String = e.chars().take(90).collect();
                *self.errors.entry(key).or_default() += 1;
            }
        }
    }

    fn current(&self) -> Vec<Current> {
        let cluster = self.cluster();
        cluster
            .current()
            .into_iter()
            .map(|i| {
                let m = &cluster.members[i];
                Current {
                    index: i,
                    id: m.id,
                    name: m.name.clone(),
                    learner: m.learner,
                    client_url: m.client_url.clone(),
                }
            })
            .collect()
    }

    /// The name of the member at a client URL, for the timeline.
    fn name_at(&self, url: &str) -> String {
        let cluster = self.cluster();
        cluster
            .current()
            .into_iter()
            .map(|i| &cluster.members[i])
            .find(|m| m.client_url == url)
            .map_or_else(|| url.to_owned(), |m| m.name.clone())
    }

    /// A random current voter's client URL: the driver's calls go there
    /// (learners answer only serializable reads and Status).
    fn pick_voter_url(&mut self) -> String {
        let voters: Vec<String> = self
            .current()
            .into_iter()
            .filter(|m| !m.learner)
            .map(|m| m.client_url)
            .collect();
        if voters.is_empty() {
            return self.endpoints.pick(&mut self.rng);
        }
        voters[self.rng.random_range(0..voters.len())].clone()
    }

    fn refresh_endpoints(&self) {
        let urls = self.cluster().client_urls();
        self.endpoints.set(urls);
    }

    fn leader_id(&self) -> Option<u64> {
        self.cluster().oracle.latest_leader().map(|(_, id)| id)
    }

    /// Changes the membership until `duration` has passed.
    pub async fn run(&mut self, duration: Duration) {
        let end = tokio::time::Instant::now() + duration;
        loop {
            let wait = self.rng.random_range(1000..4000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            if tokio::time::Instant::now() >= end {
                return;
            }
            self.reconcile().await;
            if let Some(action) = self.choose() {
                self.perform(action).await;
            }
        }
    }

    fn choose(&mut self) -> Option<Action> {
        let current = self.current();
        let voters = current.iter().filter(|m| !m.learner).count();
        let learners = current.len() - voters;
        let mut options: Vec<(Action, u32)> = Vec::new();
        if current.len() < MAX_MEMBERS {
            // The cluster allows one learner at a time.
            if learners == 0 {
                options.push((Action::AddLearner, 3));
            }
            options.push((Action::AddVoter, 1));
        }
        if learners > 0 {
            options.push((Action::Promote, 4));
        }
        if voters > MIN_VOTERS || learners > 0 {
            options.push((Action::Remove, 2));
            options.push((Action::Replace, 2));
        }
        if voters >= 2 {
            options.push((Action::MoveLeader, 2));
        }
        let total: u32 = options.iter().map(|o| o.1).sum();
        if total == 0 {
            return None;
        }
        let mut roll = self.rng.random_range(0..total);
        for (action, weight) in options {
            if roll < weight {
                return Some(action);
            }
            roll -= weight;
        }
        None
    }

    async fn perform(&mut self, action: Action) {
        match action {
            Action::AddLearner => self.add(true, None).await,
            Action::AddVoter => self.add(false, None).await,
            Action::Promote => {
                let learners: Vec<Current> =
                    self.current().into_iter().filter(|m| m.learner).collect();
                let m = learners[self.rng.random_range(0..learners.len())].clone();
                self.promote(&m).await;
            }
            Action::Remove => {
                let m = self.removal_target();
                self.remove(&m).await;
            }
            Action::Replace => {
                let m = self.removal_target();
                self.replace(&m).await;
            }
            Action::MoveLeader => self.move_leader().await,
        }
    }

    /// A member that may be removed: any learner, a voter only above
    /// `MIN_VOTERS`; the leader 40 % of the time when it may be.
    fn removal_target(&mut self) -> Current {
        let current = self.current();
        let voters = current.iter().filter(|m| !m.learner).count();
        let candidates: Vec<Current> = current
            .into_iter()
            .filter(|m| m.learner || voters > MIN_VOTERS)
            .collect();
        let leader = self.leader_id();
        if self.rng.random_bool(0.4) {
            if let Some(m) = candidates.iter().find(|m| Some(m.id) == leader) {
                return m.clone();
            }
        }
        candidates[self.rng.random_range(0..candidates.len())].clone()
    }

    fn fresh_name(&mut self) -> String {
        let name = format!("m{}", self.next_name);
        self.next_name += 1;
        name
    }

    fn fresh_ip(&mut self) -> IpAddr {
        let ip = member_ip(self.next_ip);
        self.next_ip += 1;
        ip
    }

    /// The name of the member with `id` in a member list, for the new
    /// member's `--initial-cluster`.
    fn name_for(&self, m: &Member) -> String {
        let cluster = self.cluster();
        if let Some(i) = cluster.index_of_any_member_id(m.id) {
            return cluster.members[i].name.clone();
        }
        if let Some(p) = m.peer_ur_ls.first().and_then(|u| self.pending.get(u)) {
            return p.name.clone();
        }
        if m.name.is_empty() {
            format!("unnamed-{:x}", m.id)
        } else {
            m.name.clone()
        }
    }

    /// MemberAdd at `ip` (default: a fresh address); on success, starts the
    /// new member.
    async fn add(&mut self, learner: bool, ip: Option<IpAddr>) {
        let ip = ip.unwrap_or_else(|| self.fresh_ip());
        let name = self.fresh_name();
        let peer = peer_url(ip);
        self.pending.insert(
            peer.clone(),
            PendingAdd {
                name: name.clone(),
                ip,
            },
        );
        let url = self.pick_voter_url();
        let kind = if learner { "learner" } else { "voter" };
        self.log(format!(
            "add {name} at {peer} as a {kind} (asking {})",
            self.name_at(&url)
        ));
        let req = MemberAddRequest {
            peer_ur_ls: vec![peer.clone()],
            is_learner: learner,
        };
        let result = within("member add", async {
            Ok(cluster_client(&url)
                .await?
                .member_add(req)
                .await?
                .into_inner())
        })
        .await;
        let action = if learner { "add learner" } else { "add voter" };
        match result {
            Ok(resp) => {
                let Some(id) = resp.member.as_ref().map(|m| m.id) else {
                    self.failures.push(format!(
                        "membership: MemberAdd of {peer} answered without the new member"
                    ));
                    return;
                };
                self.count(action, &Ok(()));
                self.log(format!("{name} added: id {id:x}"));
                self.start(&peer, id, learner, &resp.members);
            }
            Err(e) => {
                self.log(format!("add {name} failed: {e}"));
                self.count(action, &Err(e));
            }
        }
    }

    /// Starts the member added for `peer` (a pending add) as `id`, given
    /// the member list that includes it.
    fn start(&mut self, peer: &str, id: u64, learner: bool, members: &[Member]) {
        let Some(p) = self.pending.get(peer).cloned() else {
            return;
        };
        let mut initial: Vec<(String, String)> = members
            .iter()
            .filter(|m| m.id != id)
            .filter_map(|m| Some((self.name_for(m), m.peer_ur_ls.first()?.clone())))
            .collect();
        initial.push((p.name.clone(), peer.to_owned()));
        self.pending.remove(peer);
        self.cluster().join(&p.name, p.ip, id, &initial, learner);
        self.refresh_endpoints();
        self.log(format!(
            "start {} (id {id:x}) at {}: joining, initial cluster {}",
            p.name,
            p.ip,
            initial
                .iter()
                .map(|(n, u)| format!("{n}={u}"))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }

    async fn promote(&mut self, m: &Current) {
        let url = self.pick_voter_url();
        self.log(format!(
            "promote {} (asking {})",
            m.name,
            self.name_at(&url)
        ));
        let id = m.id;
        let result = within("member promote", async {
            cluster_client(&url)
                .await?
                .member_promote(MemberPromoteRequest { id })
                .await?;
            Ok(())
        })
        .await;
        match &result {
            Ok(()) => {
                self.cluster().members[m.index].learner = false;
                self.log(format!("{} promoted", m.name));
            }
            Err(e) => self.log(format!("promote {} failed: {e}", m.name)),
        }
        self.count("promote", &result);
    }

    /// MemberRemove; on success the member is retired. Returns whether the
    /// removal was acknowledged.
    async fn remove(&mut self, m: &Current) -> bool {
        let url = self.pick_voter_url();
        let leader = if self.leader_id() == Some(m.id) {
            ", the leader"
        } else {
            ""
        };
        self.log(format!(
            "remove {}{leader} (asking {})",
            m.name,
            self.name_at(&url)
        ));
        let id = m.id;
        let result = within("member remove", async {
            cluster_client(&url)
                .await?
                .member_remove(MemberRemoveRequest { id })
                .await?;
            Ok(())
        })
        .await;
        let ok = result.is_ok();
        match &result {
            Ok(()) => {
                self.cluster().retire(m.index);
                self.refresh_endpoints();
                self.log(format!("{} removed", m.name));
            }
            Err(e) => self.log(format!("remove {} failed: {e}", m.name)),
        }
        self.count("remove", &result);
        ok
    }

    /// Remove, wipe, add a fresh member in its place.
    async fn replace(&mut self, m: &Current) {
        self.log(format!("replace {}", m.name));
        if !self.remove(m).await {
            return;
        }
        let ip = {
            let mut cluster = self.cluster();
            cluster.kill(m.index, false, false, None);
            cluster.members[m.index].ip
        };
        self.log(format!("{} stopped, its disk wiped", m.name));
        let same_address = self.rng.random_bool(0.5);
        let learner = self.rng.random_bool(0.7);
        self.count("replace", &Ok(()));
        self.add(learner, same_address.then_some(ip)).await;
    }

    async fn move_leader(&mut self) {
        let url = self.pick_voter_url();
        let status = within("status", async {
            Ok(maintenance_client(&url)
                .await?
                .status(StatusRequest {})
                .await?
                .into_inner())
        })
        .await;
        let leader = match status {
            Ok(s) => s.leader,
            Err(e) => {
                self.log(format!("move leader: no status from {url}: {e}"));
                return;
            }
        };
        let current = self.current();
        let Some(from) = current.iter().find(|m| m.id == leader).cloned() else {
            self.log(format!(
                "move leader: {url} names no current leader ({leader:x})"
            ));
            return;
        };
        let targets: Vec<Current> = current
            .into_iter()
            .filter(|m| !m.learner && m.id != leader)
            .collect();
        if targets.is_empty() {
            return;
        }
        let to = targets[self.rng.random_range(0..targets.len())].clone();
        self.log(format!("move leader from {} to {}", from.name, to.name));
        let target_id = to.id;
        let result = within("move leader", async {
            maintenance_client(&from.client_url)
                .await?
                .move_leader(MoveLeaderRequest { target_id })
                .await?;
            Ok(())
        })
        .await;
        match &result {
            Ok(()) => self.log(format!("leadership moved to {}", to.name)),
            Err(e) => self.log(format!("move leader to {} failed: {e}", to.name)),
        }
        self.count("move leader", &result);
    }

    /// Reads a linearizable member list from a random current member and
    /// brings the harness in line with it (see the module header). First,
    /// as an operator would, starts again every current member whose
    /// process failed (a new member's join fails when the peer it asks has
    /// not applied its addition yet, as etcd's does).
    async fn reconcile(&mut self) -> Option<Vec<Member>> {
        let failed: Vec<(usize, String, String)> = {
            let cluster = self.cluster();
            cluster
                .current()
                .into_iter()
                .filter(|i| cluster.members[*i].alive && !cluster.members[*i].halted)
                .filter_map(|i| {
                    let m = &cluster.members[i];
                    match &*m.exit.lock().expect("exit lock") {
                        Some(Err(e)) => Some((i, m.name.clone(), e.clone())),
                        _ => None,
                    }
                })
                .collect()
        };
        for (i, name, e) in failed {
            self.cluster().restart(i);
            self.log(format!("restart {name}: its process failed: {e}"));
        }
        let url = self.pick_voter_url();
        let list = member_list(&url, true).await.ok()?;
        self.apply_list(&url, &list);
        self.rejoin_stale_joins(&url);
        Some(list)
    }

    /// Current (hence still listed) members whose process stopped by
    /// itself. One that never applied anything as its own id joined with a
    /// stale member list: the peer it asked had not applied the removal of
    /// the member at its address yet, so it took that member's (removed) id,
    /// was refused and stopped, as etcd's would. It is started again on a
    /// wiped disk. One that did run as itself and stopped although the
    /// cluster still lists it is a failure.
    fn rejoin_stale_joins(&mut self, url: &str) {
        let mut cluster = self.cluster.lock().expect("cluster lock");
        for i in cluster.current() {
            let m = &cluster.members[i];
            let stopped = matches!(*m.exit.lock().expect("exit lock"), Some(Ok(())));
            if !stopped || !m.alive {
                continue;
            }
            let (name, id) = (m.name.clone(), m.id);
            if cluster.oracle.has_applied(id) {
                let f = format!(
                    "membership: {name} ({id:x}) stopped by itself (process::run returned Ok) but {url}'s linearizable member list still names it"
                );
                if !self.failures.contains(&f) {
                    self.failures.push(f);
                }
                continue;
            }
            cluster.rejoin(i);
            self.timeline.membership(format!(
                "restart {name} on a wiped disk: it stopped by itself before it ever ran as {id:x} (its join read a stale member list)"
            ));
        }
    }

    fn apply_list(&mut self, url: &str, list: &[Member]) {
        let listed: BTreeMap<u64, &Member> = list.iter().map(|m| (m.id, m)).collect();
        let mut to_start = Vec::new();
        {
            let mut cluster = self.cluster.lock().expect("cluster lock");
            for i in cluster.current() {
                match listed.get(&cluster.members[i].id) {
                    Some(m) => cluster.members[i].learner = m.is_learner,
                    None => {
                        cluster.retire(i);
                        let name = cluster.members[i].name.clone();
                        self.timeline
                            .membership(format!("{name} is not in {url}'s member list: removed"));
                    }
                }
            }
            for m in list {
                if cluster.index_of_member_id(m.id).is_some() {
                    continue;
                }
                let peer = m.peer_ur_ls.first().cloned().unwrap_or_default();
                if let Some(i) = cluster.index_of_any_member_id(m.id) {
                    self.failures.push(format!(
                        "membership: {url}'s member list names {} ({:x}), which was removed before",
                        cluster.members[i].name, m.id
                    ));
                } else if self.pending.contains_key(&peer) {
                    to_start.push((peer, m.id, m.is_learner));
                } else {
                    self.failures.push(format!(
                        "membership: {url}'s member list names {:x} at {peer:?}, a member the harness never added",
                        m.id
                    ));
                }
            }
        }
        for (peer, id, learner) in to_start {
            self.log(format!(
                "{url}'s member list names {id:x} at {peer}: a MemberAdd whose answer was lost"
            ));
            self.start(&peer, id, learner, list);
        }
        self.refresh_endpoints();
    }

    /// After healing: every added member started and every learner promoted
    /// within `SETTLE_TIME`, else a liveness failure.
    pub async fn settle(&mut self) {
        let end = tokio::time::Instant::now() + SETTLE_TIME;
        loop {
            if let Some(list) = self.reconcile().await {
                let learners: Vec<Current> =
                    self.current().into_iter().filter(|m| m.learner).collect();
                let unstarted = {
                    let cluster = self.cluster();
                    list.iter()
                        .any(|m| cluster.index_of_member_id(m.id).is_none())
                };
                if learners.is_empty() && !unstarted {
                    let names: Vec<String> = self.current().into_iter().map(|m| m.name).collect();
                    self.log(format!("settled: members {}", names.join(", ")));
                    return;
                }
                for m in &learners {
                    self.promote(m).await;
                }
            }
            if tokio::time::Instant::now() >= end {
                let current: Vec<String> = self
                    .current()
                    .into_iter()
                    .map(|m| format!("{}{}", m.name, if m.learner { " (learner)" } else { "" }))
                    .collect();
                self.failures.push(format!(
                    "liveness: the membership did not settle (every learner promoted, every added member listed and started) within {} s after healing; members: {}",
                    SETTLE_TIME.as_secs(),
                    current.join(", ")
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Restarts one removed member that stopped by itself on its old disk
    /// (it must refuse to run: "permanently removed"), then stops every
    /// removed member still running.
    pub async fn finish(&mut self) {
        let (removed, exited): (Vec<usize>, Vec<usize>) = {
            let cluster = self.cluster();
            let removed: Vec<usize> = (0..cluster.members.len())
                .filter(|i| cluster.members[*i].removed)
                .collect();
            let exited = removed
                .iter()
                .copied()
                .filter(|i| cluster.owns_node(*i))
                .filter(|i| {
                    matches!(
                        *cluster.members[*i].exit.lock().expect("exit lock"),
                        Some(Ok(()))
                    )
                })
                .collect();
            (removed, exited)
        };
        self.notes.push(format!(
            "membership: {} members removed, {} of them stopped by themselves (process::run returned Ok)",
            removed.len(),
            exited.len()
        ));
        if !exited.is_empty() {
            let i = exited[self.rng.random_range(0..exited.len())];
            self.restart_removed(i).await;
        }
        let mut cluster = self.cluster.lock().expect("cluster lock");
        let mut stopped = Vec::new();
        for i in removed {
            let m = &cluster.members[i];
            let running = m.alive && m.exit.lock().expect("exit lock").is_none();
            if running && cluster.owns_node(i) {
                stopped.push(m.name.clone());
                cluster.kill(i, false, false, None);
            }
        }
        drop(cluster);
        if !stopped.is_empty() {
            self.log(format!(
                "stop removed members still running: {}",
                stopped.join(", ")
            ));
            self.notes.push(format!(
                "membership: removed members still running at the end (stopped): {}",
                stopped.join(", ")
            ));
        }
    }

    async fn restart_removed(&mut self, i: usize) {
        let (name, exit, knew) = {
            let mut cluster = self.cluster();
            if cluster.members[i].alive {
                cluster.kill(i, false, false, None);
            }
            // What its disk says: a member that made its removal durable (it
            // applied it, or a peer refused it) must refuse to start; one
            // whose disk lost the removal (its storage failed first) learns
            // it again from a peer's refusal and stops (`process::run`
            // returns Ok, as etcd exits).
            let knew = knows_it_was_removed(&cluster.members[i]);
            cluster.restart(i);
            let m = &cluster.members[i];
            (m.name.clone(), m.exit.clone(), knew)
        };
        self.log(format!(
            "restart removed {name} on its old disk ({})",
            if knew {
                "its disk records the removal"
            } else {
                "its disk lost the removal"
            }
        ));
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        let outcome = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(r) = exit.lock().expect("exit lock").clone() {
                break Some(r);
            }
            if tokio::time::Instant::now() >= end {
                break None;
            }
        };
        match outcome {
            Some(Err(e)) if e.contains("permanently removed") => {
                self.log(format!("{name} refused to start: {e}"))
            }
            Some(Err(e)) => self.failures.push(format!(
                "membership: removed {name} restarted on its old disk failed with {e:?}, not \"permanently removed\""
            )),
            Some(Ok(())) if !knew => {
                self.log(format!("{name} stopped when a peer refused it as removed"))
            }
            Some(Ok(())) => self.failures.push(format!(
                "membership: removed {name} restarted on its old disk ran and returned Ok instead of refusing (\"permanently removed\")"
            )),
            None => self.failures.push(format!(
                "membership: removed {name} restarted on its old disk was still running 10 s later (it must refuse: \"permanently removed\")"
            )),
        }
        self.cluster().kill(i, false, false, None);
    }

    /// Counts of actions and errors, for the run's notes.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(a, (ok, failed))| format!("{a} {ok} ok / {failed} failed"))
            .collect();
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(e, n)| format!("{n}× {e}"))
            .collect();
        format!(
            "membership: {}; errors: {}",
            counts.join(", "),
            if errors.is_empty() {
                "none".to_owned()
            } else {
                errors.join("; ")
            }
        )
    }
}

/// Whether a stopped member's disk records that it was removed (what its
/// next start reads first). A disk that cannot be opened counts as not.
fn knows_it_was_removed(m: &super::cluster::SimMember) -> bool {
    let families = cairn::server::apply::all_column_families();
    cairn_runtime::SimStorage::open(&m.disk, &families)
        .ok()
        .and_then(|storage| cairn::server::apply::is_removed_self(&storage, m.id).ok())
        .unwrap_or(false)
}
