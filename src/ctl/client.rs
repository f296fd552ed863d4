//! The connection to the cluster as etcdctl 3.4's client makes it: the
//! endpoints tried in turn (a member that cannot be reached or answers
//! Unavailable passes the call on to the next, until the command's deadline),
//! a login first when `--user` is given, the token on every call after it,
//! and RPC errors printed as clientv3 prints them.

use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::auth_client::AuthClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{AuthenticateRequest, RangeRequest, RangeResponse};
use cairn_runtime::tls::{Dialer, TlsInfo};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::flags::Flags;
use super::output::Format;
use super::{Failure, EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR};

/// What etcdctl says when a call ran out of time.
pub const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

/// Pause between two rounds of dials when no member answered.
pub const REDIAL: Duration = Duration::from_millis(100);

/// The global flags, read.
#[derive(Clone, Debug)]
pub struct Global {
    pub endpoints: Vec<String>,
    pub format: Format,
    pub hex: bool,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
    pub keepalive_time: Duration,
    pub keepalive_timeout: Duration,
    pub insecure_transport: bool,
    /// The TLS dialer when the command line configures TLS (`--cacert`,
    /// `--cert`, `--key`, or `--insecure-transport=false`): endpoints
    /// without a scheme are dialed with it. `https://` endpoints are
    /// always dialed with TLS (with the system's CAs when nothing is
    /// configured), `http://` ones never (clientv3's rules).
    pub tls: Option<Dialer>,
    /// `--insecure-skip-tls-verify`: the dialer for `https://` endpoints
    /// when no TLS is configured skips verification too.
    pub skip_verify: bool,
    /// (name, password) to log in as: both given (clientv3 logs in only
    /// then).
    pub credentials: Option<(String, String)>,
    /// `--user NAME` without a password: NAME, whose password is asked
    /// for when the client is made.
    pub ask_password_of: Option<String>,
}

impl Global {
    pub fn from_flags(f: &Flags) -> Result<Global, Failure> {
        Global::from_flags_discovering(f, true)
    }

    /// The global flags; `discover`: the endpoints come from
    /// `--discovery-srv` when it is given. etcdctl's endpoint and defrag
    /// commands without `--cluster` act on the `--endpoints` flag's
    /// (`endpointsFromCluster`) and do not look DNS up.
    pub fn from_flags_discovering(f: &Flags, discover: bool) -> Result<Global, Failure> {
        let endpoints: Vec<String> = f
            .str_or("endpoints", "127.0.0.1:2379")
            .split(',')
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        for name in ["cert", "key", "cacert"] {
            if f.changed(name) && f.get(name) == Some("") {
                return Err(Failure(
                    EXIT_BAD_ARGS,
                    format!("empty string is passed to --{name} option"),
                ));
            }
        }
        let domain = f.str_or("discovery-srv", "");
        let insecure_discovery = f.bool_or("insecure-discovery", true)?;
        let endpoints = if domain.is_empty() || !discover {
            endpoints
        } else {
            let found = srv_endpoints(
                &domain,
                &f.str_or("discovery-srv-name", ""),
                insecure_discovery,
            )?;
            // No endpoint found: the `--endpoints` flag's (etcdctl's
            // `endpointsFromCmd`).
            if found.is_empty() {
                endpoints
            } else {
                found
            }
        };
        let insecure_transport = f.bool_or("insecure-transport", true)?;
        let skip_verify = f.bool("insecure-skip-tls-verify")?;
        // Secure discovery verifies servers as the domain (etcdctl's
        // `secureCfgFromCmd`), which also turns TLS on.
        let server_name = (!insecure_discovery)
            .then_some(domain)
            .filter(|d| !d.is_empty());
        let tls = tls_dialer(
            f.get("cert").unwrap_or(""),
            f.get("key").unwrap_or(""),
            f.get("cacert").unwrap_or(""),
            server_name,
            insecure_transport,
            skip_verify,
        )?;
        let g = Global {
            endpoints,
            format: Format::Simple,
            hex: f.bool("hex")?,
            dial_timeout: f.duration_or("dial-timeout", Duration::from_secs(2))?,
            command_timeout: f.duration_or("command-timeout", Duration::from_secs(5))?,
            keepalive_time: f.duration_or("keepalive-time", Duration::from_secs(2))?,
            keepalive_timeout: f.duration_or("keepalive-timeout", Duration::from_secs(6))?,
            insecure_transport,
            tls,
            skip_verify,
            credentials: None,
            ask_password_of: None,
        };
        let mut g = g;
        match credentials(f) {
            Credentials::None => {}
            Credentials::Given(name, password) => g.credentials = login_pair(name, password),
            Credentials::Ask(name) => g.ask_password_of = Some(name),
        }
        f.bool_or("insecure-discovery", true)?;
        f.bool("debug")?;
        Ok(g)
    }

