//! Generates the etcd v3 wire types and cairn's peer protocol with a vendored
//! protoc, so no system `protoc` is needed. madsim-tonic-build writes both the
//! real and the simulated service code; `tonic::include_proto!` picks one.
//!
//! etcd's packages also get serde implementations of protobuf's JSON
//! mapping (pbjson-build, from the descriptor set protoc writes), included
//! beside the prost types in `src/lib.rs`.
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
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out_dir.join("descriptors.bin");
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&protos, &["proto"])?;
    // protobuf's JSON mapping of etcd's packages, as etcd's JSON gateway
    // writes it (src/api/gateway): original (snake_case) field names on
    // output, both those and lowerCamelCase accepted on input, unknown
    // fields ignored, 64-bit integers as strings, bytes in base64, enums by
    // name, zero values left out.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
