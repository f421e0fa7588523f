//! What a run reports: the JSON written by `--json`, and the same as text.

use crate::cli::RunConfig;
use crate::cost::{self, FerryUsage, MonthlyCost, Prices};
use crate::machine::Machine;
use crate::stats::{LatencySummary, Throughput};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The result of one `ferry-bench run`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    /// The command line, as given.
    pub command: Vec<String>,
    pub run_id: u64,
    /// When the run's clock started, Unix milliseconds.
    pub started_unix_ms: u64,
    /// The measured window (after the warm-up), in Unix milliseconds.
    pub measured_window: MeasuredWindow,
    pub machine: Machine,
    pub config: RunConfig,
    /// Partitions of the topic as found or created.
    pub partitions: i32,
    /// Intended send to delivery report.
    pub publish: Publish,
    /// Intended send to consumer receipt; absent with `--consumers 0`.
    pub end_to_end: Option<EndToEnd>,
    /// By zone, when zones were given.
    pub zones: Option<ZoneLatencies>,
    /// Publish latency to leaders in the producer's zone and in other zones,
    /// when zones were given.
    pub paths: Option<PublishPaths>,
    /// Errors by message, with counts: delivery reports, sends, consumers.
    pub errors: BTreeMap<String, u64>,
}

/// When measurement started and ended, Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MeasuredWindow {
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
}

/// The producers' side.
#[derive(Debug, Clone, Serialize)]
pub struct Publish {
    /// Latency of records intended during the measured window.
    pub latency: LatencySummary,
    /// Records acknowledged during the measured window.
    pub throughput: Throughput,
    /// Records handed to librdkafka.
    pub records_sent: u64,
    pub records_acked: u64,
    /// Delivery reports with an error.
    pub records_failed: u64,
    /// Records the schedule had due but librdkafka refused (queue full until
    /// the end of the load, or an error).
    pub records_not_sent: u64,
    /// Sent records neither acknowledged nor failed by the drain deadline:
    /// `sent - acked - failed`.
    pub records_unreported: u64,
}

/// The consumers' side.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    pub latency: LatencySummary,
    /// Records received during the measured window.
    pub throughput: Throughput,
    /// Records of this run received.
    pub records_consumed: u64,
    /// Acknowledged records of this run not received by the drain deadline.
    pub records_missing: u64,
    /// Records on the topic from other runs or other writers, skipped.
    pub records_foreign: u64,
}

/// Latency by zone.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneLatencies {
    /// Publish latency by the producer's zone.
    pub publish: Vec<ZonePublish>,
    /// End-to-end latency by the producer's and the consumer's zone.
    pub end_to_end: Vec<ZonePair>,
}

/// The publish latency of one zone's producers.
#[derive(Debug, Clone, Serialize)]
pub struct ZonePublish {
    pub zone: String,
    pub latency: LatencySummary,
}

/// The end-to-end latency from one zone's producers to another's consumers.
#[derive(Debug, Clone, Serialize)]
pub struct ZonePair {
    pub producer_zone: String,
    pub consumer_zone: String,
    pub latency: LatencySummary,
}

/// Publish latency by the path a record took: to a partition whose leader
/// is in the producer's zone, or in another zone (the producer then talks
/// to the leader's proxy in its own zone, which hands the records off).
#[derive(Debug, Clone, Serialize)]
pub struct PublishPaths {
    pub same_zone: LatencySummary,
    pub cross_zone: LatencySummary,
    /// Measured records of untagged producers, or whose partition's leader
    /// is in no zone's bootstrap list: in neither path.
    pub unknown_zone_records: u64,
    /// Cross-zone p99 / same-zone p99 (the goal is at most 1.25); `None`
    /// when either path has no record.
    pub cross_same_p99_ratio: Option<f64>,
    /// Each partition's leader, as a client of unknown zone is shown it
    /// (Ferry shows such a client the true leaders), before the load.
    pub leaders: Vec<PartitionLeader>,
    /// Whether a partition's leader differed after the load (`None`: the
    /// second look failed). If so, the split follows the first look.
    pub leaders_moved: Option<bool>,
}

