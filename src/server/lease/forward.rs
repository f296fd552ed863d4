//! The lease forwarding protocol, both ends.
//!
//! Follower end: every keep-alive a follower receives is answered by the
//! leader. Rather than a call per renewal, the follower keeps a
//! LeaseKeepAlive stream open to the leader's client port, marked forwarded
//! (`FORWARDED_HEADER`), and sends each renewal on it; the answers are
//! matched to the renewals in order. With auth on there is one such stream
//! per client token, carrying it: the leader checks every renewal's rights
//! again with it, so a stream merely marked forwarded gets nothing the
//! client's own rights would not. Time-to-live is forwarded as a call
//! each, on a cached channel.
//!
//! Leader end (`serve_forwarded_keep_alives`): a forwarded stream is answered
//! in order, renewing together everything that queued up while the previous
//! batch was renewed, with one leadership confirmation per batch
//! (`Server::lease_keep_alive_batch`). Any failure fails the stream.
//!
//! Any failure of the stream — an error from the leader (not the leader any
//! more), the stream ending, no answer within the forward timeout to the
//! oldest renewal, another leader URL — fails every renewal in flight on it
//! as "retry" (the caller asks again with its own view of the leader) and
//! the next renewal opens a new stream. Deadlines matter: in simulation a
//! partition is unbounded latency, not an error.
//!
//! Tests: `src/server/tests.rs` (keep-alives through a follower, leader
//! failover).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use cairn_runtime::tls::Dialer;
use futures::FutureExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use tonic::Streaming;

use super::super::{Credentials, Server, ServerError};
use super::leader::Renewal;
use crate::lease::LeaseError;

/// gRPC metadata marking a keep-alive or time-to-live forwarded by a
/// follower: the receiver answers it itself or fails, never forwards it.
pub const FORWARDED_HEADER: &str = "cairn-lease-forwarded";

/// Client tokens with a forwarding stream of their own, at most.
const MAX_FORWARDERS: usize = 256;

/// Forwarded renewals renewed together at most (one leadership round each).
const FORWARDED_BATCH_MAX: usize = 1024;

/// A channel to a member's client URL that connects on first use; `None`
/// for a URL that is not one.
fn lazy_channel(dialer: &Dialer, url: &str, connect_timeout: Duration) -> Option<Channel> {
    // TLS for an `https://` client URL, with this member's client-port settings.
    dialer.lazy_channel(url, connect_timeout).ok()
}

/// Marks a call as forwarded by a follower (`FORWARDED_HEADER`).
fn mark_forwarded<T>(req: &mut tonic::Request<T>) {
    req.metadata_mut().insert(
        FORWARDED_HEADER,
        tonic::metadata::MetadataValue::from_static("1"),
    );
}

// ---- follower end ----

/// The follower's end: a channel to the leader for time-to-live calls, and
/// the keep-alive stream.
pub(super) struct Follower {
    /// The leader's client URL and a channel to it, reused between calls.
    leader_channel: Mutex<Option<(String, Channel)>>,
    /// One forwarding stream per client token (auth on: the leader checks
    /// each stream's renewals against its token); `None`: no token.
    forwarders: Mutex<BTreeMap<Option<String>, Arc<Forwarder>>>,
    timeout: Duration,
    dialer: Dialer,
}

impl Follower {
    pub(super) fn new(timeout: Duration, dialer: Dialer) -> Follower {
        Follower {
            leader_channel: Mutex::new(None),
            forwarders: Mutex::new(BTreeMap::new()),
            timeout,
            dialer,
        }
    }

    /// The forwarder of the client with `token` (made on first use). Past
    /// `MAX_FORWARDERS` tokens all are dropped (their streams end, their
    /// renewals in flight are asked again) and made anew as used.
    fn forwarder(&self, token: Option<&str>) -> Arc<Forwarder> {
        let mut all = self.forwarders.lock().expect("forwarders lock poisoned");
        let key = token.map(str::to_owned);
        if let Some(f) = all.get(&key) {
            return f.clone();
        }
        if all.len() >= MAX_FORWARDERS {
            all.clear();
        }
        let f = Arc::new(Forwarder::new(
            self.timeout,
            self.dialer.clone(),
            key.clone(),
        ));
        all.insert(key, f.clone());
        f
    }

    fn client(&self, url: &str) -> Option<LeaseClient<Channel>> {
        let mut cached = self.leader_channel.lock().expect("channel lock poisoned");
        if let Some((u, ch)) = cached.as_ref() {
            if u == url {
                return Some(LeaseClient::new(ch.clone()));
            }
        }
        let ch = lazy_channel(&self.dialer, url, Duration::from_secs(1))?;
        *cached = Some((url.to_owned(), ch.clone()));
        Some(LeaseClient::new(ch))
    }

    /// Drops a channel that failed (it may lead to a dead incarnation).
    fn forget(&self, url: &str) {
        let mut cached = self.leader_channel.lock().expect("channel lock poisoned");
        if cached.as_ref().is_some_and(|(u, _)| u == url) {
            *cached = None;
        }
    }
}

