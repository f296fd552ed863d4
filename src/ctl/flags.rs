//! The command line as etcdctl 3.4 (cobra + pflag) reads it: global flags
//! anywhere, each command's own flags, `--name=value`, `--name value`,
//! `-w json`, `-wjson`, boolean switches (`--prefix`, `--prefix=false`),
//! `--` ending the flags, and the `ETCDCTL_*` variables for every global flag
//! not given on the line.

use std::collections::HashMap;
use std::time::Duration;

use super::{Failure, EXIT_ERROR};

/// Whether a flag takes a value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Switch,
    Value,
}

/// One flag: its long name, its one-letter form, whether it takes a value.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub short: Option<char>,
    pub kind: Kind,
}

pub const fn switch(name: &'static str) -> Spec {
    Spec {
        name,
        short: None,
        kind: Kind::Switch,
    }
}

pub const fn value(name: &'static str) -> Spec {
    Spec {
        name,
        short: None,
        kind: Kind::Value,
    }
}

pub const fn short(mut s: Spec, c: char) -> Spec {
    s.short = Some(c);
    s
}

/// etcdctl's global (persistent) flags.
pub const GLOBAL: &[Spec] = &[
    value("endpoints"),
    switch("debug"),
    short(value("write-out"), 'w'),
    switch("hex"),
    value("dial-timeout"),
    value("command-timeout"),
    value("keepalive-time"),
    value("keepalive-timeout"),
    switch("insecure-transport"),
    switch("insecure-discovery"),
    switch("insecure-skip-tls-verify"),
    value("cert"),
    value("key"),
    value("cacert"),
    value("user"),
    value("password"),
    short(value("discovery-srv"), 'd'),
    value("discovery-srv-name"),
];

/// The flags given: each name with the values given to it, in order.
#[derive(Default, Debug)]
pub struct Flags {
    pub words: Vec<String>,
    given: HashMap<&'static str, Vec<String>>,
    /// The global flags' defaults and `ETCDCTL_*` values.
    defaults: HashMap<&'static str, String>,
}

fn find<'a>(specs: &'a [&'a [Spec]], name: &str) -> Option<&'a Spec> {
    specs.iter().flat_map(|s| s.iter()).find(|s| s.name == name)
}

fn find_short<'a>(specs: &'a [&'a [Spec]], c: char) -> Option<&'a Spec> {
    specs
        .iter()
        .flat_map(|s| s.iter())
        .find(|s| s.short == Some(c))
}

/// The positional words of `args`, reading flags by `specs` (unknown flags
/// are taken as switches): enough to find which command it is.
pub fn words_only(args: &[String], specs: &[&[Spec]]) -> Vec<String> {
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            words.extend(it.cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            if !long.contains('=') && find(specs, long).is_some_and(|s| s.kind == Kind::Value) {
                it.next();
            }
        } else if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut chars = shorts.chars();
            while let Some(c) = chars.next() {
                if find_short(specs, c).is_some_and(|s| s.kind == Kind::Value) {
                    if chars.as_str().is_empty() {
                        it.next();
                    }
                    break;
                }
            }
        } else {
            words.push(a.clone());
        }
    }
    words
}

/// Reads `args` by `specs` (the global flags and the command's).
pub fn parse(args: &[String], specs: &[&[Spec]]) -> Result<Flags, Failure> {
    let mut flags = Flags::default();
    let mut it = args.iter();
    let set = |flags: &mut Flags, spec: &Spec, v: String| {
        flags.given.entry(spec.name).or_default().push(v);
    };
    while let Some(a) = it.next() {
        if a == "--" {
            flags.words.extend(it.cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let spec = find(specs, name)
                .ok_or_else(|| Failure(EXIT_ERROR, format!("unknown flag: --{name}")))?;
            let v = match (spec.kind, inline) {
                (_, Some(v)) => v,
                (Kind::Switch, None) => "true".to_owned(),
                (Kind::Value, None) => it.next().cloned().ok_or_else(|| {
                    Failure(EXIT_ERROR, format!("flag needs an argument: --{name}"))
                })?,
            };
            set(&mut flags, spec, v);
        } else if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut chars = shorts.chars();
            while let Some(c) = chars.next() {
                let spec = find_short(specs, c).ok_or_else(|| {
                    Failure(
                        EXIT_ERROR,
                        format!("unknown shorthand flag: '{c}' in -{shorts}"),
                    )
                })?;
                let rest = chars.as_str();
                if spec.kind == Kind::Switch {
                    if let Some(v) = rest.strip_prefix('=') {
                        set(&mut flags, spec, v.to_owned());
                        break;
                    }
                    set(&mut flags, spec, "true".to_owned());
                    continue;
                }
                let v = if let Some(v) = rest.strip_prefix('=') {
                    v.to_owned()
                } else if !rest.is_empty() {
                    rest.to_owned()
                } else {
                    it.next().cloned().ok_or_else(|| {
                        Failure(EXIT_ERROR, format!("flag needs an argument: '{c}' in -{c}"))
                    })?
                };
                set(&mut flags, spec, v);
                break;
            }
        } else {
            flags.words.push(a.clone());
        }
    }
    flags.check_types(specs)?;
    // Global flags not on the line: ETCDCTL_<NAME>, then the default.
    for spec in GLOBAL {
        let var = format!(
            "ETCDCTL_{}",
            spec.name.to_ascii_uppercase().replace('-', "_")
        );
        if let Ok(v) = std::env::var(&var) {
            if !v.is_empty() && !flags.given.contains_key(spec.name) {
                flags.defaults.insert(spec.name, v);
            }
        }
    }
    Ok(flags)
}

