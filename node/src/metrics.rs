//! Node metrics, kept in atomics and rendered in Prometheus text format.
//!
//! Counters are per node and updated with relaxed atomics: shards never
//! wait on each other to count. Latency goes into HdrHistograms that each
//! shard owns alone ([`ShardLatency`]: no lock, no atomic on the request
//! path); the shard publishes a copy about once a second
//! ([`ShardLatency::publish`], an `ArcSwap` per shard), and a scrape merges
//! the copies. So `/metrics` shows latency up to a second old.

use arc_swap::ArcSwap;
use crossbeam::utils::CachePadded;
use ferry_protocol::messages::APIS;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::arena::ArenaStats;
use crate::prom::{Exposition, Kind};

/// The highest API key counted one by one.
const API_KEYS: usize = 96;
/// Error codes counted one by one (Kafka's go up to about 130).
const ERROR_CODES: usize = 160;

#[derive(Debug)]
pub struct Metrics {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Open connections, per shard. Per-shard counters sit on cache lines
    /// of their own: each shard writes only its own.
    pub connections: Vec<CachePadded<AtomicI64>>,
    requests: Vec<AtomicU64>,
    errors: Vec<AtomicU64>,
    cache_bytes: Vec<CachePadded<AtomicI64>>,
    /// Arena bytes the log cache is charged, per shard (see crate::arena).
    cache_pinned_bytes: Vec<CachePadded<AtomicI64>>,
    /// Each shard's read arena.
    arena: Vec<Arc<ArenaStats>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    pub queue_depth: Vec<CachePadded<AtomicI64>>,
    pub unknown_zone_clients: AtomicU64,
    /// Connections from clients of another zone.
    pub misrouted_clients: AtomicU64,
    /// Latency per shard, as each shard last published it.
    produce_us: Vec<ArcSwap<Histogram<u64>>>,
    fetch_us: Vec<ArcSwap<Histogram<u64>>>,
    /// Failed authentications by (listener, mechanism): TLS handshakes
    /// (`SSL`) and SASL mechanisms. Rare, so a lock is fine.
    auth_failures: parking_lot::Mutex<std::collections::BTreeMap<(String, String), u64>>,
    /// SASL sessions renewed on their connection (KIP-368).
    pub reauthentications: AtomicU64,
}

/// One latency histogram: microseconds from 1 to 10 minutes, 3 significant
/// digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// A shard's own latency histograms: recorded by the shard alone, and
/// published to [`Metrics`] for scrapes.
#[derive(Debug)]
pub struct ShardLatency {
    produce: Histogram<u64>,
    fetch: Histogram<u64>,
    /// Samples (produce, fetch) at the last publish.
    published: (u64, u64),
}

impl Default for ShardLatency {
    fn default() -> Self {
        ShardLatency {
            produce: latency_histogram(),
            fetch: latency_histogram(),
            published: (0, 0),
        }
    }
}

impl ShardLatency {
    /// A produce request took `us` microseconds.
    pub fn produce_us(&mut self, us: u64) {
        self.produce.saturating_record(us.max(1));
    }

    /// A fetch request took `us` microseconds.
    pub fn fetch_us(&mut self, us: u64) {
        self.fetch.saturating_record(us.max(1));
    }

    /// Publishes copies of what changed since the last publish as shard
    /// `shard`'s latency in `metrics`.
    pub fn publish(&mut self, metrics: &Metrics, shard: usize) {
        if self.produce.len() != self.published.0 {
            if let Some(slot) = metrics.produce_us.get(shard) {
                slot.store(Arc::new(self.produce.clone()));
            }
        }
        if self.fetch.len() != self.published.1 {
            if let Some(slot) = metrics.fetch_us.get(shard) {
                slot.store(Arc::new(self.fetch.clone()));
            }
        }
        self.published = (self.produce.len(), self.fetch.len());
    }
}

