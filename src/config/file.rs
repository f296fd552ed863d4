//! The YAML `--config-file`, with etcd's keys (the flag names: `name`,
//! `data-dir`, `initial-cluster`, `heartbeat-interval`, …).
//!
//! Like etcd 3.5 (which reads the file leniently into its config struct):
//! unknown keys are ignored — so a copy of etcd's `etcd.conf.yml.sample`, with
//! its `wal-dir`, `*-transport-security` and proxy keys, loads — but cairn
//! names them in [`super::Config::warnings`]; a key with an empty value
//! (`data-dir:`) keeps the default; an empty file is all defaults. Numbers
//! must be YAML integers and booleans YAML booleans; text settings also take
//! an integer (`auto-compaction-retention: 1`), a harmless leniency.
//!
//! TLS settings sit in etcd's two maps, `client-transport-security:` and
//! `peer-transport-security:`, each with `cert-file`, `key-file`,
//! `client-cert-auth`, `trusted-ca-file` and `auto-tls` (the peer map's
//! keys set the `--peer-*` flags); other keys of those maps are listed as
//! unknown (`client-transport-security.crl-file`). `cipher-suites` is a YAML
//! list (or one comma-separated string).
//!
//! Values come back as text and go through the same parsing as flags.
//! Tests: `super::tests` (`config_file_*`).

use serde_yaml::Value;

use super::error::ConfigError;
use super::spec::{self, FlagSpec, Kind};

/// What the file set, and the keys it had that cairn does not use.
#[derive(Debug, Default)]
pub(crate) struct FileSettings {
    pub set: Vec<(&'static FlagSpec, String)>,
    pub unknown_keys: Vec<String>,
}

/// Reads and parses the file at `path`.
pub(crate) fn load(path: &str) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ConfigFileRead {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    parse(path, &text)
}

/// Parses `text`, the contents of the file at `path` (named in errors).
pub(crate) fn parse(path: &str, text: &str) -> Result<FileSettings, ConfigError> {
    let parse_error = |reason: String| ConfigError::ConfigFileParse {
        path: path.to_string(),
        reason: one_line(&reason),
    };
    let document: Value = serde_yaml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
    let mapping = match document {
        Value::Null => return Ok(FileSettings::default()),
        Value::Mapping(mapping) => mapping,
        _ => {
            return Err(parse_error(
                "expected a mapping of etcd configuration keys".into(),
            ))
        }
    };
    let mut settings = FileSettings::default();
    for (key, value) in mapping {
        let key = match key {
            Value::String(key) => key,
            other => return Err(parse_error(format!("keys must be text, got {other:?}"))),
        };
        if key == "client-transport-security" || key == "peer-transport-security" {
            transport_security(&key, &value, path, &mut settings)?;
            continue;
        }
        match spec::lookup(&key).filter(|f| f.in_file) {
            Some(flag) => {
                if let Some(text) = value_text(flag, &value, path)? {
                    settings.set.push((flag, text));
                }
            }
            None => settings.unknown_keys.push(key),
        }
    }
    settings.unknown_keys.sort();
    Ok(settings)
}

/// One of etcd's `*-transport-security` maps (`map` is its key).
fn transport_security(
    map: &str,
    value: &Value,
    path: &str,
    settings: &mut FileSettings,
) -> Result<(), ConfigError> {
    let entries = match value {
        Value::Null => return Ok(()),
        Value::Mapping(entries) => entries,
        other => {
            return Err(ConfigError::InvalidValue {
                value: yaml_inline(other),
                origin: format!("{map} in {path}"),
                reason: "expected a mapping (cert-file, key-file, client-cert-auth, \
                         trusted-ca-file, auto-tls)"
                    .to_string(),
            })
        }
    };
    for (key, value) in entries {
        let key = match key {
            Value::String(key) => key,
            other => {
                return Err(ConfigError::ConfigFileParse {
                    path: path.to_string(),
                    reason: format!("keys of {map} must be text, got {}", yaml_inline(other)),
                })
            }
        };
        match spec::transport_security_key(map, key) {
            Some(flag) => {
                if let Some(text) = value_text(flag, value, path)? {
                    settings.set.push((flag, text));
                }
            }
            None => settings.unknown_keys.push(format!("{map}.{key}")),
        }
    }
    Ok(())
}

/// The value as text for `flag`'s parser; `None` for an empty value.
fn value_text(flag: &FlagSpec, value: &Value, path: &str) -> Result<Option<String>, ConfigError> {
    let text = match (flag.kind, value) {
        (_, Value::Null) => return Ok(None),
        // etcd's file has `cipher-suites` and `log-outputs` as lists.
        (Kind::Text, Value::Sequence(items))
            if flag.name == "cipher-suites" || flag.name == "log-outputs" =>
        {
            let names = items
                .iter()
                .map(|item| match item {
                    Value::String(name) => Ok(name.clone()),
                    other => Err(ConfigError::InvalidValue {
                        value: yaml_inline(other),
                        origin: format!("{} in {path}", flag.name),
                        reason: format!("expected a list of names for {}", flag.name),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if names.is_empty() {
                return Ok(None);
            }
            names.join(",")
        }
        (Kind::Text, Value::String(s)) => s.clone(),
        (Kind::Text | Kind::Number, Value::Number(n)) if n.as_u64().is_some() => n.to_string(),
        (Kind::Bool, Value::Bool(b)) => b.to_string(),
        (kind, other) => {
            return Err(ConfigError::InvalidValue {
                value: yaml_inline(other),
                origin: format!("{} in {path}", flag.name),
                reason: expected(kind).to_string(),
            })
        }
    };
    Ok(Some(text))
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "expected text",
        Kind::Number => "expected a non-negative integer",
        Kind::Bool => "expected true or false",
    }
}

/// A YAML value written on one line, for error messages.
fn yaml_inline(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => one_line(serde_yaml::to_string(other).unwrap_or_default().trim()),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
