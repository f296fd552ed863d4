//! Generates the etcd v3 wire types and cairn's peer protocol with a vendored
//! protoc, so no system `protoc` is needed. madsim-tonic-build writes both the
//! real and the simulated service code; `tonic::include_proto!` picks one.
//!
//! Include root is `proto/`: etcd's files live under `proto/etcd/<package>/`
//! and import each other as `etcd/<package>/<file>.proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let protos = [
        "proto/raftpb/raft.proto",
        "proto/etcd/mvccpb/kv.proto",
        "proto/etcd/authpb/auth.proto",
        "proto/etcd/etcdserverpb/rpc.proto",
        "proto/etcd/v3lockpb/v3lock.proto",
        "proto/etcd/v3electionpb/v3election.proto",
        "proto/cairnpb/internal.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
