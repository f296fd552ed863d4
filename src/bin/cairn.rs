//! The cairn server binary. The node loop and the etcd API arrive with the
//! server issue; until then this binary says so and exits with an error rather
//! than pretending to serve.

fn main() -> std::process::ExitCode {
    eprintln!(
        "cairn {}: the server is not available yet in this build — this release ships the \
         workspace, wire protocol, runtime seams and the Raft/MVCC cores; see README.md (Status).",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::from(2)
}