/// A partition's true leader and the zone its address is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLeader {
    pub partition: i32,
    pub leader: i32,
    /// `host:port` as the metadata gives it.
    pub address: String,
    /// The zone whose bootstrap list holds the address; `None` if none does.
    pub zone: Option<String>,
}

/// `cross / same` p99, when both paths have records.
pub fn p99_ratio(same: &LatencySummary, cross: &LatencySummary) -> Option<f64> {
    (same.count > 0 && cross.count > 0 && same.p99_ms > 0.0).then(|| cross.p99_ms / same.p99_ms)
}

fn latency_line(l: &LatencySummary) -> String {
    format!(
        "p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms ({} records)",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
    )
}

fn throughput_line(t: &Throughput) -> String {
    format!(
        "{:.0} records/s, {:.2} MB/s ({:.2} MiB/s)",
        t.records_per_sec, t.mb_per_sec, t.mib_per_sec
    )
}

impl Report {
    /// The report as text, for a terminal.
    pub fn render_text(&self) -> String {
        let c = &self.config;
        let m = &self.machine;
        let mut out = String::new();
        let rate = if c.rate_per_sec > 0.0 {
            format!("{} records/s", c.rate_per_sec)
        } else {
            "as fast as possible".to_string()
        };
        let _ = writeln!(
            out,
            "machine: {} ({} cores), {}, kernel {}, librdkafka {}",
            m.cpu_model, m.cores, m.os, m.kernel, m.librdkafka
        );
        let _ = writeln!(
            out,
            "workload: topic {} ({} partitions), {} producer(s), {} consumer(s), {} B records, {rate}, acks={}, linger {} ms, batch {} B, compression {}",
            c.topic,
            self.partitions,
            c.producers,
            c.consumers,
            c.record_bytes,
            c.acks.as_config(),
            c.linger_ms,
            c.batch_bytes,
            c.compression.as_config()
        );
        let _ = writeln!(
            out,
            "window: {} s warm-up, {} s measured, drain up to {} s",
            c.warmup_secs, c.duration_secs, c.drain_secs
        );
        let p = &self.publish;
        let _ = writeln!(out, "publish:    {}", throughput_line(&p.throughput));
        let _ = writeln!(out, "  latency   {}", latency_line(&p.latency));
        let _ = writeln!(
            out,
            "  records   sent {}, acked {}, failed {}, not sent {}, unreported {}",
            p.records_sent,
            p.records_acked,
            p.records_failed,
            p.records_not_sent,
            p.records_unreported
        );
        if let Some(e) = &self.end_to_end {
            let _ = writeln!(out, "end-to-end: {}", throughput_line(&e.throughput));
            let _ = writeln!(out, "  latency   {}", latency_line(&e.latency));
            let _ = writeln!(
                out,
                "  records   consumed {}, missing {}, foreign {}",
                e.records_consumed, e.records_missing, e.records_foreign
            );
        }
        if let Some(zones) = &self.zones {
            for z in &zones.publish {
                let _ = writeln!(out, "publish {}: {}", z.zone, latency_line(&z.latency));
            }
            for z in &zones.end_to_end {
                let _ = writeln!(
                    out,
                    "end-to-end {} -> {}: {}",
                    z.producer_zone,
                    z.consumer_zone,
                    latency_line(&z.latency)
                );
            }
        }
        if let Some(paths) = &self.paths {
            let _ = writeln!(
                out,
                "publish, leader in the producer's zone: {}",
                latency_line(&paths.same_zone)
            );
            let _ = writeln!(
                out,
                "publish, leader in another zone:       {}",
                latency_line(&paths.cross_zone)
            );
            let _ = writeln!(
                out,
                "  cross/same p99 {} (goal <= 1.25); {} records in neither (leader zone unknown)",
                paths
                    .cross_same_p99_ratio
                    .map_or("-".to_string(), |r| format!("{r:.2}")),
                paths.unknown_zone_records
            );
            if paths.leaders_moved != Some(false) {
                let _ = writeln!(
                    out,
                    "warning: leaders {} after the load; the split follows the leaders before it",
                    if paths.leaders_moved.is_some() {
                        "moved"
                    } else {
                        "could not be read again"
                    }
                );
            }
        }
        let lost = p.records_failed + p.records_unreported + p.records_not_sent;
        if lost > 0 {
            let _ = writeln!(
                out,
                "warning: {lost} records failed, went unreported or were not sent; the latencies above do not include them"
            );
        }
        if let Some(missing @ 1..) = self.end_to_end.as_ref().map(|e| e.records_missing) {
            let _ = writeln!(
                out,
                "warning: {missing} acknowledged records never reached a consumer by the drain deadline"
            );
        }
        for (error, count) in &self.errors {
            let _ = writeln!(out, "error x{count}: {error}");
        }
        out
    }
}

