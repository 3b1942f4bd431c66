//! Token buckets by key, in bounded memory.
//!
//! governor's keyed limiter keeps one word of state per key it has seen,
//! and adds a key on its first request: a client rotating addresses (an
//! IPv6 host has a /64 of them, and a /48 holds 65,536 /64s) or tokens
//! would grow the table for as long as it kept going. So the table is
//! looked after as it is used: every [`HOUSEKEEPING_EVERY`] checks, one
//! check (the one that gets the lock; the others do not wait) sees to it:
//!
//! - every [`SWEEP_INTERVAL`], and whenever the table has reached its
//!   `max_keys`, `retain_recent()` drops the keys whose bucket has filled
//!   up again. That loses nothing: a full bucket is exactly what a key
//!   the table has never seen gets.
//! - If the table is still at `max_keys` after that, every key in it has
//!   drawn from its bucket within one refill time, and the table starts
//!   over empty (a WARN line says so).
//!
//! Why forget rather than refuse new keys with 429 once full: whoever can
//! fill the table can make new keys at will, and each new key gets a full
//! bucket anyway, so forgetting the old ones gives such a client nothing
//! it did not have; refusing new keys instead would let that client shut
//! every newcomer out. A key's entry is a few dozen bytes, so the table
//! holds at most `max_keys + HOUSEKEEPING_EVERY` keys (the size is looked at
//! only every so many checks) in a few megabytes at the default bound.
//!
//! Each sweep reports the keys left in `flashsale_rate_limit_keys{limit}`
//! and each start-over counts in `flashsale_rate_limit_resets_total{limit}`:
//! an operator sees a table that keeps filling up (a client rotating keys,
//! or a bound too small for the crowd) without reading the log.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use flashsale_metrics::{self as metrics, RateLimit};

/// Checks between two looks at the table.
pub const HOUSEKEEPING_EVERY: usize = 256;
/// How often keys whose bucket has filled up are dropped.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