impl Metrics {
    pub fn new(shards: usize) -> Metrics {
        let hist = || ArcSwap::from_pointee(latency_histogram());
        Metrics {
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connections: (0..shards.max(1)).map(|_| padded()).collect(),
            requests: (0..API_KEYS).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..ERROR_CODES).map(|_| AtomicU64::new(0)).collect(),
            cache_bytes: (0..shards).map(|_| padded()).collect(),
            cache_pinned_bytes: (0..shards).map(|_| padded()).collect(),
            arena: (0..shards.max(1)).map(|_| Arc::default()).collect(),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            queue_depth: (0..shards).map(|_| padded()).collect(),
            unknown_zone_clients: AtomicU64::new(0),
            misrouted_clients: AtomicU64::new(0),
            produce_us: (0..shards.max(1)).map(|_| hist()).collect(),
            fetch_us: (0..shards.max(1)).map(|_| hist()).collect(),
            auth_failures: Default::default(),
            reauthentications: AtomicU64::new(0),
        }
    }

    /// A failed authentication on `listener` (a TLS handshake: `SSL`; or a
    /// SASL mechanism).
    pub fn auth_failed(&self, listener: &str, mechanism: &str) {
        *self
            .auth_failures
            .lock()
            .entry((listener.to_owned(), mechanism.to_owned()))
            .or_default() += 1;
    }

    /// Failed authentications so far on `listener` with `mechanism`.
    pub fn auth_failures(&self, listener: &str, mechanism: &str) -> u64 {
        self.auth_failures
            .lock()
            .get(&(listener.to_owned(), mechanism.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn request(&self, api_key: i16) {
        if let Some(c) = usize::try_from(api_key)
            .ok()
            .and_then(|k| self.requests.get(k))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn error(&self, code: i16) {
        if let Some(c) = usize::try_from(code).ok().and_then(|k| self.errors.get(k)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// A connection opened (`+1`) or closed (`-1`) on `shard`.
    pub fn connection(&self, shard: usize, delta: i64) {
        if let Some(c) = self.connections.get(shard) {
            c.fetch_add(delta, Relaxed);
        }
    }

    pub fn cache_bytes_add(&self, shard: usize, delta: i64) {
        if let Some(c) = self.cache_bytes.get(shard) {
            c.fetch_add(delta, Relaxed);
        }
    }

    pub fn cache_pinned_bytes_add(&self, shard: usize, delta: i64) {
        if let Some(c) = self.cache_pinned_bytes.get(shard) {
            c.fetch_add(delta, Relaxed);
        }
    }

    /// The bytes of the batches the log cache of `shard` holds.
    pub fn cache_bytes(&self, shard: usize) -> i64 {
        self.cache_bytes.get(shard).map_or(0, |c| c.load(Relaxed))
    }

    /// The arena bytes the log cache of `shard` is charged.
    pub fn cache_pinned_bytes(&self, shard: usize) -> i64 {
        self.cache_pinned_bytes
            .get(shard)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// The counters of `shard`'s read arena.
    pub fn arena(&self, shard: usize) -> Arc<ArenaStats> {
        self.arena
            .get(shard)
            .cloned()
            .unwrap_or_else(|| Arc::new(ArenaStats::default()))
    }

    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Relaxed);
    }

    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition. `extra` (the WAL's counters, the
    /// zone traffic, written with [`Exposition`] too) is appended as is.
    pub fn render(&self, extra: &str) -> String {
        let mut e = Exposition::new();
        e.single(
            "ferry_bytes_in_total",
            Kind::Counter,
            self.bytes_in.load(Relaxed),
        );
        e.single(
            "ferry_bytes_out_total",
            Kind::Counter,
            self.bytes_out.load(Relaxed),
        );
        per_shard(&mut e, "ferry_connections", Kind::Gauge, &self.connections);
        e.single(
            "ferry_sasl_reauthentications_total",
            Kind::Counter,
            self.reauthentications.load(Relaxed),
        );
        e.family("ferry_authentication_failures_total", Kind::Counter);
        for ((listener, mechanism), n) in self.auth_failures.lock().iter() {
            e.sample(
                "ferry_authentication_failures_total",
                &[("listener", listener), ("mechanism", mechanism)],
                *n,
            );
        }
        e.family("ferry_requests_total", Kind::Counter);
        for a in APIS {
            let n = usize::try_from(a.key)
                .ok()
                .and_then(|k| self.requests.get(k))
                .map_or(0, |c| c.load(Relaxed));
            if n > 0 {
                e.sample("ferry_requests_total", &[("api", a.name)], n);
            }
        }
        e.family("ferry_errors_total", Kind::Counter);
        for (code, c) in self.errors.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                let name = ferry_protocol::error_code::ErrorCode(code as i16).name();
                e.sample(
                    "ferry_errors_total",
                    &[("code", &code.to_string()), ("name", name)],
                    n,
                );
            }
        }
        per_shard(&mut e, "ferry_cache_bytes", Kind::Gauge, &self.cache_bytes);
        per_shard(
            &mut e,
            "ferry_cache_pinned_bytes",
            Kind::Gauge,
            &self.cache_pinned_bytes,
        );
        self.render_arena(&mut e);
        let (h, m) = (
            self.cache_hits.load(Relaxed),
            self.cache_misses.load(Relaxed),
        );
        e.single("ferry_cache_hits_total", Kind::Counter, h);
        e.single("ferry_cache_misses_total", Kind::Counter, m);
        let ratio = if h + m == 0 {
            1.0
        } else {
            h as f64 / (h + m) as f64
        };
        e.single(
            "ferry_cache_hit_ratio",
            Kind::Gauge,
            format_args!("{ratio:.4}"),
        );
        per_shard(
            &mut e,
            "ferry_shard_queue_depth",
            Kind::Gauge,
            &self.queue_depth,
        );
        e.single(
            "ferry_unknown_zone_clients_total",
            Kind::Counter,
            self.unknown_zone_clients.load(Relaxed),
        );
        e.single(
            "ferry_misrouted_clients_total",
            Kind::Counter,
            self.misrouted_clients.load(Relaxed),
        );
        for (name, per_shard) in [("produce", &self.produce_us), ("fetch", &self.fetch_us)] {
            let mut h = latency_histogram();
            for published in per_shard {
                let _ = h.add(&**published.load());
            }
            let family = format!("ferry_{name}_latency_seconds");
            e.family(&family, Kind::Summary);
            for q in [0.5, 0.9, 0.99, 0.999] {
                let v = h.value_at_quantile(q) as f64 / 1e6;
                e.sample(
                    &family,
                    &[("quantile", &q.to_string())],
                    format_args!("{v:.6}"),
                );
            }
            e.sample(&format!("{family}_count"), &[], h.len());
        }
        let mut o = e.finish();
        o.push_str(extra);
        o
    }

    /// Each shard's read arena: bytes mapped (in use and free), bytes
    /// pinned (held by a read buffer or a view), chunks, and mappings made
    /// and unmapped.
    fn render_arena(&self, e: &mut Exposition) {
        type Get = fn(&ArenaStats) -> u64;
        let gauges: [(&str, Kind, Get); 6] = [
            ("ferry_arena_bytes", Kind::Gauge, |a| {
                a.mapped_bytes.load(Relaxed)
            }),
            ("ferry_arena_pinned_bytes", Kind::Gauge, |a| {
                a.in_use_bytes.load(Relaxed)
            }),
            ("ferry_arena_chunks", Kind::Gauge, |a| {
                a.chunks_mapped.load(Relaxed)
            }),
            ("ferry_arena_chunks_in_use", Kind::Gauge, |a| {
                a.chunks_in_use.load(Relaxed)
            }),
            ("ferry_arena_maps_total", Kind::Counter, |a| {
                a.maps_total.load(Relaxed)
            }),
            ("ferry_arena_unmaps_total", Kind::Counter, |a| {
                a.unmaps_total.load(Relaxed)
            }),
        ];
        for (name, kind, get) in gauges {
            e.family(name, kind);
            for (s, a) in self.arena.iter().enumerate() {
                e.sample(name, &[("shard", &s.to_string())], get(a));
            }
        }
    }
}

/// A per-shard counter on a cache line of its own.
fn padded() -> CachePadded<AtomicI64> {
    CachePadded::new(AtomicI64::new(0))
}

/// One sample per shard, labelled with the shard's index.
fn per_shard(e: &mut Exposition, name: &str, kind: Kind, values: &[CachePadded<AtomicI64>]) {
    e.family(name, kind);
    for (s, v) in values.iter().enumerate() {
        e.sample(name, &[("shard", &s.to_string())], v.load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_by_api_and_error_and_quantiles() {
        let m = Metrics::new(2);
        m.request(0);
        m.request(0);
        m.request(3);
        m.error(6);
        let mut shards = [ShardLatency::default(), ShardLatency::default()];
        for (i, s) in shards.iter_mut().enumerate() {
            s.produce_us(250_000);
            s.publish(&m, i);
        }
        // Recorded, not published yet: not seen.
        shards[0].produce_us(1);
        m.cache_bytes_add(1, 100);
        m.cache_pinned_bytes_add(1, 65536);
        m.arena(1).mapped_bytes.fetch_add(1 << 20, Relaxed);
        m.arena(1).in_use_bytes.fetch_add(65536, Relaxed);
        let text = m.render("ferry_wal_objects_total 3\n");
        assert!(
            text.contains("ferry_requests_total{api=\"Produce\"} 2"),
            "{text}"
        );
        assert!(text.contains("ferry_requests_total{api=\"Metadata\"} 1"));
        assert!(text.contains("ferry_errors_total{code=\"6\",name=\"NOT_LEADER_OR_FOLLOWER\"} 1"));
        assert!(text.contains("ferry_cache_bytes{shard=\"1\"} 100"));
        assert!(text.contains("ferry_cache_pinned_bytes{shard=\"1\"} 65536"));
        assert!(text.contains("ferry_arena_bytes{shard=\"1\"} 1048576"));
        assert!(text.contains("ferry_arena_pinned_bytes{shard=\"1\"} 65536"));
        assert!(text.contains("ferry_arena_bytes{shard=\"0\"} 0"));
        assert!(text.contains("ferry_produce_latency_seconds{quantile=\"0.99\"} 0.25"));
        assert!(
            text.contains("ferry_produce_latency_seconds_count 2\n"),
            "{text}"
        );
        assert!(text.ends_with("ferry_wal_objects_total 3\n"));
        // The sample recorded after the publish shows at the next one.
        shards[0].publish(&m, 0);
        let text = m.render("");
        assert!(
            text.contains("ferry_produce_latency_seconds_count 3\n"),
            "{text}"
        );
        assert!(text.contains("ferry_produce_latency_seconds{quantile=\"0.5\"} 0.25"));
    }
}
