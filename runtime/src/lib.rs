//! cairn-runtime: the three seams between cairn's sans-IO core and the world
//! (DESIGN §2), and their implementations for the two worlds.
//!
//! - `Clock`: `TokioClock` (real time, or madsim's virtual time under
//!   `--cfg madsim`) and `SkewedClock` (per-node offset and drift for simulation).
//! - `Storage`: `RocksStorage` (production, not under madsim) and `SimStorage`
//!   (in memory, pending vs durable state, fault hooks; works in both worlds).
//! - `Transport`: `GrpcTransport`, the Raft peer service over tonic (madsim-tonic
//!   in simulation).
//! - `tls`: rustls TLS for the client and peer ports (tokio world only; the
//!   simulated network carries none), `client_cert_common_name` for handlers.
//!
//! `cfg(madsim)` is confined to this crate, `sim-tests/` and dependency renames.

pub mod client_port;
pub mod clock;
#[cfg(not(madsim))]
pub mod h2_authority;
pub mod large_reply;
pub mod metrics;
#[cfg(not(madsim))]
pub mod rocks_storage;
pub mod sim_storage;
pub mod storage;
pub mod timer;
pub mod tls;
pub mod transport;
#[cfg(not(madsim))]
pub mod write_batch;

pub use clock::{Clock, MonoTime, Skew, SkewedClock, TokioClock};
#[cfg(not(madsim))]
pub use rocks_storage::RocksStorage;
pub use sim_storage::{RecoveryReport, SimDisk, SimStorage, WriteCheck};
pub use storage::{
    BatchOp, Direction, KvPair, ScanIter, Storage, StorageError, StorageSnapshot, SyncFuture,
    WriteBatch,
};
pub use tls::client_cert_common_name;

/// A Raft member's id. Zero is never a valid id (Raft uses it for "none").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Runs CPU-bound `f` off the async workers: a blocking thread of tokio's
/// pool in production; under madsim, inline on the simulated executor
/// (deterministic; madsim has no blocking threads). An `Err` only if `f`
/// panicked.
pub async fn run_blocking<F, R>(f: F) -> Result<R, String>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| e.to_string())
    }
    #[cfg(madsim)]
    {
        tokio::task::yield_now().await;
        Ok(f())
    }
}