impl Server {
    fn forward_timeout(&self) -> Duration {
        self.shared.config.request_timeout / 2
    }

    /// One keep-alive through the leader at `url` (on this member's one
    /// forwarding stream). `None`: failed, retry.
    pub(super) async fn forward_renew(
        &self,
        url: &str,
        id: i64,
        token: Option<&str>,
    ) -> Result<Option<i64>, ServerError> {
        let forwarder = self.leases.follower.forwarder(token);
        let call = forwarder.renew(url, id);
        match cairn_runtime::timer::timeout(self.forward_timeout(), call).await {
            Ok(Some(ttl)) if ttl > 0 => Ok(Some(ttl)),
            Ok(Some(_)) => Err(LeaseError::NotFound.into()),
            Ok(None) | Err(_) => Ok(None),
        }
    }

    pub(super) async fn forward_time_to_live(
        &self,
        url: &str,
        req: &LeaseTimeToLiveRequest,
        token: Option<&str>,
    ) -> Option<LeaseTimeToLiveResponse> {
        let mut client = self.leases.follower.client(url)?;
        let mut request = tonic::Request::new(*req);
        mark_forwarded(&mut request);
        // The leader checks the client's rights again with its token.
        if let Some(token) = token.and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert("token", token);
        }
        let call = client.lease_time_to_live(request);
        match cairn_runtime::timer::timeout(self.forward_timeout(), call).await {
            Ok(Ok(resp)) => Some(resp.into_inner()),
            Ok(Err(_)) | Err(_) => {
                self.leases.follower.forget(url);
                None
            }
        }
    }

    // ---- leader end ----

    /// The keep-alives a follower forwarded on one stream and that queued up
    /// together (`serve_forwarded_keep_alives`): answered in order, with one leadership
    /// confirmation for all. Fails (the follower asks again) unless this
    /// member is the leader.
    pub async fn lease_keep_alive_batch(
        &self,
        ids: &[i64],
    ) -> Result<Vec<LeaseKeepAliveResponse>, ServerError> {
        let header = self.header(self.current_revision());
        if self.is_stopped() {
            return Err(ServerError::Stopped);
        }
        if self.leader() != Some(self.shared.config.member_id) {
            return Err(LeaseError::NotPrimary.into());
        }
        let renewals = self
            .within_request_timeout(self.renew_local_batch(ids))
            .await?
            .ok_or(LeaseError::NotPrimary)?;
        let mut answers = Vec::with_capacity(ids.len());
        for (&id, renewal) in ids.iter().zip(renewals) {
            let ttl = match renewal {
                Renewal::Ttl(ttl) => ttl,
                Renewal::NotFound => 0,
                // Expired, its revoke not applied yet: wait for it as a
                // single keep-alive does (rare; the batch waits too).
                Renewal::Retry => self.lease_keep_alive(id, true).await?.ttl,
            };
            answers.push(LeaseKeepAliveResponse {
                header: Some(header.clone()),
                id,
                ttl,
            });
        }
        Ok(answers)
    }
}