    /// The output format, checked as etcdctl checks it when it makes its
    /// client (before anything is sent).
    pub fn with_format(mut self, f: &Flags) -> Result<Global, Failure> {
        self.ask_password()?;
        self.format = Format::parse(&f.str_or("write-out", "simple"))?;
        Ok(self)
    }
}

impl Global {
    /// Asks for the password of `--user NAME` (once), as etcdctl does when
    /// it makes its client: `Password: ` on stdout, read from stdin.
    pub fn ask_password(&mut self) -> Result<(), Failure> {
        if let Some(name) = self.ask_password_of.take() {
            let password = super::auth::ask("Password: ").map_err(|e| Failure(EXIT_ERROR, e))?;
            self.credentials = login_pair(name, password);
        }
        Ok(())
    }
}

/// The client endpoints DNS lists for `domain` (etcdctl's
/// `--discovery-srv`): `https://` ones from `_etcd-client-ssl._tcp.DOMAIN`,
/// `http://` ones from `_etcd-client._tcp.DOMAIN` (`-NAME` after the
/// service with `--discovery-srv-name`), targets with their trailing dot;
/// an error (exit 1) only when both lookups fail; without
/// `--insecure-discovery` the `http://` ones are dropped, each with a line
/// on stderr.
pub fn srv_endpoints(domain: &str, name: &str, insecure: bool) -> Result<Vec<String>, Failure> {
    let suffix = if name.is_empty() {
        String::new()
    } else {
        format!("-{name}")
    };
    let lookups = runtime()?.block_on(async {
        let mut out = Vec::new();
        for (service, scheme) in [("etcd-client-ssl", "https"), ("etcd-client", "http")] {
            let record = format!("_{service}{suffix}._tcp.{domain}");
            out.push((scheme, crate::discovery::srv::lookup_targets(&record).await));
        }
        out
    });
    let mut endpoints = Vec::new();
    let mut errors = Vec::new();
    for (scheme, found) in lookups {
        match found {
            Ok(targets) => endpoints.extend(
                targets
                    .into_iter()
                    .map(|(target, port)| format!("{scheme}://{target}:{port}")),
            ),
            Err(e) => errors.push(e),
        }
    }
    if errors.len() == 2 {
        return Err(Failure(
            EXIT_ERROR,
            format!("dns lookup errors: {} and {}", errors[0], errors[1]),
        ));
    }
    if insecure {
        return Ok(endpoints);
    }
    Ok(endpoints
        .into_iter()
        .filter(|ep| {
            let plain = ep.starts_with("http://");
            if plain {
                eprintln!("ignoring discovered insecure endpoint {ep:?}");
            }
            !plain
        })
        .collect())
}

/// Go's text for a file that cannot be opened (`open PATH: REASON`).
pub fn go_open_error(path: &str, e: &std::io::Error) -> String {
    let reason = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => {
            let text = e.to_string();
            match text.split_once(" (os error") {
                Some((head, _)) => head.to_lowercase(),
                None => text,
            }
        }
    };
    format!("open {path}: {reason}")
}

