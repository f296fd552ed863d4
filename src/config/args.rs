//! Command-line scanning with the rules of Go's `flag` package, which etcd uses.
//!
//! - `-name` and `--name` are the same flag; the value follows as `=value` or
//!   as the next argument — always the next argument, even if it starts with
//!   `-`, exactly as Go does.
//! - Boolean flags take no separate argument: `--flag` is true, `--flag=false`
//!   sets false (`--flag false` leaves `false` as a stray argument, an error).
//! - `--` ends the flags; any argument that is not a flag is an error, as etcd
//!   takes no positional arguments.
//! - A repeated flag keeps its last value.
//! - `-h`, `-help`, `--help` stop scanning with the help text, `--version`
//!   with the version text (after the whole line has scanned cleanly).
//!
//! Values other than booleans are only collected here; `build.rs` parses and
//! validates them, so a value from a flag, a variable or the file gets the
//! same checks. Tests: `super::tests` (`flag_forms_*`, `unknown_flag_*`, …).

use super::error::ConfigError;
use super::spec::{self, FlagSpec, Kind};
use super::values::parse_bool;

/// What the command line set, in order; later entries win.
#[derive(Debug, Default)]
pub(crate) struct CommandLine {
    pub set: Vec<(&'static FlagSpec, String)>,
    pub version: bool,
}

/// Scans `args` (without the program name).
pub(crate) fn scan(args: Vec<String>) -> Result<CommandLine, ConfigError> {
    let mut line = CommandLine::default();
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            return match rest.next() {
                Some(stray) => Err(ConfigError::NotAFlag(stray)),
                None => Ok(line),
            };
        }
        let Some((dashes, body)) = split_dashes(&arg) else {
            return Err(ConfigError::NotAFlag(arg));
        };
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(ConfigError::BadFlagSyntax(arg));
        }
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        let typed = format!("{dashes}{name}");
        one_flag(&mut line, name, &typed, inline, &mut rest)?;
    }
    Ok(line)
}

/// Handles one flag whose value, if not inline, is the next of `rest`.
fn one_flag(
    line: &mut CommandLine,
    name: &str,
    typed: &str,
    inline: Option<String>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<(), ConfigError> {
    if name == "h" || name == "help" {
        return Err(ConfigError::Help(spec::help_text()));
    }
    if name == "version" {
        line.version = bool_value(typed, inline)?;
        return Ok(());
    }
    let flag = spec::lookup(name).ok_or_else(|| ConfigError::UnknownFlag(typed.to_string()))?;
    let value = match (flag.kind, inline) {
        (Kind::Bool, inline) => bool_value(typed, inline)?.to_string(),
        (_, Some(value)) => value,
        (_, None) => rest
            .next()
            .ok_or_else(|| ConfigError::MissingValue(typed.to_string()))?,
    };
    line.set.push((flag, value));
    Ok(())
}

/// A boolean flag's value: true when bare, else Go's `strconv.ParseBool`.
fn bool_value(typed: &str, inline: Option<String>) -> Result<bool, ConfigError> {
    let Some(text) = inline else { return Ok(true) };
    parse_bool(&text).map_err(|reason| ConfigError::InvalidValue {
        value: text.clone(),
        origin: format!("flag {typed}"),
        reason,
    })
}

/// `("--", "name=v")` for `--name=v`, `("-", "name")` for `-name`; `None` for
/// arguments that are not flags (`x`, `-`).
fn split_dashes(arg: &str) -> Option<(&'static str, &str)> {
    if arg.len() < 2 || !arg.starts_with('-') {
        return None;
    }
    match arg.strip_prefix("--") {
        Some(body) => Some(("--", body)),
        None => Some(("-", &arg[1..])),
    }
}
