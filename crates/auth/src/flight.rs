//! Single flight: many requests that need the same answer at once share one call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Calls in flight, by key.
#[derive(Debug)]
pub struct Flights<V> {
    inflight: Mutex<HashMap<u64, Arc<OnceCell<V>>>>,
}

impl<V: Clone> Flights<V> {
    /// No call in flight.
    pub fn new() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key`: computed by `make` if no call for `key` is in flight, else the
    /// one in flight's. If the caller running `make` goes away, a waiting one takes over.
    pub async fn run<F, Fut>(&self, key: u64, make: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = {
            let mut inflight = self.lock();
            Arc::clone(inflight.entry(key).or_default())
        };
        let value = cell.get_or_init(make).await.clone();
        let mut inflight = self.lock();
        if inflight
            .get(&key)
            .is_some_and(|current| Arc::ptr_eq(current, &cell))
        {
            inflight.remove(&key);
        }
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<OnceCell<V>>>> {
        // A panic while holding this lock leaves the map itself intact.
        self.inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<V: Clone> Default for Flights<V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_call() {
        let flights = Arc::new(Flights::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let (flights, calls) = (Arc::clone(&flights), Arc::clone(&calls));
                tokio::spawn(async move {
                    flights
                        .run(7, || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            42
                        })
                        .await
                })
            })
            .collect();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), 42);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(flights.lock().is_empty(), "nothing stays in flight");
    }
}
