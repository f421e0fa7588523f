//! Counters of the WAL writer and reader, as atomics, for the node's `/metrics`.
//!
//! Every field only grows, except `inflight_bytes` (a gauge). Upload latency
//! is kept two ways: a histogram with fixed power-of-two buckets (for a
//! Prometheus histogram) and a ring of the most recent samples (for exact
//! quantiles over a short window).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the upload latency buckets, in microseconds: 1 ms, 2 ms,
/// 4 ms, ... about 65 s. A last, implicit bucket holds everything slower.
pub const LATENCY_BUCKETS_US: [u64; 17] = {
    let mut b = [0u64; 17];
    let mut i = 0;
    while i < 17 {
        b[i] = 1000 << i;
        i += 1;
    }
    b
};

/// How many recent upload latency samples are kept.
pub const LATENCY_SAMPLES_MAX: usize = 1024;

/// The WAL's counters. Shared by the writer, its handles and its reader.
#[derive(Debug)]
pub struct WalStats {
    /// Objects made durable.
    pub objects_uploaded: AtomicU64,
    /// Bytes of objects made durable.
    pub bytes_uploaded: AtomicU64,
    /// Entries acknowledged as durable.
    pub entries_acked: AtomicU64,
    /// Entries completed with an error.
    pub entries_failed: AtomicU64,
    /// PUT requests sent (retries included).
    pub put_requests: AtomicU64,
    /// PUT requests that failed or timed out.
    pub put_errors: AtomicU64,
    /// Objects given up on after `upload_deadline`.
    pub objects_failed: AtomicU64,
    /// Objects sealed because `max_bytes_in_batch` was reached.
    pub sealed_by_size: AtomicU64,
    /// Objects sealed because `batch_interval` passed.
    pub sealed_by_interval: AtomicU64,
    /// Objects sealed by `flush` or shutdown.
    pub sealed_by_flush: AtomicU64,
    /// Appends refused with `WalError::Backpressure`.
    pub backpressure_rejections: AtomicU64,
    /// Bytes appended and not yet acknowledged (a gauge).
    pub inflight_bytes: AtomicU64,
    /// GET requests sent by the reader.
    pub get_requests: AtomicU64,
    /// GET requests that failed, or returned bytes that failed a check.
    pub get_errors: AtomicU64,
    /// Bytes received by GETs.
    pub get_bytes: AtomicU64,
    /// Compacted objects written, and their bytes.
    pub compacted_objects: AtomicU64,
    pub compacted_bytes: AtomicU64,
    upload_latency_buckets: [AtomicU64; 18],
    upload_latency_sum_us: AtomicU64,
    upload_latency_count: AtomicU64,
    recent: [AtomicU64; LATENCY_SAMPLES_MAX],
}