/// One batchInterval's handoff break-even.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BreakEven {
    pub batch_interval_ms: f64,
    pub bytes_per_sec: f64,
}

/// The result of `ferry-bench cost`.
#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    pub prices: Prices,
    pub produced_bytes_per_sec: f64,
    pub consumer_groups: f64,
    pub kafka_rf3: MonthlyCost,
    pub kafka_follower_fetching: MonthlyCost,
    pub ferry_usage: FerryUsage,
    pub ferry: MonthlyCost,
    pub handoff_break_even: Vec<BreakEven>,
}

impl CostReport {
    /// Prices the workload.
    pub fn new(
        prices: Prices,
        produced_bytes_per_sec: f64,
        consumer_groups: f64,
        ferry_usage: FerryUsage,
        batch_intervals_ms: &[f64],
    ) -> Self {
        CostReport {
            prices,
            produced_bytes_per_sec,
            consumer_groups,
            kafka_rf3: cost::kafka_rf3(&prices, produced_bytes_per_sec, consumer_groups),
            kafka_follower_fetching: cost::kafka_follower_fetching(&prices, produced_bytes_per_sec),
            ferry_usage,
            ferry: cost::ferry(&prices, &ferry_usage),
            handoff_break_even: batch_intervals_ms
                .iter()
                .map(|ms| BreakEven {
                    batch_interval_ms: *ms,
                    bytes_per_sec: cost::handoff_break_even_bytes_per_sec(&prices, ms / 1e3),
                })
                .collect(),
        }
    }

    /// The result as text.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "produced {:.3} MB/s, {} consumer group(s), {} h/month, cross-zone ${}/GB each way",
            self.produced_bytes_per_sec / 1e6,
            self.consumer_groups,
            self.prices.hours_per_month,
            self.prices.cross_zone_usd_per_gb_each_way
        );
        let row = |out: &mut String, name: &str, c: &MonthlyCost| {
            let _ = writeln!(
                out,
                "{name:<28} ${:>12.2}/month  (cross-zone {:.2}, PUT {:.2}, GET {:.2}, storage {:.2})",
                c.total_usd, c.cross_zone_usd, c.put_usd, c.get_usd, c.storage_usd
            );
        };
        row(&mut out, "Kafka RF=3, 3 zones", &self.kafka_rf3);
        row(
            &mut out,
            "Kafka, follower fetching",
            &self.kafka_follower_fetching,
        );
        row(&mut out, "Ferry (as measured)", &self.ferry);
        for b in &self.handoff_break_even {
            let _ = writeln!(
                out,
                "handoff break-even at batchInterval {} ms: {:.3} MB/s per stream",
                b.batch_interval_ms,
                b.bytes_per_sec / 1e6
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_report_uses_the_model() {
        // 1 MB/s: Kafka RF=3 $140.16, follower fetching $105.12 (see cost.rs);
        // break-even at 250 ms is 1 MB/s.
        let r = CostReport::new(
            Prices::default(),
            1e6,
            1.0,
            FerryUsage {
                puts_per_sec: 0.0,
                gets_per_sec: 0.0,
                cross_zone_bytes_per_sec: 0.0,
                stored_bytes: 0.0,
            },
            &[250.0],
        );
        assert!((r.kafka_rf3.total_usd - 140.16).abs() < 1e-9);
        assert!((r.kafka_follower_fetching.total_usd - 105.12).abs() < 1e-9);
        assert!((r.handoff_break_even[0].bytes_per_sec - 1e6).abs() < 1e-6);
        let text = r.render_text();
        assert!(text.contains("140.16"), "{text}");
        assert!(text.contains("batchInterval 250 ms: 1.000 MB/s"), "{text}");
    }
}
