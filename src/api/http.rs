//! The plain-HTTP endpoints of the client port, as etcd serves them:
//! `/health` (JSON, 503 when unhealthy), `/livez` and `/readyz` (etcd
//! 3.5.11+'s probes, `probes`), `/version` (JSON) and `/metrics`
//! (Prometheus text, with etcd's metric names: `super::metrics`), and
//! etcd's JSON gateway under `/v3/` (`super::gateway`). Served next to gRPC
//! by `cairn_runtime::client_port`. Any path answers `OPTIONS` (a CORS
//! preflight) with 200, as etcd.
//! Tests: every integration test waits on `/health` (`tests/common/mod.rs`);
//! `tests/watch_interop.rs` and `tests/metrics.rs` read `/metrics`.
//! `/version` has no test of its own.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cairn_runtime::client_port::{HttpHandler, HttpReply, HttpRequest};

use crate::server::{Server, ETCD_API_VERSION};

const JSON: &str = "application/json";

/// The handler for `cairn_runtime::client_port::serve_client_port`: the
/// plain endpoints and the JSON gateway.
pub fn handler(server: Server) -> HttpHandler {
    serving(server, true)
}

/// The handler of a `--listen-metrics-urls` port: the plain endpoints only
/// (no gateway there, as etcd).
pub fn metrics_handler(server: Server) -> HttpHandler {
    serving(server, false)
}

fn serving(server: Server, gateway: bool) -> HttpHandler {
    Arc::new(move |req: HttpRequest| {
        let server = server.clone();
        Box::pin(async move {
            let target = req.target.as_str();
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            if gateway && req.method == "OPTIONS" {
                let mut reply = HttpReply::new(200, "", "");
                reply.headers = super::gateway::cors_headers();
                return Some(reply);
            }
            if gateway {
                if let Some(reply) = super::v2::answer(&server, &req, path, query).await {
                    return Some(reply);
                }
                if let Some(reply) = super::gateway::answer(&server, &req, path).await {
                    return Some(reply);
                }
            }
            if req.method != "GET" && req.method != "HEAD" {
                // Only this handler's own paths are GET-only; elsewhere 404.
                let own = probes::route(path).is_some()
                    || matches!(path, "/health" | "/version" | "/metrics");
                return own.then(|| {
                    HttpReply::new(405, "text/plain; charset=utf-8", "Method Not Allowed\n")
                });
            }
            match probes::route(path) {
                Some((kind, only)) => Some(probes::answer(&server, kind, only, query).await),
                None => answer(&server, path),
            }
        })
    })
}

/// The answers that need no waiting.
fn answer(server: &Server, path: &str) -> Option<HttpReply> {
    let server = server.clone();
    match path {
        "/health" => Some(health(&server)),
        "/version" => Some(HttpReply::new(
            200,
            JSON,
            format!(
                "{{\"etcdserver\":\"{ETCD_API_VERSION}\",\"etcdcluster\":\"{}.0\"}}",
                cluster_version()
            ),
        )),
        "/metrics" => Some(HttpReply::new(
            200,
            "text/plain; version=0.0.4",
            super::metrics::render(&server),
        )),
        _ => None,
    }
}

pub(super) fn cluster_version() -> &'static str {
    ETCD_API_VERSION
        .rsplit_once('.')
        .map_or(ETCD_API_VERSION, |(major_minor, _)| major_minor)
}