/// Go's `time.ParseDuration`.
pub fn go_duration(s: &str) -> Option<Duration> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[u..];
        total += num * unit;
    }
    if neg || !total.is_finite() {
        // etcdctl takes a negative timeout as "no time at all".
        return Some(Duration::ZERO);
    }
    Some(Duration::from_secs_f64(total))
}

/// Flags whose values are integers, and durations (pflag checks them as
/// it reads them).
const INTS: &[&str] = &["limit", "rev", "ttl"];
const DURATIONS: &[&str] = &[
    "dial-timeout",
    "command-timeout",
    "keepalive-time",
    "keepalive-timeout",
];

impl Flags {
    /// Every value given is one of its flag's type.
    fn check_types(&self, specs: &[&[Spec]]) -> Result<(), Failure> {
        for (name, values) in &self.given {
            for v in values {
                let one = Flags {
                    given: HashMap::from([(*name, vec![v.clone()])]),
                    ..Flags::default()
                };
                if find(specs, name).is_some_and(|s| s.kind == Kind::Switch) {
                    one.bool(name)?;
                } else if INTS.contains(name) {
                    one.int_or(name, 0)?;
                } else if DURATIONS.contains(name) {
                    one.duration_or(name, Duration::ZERO)?;
                }
            }
        }
        Ok(())
    }

    /// The last value given to `name` (or its `ETCDCTL_*` value).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.given
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
            .or_else(|| self.defaults.get(name).map(String::as_str))
    }

    /// Whether `name` was given on the line.
    pub fn changed(&self, name: &str) -> bool {
        self.given.contains_key(name)
    }

    pub fn str_or(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, Failure> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| {
                Failure(
                    EXIT_ERROR,
                    format!(
                        "invalid argument {v:?} for \"--{name}\" flag: strconv.ParseBool: parsing {v:?}: invalid syntax"
                    ),
                )
            }),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, Failure> {
        self.bool_or(name, false)
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, Failure> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Failure(
                    EXIT_ERROR,
                    format!(
                        "invalid argument {v:?} for \"--{name}\" flag: strconv.ParseInt: parsing {v:?}: {}",
                        if v.trim_start_matches(['-', '+']).chars().all(|c| c.is_ascii_digit())
                            && !v.trim_start_matches(['-', '+']).is_empty()
                        {
                            "value out of range"
                        } else {
                            "invalid syntax"
                        }
                    ),
                )
            }),
        }
    }

    pub fn duration_or(&self, name: &str, default: Duration) -> Result<Duration, Failure> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => go_duration(v).ok_or_else(|| {
                Failure(
                    EXIT_ERROR,
                    format!(
                        "invalid argument {v:?} for \"--{name}\" flag: time: invalid duration {}",
                        super::output::go_quote(v)
                    ),
                )
            }),
        }
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    const GET: &[Spec] = &[
        switch("prefix"),
        value("rev"),
        short(switch("interactive"), 'i'),
    ];

    #[test]
    fn flags_are_read_as_pflag_reads_them() {
        let f = match parse(
            &args(&[
                "get", "-wjson", "--prefix", "a", "--rev", "3", "-i", "--", "--x",
            ]),
            &[GLOBAL, GET],
        ) {
            Ok(f) => f,
            Err(Failure(c, m)) => panic!("{c} {m}"),
        };
        assert_eq!(f.words, args(&["get", "a", "--x"]));
        assert_eq!(f.get("write-out"), Some("json"));
        assert!(matches!(f.bool("prefix"), Ok(true)));
        assert!(matches!(f.bool("interactive"), Ok(true)));
        assert!(matches!(f.int_or("rev", 0), Ok(3)));
        assert!(parse(&args(&["get", "--nope"]), &[GLOBAL, GET]).is_err());
        assert!(parse(&args(&["get", "--rev"]), &[GLOBAL, GET]).is_err());
        assert_eq!(
            words_only(
                &args(&["-w", "json", "lease", "--rev", "1", "grant"]),
                &[GLOBAL, GET]
            ),
            args(&["lease", "grant"])
        );
    }

    #[test]
    fn durations_are_gos() {
        assert_eq!(go_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        assert_eq!(go_duration("5"), None);
        assert_eq!(go_duration("x"), None);
    }
}
