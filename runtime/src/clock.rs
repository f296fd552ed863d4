//! The Clock seam: monotonic time and sleeping.
//!
//! `TokioClock` reads `tokio::time`, which under `--cfg madsim` is madsim's
//! virtual time. `SkewedClock` adds a per-node offset and drift on top, which
//! the simulation's fault scheduler changes at run time (madsim has one global
//! clock and no skew; leases must be tested against skew).
//!
//! Invariant: `now()` never goes backwards for one clock, whatever the skew
//! changes (a negative jump is clamped to the last reading, as a monotonic
//! OS clock would be).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A point on a node's monotonic clock, as time elapsed since the clock's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(pub Duration);

impl MonoTime {
    pub fn saturating_duration_since(self, earlier: MonoTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for MonoTime {
    type Output = MonoTime;
    fn add(self, d: Duration) -> MonoTime {
        MonoTime(self.0 + d)
    }
}

pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The Clock seam.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic now.
    fn now(&self) -> MonoTime;
    /// Sleeps for `d` as measured by this clock.
    fn sleep(&self, d: Duration) -> SleepFuture;
    /// Wall-clock time since the Unix epoch, for what must name a calendar
    /// time (a JWT's expiry). madsim's virtual time under `--cfg madsim`.
    fn unix_now(&self) -> Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// Real time in production; madsim's virtual time under `--cfg madsim`.
/// Clones share the last reading, which keeps `now()` from going backwards
/// even where the OS's monotonic clock is made to (libfaketime in the jepsen
/// suite): a backward jump reads as time standing still until the clock
/// catches up, as `SkewedClock` does in simulation.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    /// The latest reading returned, in nanoseconds since `origin`.
    last: Arc<std::sync::atomic::AtomicU64>,
}

impl TokioClock {
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            last: Arc::default(),
        }
    }
}

