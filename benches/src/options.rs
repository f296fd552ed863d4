//! Command line of `cairn-bench`, modelled on etcd's `benchmark` tool:
//! `cairn-bench [flags] <workload> [flags]` — flags may come before or after
//! the workload, as `--flag=value` or `--flag value`; booleans are bare
//! (`--prefix`) or `--prefix=false`.
//!
//! Tests: below (`parses_*`, `rejects_*`).

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Put,
    Range,
    TxnPut,
    Watch,
    LeaseKeepalive,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Range => "range",
            Workload::TxnPut => "txn-put",
            Workload::Watch => "watch",
            Workload::LeaseKeepalive => "lease-keepalive",
        }
    }

    fn parse(s: &str) -> Option<Workload> {
        [
            Workload::Put,
            Workload::Range,
            Workload::TxnPut,
            Workload::Watch,
            Workload::LeaseKeepalive,
        ]
        .into_iter()
        .find(|w| w.name() == s)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub workload: Workload,
    /// host:port or http://host:port; connection `i` goes to endpoint `i % len`.
    pub endpoints: Vec<String>,
    /// Requests in flight at once (one task each).
    pub clients: usize,
    /// gRPC connections (HTTP/2); client `i` uses connection `i % conns`.
    pub conns: usize,
    /// Requests to make (for `watch`: puts by the writers).
    pub total: u64,
    pub key_size: usize,
    pub val_size: usize,
    pub key_space_size: u64,
    pub sequential_keys: bool,
    /// `range` / `watch`: the key, or with `prefix` the key prefix.
    pub key: String,
    pub prefix: bool,
    /// `range`: serializable (`s`) rather than linearizable (`l`).
    pub serializable: bool,
    /// `range`: the range limit (0 = none).
    pub limit: i64,
    /// `range`: keys written before measuring (`key` itself, or `key`+n under a prefix).
    pub populate: u64,
    /// `watch`: watchers, spread over `streams` watch streams.
    pub watchers: usize,
    pub streams: usize,
    /// `watch`: concurrent putters.
    pub writers: usize,
    /// `lease-keepalive`: TTL of the granted leases.
    pub ttl_secs: i64,
    pub dial_timeout: Duration,
    pub request_timeout: Duration,
    pub json: bool,
}

impl Options {
    fn defaults(workload: Workload) -> Options {
        Options {
            workload,
            endpoints: vec!["127.0.0.1:2379".into()],
            clients: 1,
            conns: 1,
            total: 10_000,
            key_size: 8,
            val_size: 8,
            key_space_size: 1,
            sequential_keys: false,
            key: match workload {
                Workload::Watch => "watch-key".into(),
                _ => "range-key".into(),
            },
            prefix: false,
            serializable: false,
            limit: 0,
            populate: 0,
            watchers: 100,
            streams: 10,
            writers: 10,
            ttl_secs: 60,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            json: false,
        }
    }
}

pub const USAGE: &str = "\
usage: cairn-bench [flags] <workload> [flags]

workloads:
  put              Put requests (--key-size, --val-size, --key-space-size, --sequential-keys)
  range            Range requests on --key (or --prefix range) (--consistency l|s, --limit, --populate)
  txn-put          Txn requests each carrying one put (same key flags as put)
  watch            --watchers watchers over --streams streams on --key (or --prefix);
                   --writers putters make --total puts; event throughput, put-to-event latency
  lease-keepalive  each client grants a lease (--ttl) and sends keep-alives on its own stream

flags:
  --endpoints LIST       comma-separated host:port or http://host:port (default 127.0.0.1:2379)
  --clients N            concurrent requests in flight (default 1)
  --conns N              gRPC connections; clients are spread over them (default 1)
  --total N              requests (watch: puts) to make (default 10000)
  --key-size N           bytes per key (default 8)
  --val-size N           bytes per value (default 8; at least 8 for watch)
  --key-space-size N     distinct keys written (default 1)
  --sequential-keys      write keys in order rather than at random
  --key K                range/watch key or prefix (default range-key / watch-key)
  --prefix               range/watch the prefix --key
  --consistency l|s      range: linearizable (default) or serializable
  --limit N              range: at most N keys per response
  --populate N           range: write N keys (or the single key) before measuring
  --watchers N           watch: watchers (default 100)
  --streams N            watch: watch streams (default 10)
  --writers N            watch: concurrent putters (default 10)
  --ttl SECS             lease-keepalive: lease TTL (default 60)
  --dial-timeout SECS    connecting (default 5)
  --request-timeout SECS one request or one awaited event (default 30)
  --json                 print one JSON object instead of text

exit status: 0 done (even with some failed requests), 2 bad usage or no connection,
3 the server does not implement the workload's service (gRPC Unimplemented).
";

