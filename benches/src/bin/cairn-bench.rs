//! `cairn-bench`: load generator for any etcd v3 endpoint (etcd or cairn).
//! See `cairn_benches::options::USAGE` (`cairn-bench --help`) and
//! `docs/benchmarks.md`.

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    use cairn_benches::{load, options};
    use std::process::ExitCode;

    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match options::parse(&args) {
        Ok(o) => o,
        Err(msg) if msg == options::USAGE => {
            print!("{msg}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("cairn-bench: {msg}\n\n{}", options::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(load::run(&opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cairn-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match opts.json {
        true => println!("{}", report.to_json()),
        false => print!("{}", report.to_text()),
    }
    match report.unimplemented {
        Some(_) => ExitCode::from(3),
        None => ExitCode::SUCCESS,
    }
}

/// The simulation world has no sockets to benchmark; the binary only has to build.
#[cfg(madsim)]
fn main() {}
