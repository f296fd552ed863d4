//! The URLs of the configuration: `scheme://host:port`, nothing more.
//!
//! Invariants of a parsed [`Url`]: scheme is http or https; host is non-empty
//! (an IPv6 literal is stored without brackets); the port is a number; there
//! is no path, query, fragment or user. `Display` writes the URL as Go's
//! `url.URL.String()` would for the same input, because member and cluster
//! ids hash that text (see `ids.rs`) and must match etcd's.
//!
//! Error reasons reuse etcd's `types.NewURLs` wording. Tests: `super::tests`
//! (`url_*`, `initial_cluster_*`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The scheme of a configuration URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Http,
    /// Parsed so the error can say TLS is missing; no validated `Config` holds one yet.
    Https,
}

/// A listen or advertise URL: `http://10.0.0.1:2380`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Url {
    pub scheme: Scheme,
    /// A host name or an IP literal (IPv6 without brackets). Never empty.
    pub host: String,
    pub port: u16,
}

impl Url {
    /// Parses one URL; the error is the reason, in etcd's words where it has them.
    pub fn parse(text: &str) -> Result<Url, String> {
        let text = text.trim();
        let bad_scheme = || format!("URL scheme must be http or https: {text}");
        let (scheme, rest) = text.split_once("://").ok_or_else(bad_scheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(bad_scheme()),
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if authority_end < rest.len() {
            return Err(format!("URL must not contain a path: {text}"));
        }
        let (host, port) = split_host_port(rest)
            .ok_or_else(|| format!("URL address does not have the form \"host:port\": {text}"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("URL port must be a number from 0 to 65535: {text}"))?;
        Ok(Url {
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// Whether this URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// The address to bind or dial without name resolution: an IP literal as
    /// is, `localhost` as 127.0.0.1; `None` for any other host name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = match self.host.as_str() {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            host => host.parse::<IpAddr>().ok()?,
        };
        Some(SocketAddr::new(ip, self.port))
    }

    /// etcd's rule for listen URLs: the host must be an IP address or localhost.
    pub(crate) fn check_bindable(&self) -> Result<(), String> {
        match self.socket_addr() {
            Some(_) => Ok(()),
            None => Err(format!("expected IP in URL for binding ({self})")),
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `host:port` or `[v6]:port` → (host, port text); `None` if either is missing.
fn split_host_port(authority: &str) -> Option<(&str, &str)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':')?)
        }
        None => {
            let (host, port) = authority.rsplit_once(':')?;
            if host.contains(':') || host.contains('@') {
                return None;
            }
            (host, port)
        }
    };
    (!host.is_empty() && !port.is_empty()).then_some((host, port))
}

/// Sorts URLs by their text, as etcd's `types.URLs` does, so every list in a
/// `Config` has one order whatever order the user wrote.
pub(crate) fn sort_urls(urls: &mut [Url]) {
    urls.sort_by_cached_key(|u| u.to_string());
}

/// A comma-separated URL list, sorted, duplicates removed.
pub(crate) fn parse_url_list(text: &str) -> Result<Vec<Url>, String> {
    if text.trim().is_empty() {
        return Err("at least one URL is required".to_string());
    }
    let mut urls = text
        .split(',')
        .map(Url::parse)
        .collect::<Result<Vec<_>, _>>()?;
    sort_urls(&mut urls);
    urls.dedup();
    Ok(urls)
}

/// `--initial-cluster`: `name=url,name=url`; a name may repeat to give a
/// member several URLs. Empty entries are skipped (etcd does too). A URL
/// repeated within one member is kept, so the duplicate check can report it.
pub(crate) fn parse_initial_cluster(text: &str) -> Result<BTreeMap<String, Vec<Url>>, String> {
    let mut cluster: BTreeMap<String, Vec<Url>> = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("expected name=url, got {entry:?}"))?;
        if name.is_empty() {
            return Err(format!("member name must not be empty in {entry:?}"));
        }
        cluster
            .entry(name.to_string())
            .or_default()
            .push(Url::parse(url)?);
    }
    cluster.values_mut().for_each(|urls| sort_urls(urls));
    Ok(cluster)
}

/// The cluster as etcd prints it: `name=url` pairs, sorted, comma-joined.
pub(crate) fn format_initial_cluster(cluster: &BTreeMap<String, Vec<Url>>) -> String {
    let mut pairs: Vec<String> = cluster
        .iter()
        .flat_map(|(name, urls)| urls.iter().map(move |u| format!("{name}={u}")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// Joins URLs with commas, in the order given.
pub(crate) fn join_urls(urls: &[Url]) -> String {
    urls.iter()
        .map(Url::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