impl Default for WalStats {
    fn default() -> Self {
        WalStats {
            objects_uploaded: AtomicU64::new(0),
            bytes_uploaded: AtomicU64::new(0),
            entries_acked: AtomicU64::new(0),
            entries_failed: AtomicU64::new(0),
            put_requests: AtomicU64::new(0),
            put_errors: AtomicU64::new(0),
            objects_failed: AtomicU64::new(0),
            sealed_by_size: AtomicU64::new(0),
            sealed_by_interval: AtomicU64::new(0),
            sealed_by_flush: AtomicU64::new(0),
            backpressure_rejections: AtomicU64::new(0),
            inflight_bytes: AtomicU64::new(0),
            get_requests: AtomicU64::new(0),
            get_errors: AtomicU64::new(0),
            get_bytes: AtomicU64::new(0),
            compacted_objects: AtomicU64::new(0),
            compacted_bytes: AtomicU64::new(0),
            upload_latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            upload_latency_sum_us: AtomicU64::new(0),
            upload_latency_count: AtomicU64::new(0),
            recent: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A plain copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WalStatsSnapshot {
    pub objects_uploaded: u64,
    pub bytes_uploaded: u64,
    pub entries_acked: u64,
    pub entries_failed: u64,
    pub put_requests: u64,
    pub put_errors: u64,
    pub objects_failed: u64,
    pub sealed_by_size: u64,
    pub sealed_by_interval: u64,
    pub sealed_by_flush: u64,
    pub backpressure_rejections: u64,
    pub inflight_bytes: u64,
    pub get_requests: u64,
    pub get_errors: u64,
    pub get_bytes: u64,
    /// Per bucket of `LATENCY_BUCKETS_US` (not cumulative), then the overflow bucket.
    pub upload_latency_buckets: Vec<u64>,
    pub upload_latency_sum_us: u64,
    pub upload_latency_count: u64,
}

impl WalStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one successful upload's latency (first attempt to durable).
    pub fn record_upload_latency(&self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.upload_latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.upload_latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let n = self.upload_latency_count.fetch_add(1, Ordering::Relaxed);
        self.recent[(n as usize) % LATENCY_SAMPLES_MAX].store(us, Ordering::Relaxed);
    }

    /// The most recent upload latencies in microseconds (up to
    /// `LATENCY_SAMPLES_MAX`, in no particular order).
    pub fn recent_upload_latencies_us(&self) -> Vec<u64> {
        let n =
            (self.upload_latency_count.load(Ordering::Relaxed) as usize).min(LATENCY_SAMPLES_MAX);
        self.recent[..n]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> WalStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WalStatsSnapshot {
            objects_uploaded: l(&self.objects_uploaded),
            bytes_uploaded: l(&self.bytes_uploaded),
            entries_acked: l(&self.entries_acked),
            entries_failed: l(&self.entries_failed),
            put_requests: l(&self.put_requests),
            put_errors: l(&self.put_errors),
            objects_failed: l(&self.objects_failed),
            sealed_by_size: l(&self.sealed_by_size),
            sealed_by_interval: l(&self.sealed_by_interval),
            sealed_by_flush: l(&self.sealed_by_flush),
            backpressure_rejections: l(&self.backpressure_rejections),
            inflight_bytes: l(&self.inflight_bytes),
            get_requests: l(&self.get_requests),
            get_errors: l(&self.get_errors),
            get_bytes: l(&self.get_bytes),
            upload_latency_buckets: self.upload_latency_buckets.iter().map(l).collect(),
            upload_latency_sum_us: l(&self.upload_latency_sum_us),
            upload_latency_count: l(&self.upload_latency_count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_right_bucket_and_ring() {
        let s = WalStats::default();
        s.record_upload_latency(Duration::from_micros(900));
        s.record_upload_latency(Duration::from_millis(3));
        s.record_upload_latency(Duration::from_secs(600));
        let snap = s.snapshot();
        assert_eq!(snap.upload_latency_buckets[0], 1);
        assert_eq!(
            snap.upload_latency_buckets[2], 1,
            "3 ms is in the <= 4 ms bucket"
        );
        assert_eq!(snap.upload_latency_buckets[17], 1, "10 minutes overflows");
        assert_eq!(snap.upload_latency_count, 3);
        assert_eq!(snap.upload_latency_sum_us, 900 + 3000 + 600_000_000);
        let mut recent = s.recent_upload_latencies_us();
        recent.sort_unstable();
        assert_eq!(recent, vec![900, 3000, 600_000_000]);
    }

    #[test]
    fn ring_keeps_only_the_latest_samples() {
        let s = WalStats::default();
        for i in 0..(LATENCY_SAMPLES_MAX as u64 + 10) {
            s.record_upload_latency(Duration::from_micros(i));
        }
        let recent = s.recent_upload_latencies_us();
        assert_eq!(recent.len(), LATENCY_SAMPLES_MAX);
        assert!(
            !recent.contains(&5),
            "sample 5 should have been overwritten"
        );
        assert!(recent.contains(&(LATENCY_SAMPLES_MAX as u64 + 9)));
    }
}
