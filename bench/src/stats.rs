//! Latency percentiles and throughput, as reported.
//!
//! Latencies are recorded in HdrHistogram in microseconds, from 1 µs to one
//! hour, with 3 significant digits: a reported value is within 0.1% of the
//! true one. Percentiles are nearest-rank: p99 of `n` values is the
//! `ceil(0.99 n)`-th smallest (HdrHistogram's `value_at_quantile`), reported
//! as the highest value equivalent to it at that precision.
//!
//! Throughput is records and bytes over seconds. MB is 10^6 bytes and MiB is
//! 2^20 bytes; both are reported so nobody has to guess which one is meant.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency a histogram holds, in microseconds (one hour).
/// Longer latencies are recorded as one hour.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// An empty latency histogram in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    // Constant bounds that HdrHistogram accepts (1 <= 1 h, 3 digits).
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Records a latency given in nanoseconds, rounded down to microseconds and
/// capped at [`LATENCY_US_MAX`].
pub fn record_latency_ns(h: &mut Histogram<u64>, latency_ns: u64) {
    h.saturating_record((latency_ns / 1_000).min(LATENCY_US_MAX));
}

/// The percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// How many latencies were recorded.
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

impl LatencySummary {
    /// The summary of a histogram of microseconds; all zeros if it is empty.
    pub fn from_histogram_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary {
                count: 0,
                min_ms: 0.0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
            };
        }
        LatencySummary {
            count: h.len(),
            min_ms: us_to_ms(h.min()),
            mean_ms: h.mean() / 1_000.0,
            p50_ms: us_to_ms(h.value_at_quantile(0.50)),
            p90_ms: us_to_ms(h.value_at_quantile(0.90)),
            p99_ms: us_to_ms(h.value_at_quantile(0.99)),
            p999_ms: us_to_ms(h.value_at_quantile(0.999)),
            max_ms: us_to_ms(h.max()),
        }
    }
}

/// Records and bytes moved over some seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_sec: f64,
    /// 10^6 bytes per second.
    pub mb_per_sec: f64,
    /// 2^20 bytes per second.
    pub mib_per_sec: f64,
}

impl Throughput {
    /// `records` records of `bytes` bytes in all over `seconds`; rates are
    /// zero when `seconds` is not positive.
    pub fn new(records: u64, bytes: u64, seconds: f64) -> Self {
        let per_sec = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
        Throughput {
            records,
            bytes,
            seconds,
            records_per_sec: per_sec(records as f64),
            mb_per_sec: per_sec(bytes as f64) / 1e6,
            mib_per_sec: per_sec(bytes as f64) / (1u64 << 20) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts `actual` is within HdrHistogram's 3-digit precision (0.1%) of
    /// `expected`, at or above it (reported values are highest-equivalent).
    fn assert_hdr(actual_ms: f64, expected_ms: f64) {
        assert!(
            actual_ms >= expected_ms && actual_ms <= expected_ms * 1.001,
            "{actual_ms} ms is not {expected_ms} ms to 0.1%"
        );
    }

    #[test]
    fn percentiles_of_one_to_a_thousand() {
        // 1, 2, ..., 1000 µs, once each. Nearest rank: p50 is the 500th value
        // (500 µs), p90 the 900th, p99 the 990th, p99.9 the ceil(999.0) =
        // 999th. Values below 2048 are exact at 3 digits. Mean: 1001/2 µs.
        let mut h = latency_histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let s = LatencySummary::from_histogram_us(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.min_ms, 0.001);
        assert_eq!(s.p50_ms, 0.5);
        assert_eq!(s.p90_ms, 0.9);
        assert_eq!(s.p99_ms, 0.99);
        assert_eq!(s.p999_ms, 0.999);
        assert_eq!(s.max_ms, 1.0);
        assert!((s.mean_ms - 0.5005).abs() < 1e-9, "mean {}", s.mean_ms);
    }

    #[test]
    fn a_rare_tail_shows_in_p999_but_not_p99() {
        // 990 latencies of 1 ms and 10 of 100 ms. Ranks: p50 = 500th (1 ms),
        // p99 = 990th (the last 1 ms), p99.9 = 999th (100 ms), max 100 ms.
        // Mean: (990 * 1 + 10 * 100) / 1000 = 1.99 ms.
        let mut h = latency_histogram();
        h.record_n(1_000, 990).unwrap();
        h.record_n(100_000, 10).unwrap();
        let s = LatencySummary::from_histogram_us(&h);
        assert_hdr(s.p50_ms, 1.0);
        assert_hdr(s.p99_ms, 1.0);
        assert_hdr(s.p999_ms, 100.0);
        assert_hdr(s.max_ms, 100.0);
        assert!((s.mean_ms - 1.99).abs() < 0.01, "mean {}", s.mean_ms);
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        let s = LatencySummary::from_histogram_us(&latency_histogram());
        assert_eq!(s.count, 0);
        assert_eq!(s.p99_ms, 0.0);
        assert_eq!(s.max_ms, 0.0);
    }

    #[test]
    fn nanoseconds_round_down_to_microseconds_and_cap_at_an_hour() {
        let mut h = latency_histogram();
        record_latency_ns(&mut h, 1_999); // 1 µs
        record_latency_ns(&mut h, 7_200_000_000_000); // two hours: one hour
        assert_eq!(h.min(), 1);
        assert!(h.max() >= LATENCY_US_MAX && h.max() <= LATENCY_US_MAX * 1001 / 1000);
    }

    #[test]
    fn throughput_of_a_run() {
        // 300,000 records of 1,024 bytes in 10 s: 30,000 records/s;
        // 307,200,000 bytes / 10 s = 30,720,000 B/s = 30.72 MB/s
        // = 30,720,000 / 1,048,576 = 29.296875 MiB/s.
        let t = Throughput::new(300_000, 300_000 * 1024, 10.0);
        assert_eq!(t.records_per_sec, 30_000.0);
        assert!((t.mb_per_sec - 30.72).abs() < 1e-12);
        assert!((t.mib_per_sec - 29.296875).abs() < 1e-12);
    }

    #[test]
    fn throughput_over_no_time_is_zero() {
        let t = Throughput::new(5, 5, 0.0);
        assert_eq!(t.records_per_sec, 0.0);
        assert_eq!(t.mb_per_sec, 0.0);
    }
}
