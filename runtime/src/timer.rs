//! Timeouts that a backward step of the OS's monotonic clock cannot fire
//! early.
//!
//! tokio's timer wheel never runs backwards. When the process's monotonic
//! clock steps back by J seconds (libfaketime under the jepsen `clock`
//! nemesis moves `CLOCK_MONOTONIC` too; a real monotonic clock never steps
//! back), the wheel stays at the latest time it saw, and a timer set for
//! `Instant::now() + d` with `d < J` lies in the wheel's past and fires at
//! once, until the clock has caught up J seconds later. For a periodic
//! sleep (Raft's tick, acknowledgement pacing, progress notifications) that
//! means running fast for a while, which keeps the member live; for a
//! timeout it means giving up before the work has started: every proposal
//! failed with "request timed out" and every peer call timed out at once.
//!
//! `timeout` takes its deadline from the latest reading of tokio's clock
//! made through `now` in this process (`TokioClock::now` reads through it
//! too), so after a backward step a timeout stands still, as
//! `TokioClock::now` does, and expires `d` after the clock has caught up:
//! late, never early. Server and runtime code sets its timeouts (and the
//! deadlines it computes for them) through here, its periodic sleeps through
//! `tokio::time`. Timers inside tonic and h2 (the deadline a client sends in
//! `grpc-timeout`, connect timeouts) are beyond reach and still fire at once
//! in that window.
//!
//! Under madsim (virtual time, which never steps back) and in this crate's
//! unit tests (paused tokio clocks, whose readings would raise the
//! process-wide latest reading for every other test in the binary) `now` is
//! tokio's own.

use std::future::IntoFuture;
use std::time::Duration;
use tokio::time::Instant;

pub use tokio::time::error::Elapsed;

/// tokio's clock, never below its latest reading through this module.
pub fn now() -> Instant {
    steady::now()
}

/// `f`, or `Elapsed` if it has not finished `d` after `now()`.
pub async fn timeout<F: IntoFuture>(d: Duration, f: F) -> Result<F::Output, Elapsed> {
    #[cfg(not(madsim))]
    let out = tokio::time::timeout_at(now() + d, f).await;
    #[cfg(madsim)]
    let out = tokio::time::timeout(d, f.into_future()).await;
    out
}

#[cfg(not(any(madsim, test)))]
mod steady {
    use std::sync::atomic::AtomicU64;
    use std::sync::OnceLock;
    use tokio::time::Instant;

    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    /// Nanoseconds since `ORIGIN` of the latest reading.
    static LATEST: AtomicU64 = AtomicU64::new(0);

    pub(super) fn now() -> Instant {
        let origin = *ORIGIN.get_or_init(Instant::now);
        let reading = Instant::now().saturating_duration_since(origin);
        origin + crate::clock::never_backwards(&LATEST, reading)
    }
}

#[cfg(any(madsim, test))]
mod steady {
    pub(super) fn now() -> tokio::time::Instant {
        tokio::time::Instant::now()
    }
}