/// The TLS dialer of the command line, made as etcdctl 3.4 makes its TLS
/// configuration (`newClientCfg`): TLS when any of `--cert`, `--key`,
/// `--cacert` is given (the certificate and key both or neither) or when
/// `--insecure-transport=false`, or when a server name is given (secure
/// DNS discovery); the files read now, so a missing one ends the command
/// with exit 128 and Go's message.
pub fn tls_dialer(
    cert: &str,
    key: &str,
    cacert: &str,
    server_name: Option<String>,
    insecure_transport: bool,
    skip_verify: bool,
) -> Result<Option<Dialer>, Failure> {
    let configured =
        !cert.is_empty() || !key.is_empty() || !cacert.is_empty() || server_name.is_some();
    if !configured && insecure_transport {
        return Ok(None);
    }
    if (!cert.is_empty() || !key.is_empty()) && (cert.is_empty() || key.is_empty()) {
        return Err(Failure(
            EXIT_BAD_ARGS,
            format!("KeyFile and CertFile must both be present[key: {key}, cert: {cert}]"),
        ));
    }
    for path in [cert, key, cacert] {
        if !path.is_empty() {
            if let Err(e) = std::fs::read(path) {
                return Err(Failure(EXIT_BAD_ARGS, go_open_error(path, &e)));
            }
        }
    }
    let info = TlsInfo {
        cert_file: cert.into(),
        key_file: key.into(),
        trusted_ca_file: (!cacert.is_empty()).then(|| cacert.into()),
        self_signed: skip_verify,
        server_name,
        ..TlsInfo::default()
    };
    Dialer::command_line(&info)
        .map(Some)
        .map_err(|e| Failure(EXIT_BAD_ARGS, e))
}

/// The credentials of the command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    None,
    Given(String, String),
    /// A user name whose password is to be asked for.
    Ask(String),
}

/// etcdctl 3.4's `--user` / `--password` rules: no `--user`, no login;
/// with `--password`, `--user` is the whole name (colons and all); else
/// `--user NAME:PASSWORD` splits at the first colon, and a bare name has
/// its password asked for.
pub fn credentials(f: &Flags) -> Credentials {
    let user = f.get("user").unwrap_or("");
    if user.is_empty() {
        return Credentials::None;
    }
    let password = f.get("password").unwrap_or("");
    if !password.is_empty() {
        return Credentials::Given(user.to_owned(), password.to_owned());
    }
    match user.split_once(':') {
        Some((n, p)) => Credentials::Given(n.to_owned(), p.to_owned()),
        None => Credentials::Ask(user.to_owned()),
    }
}

/// clientv3 logs in only with both a name and a password; with either
/// empty it sends its calls without a token.
fn login_pair(name: String, password: String) -> Option<(String, String)> {
    (!name.is_empty() && !password.is_empty()).then_some((name, password))
}

/// An RPC error as etcdctl 3.4 prints it (clientv3's `toErr`): etcd's own
/// errors (`etcdserver: ...`) by their text alone, any other status as
/// gRPC-Go formats it.
pub fn rpc_error(s: &tonic::Status) -> String {
    use tonic::Code;
    let msg = s.message();
    if msg.starts_with("etcdserver: ") || msg.starts_with("mvcc: ") {
        return msg.to_owned();
    }
    let code = match s.code() {
        Code::Ok => "OK",
        Code::Cancelled => return "context canceled".to_owned(),
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => return DEADLINE_EXCEEDED.to_owned(),
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    };
    format!("rpc error: code = {code} desc = {msg}")
}

pub fn endpoint_url(ep: &str) -> String {
    if ep.contains("://") {
        ep.to_owned()
    } else {
        format!("http://{ep}")
    }
}

pub fn time_left(deadline: Instant) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(DEADLINE_EXCEEDED.to_owned())
    } else {
        Ok(left)
    }
}

/// `fut`, unless `deadline` passes first.
pub async fn before<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, String> {
    match tokio::time::timeout(time_left(deadline)?, fut).await {
        Ok(r) => r.map_err(|s| rpc_error(&s)),
        Err(_) => Err(DEADLINE_EXCEEDED.to_owned()),
    }
}