fn health(server: &Server) -> HttpReply {
    let alarm = server
        .alarm_names()
        .first()
        .map(|(_, name)| format!("ALARM {name}"));
    let reason = if server.is_stopped() {
        Some("SERVER STOPPED")
    } else if let Some(a) = alarm.as_deref() {
        Some(a)
    } else if server.leader().is_none() {
        Some("RAFT NO LEADER")
    } else if !server.is_published() {
        Some("NOT READY: member not yet published")
    } else {
        None
    };
    let counter = match reason {
        None => &server.metrics().health_success,
        Some(_) => &server.metrics().health_failures,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    match reason {
        None => HttpReply::new(200, JSON, r#"{"health":"true","reason":""}"#),
        Some(r) => HttpReply::new(503, JSON, format!(r#"{{"health":"false","reason":"{r}"}}"#)),
    }
}

/// etcd's `/livez` and `/readyz` (3.5.11 and later): named checks, each
/// also at `/<probe>/<check>`; `?exclude=<check>` (repeatable) leaves one
/// out, `?verbose` lists them on success. A failure answers 503 with one
/// `[+]name ok` / `[-]name failed: reason` line per check run (and the
/// blank line Go's `http.Error` adds); success answers `ok`.
mod probes {
    use super::*;
    use cairn_proto::etcdserverpb::RangeRequest;

    #[derive(Clone, Copy)]
    pub enum Probe {
        Livez,
        Readyz,
    }

    /// `/livez`: the member can read its own state.
    const LIVEZ: &[&str] = &["serializable_read"];
    /// `/readyz`: no CORRUPT alarm, local and consensus reads work, not a
    /// learner.
    const READYZ: &[&str] = &[
        "data_corruption",
        "serializable_read",
        "linearizable_read",
        "non_learner",
    ];

    fn checks(p: Probe) -> &'static [&'static str] {
        match p {
            Probe::Livez => LIVEZ,
            Probe::Readyz => READYZ,
        }
    }

    /// The probe a path names, and the single check of a sub-path.
    pub fn route(path: &str) -> Option<(Probe, Option<&'static str>)> {
        let (probe, rest) = if let Some(r) = path.strip_prefix("/livez") {
            (Probe::Livez, r)
        } else if let Some(r) = path.strip_prefix("/readyz") {
            (Probe::Readyz, r)
        } else {
            return None;
        };
        match rest.strip_prefix('/') {
            None if rest.is_empty() => Some((probe, None)),
            Some(name) => checks(probe)
                .iter()
                .find(|c| **c == name)
                .map(|c| (probe, Some(*c))),
            None => None,
        }
    }

    async fn run(server: &Server, check: &str) -> Result<(), String> {
        let read = |serializable: bool| RangeRequest {
            key: b"\0".to_vec(),
            keys_only: true,
            limit: 1,
            serializable,
            ..Default::default()
        };
        match check {
            "data_corruption" => match server.alarm_names().iter().any(|(_, a)| *a == "CORRUPT") {
                true => Err("alarm activated: CORRUPT".to_owned()),
                false => Ok(()),
            },
            // As the member itself, whatever auth says (etcd reads as root).
            "serializable_read" => server
                .probe_read(read(true))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            "linearizable_read" => server
                .probe_read(read(false))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            "non_learner" => match server.status_is_learner() {
                true => Err("not supported for learner".to_owned()),
                false => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Answers the probe (or its one check) for `query`.
    pub async fn answer(
        server: &Server,
        probe: Probe,
        only: Option<&str>,
        query: &str,
    ) -> HttpReply {
        let params: Vec<(&str, &str)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        let excluded: Vec<&str> = params
            .iter()
            .filter(|(k, v)| *k == "exclude" && !v.is_empty())
            .map(|(_, v)| *v)
            .collect();
        let verbose = params.iter().any(|(k, _)| *k == "verbose");
        let names: Vec<&str> = match only {
            Some(one) => vec![one],
            None => checks(probe)
                .iter()
                .copied()
                .filter(|c| !excluded.contains(c))
                .collect(),
        };
        let mut report = String::new();
        let mut failed = false;
        for name in names {
            match run(server, name).await {
                Ok(()) => {
                    let _ = writeln!(report, "[+]{name} ok");
                }
                Err(e) => {
                    failed = true;
                    let _ = writeln!(report, "[-]{name} failed: {e}");
                }
            }
        }
        const TEXT: &str = "text/plain; charset=utf-8";
        if failed {
            report.push('\n');
            return HttpReply::new(503, TEXT, report);
        }
        let mut body = if verbose { report } else { String::new() };
        body.push_str("ok\n");
        HttpReply::new(200, TEXT, body)
    }
}
