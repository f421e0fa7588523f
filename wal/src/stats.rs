//! Counters of the WAL writer and reader, as atomics, for the node's `/metrics`.
//!
//! Every field only grows, except `inflight_bytes` and `put_limit` (gauges).
//! Latencies are kept two ways by [`LatencyHistogram`]: fixed power-of-two
//! buckets (for a Prometheus histogram) and a ring of the most recent
//! samples (for exact quantiles over a short window).
//!
//! A produce's time in the writer is split three ways, per entry:
//! `wait_interval` (appended until its object is sealed), `put` (sealed
//! until the object is durable) and `wait_earlier` (durable until
//! acknowledged: an earlier object holding the same partition was still
//! uploading).

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

/// How many recent latency samples each histogram keeps.
pub const LATENCY_SAMPLES_MAX: usize = 4096;

/// Latencies: power-of-two buckets, their sum and count, and a ring of the
/// most recent samples.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; 18],
    sum_us: AtomicU64,
    count: AtomicU64,
    recent: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
            recent: (0..LATENCY_SAMPLES_MAX)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl LatencyHistogram {
    /// Records one sample.
    pub fn record(&self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        self.recent[(n as usize) % LATENCY_SAMPLES_MAX].store(us, Ordering::Relaxed);
    }

    /// How many samples were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The most recent samples in microseconds (up to
    /// `LATENCY_SAMPLES_MAX`, in no particular order).
    pub fn recent_us(&self) -> Vec<u64> {
        let n = (self.count() as usize).min(LATENCY_SAMPLES_MAX);
        self.recent[..n]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// The quantiles `qs` (each in 0..=1) of the recent samples, in
    /// microseconds; `None` before the first sample.
    pub fn recent_quantiles_us(&self, qs: &[f64]) -> Option<Vec<u64>> {
        let mut v = self.recent_us();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some(
            qs.iter()
                .map(|q| v[((v.len() as f64 * q) as usize).min(v.len() - 1)])
                .collect(),
        )
    }
}

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
    /// An object's upload: first attempt until durable.
    pub upload: LatencyHistogram,
    /// An entry's time in the writer, split (see the module doc).
    pub wait_interval: LatencyHistogram,
    pub put: LatencyHistogram,
    pub wait_earlier: LatencyHistogram,
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
            upload: LatencyHistogram::default(),
            wait_interval: LatencyHistogram::default(),
            put: LatencyHistogram::default(),
            wait_earlier: LatencyHistogram::default(),
        }
    }
}

/// The counters of a [`crate::hedge::HedgedStore`]: the node's requests to
/// its bucket, whichever writer or reader sent them.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Second PUTs or GETs sent because the first was slower than the
    /// hedge delay, and how many of them answered first.
    pub hedges_sent: AtomicU64,
    pub hedges_won: AtomicU64,
    /// Of those, the PUTs (each kind has its own budget).
    pub put_hedges_sent: AtomicU64,
    pub put_hedges_won: AtomicU64,
    /// PUT or GET attempts that ended at their deadline.
    pub request_timeouts: AtomicU64,
    /// Answers of 503 SlowDown (each may halve the PUT limit).
    pub throttles: AtomicU64,
    /// PUTs and GETs sent again after a retriable error.
    pub retries: AtomicU64,
    /// PUTs the node may have in flight now (a gauge: the AIMD limit).
    pub put_limit: AtomicU64,
    /// One successful PUT, and one successful GET (hedges included: the
    /// time until the first success).
    pub put_request: LatencyHistogram,
    pub get_request: LatencyHistogram,
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
        self.upload.record(latency);
    }

    /// The most recent upload latencies in microseconds (up to
    /// `LATENCY_SAMPLES_MAX`, in no particular order).
    pub fn recent_upload_latencies_us(&self) -> Vec<u64> {
        self.upload.recent_us()
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
            upload_latency_buckets: self.upload.buckets.iter().map(l).collect(),
            upload_latency_sum_us: l(&self.upload.sum_us),
            upload_latency_count: l(&self.upload.count),
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
