//! `RATE`, the value of `--rate-limit-user` and `--rate-limit-ip`:
//! `N/s`, `N/m` or `N/h`, optionally with `,burst=B`.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::Quota;

/// What `RATE` looks like, for error messages.
const EXPECTED: &str = "expected N/s, N/m or N/h (also /sec, /min, /hour), optionally \
                        followed by ,burst=B; e.g. 5/s or 300/min,burst=20";

/// A sustained rate with a burst: `count` requests per `per`, and at most
/// `burst` at once from a full bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: NonZeroU32,
    per: Duration,
    burst: NonZeroU32,
}

impl Rate {
    /// `count` requests per `per`, with the default burst: the rate per
    /// second rounded up, at least 1.
    pub fn new(count: NonZeroU32, per: Duration) -> Self {
        let per_s = per.as_secs().max(1);
        let burst = u64::from(count.get()).div_ceil(per_s);
        let burst = u32::try_from(burst).map_or(NonZeroU32::MAX, |b| {
            NonZeroU32::new(b).unwrap_or(NonZeroU32::MIN)
        });
        Rate { count, per, burst }
    }

    /// The same rate with `burst` requests at once from a full bucket.
    #[must_use]
    pub fn with_burst(self, burst: NonZeroU32) -> Self {
        Rate { burst, ..self }
    }

    /// How many requests a full bucket lets through at once.
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// Requests per second, as a fraction.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count.get()) / self.per.as_secs_f64()
    }

    /// The governor quota: one request back every `per / count`, `burst`
    /// at most.
    ///
    /// # Errors
    ///
    /// A rate so high that one request comes back in under a nanosecond.
    pub fn quota(&self) -> Result<Quota, String> {
        Quota::with_period(self.per / self.count.get())
            .map(|quota| quota.allow_burst(self.burst))
            .ok_or_else(|| format!("{self} is more than one request a nanosecond"))
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("bad rate {text:?}: {why}; {EXPECTED}");
        let (rate, burst) = match text.trim().split_once(',') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (text.trim(), None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(|| bad("no /"))?;
        let count = count
            .trim()
            .parse::<NonZeroU32>()
            .map_err(|_| bad("the count must be a whole number from 1 to 4294967295"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad("the unit must be s, m or h")),
        };
        let mut rate = Rate::new(count, per);
        if let Some(burst) = burst {
            let burst = burst
                .strip_prefix("burst=")
                .ok_or_else(|| bad("after the comma comes burst=B"))?
                .trim()
                .parse::<NonZeroU32>()
                .map_err(|_| bad("the burst must be a whole number from 1 to 4294967295"))?;
            rate = rate.with_burst(burst);
        }
        rate.quota().map_err(|e| bad(&e))?;
        Ok(rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            3600 => "h",
            60 => "m",
            _ => "s",
        };
        write!(f, "{}/{unit},burst={}", self.count, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Rate {
        text.parse().unwrap()
    }

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    #[test]
    fn good_rates_and_their_default_bursts() {
        let second = Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        for (text, count, per, burst) in [
            ("5/s", 5, second, 5),
            (" 5 / sec ", 5, second, 5),
            ("1/second", 1, second, 1),
            ("100/m", 100, minute, 2),
            ("90/min", 90, minute, 2),
            ("60/minute", 60, minute, 1),
            ("5/m", 5, minute, 1),
            ("1000/h", 1000, hour, 1),
            ("7200/hour", 7200, hour, 2),
            ("5/s,burst=10", 5, second, 10),
            ("5/s, burst=1", 5, second, 1),
            ("1/h,burst=3", 1, hour, 3),
        ] {
            let parsed = rate(text);
            assert_eq!(
                parsed,
                Rate::new(n(count), per).with_burst(n(burst)),
                "{text}"
            );
            assert_eq!(parsed.to_string().parse::<Rate>(), Ok(parsed), "{text}");
        }
        assert_eq!(rate("5/s").to_string(), "5/s,burst=5");
        assert!((rate("30/m").per_second() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn the_quota_refills_one_request_at_a_time() {
        let quota = rate("5/s,burst=10").quota().unwrap();
        assert_eq!(quota.replenish_interval(), Duration::from_millis(200));
        assert_eq!(quota.burst_size(), n(10));
        let quota = rate("2/h").quota().unwrap();
        assert_eq!(quota.replenish_interval(), Duration::from_secs(1800));
    }

    #[test]
    fn bad_rates_say_why() {
        for (text, why) in [
            ("", "no /"),
            ("5", "no /"),
            ("5/d", "unit"),
            ("5/", "unit"),
            ("5/ms", "unit"),
            ("0/s", "count"),
            ("-1/s", "count"),
            ("1.5/s", "count"),
            ("/s", "count"),
            ("99999999999/s", "count"),
            ("5/s,10", "burst=B"),
            ("5/s,burst=0", "burst"),
            ("5/s,burst=", "burst"),
            ("5/s,burst=x", "burst"),
            ("4294967295/s", "nanosecond"),
        ] {
            let e = text.parse::<Rate>().unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains("e.g. 5/s"), "{text:?}: {e}");
        }
    }
}