/// The URL to dial for `ep` and the dialer to dial it with, by clientv3's
/// rules: `http://` plain, `https://` TLS (the configured TLS, else the
/// system's CAs), no scheme TLS only when TLS is configured.
pub fn dial_target(g: &Global, ep: &str) -> Result<(String, Dialer), String> {
    if ep.starts_with("http://") {
        return Ok((ep.to_owned(), Dialer::plain()));
    }
    let tls = |g: &Global| -> Result<Dialer, String> {
        match &g.tls {
            Some(d) => Ok(d.clone()),
            None => Dialer::command_line(&TlsInfo {
                self_signed: g.skip_verify,
                ..TlsInfo::default()
            }),
        }
    };
    if ep.starts_with("https://") {
        return Ok((ep.to_owned(), tls(g)?));
    }
    if ep.contains("://") {
        return Err(format!("bad endpoint {ep}: unsupported scheme"));
    }
    match &g.tls {
        Some(d) => Ok((format!("https://{ep}"), d.clone())),
        None => Ok((format!("http://{ep}"), Dialer::plain())),
    }
}

/// One dial of `ep`, given up after `dial_timeout` or at `deadline`.
pub async fn dial(g: &Global, ep: &str, deadline: Instant) -> Result<Channel, String> {
    let (url, dialer) = dial_target(g, ep)?;
    let keepalive = g.keepalive_time.max(Duration::from_secs(1));
    let keepalive_timeout = g.keepalive_timeout.max(Duration::from_secs(1));
    let connect = dialer.connect_tuned(&url, g.dial_timeout, |e| {
        e.http2_keep_alive_interval(keepalive)
            .keep_alive_timeout(keepalive_timeout)
    });
    match tokio::time::timeout(time_left(deadline)?, connect).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) if e.starts_with("invalid url") => Err(format!("bad endpoint {url}: {e}")),
        Ok(Err(e)) => Err(format!("dial {url}: {e}")),
        Err(_) => Err(DEADLINE_EXCEEDED.to_owned()),
    }
}

