//! The cairn server: a member of a cairn cluster, started like etcd.
//!
//! `cargo run --release --bin cairn` starts a single member named `default`
//! serving clients on 127.0.0.1:2379 with its data in `default.cairn`.
//! Flags, `CAIRN_*` variables and `--config-file` are etcd's (see
//! `cairn::config`). Bad configuration prints one line and exits 1.
//! SIGTERM / SIGINT stop the member gracefully (`process::run_until`): a
//! leader hands leadership over first; exit status 0.

use std::process::ExitCode;
use std::sync::Arc;

use cairn::config::{Config, ConfigError};
use cairn::process::{Ended, ProcessOptions};
use cairn_runtime::client_port;
use cairn_runtime::TokioClock;

/// mimalloc rather than glibc malloc: less CPU per request (many small,
/// short-lived buffers per gRPC call) — see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::from_env_and_args() {
        Ok(c) => c,
        Err(e) => return report_config_error(&e),
    };
    init_logging(&config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config)) {
        // A removal or a signal ends a member without an error (as etcd, status 0).
        Ok(Ended::Removed) => {
            eprintln!("cairn: {}", cairn_runtime::transport::MEMBER_REMOVED);
            ExitCode::SUCCESS
        }
        Ok(Ended::Stopped) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(1)
        }
    }
}

fn report_config_error(e: &ConfigError) -> ExitCode {
    if e.is_informational() {
        println!("{e}");
    } else {
        eprintln!("{e}");
    }
    ExitCode::from(e.exit_code() as u8)
}

fn init_logging(config: &Config) {
    let level = config.log_level.tracing_level();
    let outputs = match cairn::logging::Outputs::open(&config.log_outputs) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cairn: {e}");
            std::process::exit(1);
        }
    };
    let colours = cairn::logging::Outputs::all_terminals(&config.log_outputs);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(move || outputs.clone());
    let _ = match config.log_format {
        // JSON lines with etcd's fields (cairn::logging).
        cairn::config::LogFormat::Json => builder.event_format(cairn::logging::EtcdJson).try_init(),
        // Colours only for a terminal: a log file or a pipe gets plain text.
        cairn::config::LogFormat::Text => builder.with_target(false).with_ansi(colours).try_init(),
    };
}

/// Resolves at the first SIGTERM or SIGINT.
async fn termination_signal() {
    match client_port::termination_signal().await {
        Ok(which) => tracing::info!("received {which}; stopping gracefully"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install signal handlers; SIGTERM will kill without a hand-off");
            std::future::pending::<()>().await
        }
    }
}

async fn run(config: Config) -> Result<Ended, String> {
    let storage = client_port::open_storage(
        &config.data_dir,
        &cairn::server::apply::all_column_families(),
    )
    .map_err(|e| format!("cannot open data dir {}: {e}", config.data_dir.display()))?;
    // Election jitter only: mixing in the process id keeps restarted members
    // from repeating their previous timeouts.
    let rng_seed = config.member_id().0 ^ u64::from(std::process::id());
    let options = ProcessOptions {
        rng_seed,
        probe: None,
    };
    cairn::process::run_until(
        &config,
        storage,
        Arc::new(TokioClock::new()),
        options,
        termination_signal(),
    )
    .await
}
