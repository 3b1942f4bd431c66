//! Reading the metrics back from the exposition [`render`](crate::render)
//! serves, as a scraper would: for tests and tools that check what was
//! counted, with the same typed labels the counting used.

use crate::{
    Op, Outcome, Protocol, RateLimit, ShedReason, RATE_LIMITED, RATE_LIMIT_KEYS, RATE_LIMIT_RESETS,
    REQUESTS, SHED,
};

/// The value of the first series `name` in `text` (Prometheus text format)
/// whose labels include every pair of `labels`; `None` when there is none
/// or its value is not a number.
pub fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}

/// The current value of the series `name` with `labels`, 0 when it has not
/// been recorded (or no recorder is installed).
pub fn value(name: &str, labels: &[(&str, &str)]) -> f64 {
    series(&crate::render(), name, labels).unwrap_or(0.0)
}

/// Answers counted so far for `op` with `outcome` through `protocol`.
pub fn requests(protocol: Protocol, op: Op, outcome: impl Into<Outcome>) -> f64 {
    let labels = [
        ("protocol", protocol.label()),
        ("op", op.label()),
        ("outcome", outcome.into().label()),
    ];
    value(REQUESTS, &labels)
}

/// Requests shed so far for `reason` through `protocol`.
pub fn shed(protocol: Protocol, reason: ShedReason) -> f64 {
    value(
        SHED,
        &[("protocol", protocol.label()), ("reason", reason.label())],
    )
}

/// Requests refused so far by the `limit` bucket.
pub fn rate_limited(limit: RateLimit) -> f64 {
    value(RATE_LIMITED, &[("limit", limit.label())])
}

/// Keys the `limit` table held at its last sweep.
pub fn rate_limit_keys(limit: RateLimit) -> f64 {
    value(RATE_LIMIT_KEYS, &[("limit", limit.label())])
}

/// Start-overs of the `limit` table so far.
pub fn rate_limit_resets(limit: RateLimit) -> f64 {
    value(RATE_LIMIT_RESETS, &[("limit", limit.label())])
}

#[cfg(test)]
mod tests {
    use super::series;

    #[test]
    fn finds_a_series_by_name_and_labels() {
        let text = "# HELP x help\n\
                    x{a=\"1\",b=\"2\"} 3\n\
                    x{a=\"1\",b=\"9\"} 4\n\
                    y 5\n";
        assert_eq!(series(text, "x", &[("b", "9")]), Some(4.0));
        assert_eq!(series(text, "x", &[("a", "1"), ("b", "2")]), Some(3.0));
        assert_eq!(series(text, "y", &[]), Some(5.0));
        assert_eq!(series(text, "x", &[("b", "7")]), None);
        assert_eq!(series(text, "z", &[]), None);
    }
}