/// A channel to `ep`, dialling again while it refuses, until `deadline`.
pub async fn dial_until(g: &Global, ep: &str, deadline: Instant) -> Result<Channel, String> {
    loop {
        match dial(g, ep, deadline).await {
            Ok(channel) => return Ok(channel),
            Err(e) if e.starts_with("bad endpoint") => return Err(e),
            Err(_) => {
                let pause = REDIAL.min(time_left(deadline)?);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// A token for `credentials` from the member behind `channel`; `None` when
/// its auth is off (etcdctl goes on without one then).
pub async fn login(
    channel: Channel,
    credentials: &(String, String),
) -> Result<Option<String>, tonic::Status> {
    let request = AuthenticateRequest {
        name: credentials.0.clone(),
        password: credentials.1.clone(),
    };
    match AuthClient::new(channel).authenticate(request).await {
        Ok(r) => Ok(Some(r.into_inner().token)),
        Err(s) if s.message() == "etcdserver: authentication is not enabled" => Ok(None),
        Err(s) => Err(s),
    }
}

/// The client of one command: a channel to the member answering, the
/// token when logged in.
pub struct Client {
    pub g: Global,
    channel: Option<(usize, Channel)>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    logged_in: bool,
}

/// One call's view of the client: where to send it, with what token.
#[derive(Clone)]
pub struct Ctx {
    pub channel: Channel,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Ctx {
    /// `msg` as a request carrying the token, if any.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("token", t.clone());
        }
        r
    }
}

/// A member that cannot be reached: Unavailable (not etcd's own), or the
/// transport failing under the call (a plain dial of a TLS port connects,
/// then the HTTP/2 exchange fails: tonic's `transport error` or `h2
/// protocol error`); gRPC-Go dials again until the deadline in both cases.
pub fn is_unreachable(s: &tonic::Status) -> bool {
    match s.code() {
        tonic::Code::Unavailable => !s.message().starts_with("etcdserver: "),
        tonic::Code::Unknown => s.message().starts_with("transport error"),
        tonic::Code::Internal => s.message().starts_with("h2 protocol error"),
        _ => false,
    }
}

impl Client {
    pub fn new(g: Global) -> Client {
        Client {
            g,
            channel: None,
            token: None,
            logged_in: false,
        }
    }

    /// A channel to the first endpoint that takes one, starting after the
    /// one that failed last, until `deadline`.
    async fn connect(&mut self, deadline: Instant, skip: Option<usize>) -> Result<(), String> {
        let n = self.g.endpoints.len();
        if n == 0 {
            return Err("no endpoints".into());
        }
        let start = skip.map_or(0, |i| (i + 1) % n);
        loop {
            for k in 0..n {
                let i = (start + k) % n;
                if let Ok(ch) = dial(&self.g, &self.g.endpoints[i], deadline).await {
                    self.channel = Some((i, ch));
                    return Ok(());
                }
                time_left(deadline)?;
            }
            let pause = REDIAL.min(time_left(deadline)?);
            tokio::time::sleep(pause).await;
        }
    }

    /// Logs in when credentials were given (once): a refused login ends
    /// the command with exit 2, as clientv3.New's error does in etcdctl.
    pub async fn ensure_login(&mut self) -> Result<(), Failure> {
        if self.logged_in {
            return Ok(());
        }
        self.g.ask_password()?;
        let Some(c) = self.g.credentials.clone() else {
            self.logged_in = true;
            return Ok(());
        };
        let deadline = Instant::now() + self.g.dial_timeout.max(Duration::from_millis(100));
        loop {
            if self.channel.is_none() {
                self.connect(deadline, None)
                    .await
                    .map_err(|e| Failure(EXIT_BAD_CONNECTION, e))?;
            }
            let Some((i, ch)) = self.channel.clone() else {
                continue;
            };
            match tokio::time::timeout(
                time_left(deadline).map_err(|e| Failure(EXIT_BAD_CONNECTION, e))?,
                login(ch, &c),
            )
            .await
            {
                Ok(Ok(token)) => {
                    self.token = match token {
                        Some(t) => Some(t.parse().map_err(|_| {
                            Failure(
                                EXIT_ERROR,
                                format!("the server's token {t:?} is not a header value"),
                            )
                        })?),
                        None => None,
                    };
                    self.logged_in = true;
                    return Ok(());
                }
                Ok(Err(s)) if is_unreachable(&s) => {
                    self.connect(deadline, Some(i))
                        .await
                        .map_err(|e| Failure(EXIT_BAD_CONNECTION, e))?;
                }
                Ok(Err(s)) => return Err(Failure(EXIT_BAD_CONNECTION, rpc_error(&s))),
                Err(_) => return Err(Failure(EXIT_BAD_CONNECTION, DEADLINE_EXCEEDED.into())),
            }
        }
    }

    /// `call` within the command timeout, passed on to the next endpoint
    /// while members cannot be reached.
    pub async fn call<T, F, Fut>(&mut self, call: F) -> Result<T, String>
    where
        F: FnMut(Ctx) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.g.command_timeout;
        self.call_until(deadline, call).await
    }

    /// `call`, until `deadline`.
    pub async fn call_until<T, F, Fut>(
        &mut self,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, String>
    where
        F: FnMut(Ctx) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        loop {
            if self.channel.is_none() {
                self.connect(deadline, None).await?;
            }
            let Some((i, channel)) = self.channel.clone() else {
                continue;
            };
            let ctx = Ctx {
                channel,
                token: self.token.clone(),
            };
            match tokio::time::timeout(time_left(deadline)?, call(ctx)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(s)) if is_unreachable(&s) => {
                    self.channel = None;
                    let pause = REDIAL.min(time_left(deadline)?);
                    tokio::time::sleep(pause).await;
                    self.connect(deadline, Some(i)).await?;
                }
                Ok(Err(s)) => return Err(rpc_error(&s)),
                Err(_) => return Err(DEADLINE_EXCEEDED.to_owned()),
            }
        }
    }

    /// One Range call within the command timeout, passed on as [`call`]
    /// passes calls on.
    ///
    /// [`call`]: Client::call
    pub async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, String> {
        let deadline = Instant::now() + self.g.command_timeout;
        self.range_until(deadline, req).await
    }

    /// One Range call, until `deadline`.
    pub async fn range_until(
        &mut self,
        deadline: Instant,
        req: RangeRequest,
    ) -> Result<RangeResponse, String> {
        self.call_until(deadline, |ctx| {
            let req = ctx.req(req.clone());
            async move {
                KvClient::new(ctx.channel)
                    .range(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// A context for a long-running stream (watch, keep-alive): connected,
    /// logged in, no deadline of its own.
    pub async fn stream_ctx(&mut self, within: Duration) -> Result<Ctx, String> {
        let deadline = Instant::now() + within;
        if self.channel.is_none() {
            self.connect(deadline, None).await?;
        }
        match self.channel.clone() {
            Some((_, channel)) => Ok(Ctx {
                channel,
                token: self.token.clone(),
            }),
            None => Err(DEADLINE_EXCEEDED.to_owned()),
        }
    }

    /// The endpoint the client is connected to, if any.
    pub fn current_endpoint(&self) -> Option<&str> {
        self.channel
            .as_ref()
            .and_then(|(i, _)| self.g.endpoints.get(*i))
            .map(String::as_str)
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure(EXIT_ERROR, format!("cannot start the async runtime: {e}")))
}

#[cfg(test)]
mod tests {
    use super::super::flags::{parse, GLOBAL};
    use super::*;

    fn creds(args: &[&str]) -> Credentials {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args, &[GLOBAL]) {
            Ok(f) => credentials(&f),
            Err(Failure(c, m)) => panic!("{c} {m}"),
        }
    }

    fn given(n: &str, p: &str) -> Credentials {
        Credentials::Given(n.into(), p.into())
    }

    #[test]
    fn user_and_password_follow_etcdctls_rules() {
        // No --user: no login, whatever --password says.
        assert_eq!(creds(&["get", "k"]), Credentials::None);
        assert_eq!(creds(&["--password=pw", "get"]), Credentials::None);
        assert_eq!(creds(&["--user=", "--password=pw"]), Credentials::None);
        // NAME:PASSWORD splits at the first colon.
        assert_eq!(creds(&["--user=root:pw"]), given("root", "pw"));
        assert_eq!(creds(&["--user", "a:b:c"]), given("a", "b:c"));
        // With --password, --user is the whole name, colon and all (etcd
        // 3.4 does not refuse both; the login fails with the server's
        // "authentication failed").
        assert_eq!(
            creds(&["--user=root", "--password=pw"]),
            given("root", "pw")
        );
        assert_eq!(
            creds(&["--user=root:x", "--password=pw"]),
            given("root:x", "pw")
        );
        // A bare name has its password asked for.
        assert_eq!(creds(&["--user=root"]), Credentials::Ask("root".into()));
        assert_eq!(
            creds(&["--user=root", "--password="]),
            Credentials::Ask("root".into())
        );
        // clientv3 logs in only with both a name and a password.
        assert_eq!(login_pair("".into(), "pw".into()), None);
        assert_eq!(login_pair("root".into(), "".into()), None);
        assert_eq!(
            login_pair("root".into(), "pw".into()),
            Some(("root".into(), "pw".into()))
        );
    }
}

/// Defragments the member at `ep` by the given `deadline` (dialling,
/// logging in at that member with `credentials`, the call itself).
pub async fn defrag_member(
    g: &Global,
    ep: &str,
    credentials: Option<&(String, String)>,
    deadline: Instant,
) -> Result<(), String> {
    let channel = dial_until(g, ep, deadline).await?;
    let mut request = tonic::Request::new(cairn_proto::etcdserverpb::DefragmentRequest {});
    if let Some(c) = credentials {
        if let Some(token) = before(deadline, login(channel.clone(), c)).await? {
            let value = token
                .parse()
                .map_err(|_| format!("the server's token {token:?} is not a header value"))?;
            request.metadata_mut().insert("token", value);
        }
    }
    let mut maintenance =
        cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient::new(channel);
    before(deadline, maintenance.defragment(request)).await?;
    Ok(())
}