type Table<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A token bucket per key, at most `max_keys` keys (see the module docs).
pub struct Buckets<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    quota: Quota,
    clock: C,
    max_keys: usize,
    /// Which limit these buckets are, for the metrics.
    limit: RateLimit,
    /// Swapped whole for an empty one when it cannot be shrunk below
    /// `max_keys`; a check in progress on the old one finishes there.
    table: ArcSwap<Table<K, C>>,
    checks: AtomicUsize,
    /// When the table was last swept. A std `Mutex` taken with `try_lock`
    /// only: one check does the housekeeping, the others go on.
    swept_at: Mutex<C::Instant>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// The buckets of `limit`: `quota` each, for at most `max_keys` keys.
    pub fn new(limit: RateLimit, quota: Quota, max_keys: usize) -> Self {
        Buckets::with_clock(limit, quota, max_keys, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Buckets<K, C> {
    /// [`Buckets::new`] on `clock`.
    pub fn with_clock(limit: RateLimit, quota: Quota, max_keys: usize, clock: C) -> Self {
        let now = clock.now();
        Buckets {
            quota,
            limit,
            table: ArcSwap::from_pointee(Table::dashmap_with_clock(quota, clock.clone())),
            clock,
            max_keys: max_keys.max(1),
            checks: AtomicUsize::new(0),
            swept_at: Mutex::new(now),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long until
    /// there is one.
    ///
    /// # Errors
    ///
    /// The bucket is empty: the time until it holds a request again.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(HOUSEKEEPING_EVERY)
        {
            self.housekeeping();
        }
        self.table
            .load()
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Keys in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.load().len()
    }

    /// Drops the keys with a full bucket if a sweep is due or the table is
    /// full; starts over if that leaves it full.
    fn housekeeping(&self) {
        let Ok(mut swept_at) = self.swept_at.try_lock() else {
            return;
        };
        let table = self.table.load();
        let now = self.clock.now();
        let due = Duration::from(now.duration_since(*swept_at)) >= SWEEP_INTERVAL;
        if !due && table.len() < self.max_keys {
            return;
        }
        *swept_at = now;
        table.retain_recent();
        let left = table.len();
        if left < self.max_keys {
            metrics::rate_limit_keys(self.limit, left);
        } else {
            tracing::warn!(
                keys = left,
                max_keys = self.max_keys,
                "every rate-limit bucket in the table is in use; starting the table over \
                 (each client gets a full bucket again)"
            );
            self.table.store(Arc::new(Table::dashmap_with_clock(
                self.quota,
                self.clock.clone(),
            )));
            metrics::rate_limit_reset(self.limit);
            metrics::rate_limit_keys(self.limit, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::num::NonZeroU32;

    fn quota(per_second: u32, burst: u32) -> Quota {
        Quota::per_second(NonZeroU32::new(per_second).unwrap())
            .allow_burst(NonZeroU32::new(burst).unwrap())
    }

    #[test]
    fn a_burst_then_the_rate_and_the_wait_in_between() {
        let clock = FakeRelativeClock::default();
        let buckets = Buckets::with_clock(RateLimit::User, quota(5, 10), 100, clock.clone());
        for _ in 0..10 {
            assert_eq!(buckets.check(&1u64), Ok(()));
        }
        assert_eq!(buckets.check(&1), Err(Duration::from_millis(200)));
        // Another key has its own bucket.
        assert_eq!(buckets.check(&2), Ok(()));
        clock.advance(Duration::from_millis(150));
        assert_eq!(buckets.check(&1), Err(Duration::from_millis(50)));
        clock.advance(Duration::from_millis(50));
        assert_eq!(buckets.check(&1), Ok(()));
        assert!(buckets.check(&1).is_err());
        clock.advance(Duration::from_secs(1));
        let passed = (0..20).filter(|_| buckets.check(&1).is_ok()).count();
        assert_eq!(passed, 5, "one second refills five");
    }

    #[test]
    fn rotating_keys_never_grow_the_table_past_its_bound() {
        let clock = FakeRelativeClock::default();
        let max = 1000;
        let buckets = Buckets::with_clock(RateLimit::User, quota(1, 1), max, clock.clone());
        let mut most = 0;
        for key in 0..20_000u64 {
            assert_eq!(buckets.check(&key), Ok(()), "a new key has a full bucket");
            most = most.max(buckets.len());
            if key % 100 == 0 {
                clock.advance(Duration::from_millis(1));
            }
        }
        assert!(most <= max + HOUSEKEEPING_EVERY, "{most} keys");
    }

    #[test]
    fn idle_keys_are_swept_and_a_limited_key_is_not_forgotten() {
        let clock = FakeRelativeClock::default();
        // A refill time (60 s) longer than the sweep interval.
        let slow = Quota::per_minute(NonZeroU32::new(1).unwrap());
        let buckets = Buckets::with_clock(RateLimit::User, slow, 10_000, clock.clone());
        for key in 0..100u64 {
            assert_eq!(buckets.check(&key), Ok(()));
        }
        assert!(buckets.check(&7).is_err());
        clock.advance(SWEEP_INTERVAL);
        // Each key is still limited: the sweep dropped none of them.
        while !buckets
            .checks
            .load(Ordering::Relaxed)
            .is_multiple_of(HOUSEKEEPING_EVERY)
        {
            assert!(buckets.check(&7).is_err());
        }
        assert!(buckets.check(&7).is_err());
        assert_eq!(buckets.len(), 100);
        // Once refilled (governor keeps a key one refill longer than
        // needed), a sweep drops them all.
        clock.advance(Duration::from_secs(120));
        while !buckets
            .checks
            .load(Ordering::Relaxed)
            .is_multiple_of(HOUSEKEEPING_EVERY)
        {
            let _ = buckets.check(&7);
        }
        let _ = buckets.check(&7);
        assert!(buckets.len() <= 1, "{} keys left", buckets.len());
    }

    #[test]
    fn a_table_full_of_busy_keys_starts_over() {
        let clock = FakeRelativeClock::default();
        let buckets = Buckets::with_clock(RateLimit::User, quota(1, 1), 10, clock);
        for key in 0..(HOUSEKEEPING_EVERY as u64) {
            let _ = buckets.check(&key);
        }
        assert_eq!(buckets.len(), HOUSEKEEPING_EVERY);
        // The next check looks at the table: full of keys that have just
        // drawn, so it starts over, and this key is new there.
        assert_eq!(buckets.check(&0), Ok(()));
        assert_eq!(buckets.len(), 1);
    }
}
