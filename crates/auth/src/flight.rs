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
        let leaving = Leaving {
            flights: self,
            key,
            cell: &cell,
        };
        let value = cell.get_or_init(make).await.clone();
        drop(leaving);
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<OnceCell<V>>>> {
        // A panic while holding this lock leaves the map itself intact.
        self.inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Takes a call off the map when it is done, or when its last caller goes away before it is
/// (a client that disconnected while waiting): nothing stays behind either way.
struct Leaving<'a, V> {
    flights: &'a Flights<V>,
    key: u64,
    cell: &'a Arc<OnceCell<V>>,
}

impl<V> Drop for Leaving<'_, V> {
    fn drop(&mut self) {
        let mut inflight = self
            .flights
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let ours = inflight
            .get(&self.key)
            .is_some_and(|c| Arc::ptr_eq(c, self.cell));
        // The map and this caller hold the cell: nobody else is waiting on it.
        let last = Arc::strong_count(self.cell) <= 2;
        if ours && (self.cell.initialized() || last) {
            inflight.remove(&self.key);
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_that_go_away_leave_nothing_behind() {
        let flights = Arc::new(Flights::<u32>::new());
        let waiting_on = Arc::clone(&flights);
        let flights_of = |flights: &Arc<Flights<u32>>, key| flights.lock().contains_key(&key);
        for key in 0..100 {
            let flights = Arc::clone(&flights);
            let waiting = tokio::spawn(async move {
                flights
                    .run(key, || async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        1
                    })
                    .await
            });
            while !flights_of(&waiting_on, key) {
                tokio::task::yield_now().await;
            }
            waiting.abort();
            let _ = waiting.await;
        }
        assert!(
            flights.lock().is_empty(),
            "{} calls left in flight",
            flights.lock().len()
        );
    }
}
