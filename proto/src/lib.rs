//! Wire types for cairn.
//!
//! etcd v3.5 wire-compatible packages (same protobuf package, message, field
//! names and numbers as etcd, so etcd clients talk to cairn unchanged):
//!
//! - `mvccpb`: `KeyValue` and watch `Event`.
//! - `authpb`: stored auth records (`User`, `Role`, `Permission`).
//! - `etcdserverpb`: the v3 client API — services `KV`, `Watch`, `Lease`,
//!   `Cluster`, `Maintenance`, `Auth` and all their messages.
//! - `v3lockpb`: the `Lock` service.
//! - `v3electionpb`: the `Election` service.
//!
//! cairn's own protocol:
//!
//! - `raftpb`: cairn's Raft peer protocol (entries, hard state, messages,
//!   and the `RaftPeer` service with a streaming snapshot transfer).
//!
//! etcd's packages implement serde's `Serialize` / `Deserialize` as
//! protobuf's JSON mapping (the JSON gateway's, `src/api/gateway`).
//!
//! Generated at build time (see `build.rs`); under `--cfg madsim` the service
//! code is madsim-tonic's simulated version. The modules are siblings at the
//! crate root because prost refers across packages as `super::<package>`.

#[allow(clippy::all, missing_docs)]
pub mod raftpb {
    tonic::include_proto!("raftpb");
}

#[allow(clippy::all, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// cairn's internal records (Raft entry payloads, member records, state
/// snapshots). Not part of any client-visible API.
#[allow(clippy::all, missing_docs)]
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}