/// A reading kept from going below the latest one returned (`last`,
/// nanoseconds), which it raises.
pub(crate) fn never_backwards(last: &std::sync::atomic::AtomicU64, reading: Duration) -> Duration {
    let nanos = u64::try_from(reading.as_nanos()).unwrap_or(u64::MAX);
    let before = last.fetch_max(nanos, std::sync::atomic::Ordering::SeqCst);
    Duration::from_nanos(before.max(nanos))
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> MonoTime {
        let reading = crate::timer::now().saturating_duration_since(self.origin);
        MonoTime(never_backwards(&self.last, reading))
    }

    fn sleep(&self, d: Duration) -> SleepFuture {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Offset and drift of a `SkewedClock`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Skew {
    /// Added to every reading (may be negative, in nanoseconds).
    pub offset_nanos: i64,
    /// Rate error in parts per million: +1000 runs 0.1 % fast.
    pub drift_ppm: i64,
}

#[derive(Debug)]
struct SkewState {
    skew: Skew,
    /// Base reading when the current skew was set, and the base clock time then;
    /// readings after that advance at the drifted rate from this anchor.
    anchor_base: Duration,
    anchor_skewed: Duration,
    /// Last value returned, to keep the clock monotonic.
    last: Duration,
}

/// A clock running at an offset and a drift from the base clock. Clone the
/// handle to let a fault scheduler change the skew of a running node.
#[derive(Debug, Clone)]
pub struct SkewedClock {
    base: TokioClock,
    state: Arc<Mutex<SkewState>>,
}

impl SkewedClock {
    pub fn new(base: TokioClock) -> Self {
        let now = base.now().0;
        let state = SkewState {
            skew: Skew {
                offset_nanos: 0,
                drift_ppm: 0,
            },
            anchor_base: now,
            anchor_skewed: now,
            last: now,
        };
        Self {
            base,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Changes offset and drift from now on. An offset change is a jump of the
    /// clock by the difference; a backward jump is absorbed by monotonicity.
    pub fn set_skew(&self, skew: Skew) {
        let base_now = self.base.now().0;
        let mut st = self.state.lock().expect("clock lock poisoned");
        let current = skewed_reading(&st, base_now);
        let jump = skew.offset_nanos - st.skew.offset_nanos;
        st.anchor_skewed = apply_offset(current, jump);
        st.anchor_base = base_now;
        st.skew = skew;
    }

    pub fn skew(&self) -> Skew {
        self.state.lock().expect("clock lock poisoned").skew
    }

    /// Converts a duration on this clock to the base clock's duration.
    fn to_base(&self, d: Duration) -> Duration {
        let drift = self.skew().drift_ppm;
        let nanos = d.as_nanos() as i128 * 1_000_000 / (1_000_000 + drift as i128).max(1);
        Duration::from_nanos(nanos.clamp(0, u64::MAX as i128) as u64)
    }
}

fn skewed_reading(st: &SkewState, base_now: Duration) -> Duration {
    let elapsed = base_now.saturating_sub(st.anchor_base).as_nanos() as i128;
    let drifted = elapsed + elapsed * st.skew.drift_ppm as i128 / 1_000_000;
    let nanos = st.anchor_skewed.as_nanos() as i128 + drifted;
    Duration::from_nanos(nanos.clamp(0, u64::MAX as i128) as u64)
}

fn apply_offset(d: Duration, offset_nanos: i64) -> Duration {
    let nanos = d.as_nanos() as i128 + offset_nanos as i128;
    Duration::from_nanos(nanos.clamp(0, u64::MAX as i128) as u64)
}

impl Clock for SkewedClock {
    fn now(&self) -> MonoTime {
        let base_now = self.base.now().0;
        let mut st = self.state.lock().expect("clock lock poisoned");
        let reading = skewed_reading(&st, base_now).max(st.last);
        st.last = reading;
        MonoTime(reading)
    }

    fn sleep(&self, d: Duration) -> SleepFuture {
        Box::pin(tokio::time::sleep(self.to_base(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn skewed_clock_never_goes_backwards_when_offset_jumps_back() {
        let clock = SkewedClock::new(TokioClock::new());
        clock.set_skew(Skew {
            offset_nanos: 5_000_000_000,
            drift_ppm: 0,
        });
        let before = clock.now();
        assert!(before.0 >= Duration::from_secs(5));
        clock.set_skew(Skew {
            offset_nanos: 0,
            drift_ppm: 0,
        });
        assert!(clock.now() >= before);
    }

    #[tokio::test(start_paused = true)]
    async fn skewed_clock_runs_fast_by_its_drift() {
        let clock = SkewedClock::new(TokioClock::new());
        clock.set_skew(Skew {
            offset_nanos: 0,
            drift_ppm: 100_000,
        }); // 10 % fast
        let t0 = clock.now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let elapsed = clock.now().saturating_duration_since(t0);
        // Exactly 11 s on paused tokio time; madsim's clock also moves a few
        // nanoseconds per poll.
        assert!(
            elapsed >= Duration::from_secs(11) && elapsed < Duration::from_millis(11_001),
            "{elapsed:?}"
        );
    }

    /// The OS's monotonic clock stepped back (libfaketime under the jepsen
    /// `clock` nemesis): the reading stands at the latest one until the
    /// clock passes it again. Before, a leader whose clock stepped back 49 s
    /// answered TimeToLive with 57 s left of a 3 s lease (jepsen: `--workload
    /// lease --nemesis clock --seed 2`).
    #[test]
    fn a_reading_never_goes_below_the_latest_one() {
        let last = std::sync::atomic::AtomicU64::new(0);
        let s = Duration::from_secs;
        assert_eq!(never_backwards(&last, s(10)), s(10));
        assert_eq!(never_backwards(&last, s(59)), s(59));
        // Back by 49 s: still 59 s, and again until the clock passes it.
        assert_eq!(never_backwards(&last, s(10)), s(59));
        assert_eq!(never_backwards(&last, s(58)), s(59));
        assert_eq!(never_backwards(&last, s(60)), s(60));
    }

    #[tokio::test]
    async fn clones_of_a_tokio_clock_share_their_latest_reading() {
        let a = TokioClock::new();
        let b = a.clone();
        let late = a.origin + Duration::from_secs(3600);
        // A reading an hour ahead, as if the OS clock had jumped forward.
        never_backwards(&a.last, late.saturating_duration_since(a.origin));
        assert!(b.now().0 >= Duration::from_secs(3600));
    }
}
