//! Bootstrapping a new cluster through discovery, as etcd 3.4 does, when
//! `--discovery` or `--discovery-srv` replaces `--initial-cluster`:
//!
//! - **`--discovery <url>`**, etcd's v2 discovery protocol. The URL names a
//!   key directory (the token) on a cluster serving the v2 keys API — etcd
//!   or cairn with `--enable-v2` — whose `_config/size` says how many
//!   members to wait for. Each member checks the directory is not full,
//!   registers itself as `<token>/<member id>` = `name=peer-url,…` (create
//!   only: `discovery: found duplicate id` if its id is there), then waits
//!   (a recursive v2 watch) until `size` members registered; the first
//!   `size` registrations by creation order are the initial cluster. A
//!   member not among them gets `discovery: cluster is full`. Unreachable
//!   discovery servers are retried with etcd's back-off (1, 2, 4 … 256 s).
//! - **`--discovery-srv <domain>`**: the SRV records
//!   `_etcd-server-ssl[-<name>]._tcp.<domain>` (https peers) and
//!   `_etcd-server[-<name>]._tcp.<domain>` (http peers) list the peers;
//!   each target resolves to addresses, and the one whose address and port
//!   are this member's advertised peer URL takes this member's name; the
//!   others get numbers until they publish their names, and every member's
//!   URL is its target's (`scheme://target:port`), as etcd does, so all
//!   members derive the same ids. Lookups go to the
//!   system's resolver (`/etc/resolv.conf`); `CAIRN_DNS_SERVER=ip:port`
//!   sends them to another server (the tests' dnsmasq).
//!
//! Discovery runs only on a member's first start (no data yet); its answer
//! becomes `--initial-cluster`. Tests: `tests/discovery.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::config::{Config, Url};

/// etcd's client request timeout for each discovery call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// etcd's exponential retries stop growing at 2^8 s.
const MAX_BACKOFF_EXP: u32 = 8;

/// What discovery can fail with (etcd's messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery: invalid URL")]
    InvalidUrl,
    #[error("discovery: size key is bad")]
    BadSizeKey,
    #[error("discovery: size key not found")]
    SizeNotFound,
    #[error("discovery: found duplicate id")]
    DuplicateId,
    #[error("discovery: found duplicate name")]
    DuplicateName,
    #[error("discovery: cluster is full")]
    FullCluster,
    #[error("discovery: bad discovery endpoint")]
    BadEndpoint,
    #[error("discovery: {0}")]
    Other(String),
}

/// A discovery URL: where its server is, and the token's key path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    host: String,
    port: u16,
    /// The URL's path, e.g. `/v2/keys/discovery/<token>` (no trailing `/`).
    path: String,
}

fn parse_token(url: &str) -> Result<Token, DiscoveryError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        DiscoveryError::Other(format!("unsupported discovery URL {url:?} (http:// only)"))
    })?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| DiscoveryError::InvalidUrl)?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(DiscoveryError::InvalidUrl);
    }
    Ok(Token {
        host: host.trim_matches(['[', ']']).to_owned(),
        port,
        path: format!("/{}", path.trim_end_matches('/')),
    })
}

/// One HTTP/1.1 answer: status, `X-Etcd-Index`, body.
struct Answer {
    status: u16,
    etcd_index: u64,
    body: String,
}

/// Why a call got no answer: the discovery server is unreachable (retry),
/// as opposed to an answer that says something.
#[derive(Debug)]
struct Unreachable(String);

