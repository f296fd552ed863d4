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
}

#[allow(clippy::all, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

#[allow(clippy::all, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

#[allow(clippy::all, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

#[allow(clippy::all, missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// cairn's internal records (Raft entry payloads, member records, state
/// snapshots). Not part of any client-visible API.
#[allow(clippy::all, missing_docs)]
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}
