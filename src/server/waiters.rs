//! Waiting for the applied index to reach a value.
//!
//! Linearizable reads wait until the member has applied up to their read
//! index. A `tokio::sync::watch` would do, but with many waiters it wakes
//! them in an order drawn from tokio's per-process RNG, which breaks
//! madsim's in-process determinism check. Here waiters are woken in index
//! order, then arrival order: deterministic.
//!
//! Invariant: every waiter registered for an index ≤ `reached` has been
//! woken (its sender consumed); `reached` never decreases.
//! Tests: `tests` below.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

#[derive(Default)]
struct Inner {
    reached: u64,
    waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    closed: bool,
}

/// A monotonic index with waiters.
#[derive(Default)]
pub struct IndexWaiters {
    inner: Mutex<Inner>,
}

/// The index will never be reached (the member stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl IndexWaiters {
    pub fn new(reached: u64) -> IndexWaiters {
        IndexWaiters {
            inner: Mutex::new(Inner {
                reached,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("index waiters lock poisoned")
    }

    /// Raises the index to `index` (never lowers it) and wakes whoever waited for it.
    pub fn advance(&self, index: u64) {
        let mut st = self.lock();
        if index <= st.reached {
            return;
        }
        st.reached = index;
        let rest = st.waiters.split_off(&(index + 1));
        let due = std::mem::replace(&mut st.waiters, rest);
        drop(st);
        for (_, ws) in due {
            for w in ws {
                let _ = w.send(());
            }
        }
    }

    /// Fails every present and future wait that is not already satisfied.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.waiters.clear();
    }

    pub fn reached(&self) -> u64 {
        self.lock().reached
    }

    /// Resolves once the index is at least `index`.
    pub async fn wait_for(&self, index: u64) -> Result<(), Closed> {
        let rx = {
            let mut st = self.lock();
            if st.reached >= index {
                return Ok(());
            }
            if st.closed {
                return Err(Closed);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.entry(index).or_default().push(tx);
            rx
        };
        rx.await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_the_index_reaches_theirs_and_not_before() {
        let w = std::sync::Arc::new(IndexWaiters::new(3));
        assert_eq!(w.wait_for(2).await, Ok(()));
        let w2 = w.clone();
        let t = tokio::spawn(async move { w2.wait_for(5).await });
        tokio::task::yield_now().await;
        w.advance(4);
        tokio::task::yield_now().await;
        assert!(!t.is_finished(), "index 4 does not satisfy a wait for 5");
        w.advance(6);
        assert_eq!(t.await.expect("task"), Ok(()));
        w.advance(2);
        assert_eq!(w.reached(), 6, "the index never goes back");
    }

    #[tokio::test]
    async fn closing_fails_pending_and_future_waits() {
        let w = std::sync::Arc::new(IndexWaiters::new(0));
        let w2 = w.clone();
        let t = tokio::spawn(async move { w2.wait_for(1).await });
        tokio::task::yield_now().await;
        w.close();
        assert_eq!(t.await.expect("task"), Err(Closed));
        assert_eq!(w.wait_for(1).await, Err(Closed));
        assert_eq!(w.wait_for(0).await, Ok(()), "already reached is still fine");
    }
}