const BOOL_FLAGS: &[&str] = &["sequential-keys", "prefix", "json"];

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut workload = None;
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            if workload.is_some() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            workload =
                Some(Workload::parse(arg).ok_or_else(|| format!("unknown workload {arg:?}"))?);
            continue;
        };
        if body == "h" || body == "help" {
            return Err(USAGE.to_string());
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None if BOOL_FLAGS.contains(&body) => (body.to_string(), "true".to_string()),
            None => {
                let v = rest
                    .next()
                    .ok_or_else(|| format!("flag --{body} needs a value"))?;
                (body.to_string(), v.clone())
            }
        };
        flags.push((name, value));
    }
    let workload = workload.ok_or_else(|| "no workload given".to_string())?;
    let mut o = Options::defaults(workload);
    for (name, value) in flags {
        apply(&mut o, &name, &value)?;
    }
    check(&o)?;
    Ok(o)
}

fn num<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("invalid value {value:?} for --{name}"))
}

fn boolean(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" | "t" => Ok(true),
        "false" | "0" | "f" => Ok(false),
        _ => Err(format!("invalid value {value:?} for --{name}")),
    }
}

fn secs(name: &str, value: &str) -> Result<Duration, String> {
    let s: f64 = num(name, value)?;
    if !(s > 0.0 && s.is_finite()) {
        return Err(format!("--{name} must be positive"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn apply(o: &mut Options, name: &str, value: &str) -> Result<(), String> {
    match name {
        "endpoints" => {
            o.endpoints = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }
        "clients" => o.clients = num(name, value)?,
        "conns" => o.conns = num(name, value)?,
        "total" => o.total = num(name, value)?,
        "key-size" => o.key_size = num(name, value)?,
        "val-size" => o.val_size = num(name, value)?,
        "key-space-size" => o.key_space_size = num(name, value)?,
        "sequential-keys" => o.sequential_keys = boolean(name, value)?,
        "key" => o.key = value.to_string(),
        "prefix" => o.prefix = boolean(name, value)?,
        "consistency" => {
            o.serializable = match value {
                "l" => false,
                "s" => true,
                _ => return Err(format!("--consistency must be l or s, not {value:?}")),
            }
        }
        "limit" => o.limit = num(name, value)?,
        "populate" => o.populate = num(name, value)?,
        "watchers" => o.watchers = num(name, value)?,
        "streams" => o.streams = num(name, value)?,
        "writers" => o.writers = num(name, value)?,
        "ttl" => o.ttl_secs = num(name, value)?,
        "dial-timeout" => o.dial_timeout = secs(name, value)?,
        "request-timeout" => o.request_timeout = secs(name, value)?,
        "json" => o.json = boolean(name, value)?,
        _ => return Err(format!("unknown flag --{name}")),
    }
    Ok(())
}

fn check(o: &Options) -> Result<(), String> {
    let positive = [
        ("clients", o.clients),
        ("conns", o.conns),
        ("key-size", o.key_size),
        ("watchers", o.watchers),
        ("streams", o.streams),
        ("writers", o.writers),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(format!("--{name} must be at least 1"));
    }
    if o.endpoints.is_empty() {
        return Err("--endpoints is empty".into());
    }
    if o.key_space_size == 0 {
        return Err("--key-space-size must be at least 1".into());
    }
    if o.key.is_empty() {
        return Err("--key must not be empty".into());
    }
    if o.workload == Workload::Watch && o.val_size < 8 {
        return Err("watch needs --val-size of at least 8 (the value carries the put time)".into());
    }
    if o.ttl_secs <= 0 {
        return Err("--ttl must be positive".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_flags_before_and_after_the_workload_in_both_forms() {
        let o = parse(&args(
            "--endpoints=a:1,http://b:2 --clients 64 put --conns=8 --total 500 --sequential-keys --key-space-size=1000",
        ))
        .expect("valid");
        assert_eq!(o.workload, Workload::Put);
        assert_eq!(o.endpoints, vec!["a:1".to_string(), "http://b:2".into()]);
        assert_eq!((o.clients, o.conns, o.total), (64, 8, 500));
        assert!(o.sequential_keys);
        assert_eq!(o.key_space_size, 1000);
        assert!(!o.json);
    }

    #[test]
    fn parses_range_consistency_and_boolean_false() {
        let o = parse(&args(
            "range --consistency s --prefix --json=false --key k/",
        ))
        .expect("ok");
        assert!(o.serializable && o.prefix && !o.json);
        assert_eq!(o.key, "k/");
        let o = parse(&args("range --consistency=l")).expect("ok");
        assert!(!o.serializable);
    }

    #[test]
    fn rejects_unknown_workloads_flags_and_bad_values() {
        assert!(parse(&args("get"))
            .unwrap_err()
            .contains("unknown workload"));
        assert!(parse(&args("put --nope 1"))
            .unwrap_err()
            .contains("unknown flag"));
        assert!(parse(&args("put --clients x"))
            .unwrap_err()
            .contains("invalid value"));
        assert!(parse(&args("put --clients 0"))
            .unwrap_err()
            .contains("at least 1"));
        assert!(parse(&args("range --consistency q")).is_err());
        assert!(parse(&args("put --total"))
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&args("--clients 2"))
            .unwrap_err()
            .contains("no workload"));
        assert!(parse(&args("watch --val-size 4")).is_err());
        assert!(parse(&args("put range"))
            .unwrap_err()
            .contains("unexpected"));
    }
}
