//! The wall clock every layer reads: Unix time in milliseconds.
//!
//! The core takes `now_ms` as an argument rather than reading a clock (so
//! tests and loom models choose the time), but everything above it that
//! needs "now" (the service, the HTTP front's `Retry-After`, the drain's lag)
//! reads it here, at the bottom of the crate graph, so that no layer depends
//! on another only for the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current Unix time in milliseconds; 0 if the clock is set before
/// 1970, `u64::MAX` past the year 584 million.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_2020() {
        assert!(super::now_ms() > 1_577_836_800_000);
    }
}