async fn call(
    t: &Token,
    method: &str,
    target: &str,
    form: &str,
    timeout: Option<Duration>,
) -> Result<Answer, Unreachable> {
    let work = async {
        let addr = format!("{}:{}", t.host, t.port);
        let mut s = TcpStream::connect(&addr)
            .await
            .map_err(|e| Unreachable(format!("{addr}: {e}")))?;
        let mut req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            form.len()
        );
        if !form.is_empty() {
            req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        req.push_str("\r\n");
        req.push_str(form);
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| Unreachable(e.to_string()))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| Unreachable(e.to_string()))?;
        parse_answer(&raw).ok_or_else(|| Unreachable("not an HTTP answer".into()))
    };
    match timeout {
        Some(d) => cairn_runtime::timer::timeout(d, work)
            .await
            .unwrap_or_else(|_| Err(Unreachable("timed out".into()))),
        None => work.await,
    }
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut etcd_index = 0;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "transfer-encoding" => chunked = v.contains("chunked"),
            "x-etcd-index" => etcd_index = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let body = &raw[split + 4..];
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Some(Answer {
        status,
        etcd_index,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let Some(len) = std::str::from_utf8(&b[..i])
            .ok()
            .and_then(|l| usize::from_str_radix(l.trim(), 16).ok())
        else {
            break;
        };
        if len == 0 || b.len() < i + 2 + len {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + len]);
        b = &b[(i + 4 + len).min(b.len())..];
    }
    out
}

fn form_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A registered member: its key's last component, value, created index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registered {
    name: String,
    value: String,
    created: u64,
}

fn node_of(v: &serde_json::Value) -> Option<Registered> {
    Some(Registered {
        name: v["key"].as_str()?.rsplit('/').next()?.to_owned(),
        value: v["value"].as_str().unwrap_or_default().to_owned(),
        created: v["createdIndex"].as_u64().unwrap_or(0),
    })
}

struct Discovery {
    token: Token,
    self_name: String,
    retries: u32,
}

