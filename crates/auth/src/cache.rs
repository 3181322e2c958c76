//! Decisions kept for a while, keyed by a keyed hash of the token — never the token itself.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;

/// Keys cache entries by a SipHash of the token under a key drawn at start: a token cannot
/// be recovered from its entry, and without the key nobody can make another string land on
/// a token's entry.
#[derive(Debug)]
pub struct TokenHasher(RandomState);

impl TokenHasher {
    /// A hasher with a fresh random key.
    pub fn new() -> Self {
        Self(RandomState::new())
    }

    /// The cache key of `token`.
    pub fn token(&self, token: &str) -> u64 {
        self.0.hash_one(token)
    }

    /// The cache key of `token`'s (already hashed) access to `task`.
    pub fn token_task(&self, token_key: u64, task: &str) -> u64 {
        let mut hasher = self.0.build_hasher();
        token_key.hash(&mut hasher);
        task.hash(&mut hasher);
        hasher.finish()
    }
}

impl Default for TokenHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// A bounded map of decisions that expire.
#[derive(Debug)]
pub struct DecisionCache<V> {
    entries: DashMap<u64, (V, Instant)>,
    capacity: usize,
    /// The size at which expired entries are next swept out: twice what was left by the
    /// last sweep, so the cache follows the live decisions, not its bound, at an amortised
    /// cost of a few entries visited per insert.
    sweep_at: AtomicUsize,
}

/// The smallest cache that is swept: below it, expired entries cost too little to chase.
const MIN_SWEEP: usize = 1024;

impl<V: Clone> DecisionCache<V> {
    /// A cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            // Grown as tokens arrive: a table sized for the bound up front would hold
            // megabytes for a gateway that sees a handful of users.
            entries: DashMap::new(),
            capacity: capacity.max(1),
            sweep_at: AtomicUsize::new(MIN_SWEEP),
        }
    }

    /// The decision under `key`, if it has not expired.
    pub fn get(&self, key: u64) -> Option<V> {
        let entry = self.entries.get(&key)?;
        let (value, until) = &*entry;
        (Instant::now() < *until).then(|| value.clone())
    }

    /// Keeps `value` under `key` until `until`. When full, expired entries go first, then
    /// those closest to expiry.
    pub fn insert(&self, key: u64, value: V, until: Instant) {
        let len = self.entries.len();
        if len >= self.capacity && !self.entries.contains_key(&key) {
            self.evict();
        } else if len >= self.sweep_at.load(Ordering::Relaxed) {
            self.drop_expired();
        }
        self.entries.insert(key, (value, until));
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn drop_expired(&self) {
        let now = Instant::now();
        self.entries.retain(|_, (_, until)| *until > now);
        let next = self.entries.len().saturating_mul(2).max(MIN_SWEEP);
        self.sweep_at.store(next, Ordering::Relaxed);
    }

    fn evict(&self) {
        self.drop_expired();
        let excess = (self.entries.len() + 1).saturating_sub(self.capacity);
        if excess == 0 {
            return;
        }
        // Free a tenth at once, so that a full cache is not scanned on every insert.
        let mut soonest: Vec<(Instant, u64)> = self
            .entries
            .iter()
            .map(|e| (e.value().1, *e.key()))
            .collect();
        let count = excess.max(self.capacity / 10).min(soonest.len());
        if count == 0 {
            return;
        }
        soonest.select_nth_unstable_by_key(count.saturating_sub(1), |(until, _)| *until);
        for (_, key) in soonest.into_iter().take(count) {
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn expired_entries_are_swept_long_before_the_bound() {
        let cache = DecisionCache::new(100_000);
        let expired = Instant::now() - Duration::from_secs(1);
        for key in 0..20_000u64 {
            cache.insert(key, "x", expired);
            assert!(cache.len() <= MIN_SWEEP + 1, "{} entries kept", cache.len());
        }
        let live = Instant::now() + Duration::from_secs(60);
        for key in 0..5_000u64 {
            cache.insert(key, "y", live);
        }
        assert_eq!(cache.len(), 5_000, "live entries stay");
        assert_eq!(cache.get(4_999), Some("y"));
    }

    #[test]
    fn entries_expire_and_the_cache_stays_bounded() {
        let cache = DecisionCache::new(100);
        let now = Instant::now();
        cache.insert(1, "past", now - Duration::from_secs(1));
        assert_eq!(cache.get(1), None);
        for key in 0..1000u64 {
            cache.insert(key, "x", now + Duration::from_secs(60 + key));
            assert!(cache.len() <= 100);
        }
        assert_eq!(cache.get(999), Some("x"), "the newest entries stay");
    }

    #[test]
    fn keys_depend_on_the_token_and_the_task() {
        let hasher = TokenHasher::new();
        let a = hasher.token("a.b.c");
        assert_eq!(a, hasher.token("a.b.c"));
        assert_ne!(a, hasher.token("a.b.d"));
        assert_ne!(hasher.token_task(a, "t1"), hasher.token_task(a, "t2"));
        assert_ne!(
            TokenHasher::new().token("a.b.c"),
            a,
            "each process draws its own key"
        );
    }
}