/// The leader's end of a follower's forwarding stream: every
/// renewal that arrived while the previous batch was renewed is renewed
/// together, answers in order. Any failure fails the stream: the follower
/// asks again.
pub async fn serve_forwarded_keep_alives(
    server: Server,
    creds: Credentials,
    mut requests: Streaming<LeaseKeepAliveRequest>,
    tx: mpsc::Sender<Result<LeaseKeepAliveResponse, ServerError>>,
) {
    let mut ended = false;
    while !ended {
        let Some(Ok(first)) = requests.next().await else {
            return;
        };
        let mut ids = vec![first.id];
        while ids.len() < FORWARDED_BATCH_MAX {
            match requests.next().now_or_never() {
                Some(Some(Ok(req))) => ids.push(req.id),
                None => break,
                Some(_) => {
                    ended = true;
                    break;
                }
            }
        }
        // The client's rights, with the token the stream carries (the
        // follower checked them too; a stream marked forwarded by anyone
        // else gets no further). A refusal fails the stream.
        let checked = match server.caller(creds.clone()).await {
            Ok(who) => ids
                .iter()
                .try_for_each(|&id| server.check_lease_renew(&who, id)),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            let _ = tx.send(Err(e)).await;
            return;
        }
        match server.lease_keep_alive_batch(&ids).await {
            Ok(answers) => {
                for a in answers {
                    if tx.send(Ok(a)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

// ---- the follower's keep-alive stream ----

/// The leader's answer to one forwarded renewal: its TTL (0: no such
/// lease), or `None`: not answered, ask again.
type ForwardReply = oneshot::Sender<Option<i64>>;

/// Renewals queued for the forwarding task before callers wait for room.
const QUEUE_LEN: usize = 1024;

/// Requests buffered towards the leader on the open stream.
const STREAM_BUFFER: usize = 1024;

/// The follower's handle on its forwarding task (started on first use).
struct Forwarder {
    timeout: Duration,
    dialer: Dialer,
    /// The client token its stream carries.
    token: Option<String>,
    tx: std::sync::Mutex<Option<mpsc::Sender<(String, i64, ForwardReply)>>>,
}

impl Forwarder {
    /// `timeout`: how long the oldest renewal on a stream may wait for its
    /// answer before the stream is given up.
    fn new(timeout: Duration, dialer: Dialer, token: Option<String>) -> Forwarder {
        Forwarder {
            timeout,
            dialer,
            token,
            tx: std::sync::Mutex::new(None),
        }
    }

    /// Renews `id` through the leader at client URL `url`: its TTL (0 if
    /// the leader does not know the lease), or `None` to retry.
    async fn renew(&self, url: &str, id: i64) -> Option<i64> {
        let (reply, rx) = oneshot::channel();
        let tx = self.sender();
        tx.send((url.to_owned(), id, reply)).await.ok()?;
        rx.await.ok().flatten()
    }

    fn sender(&self) -> mpsc::Sender<(String, i64, ForwardReply)> {
        let mut tx = self.tx.lock().expect("forwarder lock poisoned");
        match tx.as_ref() {
            Some(t) if !t.is_closed() => t.clone(),
            _ => {
                let (t, rx) = mpsc::channel(QUEUE_LEN);
                tokio::spawn(run(
                    rx,
                    self.timeout,
                    self.dialer.clone(),
                    self.token.clone(),
                ));
                *tx = Some(t.clone());
                t
            }
        }
    }
}

/// The open stream to one leader and the renewals awaiting its answers, in
/// the order they were sent.
struct Stream {
    url: String,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
    in_flight: VecDeque<(Instant, ForwardReply)>,
    /// Kept so the stream's connection is reused while it is open.
    _channel: Channel,
}

impl Stream {
    /// Fails everything in flight as "retry".
    fn fail(self) {
        for (_, reply) in self.in_flight {
            let _ = reply.send(None);
        }
    }
}

async fn open(
    dialer: &Dialer,
    url: &str,
    timeout: Duration,
    token: Option<&str>,
) -> Option<Stream> {
    let channel = lazy_channel(dialer, url, timeout.min(Duration::from_secs(1)))?;
    let (requests, rx) = mpsc::channel(STREAM_BUFFER);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    mark_forwarded(&mut req);
    if let Some(t) = token.and_then(|t| t.parse().ok()) {
        req.metadata_mut().insert("token", t);
    }
    let mut client = LeaseClient::new(channel.clone());
    let responses = cairn_runtime::timer::timeout(timeout, client.lease_keep_alive(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    Some(Stream {
        url: url.to_owned(),
        requests,
        responses,
        in_flight: VecDeque::new(),
        _channel: channel,
    })
}

async fn run(
    mut rx: mpsc::Receiver<(String, i64, ForwardReply)>,
    timeout: Duration,
    dialer: Dialer,
    token: Option<String>,
) {
    let mut stream: Option<Stream> = None;
    loop {
        let deadline = stream
            .as_ref()
            .and_then(|s| s.in_flight.front())
            .map(|(sent, _)| *sent + timeout);
        // Fixed priorities (answers, then the deadline, then new renewals)
        // keep the simulation deterministic.
        tokio::select! {
            biased;
            answer = async { stream.as_mut().expect("guarded").responses.message().await },
                if stream.as_ref().is_some_and(|s| !s.in_flight.is_empty()) =>
            {
                match answer {
                    Ok(Some(resp)) => {
                        let s = stream.as_mut().expect("guarded");
                        if let Some((_, reply)) = s.in_flight.pop_front() {
                            let _ = reply.send(Some(resp.ttl.max(0)));
                        }
                    }
                    // The leader failed the stream (not the leader any more)
                    // or it ended: everything in flight asks again.
                    Ok(None) | Err(_) => stream.take().expect("guarded").fail(),
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                tracing::debug!("forwarded keep-alives unanswered; reopening the stream");
                stream.take().expect("guarded").fail();
            }
            next = rx.recv() => {
                let Some((url, id, reply)) = next else { break };
                if reply.is_closed() {
                    continue;
                }
                if stream.as_ref().is_some_and(|s| s.url != url) {
                    stream.take().expect("checked").fail();
                }
                if stream.is_none() {
                    stream = open(&dialer, &url, timeout, token.as_deref()).await;
                }
                let Some(s) = stream.as_mut() else {
                    let _ = reply.send(None);
                    continue;
                };
                // A full buffer means the leader stopped reading (a stalled
                // connection): give the stream up rather than wait on it.
                if s.requests.try_send(LeaseKeepAliveRequest { id }).is_err() {
                    let _ = reply.send(None);
                    stream.take().expect("checked").fail();
                    continue;
                }
                s.in_flight.push_back((cairn_runtime::timer::now(), reply));
            }
        }
    }
    if let Some(s) = stream {
        s.fail();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}