impl Discovery {
    async fn backoff(&mut self, step: &str, why: &str) {
        self.retries += 1;
        let secs = 1u64 << self.retries.min(MAX_BACKOFF_EXP);
        tracing::warn!(
            step,
            error = why,
            retry_in_secs = secs,
            "retrying discovery"
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    /// The registered members (creation order), the size, the index seen;
    /// `FullCluster` (with the first `size`) when this member is not among
    /// the first `size`.
    async fn check_cluster(
        &mut self,
    ) -> Result<(Vec<Registered>, u64, u64), (DiscoveryError, Vec<Registered>, u64)> {
        loop {
            let size_key = format!("{}/_config/size", self.token.path);
            let a = match call(&self.token, "GET", &size_key, "", Some(CALL_TIMEOUT)).await {
                Ok(a) => a,
                Err(Unreachable(why)) => {
                    self.backoff("cluster status check", &why).await;
                    continue;
                }
            };
            let v: serde_json::Value = serde_json::from_str(&a.body)
                .map_err(|_| (DiscoveryError::BadEndpoint, Vec::new(), 0))?;
            if a.status == 404 || v["errorCode"].as_u64() == Some(100) {
                return Err((DiscoveryError::SizeNotFound, Vec::new(), 0));
            }
            let size: u64 = v["node"]["value"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or((DiscoveryError::BadSizeKey, Vec::new(), 0))?;
            let a = match call(&self.token, "GET", &self.token.path, "", Some(CALL_TIMEOUT)).await {
                Ok(a) => a,
                Err(Unreachable(why)) => {
                    self.backoff("cluster status check", &why).await;
                    continue;
                }
            };
            let v: serde_json::Value = serde_json::from_str(&a.body)
                .map_err(|_| (DiscoveryError::BadEndpoint, Vec::new(), 0))?;
            let mut nodes: Vec<Registered> = v["node"]["nodes"]
                .as_array()
                .map(|list| list.iter().filter_map(node_of).collect())
                .unwrap_or_default();
            nodes.retain(|n| n.name != "_config");
            nodes.sort_by_key(|n| n.created);
            for (i, n) in nodes.iter().enumerate() {
                if n.name == self.self_name {
                    break;
                }
                if i as u64 >= size.saturating_sub(1) {
                    let first = nodes[..size as usize].to_vec();
                    return Err((DiscoveryError::FullCluster, first, size));
                }
            }
            return Ok((nodes, size, a.etcd_index));
        }
    }

    /// Registers this member (create only).
    async fn create_self(&mut self, contents: &str) -> Result<(), DiscoveryError> {
        let key = format!("{}/{}?prevExist=false", self.token.path, self.self_name);
        let form = format!("value={}", form_escape(contents));
        loop {
            match call(&self.token, "PUT", &key, &form, Some(CALL_TIMEOUT)).await {
                Ok(a) if a.status == 201 || a.status == 200 => return Ok(()),
                Ok(a) if a.body.contains("\"errorCode\":105") => {
                    return Err(DiscoveryError::DuplicateId)
                }
                Ok(a) => {
                    return Err(DiscoveryError::Other(format!(
                        "registering failed: {} {}",
                        a.status,
                        a.body.trim()
                    )))
                }
                Err(Unreachable(why)) => self.backoff("registering", &why).await,
            }
        }
    }

    /// Waits (recursive v2 watches) until `size` members registered.
    async fn wait_nodes(
        &mut self,
        mut all: Vec<Registered>,
        size: u64,
        mut index: u64,
    ) -> Result<Vec<Registered>, DiscoveryError> {
        all.truncate(size as usize);
        while (all.len() as u64) < size {
            tracing::info!(
                found = all.len(),
                size,
                "waiting for more members to register with discovery"
            );
            let target = format!(
                "{}?wait=true&recursive=true&waitIndex={}",
                self.token.path,
                index + 1
            );
            let a = match call(&self.token, "GET", &target, "", None).await {
                Ok(a) => a,
                Err(Unreachable(why)) => {
                    self.backoff("waiting for other nodes", &why).await;
                    let (nodes, size2, idx) = self.check_cluster().await.map_err(|(e, _, _)| e)?;
                    all = nodes;
                    all.truncate(size2 as usize);
                    index = idx;
                    continue;
                }
            };
            let v: serde_json::Value =
                serde_json::from_str(&a.body).map_err(|_| DiscoveryError::BadEndpoint)?;
            if v["errorCode"].as_u64() == Some(401) {
                // The history moved past us: look again from now.
                let (nodes, _, idx) = self.check_cluster().await.map_err(|(e, _, _)| e)?;
                all = nodes;
                all.truncate(size as usize);
                index = idx;
                continue;
            }
            let node = &v["node"];
            index = node["modifiedIndex"]
                .as_u64()
                .unwrap_or(index + 1)
                .max(index + 1);
            if v["action"].as_str() != Some("create") && v["action"].as_str() != Some("set") {
                continue;
            }
            if let Some(n) = node_of(node) {
                if n.name != "_config" && !all.iter().any(|m| m.name == n.name) {
                    all.push(n);
                }
            }
        }
        Ok(all)
    }
}

/// The initial cluster (`name=url,…`) the members' registrations give;
/// `DuplicateName` when names repeat across members.
fn nodes_to_cluster(nodes: &[Registered], size: u64) -> Result<String, DiscoveryError> {
    let joined = nodes
        .iter()
        .map(|n| n.value.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let map =
        crate::config::parse_initial_cluster(&joined).map_err(|_| DiscoveryError::InvalidUrl)?;
    if map.len() as u64 != size {
        return Err(DiscoveryError::DuplicateName);
    }
    Ok(joined)
}

/// etcd's v2 discovery for `config` (first start only): the initial cluster.
pub async fn discover(config: &Config, url: &str) -> Result<String, DiscoveryError> {
    let token = parse_token(url)?;
    let own = config
        .initial_advertise_peer_urls
        .iter()
        .map(|u| format!("{}={u}", config.name))
        .collect::<Vec<_>>()
        .join(",");
    let mut d = Discovery {
        token,
        self_name: format!("{:x}", config.member_id().0),
        retries: 0,
    };
    if let Err((e, _, _)) = d.check_cluster().await {
        return Err(e);
    }
    d.create_self(&own).await?;
    let (nodes, size, index) = d.check_cluster().await.map_err(|(e, _, _)| e)?;
    let all = d.wait_nodes(nodes, size, index).await?;
    nodes_to_cluster(&all, size)
}

/// `config` with the initial cluster discovery found (`--discovery` or
/// `--discovery-srv`).
pub async fn bootstrap(config: &Config) -> Result<Config, String> {
    let found = if let Some(url) = &config.discovery {
        discover(config, url).await.map_err(|e| match e {
            DiscoveryError::FullCluster if config.discovery_fallback == "proxy" => format!(
                "{e} (--discovery-fallback=proxy: cairn has no proxy mode, so it stops as with exit)"
            ),
            e => e.to_string(),
        })?
    } else if let Some(domain) = &config.discovery_srv {
        srv::initial_cluster(config, domain).await?
    } else {
        return Ok(config.clone());
    };
    tracing::info!(initial_cluster = %found, "discovery found the initial cluster");
    let mut c = config.clone();
    c.initial_cluster =
        crate::config::parse_initial_cluster(&found).map_err(|e| format!("discovery: {e}"))?;
    if !c.initial_cluster.contains_key(&c.name) {
        return Err(format!(
            "discovery: this member ({}) is not in the cluster discovery found: {found}",
            c.name
        ));
    }
    Ok(c)
}

/// DNS SRV discovery.
pub mod srv {
    use super::*;
    use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    use hickory_resolver::name_server::TokioConnectionProvider;
    use hickory_resolver::proto::xfer::Protocol;
    use hickory_resolver::TokioResolver;

    fn resolver() -> Result<TokioResolver, String> {
        match std::env::var("CAIRN_DNS_SERVER") {
            Ok(server) => {
                let addr: SocketAddr = server
                    .parse()
                    .map_err(|_| format!("CAIRN_DNS_SERVER={server:?} is not ip:port"))?;
                let mut cfg = ResolverConfig::new();
                cfg.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                let mut opts = ResolverOpts::default();
                opts.cache_size = 0;
                Ok(
                    TokioResolver::builder_with_config(cfg, TokioConnectionProvider::default())
                        .with_options(opts)
                        .build(),
                )
            }
            Err(_) => TokioResolver::builder_tokio()
                .map(|b| b.build())
                .map_err(|e| format!("discovery: cannot read the system's resolver: {e}")),
        }
    }

    /// The targets (with their trailing dot, as Go gives them) and ports
    /// of the SRV records named `name` (`_service._tcp.domain`), in the
    /// order the resolver gave them; an error as Go's resolver words it
    /// (`lookup NAME on SERVER: no such host`).
    pub async fn lookup_targets(name: &str) -> Result<Vec<(String, u16)>, String> {
        let resolver = resolver()?;
        let server = resolver
            .config()
            .name_servers()
            .first()
            .map(|s| s.socket_addr.to_string())
            .unwrap_or_default();
        match resolver.srv_lookup(format!("{name}.")).await {
            Ok(records) => Ok(records
                .iter()
                .map(|r| {
                    let mut target = r.target().to_utf8();
                    if !target.ends_with('.') {
                        target.push('.');
                    }
                    (target, r.port())
                })
                .collect()),
            Err(e) => {
                let why = if e.is_nx_domain() || e.is_no_records_found() {
                    "no such host".to_owned()
                } else {
                    let text = e.to_string();
                    if text.contains("timed out") || text.contains("timeout") {
                        "i/o timeout".to_owned()
                    } else {
                        "server misbehaving".to_owned()
                    }
                };
                Err(format!("lookup {name} on {server}: {why}"))
            }
        }
    }

    /// The peers the SRV records of `domain` list, as `name=url,…`.
    pub async fn initial_cluster(config: &Config, domain: &str) -> Result<String, String> {
        let resolver = resolver()?;
        let suffix = if config.discovery_srv_name.is_empty() {
            String::new()
        } else {
            format!("-{}", config.discovery_srv_name)
        };
        let own: Vec<&Url> = config.initial_advertise_peer_urls.iter().collect();
        let mut entries: Vec<String> = Vec::new();
        let mut others = 0usize;
        let mut errors = Vec::new();
        for (service, scheme) in [("_etcd-server-ssl", "https"), ("_etcd-server", "http")] {
            let name = format!("{service}{suffix}._tcp.{domain}.");
            let records = match resolver.srv_lookup(name.as_str()).await {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let mut targets: Vec<(String, u16)> = records
                .iter()
                .map(|r| {
                    (
                        r.target().to_utf8().trim_end_matches('.').to_owned(),
                        r.port(),
                    )
                })
                .collect();
            targets.sort();
            for (target, port) in targets {
                let addrs = resolver
                    .lookup_ip(format!("{target}."))
                    .await
                    .map_err(|e| format!("discovery: resolving {target}: {e}"))?;
                let addrs: Vec<std::net::IpAddr> = addrs.iter().collect();
                // Ours when an advertised peer URL has this port and either
                // the target's name or one of its addresses.
                let is_self = own.iter().any(|u| {
                    u.port == port
                        && (u.host == target
                            || u.host
                                .trim_matches(['[', ']'])
                                .parse::<std::net::IpAddr>()
                                .is_ok_and(|ip| addrs.contains(&ip)))
                });
                // As etcd: every member's URL is its SRV target's, so all
                // members derive the same ids; the others get temporary
                // names (numbers) until they publish theirs.
                let url = format!("{scheme}://{target}:{port}");
                let member = if is_self {
                    format!("{}={url}", config.name)
                } else {
                    let n = format!("{}={url}", others);
                    others += 1;
                    n
                };
                entries.push(member);
            }
        }
        if entries.is_empty() {
            return Err(format!(
                "discovery: no SRV records for {domain}: {}",
                errors.join("; ")
            ));
        }
        Ok(entries.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_urls_name_their_server_and_token() {
        assert_eq!(
            parse_token("http://127.0.0.1:2379/v2/keys/discovery/abc/").unwrap(),
            Token {
                host: "127.0.0.1".into(),
                port: 2379,
                path: "/v2/keys/discovery/abc".into()
            }
        );
        assert_eq!(parse_token("http://:80/x"), Err(DiscoveryError::InvalidUrl));
        assert!(parse_token("ftp://x/y").is_err());
    }

    #[test]
    fn registrations_become_the_initial_cluster_and_duplicate_names_fail() {
        let r = |name: &str, value: &str, created| Registered {
            name: name.into(),
            value: value.into(),
            created,
        };
        let ok = [
            r("a1", "m1=http://10.0.0.1:2380", 5),
            r("b2", "m2=http://10.0.0.2:2380", 6),
        ];
        assert_eq!(
            nodes_to_cluster(&ok, 2).unwrap(),
            "m1=http://10.0.0.1:2380,m2=http://10.0.0.2:2380"
        );
        let dup = [
            r("a1", "m1=http://10.0.0.1:2380", 5),
            r("b2", "m1=http://10.0.0.2:2380", 6),
        ];
        assert_eq!(
            nodes_to_cluster(&dup, 2),
            Err(DiscoveryError::DuplicateName)
        );
    }

    #[test]
    fn answers_are_read_whole_or_chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nX-Etcd-Index: 7\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let a = parse_answer(raw).unwrap();
        assert_eq!((a.status, a.etcd_index, a.body.as_str()), (200, 7, "abcde"));
        assert_eq!(form_escape("m1=http://x:1"), "m1%3Dhttp%3A%2F%2Fx%3A1");
    }
}
