//! What a sweep produces: the [`SweepReport`], its cost-latency frontier,
//! and its files under `perf/results/<timestamp>-<name>/`: `sweep.json`,
//! `sweep.csv`, `report.md` and the SVG plots of [`crate::plots`].

use crate::cost::{FerryUsage, MonthlyCost};
use crate::error::BenchError;
use crate::machine::Machine;
use crate::plots;
use crate::prom::Rates;
use crate::report::{PublishPaths, Report};
use crate::stats::{LatencySummary, Throughput};
use crate::sweep::{s3_params_text, GridPoint, Layout, Peer, SweepConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Said in every sweep's report: what it measures, what it does not, and
/// how the costs are made.
pub fn notes(layout: Layout) -> Vec<String> {
    let mut notes = vec![
        "Cross-zone bytes: the sum over the nodes of `ferry_cross_zone_bytes_total` (node-to-node \
         RPC bytes to and from other zones, counted once, by the caller; and bytes of clients of \
         another known zone), when the nodes export it; by kind from `ferry_zone_bytes_total`."
            .to_string(),
    ];
    if layout.zoned() {
        notes.push(format!(
            "Zones: each point runs `ferry dev --zones {} --nodes-per-zone {}`, every node in one \
             process on loopback, so a zone is a label: nothing here pays an inter-zone network's \
             latency, and the cross-zone path's extra cost is the handoff itself (the proxy's \
             handoff object, then the leader's WAL object). Producers and consumers are placed \
             round-robin over the zones, tagged `automq_az=<zone>`, with their zone's nodes as \
             bootstrap. A record is cross-zone when its partition's true leader (as a client of \
             unknown zone is shown it) is in another zone than its producer.",
            layout.zones, layout.nodes_per_zone
        ));
    } else {
        notes.push(
            "One zone: each point runs `ferry dev`, one node in one zone, so every latency here is \
             same-zone and nothing crosses zones; `--zones N` runs the sweep across zones."
                .to_string(),
        );
    }
    notes.push(
        "Ferry $/month: the PUT rate (the nodes' `ferry_s3_puts_total`, which leaves the handoff \
         writers out, plus the handoff objects counted in the bucket, one PUT each) and GET rate \
         measured in the window, the cross-zone bytes (see above), and storage of the produced \
         rate for the retention given. Kafka $/month: the same produced rate, RF=3 across 3 zones \
         with one consumer group (cross-zone transfer only)."
            .to_string(),
    );
    notes.push(
        "Rates come from `/metrics` samples of every node taken every 250 ms inside the measured \
         window; PUTs include metadata writes and retries."
            .to_string(),
    );
    notes.push(
        "Hedges/s: the nodes' `ferry_s3_hedges_total`, second PUTs and GETs sent when the first \
         was slow (one counter for both, 0 for a node without it). They are not in PUT/s or GET/s \
         and not priced."
            .to_string(),
    );
    notes
}

/// The figures of one load run, as the sweep keeps them.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub publish: LatencySummary,
    pub publish_throughput: Throughput,
    pub end_to_end: Option<LatencySummary>,
    pub records_acked: u64,
    /// Failed, unreported or never sent.
    pub records_lost: u64,
    /// Acknowledged but not consumed by the drain deadline.
    pub records_missing: u64,
    pub errors: BTreeMap<String, u64>,
    /// Publish latency to leaders in the producer's zone and in others,
    /// when clients were placed in zones.
    pub paths: Option<PublishPaths>,
}

impl RunSummary {
    pub fn of(r: &Report) -> RunSummary {
        let p = &r.publish;
        RunSummary {
            publish: p.latency,
            publish_throughput: p.throughput,
            end_to_end: r.end_to_end.as_ref().map(|e| e.latency),
            records_acked: p.records_acked,
            records_lost: p.records_failed + p.records_unreported + p.records_not_sent,
            records_missing: r.end_to_end.as_ref().map_or(0, |e| e.records_missing),
            errors: r.errors.clone(),
            paths: r.paths.clone(),
        }
    }
}

/// A grid point's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct PointMeasure {
    pub run: RunSummary,
    pub rates: Rates,
    /// Cross-zone bytes / produced bytes (record values acknowledged in the
    /// window); `None` when not measured.
    pub cross_zone_fraction: Option<f64>,
    pub usage: FerryUsage,
    pub cost: MonthlyCost,
    pub kafka_rf3_usd: f64,
    pub kafka_follower_fetching_usd: f64,
}

/// One grid point: measured, or the error that stopped it.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    pub point: GridPoint,
    pub measured: Option<PointMeasure>,
    pub error: Option<String>,
    /// No other point is as cheap and as fast, and better in one of the two.
    pub on_frontier: bool,
    /// Wall time of the point, node start to node stop.
    pub seconds: f64,
}

/// The workload against a peer broker.
#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    pub peer: Peer,
    pub measured: Option<RunSummary>,
    pub error: Option<String>,
    pub seconds: f64,
}

/// Everything a sweep measured (`sweep.json`).
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub tool: &'static str,
    pub version: &'static str,
    pub name: String,
    pub command: Vec<String>,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    pub machine: Machine,
    pub config: SweepConfig,
    pub peers: Vec<PeerResult>,
    pub points: Vec<PointResult>,
    pub notes: Vec<String>,
}

impl SweepReport {
    /// Points that failed.
    pub fn failures(&self) -> usize {
        self.points.iter().filter(|p| p.measured.is_none()).count()
            + self.peers.iter().filter(|p| p.measured.is_none()).count()
    }
}

/// The cost-latency frontier of `(cost, p99)` pairs (`None`: not measured):
/// a point is on it when no other point is at most as costly and at most as
/// slow, and strictly better in one of the two. Equal points are both on it.
pub fn frontier(points: &[Option<(f64, f64)>]) -> Vec<bool> {
    points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let Some((cost, p99)) = *p else {
                return false;
            };
            !points.iter().enumerate().any(|(j, q)| {
                matches!(*q, Some((c, l)) if j != i && c <= cost && l <= p99 && (c < cost || l < p99))
            })
        })
        .collect()
}

/// A CSV field, quoted when it holds a comma, a quote or a line break
/// (RFC 4180: quotes inside are doubled).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV columns, in order.
pub const CSV_HEADER: &str = "target,batch_interval_ms,max_bytes_in_batch,status,\
publish_p50_ms,publish_p90_ms,publish_p99_ms,publish_p999_ms,publish_max_ms,\
same_zone_p50_ms,same_zone_p99_ms,cross_zone_p50_ms,cross_zone_p99_ms,cross_same_p99_ratio,\
e2e_p50_ms,e2e_p99_ms,records_per_sec,mb_per_sec,records_lost,\
puts_per_sec,handoff_puts_per_sec,gets_per_sec,cross_zone_bytes_per_sec,cross_zone_fraction,\
cross_zone_measured,cross_zone_handoff_bytes_per_sec,cross_zone_replica_bytes_per_sec,\
cross_zone_forward_bytes_per_sec,cross_zone_client_bytes_per_sec,\
cross_zone_coordinator_bytes_per_sec,ferry_usd_per_month,kafka_rf3_usd_per_month,on_frontier,error,\
e2e_p999_ms,hedges_per_sec";

/// The kinds of `ferry_zone_bytes_total` the CSV has a column for (the JSON
/// has every kind).
pub const CSV_KINDS: [&str; 5] = ["handoff", "replica", "forward", "client", "coordinator"];

/// Columns of a grid point that a peer leaves empty.
const FERRY_COLUMNS: usize = 13;

fn f3(x: f64) -> String {
    format!("{x:.3}")
}

fn run_columns(run: Option<&RunSummary>) -> Vec<String> {
    match run {
        Some(r) => {
            let p = &r.publish;
            let mut cells = vec![
                f3(p.p50_ms),
                f3(p.p90_ms),
                f3(p.p99_ms),
                f3(p.p999_ms),
                f3(p.max_ms),
            ];
            match &r.paths {
                Some(paths) => cells.extend([
                    f3(paths.same_zone.p50_ms),
                    f3(paths.same_zone.p99_ms),
                    f3(paths.cross_zone.p50_ms),
                    f3(paths.cross_zone.p99_ms),
                    paths.cross_same_p99_ratio.map(f3).unwrap_or_default(),
                ]),
                None => cells.extend(vec![String::new(); 5]),
            }
            cells.extend([
                r.end_to_end.map(|e| f3(e.p50_ms)).unwrap_or_default(),
                r.end_to_end.map(|e| f3(e.p99_ms)).unwrap_or_default(),
                format!("{:.1}", r.publish_throughput.records_per_sec),
                f3(r.publish_throughput.mb_per_sec),
                r.records_lost.to_string(),
            ]);
            cells
        }
        None => vec![String::new(); 15],
    }
}

/// The end-to-end p99.9 cell (added after the first columns, so at the end).
fn e2e_p999(run: Option<&RunSummary>) -> String {
    run.and_then(|r| r.end_to_end)
        .map(|e| f3(e.p999_ms))
        .unwrap_or_default()
}

/// One line per grid point, then one per peer (whose S3 columns are empty).
pub fn to_csv(report: &SweepReport) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let mut line = |cells: Vec<String>| {
        let cells: Vec<String> = cells.iter().map(|c| csv_field(c)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    };
    for p in &report.points {
        let m = p.measured.as_ref();
        let mut cells = vec![
            "ferry".to_string(),
            p.point.batch_interval_ms.to_string(),
            p.point.max_bytes_in_batch.to_string(),
            if m.is_some() { "ok" } else { "failed" }.to_string(),
        ];
        cells.extend(run_columns(m.map(|m| &m.run)));
        match m {
            Some(m) => {
                cells.extend([
                    f3(m.rates.puts_per_sec),
                    f3(m.rates.handoff_puts_per_sec),
                    f3(m.rates.gets_per_sec),
                    f3(m.rates.cross_zone_bytes_per_sec),
                    m.cross_zone_fraction
                        .map(|f| format!("{f:.6}"))
                        .unwrap_or_default(),
                    m.rates.cross_zone_measured.to_string(),
                ]);
                cells.extend(CSV_KINDS.iter().map(|k| {
                    f3(m.rates
                        .cross_zone_by_kind_per_sec
                        .get(*k)
                        .copied()
                        .unwrap_or(0.0))
                }));
                cells.extend([
                    format!("{:.2}", m.cost.total_usd),
                    format!("{:.2}", m.kafka_rf3_usd),
                ]);
            }
            None => cells.extend(vec![String::new(); FERRY_COLUMNS]),
        }
        cells.push(p.on_frontier.to_string());
        cells.push(p.error.clone().unwrap_or_default());
        cells.push(e2e_p999(m.map(|m| &m.run)));
        cells.push(m.map(|m| f3(m.rates.hedges_per_sec)).unwrap_or_default());
        line(cells);
    }
    for peer in &report.peers {
        let mut cells = vec![
            peer.peer.name.clone(),
            String::new(),
            String::new(),
            if peer.measured.is_some() {
                "ok"
            } else {
                "failed"
            }
            .to_string(),
        ];
        cells.extend(run_columns(peer.measured.as_ref()));
        cells.extend(vec![String::new(); FERRY_COLUMNS]);
        cells.push("false".to_string());
        cells.push(peer.error.clone().unwrap_or_default());
        cells.push(e2e_p999(peer.measured.as_ref()));
        cells.push(String::new());
        line(cells);
    }
    out
}

/// `20251124T160000Z` for a Unix time in milliseconds.
pub fn timestamp(unix_ms: u64) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || unix_ms.to_string(),
            |t| t.format("%Y%m%dT%H%M%SZ").to_string(),
        )
}

fn date(unix_ms: u64) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || unix_ms.to_string(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

/// The command line as one shell-ish string.
fn command_text(command: &[String]) -> String {
    command
        .iter()
        .map(|a| {
            if a.is_empty() || a.contains([' ', '&', '?', '"', '\'', '$', ';']) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(x: f64) -> String {
    format!("{x:.1}")
}

/// The Markdown report; `plots` are the SVG file names beside it.
pub fn to_markdown(report: &SweepReport, plots: &[(&str, &str)]) -> String {
    let c = &report.config;
    let w = &c.workload;
    let m = &report.machine;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Sweep `{}`: batchInterval x maxBytesInBatch\n",
        report.name
    );
    let _ = writeln!(
        o,
        "- Date: {} ({:.0} s)",
        date(report.started_unix_ms),
        report
            .finished_unix_ms
            .saturating_sub(report.started_unix_ms) as f64
            / 1e3
    );
    let _ = writeln!(o, "- Command: `{}`", command_text(&report.command));
    let _ = writeln!(
        o,
        "- Machine: {} ({} cores usable, {} logical), {}, kernel {}, {:.1} GiB memory, host `{}`",
        m.cpu_model,
        m.cores,
        m.logical_cpus,
        m.os,
        m.kernel,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.hostname
    );
    let _ = writeln!(
        o,
        "- Load generator: ferry-bench {} with librdkafka {}, in the same process as the sweep, on the same machine as the broker",
        report.version, m.librdkafka
    );
    if c.layout.zoned() {
        let _ = writeln!(
            o,
            "- Broker: `{} dev --zones {} --nodes-per-zone {}`, {} node(s) in zones az1..az{} in one process, a fresh local-directory bucket per point; the batch settings go to the WAL (`s3.wal.path`) and the handoff (`automq.zonerouter.channels`)",
            c.ferry.display(),
            c.layout.zones,
            c.layout.nodes_per_zone,
            c.layout.nodes(),
            c.layout.zones
        );
    } else {
        let _ = writeln!(
            o,
            "- Broker: `{} dev`, one node in one zone, a fresh local-directory bucket per point",
            c.ferry.display()
        );
    }
    match &c.latency_model {
        Some(l) => {
            let _ = writeln!(
                o,
                "- S3 latency model: PUT p50 {} ms, p99 {} ms; GET p50 {} ms, p99 {} ms (log-normal); plus {} ms per MiB",
                l.put_p50_ms, l.put_p99_ms, l.get_p50_ms, l.get_p99_ms, l.ms_per_mib
            );
        }
        None => {
            let _ = writeln!(
                o,
                "- S3 latency model: off (a bare local directory: every point looks alike)"
            );
        }
    }
    let _ = writeln!(
        o,
        "- More bucket URI parameters (`--s3-params`, on the WAL and handoff URIs): {}",
        if c.s3_params.is_empty() {
            "none".to_string()
        } else {
            format!("`{}`", s3_params_text(&c.s3_params))
        }
    );
    let _ = writeln!(
        o,
        "- Workload: {} records/s ({:.2} MB/s) of {} B, acks={}, {} producer(s), {} consumer(s), {} partitions, linger {} ms, {} s warm-up + {} s measured per point",
        w.rate_per_sec,
        w.rate_per_sec * w.record_bytes as f64 / 1e6,
        w.record_bytes,
        w.acks.as_config(),
        w.producers,
        w.consumers,
        w.partitions,
        w.linger_ms,
        w.warmup_secs,
        w.duration_secs
    );
    let p = &c.prices;
    let _ = writeln!(
        o,
        "- Prices: PUT ${}/1000, GET ${}/1000, cross-zone ${}/GB each way, storage ${}/GB-month, {} h/month; retention {} h",
        p.s3_put_usd_per_1000,
        p.s3_get_usd_per_1000,
        p.cross_zone_usd_per_gb_each_way,
        p.storage_usd_per_gb_month,
        p.hours_per_month,
        c.retention_hours
    );

    let _ = writeln!(o, "\n## Points\n");
    let _ = writeln!(
        o,
        "Latency in ms, publish = intended send to acknowledgement (acks={}), e2e = to consumer receipt. \
         `*` marks the cost-latency frontier (publish p99 against Ferry $/month).\n",
        w.acks.as_config()
    );
    let _ = writeln!(
        o,
        "| batchInterval | maxBytesInBatch | publish p50 | p99 | p99.9 | e2e p50 | e2e p99 | e2e p99.9 | MB/s | PUT/s | GET/s | hedges/s | cross-zone B/s | Ferry $/month | Kafka RF=3 $/month | frontier |"
    );
    let _ = writeln!(
        o,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |"
    );
    for pt in &report.points {
        let head = format!(
            "| {} ms | {} MiB",
            pt.point.batch_interval_ms,
            pt.point.max_mib()
        );
        match &pt.measured {
            Some(mm) => {
                let r = &mm.run;
                let e2e = |f: fn(&LatencySummary) -> f64| {
                    r.end_to_end.as_ref().map_or("-".into(), |e| ms(f(e)))
                };
                let _ = writeln!(
                    o,
                    "{head} | {} | {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {} | {:.2} | {:.2} | {} |",
                    ms(r.publish.p50_ms),
                    ms(r.publish.p99_ms),
                    ms(r.publish.p999_ms),
                    e2e(|e| e.p50_ms),
                    e2e(|e| e.p99_ms),
                    e2e(|e| e.p999_ms),
                    r.publish_throughput.mb_per_sec,
                    mm.rates.puts_per_sec,
                    mm.rates.gets_per_sec,
                    mm.rates.hedges_per_sec,
                    if mm.rates.cross_zone_measured {
                        format!("{:.0}", mm.rates.cross_zone_bytes_per_sec)
                    } else {
                        "0 (not measured)".to_string()
                    },
                    mm.cost.total_usd,
                    mm.kafka_rf3_usd,
                    if pt.on_frontier { "*" } else { "" }
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "{head} | failed: {} | | | | | | | | | | | | | |",
                    pt.error
                        .as_deref()
                        .unwrap_or("?")
                        .lines()
                        .next()
                        .unwrap_or("?")
                        .replace('|', "/")
                );
            }
        }
    }
    let lost: u64 = report
        .points
        .iter()
        .filter_map(|p| p.measured.as_ref())
        .map(|m| m.run.records_lost + m.run.records_missing)
        .sum();
    if lost > 0 {
        let _ = writeln!(
            o,
            "\nWarning: {lost} records were lost or never consumed over the points (see sweep.json)."
        );
    }

    if c.layout.zoned() {
        zones_section(&mut o, report);
    }

    let on: Vec<String> = report
        .points
        .iter()
        .filter(|p| p.on_frontier)
        .filter_map(|p| {
            p.measured.as_ref().map(|m| {
                format!(
                    "{} (p99 {} ms, ${:.2}/month)",
                    p.point.label(),
                    ms(m.run.publish.p99_ms),
                    m.cost.total_usd
                )
            })
        })
        .collect();
    let _ = writeln!(o, "\n## Cost-latency frontier\n");
    if on.is_empty() {
        let _ = writeln!(o, "No point was measured.");
    } else {
        let _ = writeln!(
            o,
            "No other point is both cheaper and faster (publish p99) than these:\n"
        );
        for f in on {
            let _ = writeln!(o, "- {f}");
        }
    }

    if !report.peers.is_empty() {
        let _ = writeln!(o, "\n## Peers: the same workload, same run\n");
        let _ = writeln!(
            o,
            "| target | publish p50 | p99 | p99.9 | e2e p99 | e2e p99.9 | MB/s | lost |"
        );
        let _ = writeln!(
            o,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for peer in &report.peers {
            match &peer.measured {
                Some(r) => {
                    let _ = writeln!(
                        o,
                        "| {} ({}) | {} | {} | {} | {} | {} | {:.2} | {} |",
                        peer.peer.name,
                        peer.peer.bootstrap,
                        ms(r.publish.p50_ms),
                        ms(r.publish.p99_ms),
                        ms(r.publish.p999_ms),
                        r.end_to_end.as_ref().map_or("-".into(), |e| ms(e.p99_ms)),
                        r.end_to_end.as_ref().map_or("-".into(), |e| ms(e.p999_ms)),
                        r.publish_throughput.mb_per_sec,
                        r.records_lost
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        "| {} ({}) | failed: {} | | | | | | |",
                        peer.peer.name,
                        peer.peer.bootstrap,
                        peer.error.as_deref().unwrap_or("?").replace('|', "/")
                    );
                }
            }
        }
        for peer in &report.peers {
            let Some(pr) = &peer.measured else { continue };
            let _ = writeln!(
                o,
                "\nFerry / {}, per point (below 1: Ferry lower; latency ratios of the publish percentiles, throughput of MB/s):\n",
                peer.peer.name
            );
            let _ = writeln!(o, "| point | p50 ratio | p99 ratio | MB/s ratio |");
            let _ = writeln!(o, "| --- | ---: | ---: | ---: |");
            for pt in &report.points {
                let Some(mm) = &pt.measured else { continue };
                let ratio = |a: f64, b: f64| {
                    if b > 0.0 {
                        format!("{:.2}", a / b)
                    } else {
                        "-".into()
                    }
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} |",
                    pt.point.label(),
                    ratio(mm.run.publish.p50_ms, pr.publish.p50_ms),
                    ratio(mm.run.publish.p99_ms, pr.publish.p99_ms),
                    ratio(
                        mm.run.publish_throughput.mb_per_sec,
                        pr.publish_throughput.mb_per_sec
                    )
                );
            }
        }
    }

    if !plots.is_empty() {
        let _ = writeln!(o, "\n## Plots\n");
        for (file, title) in plots {
            let _ = writeln!(o, "![{title}]({file})\n");
        }
    }
    let _ = writeln!(o, "## Notes\n");
    for n in &report.notes {
        let _ = writeln!(o, "- {n}");
    }
    o
}

/// `## Zones`: each point's same-zone and cross-zone publish latency, and
/// its cross-zone bytes in all, as a share of the produced bytes, and by
/// kind.
fn zones_section(o: &mut String, report: &SweepReport) {
    let _ = writeln!(o, "\n## Zones\n");
    let _ = writeln!(
        o,
        "Publish latency in ms by path: same zone = the partition's leader is in the producer's zone; \
         cross zone = it is in another zone (through the proxy in the producer's zone and a handoff \
         object). Goal: cross/same p99 <= 1.25. Cross-zone bytes per second over the measured \
         window, summed over the nodes, in all, as % of the produced bytes, and by kind; handoff \
         PUT/s = handoff objects written per second.\n"
    );
    let _ = writeln!(
        o,
        "| batchInterval | maxBytesInBatch | same p50 | same p99 | cross p50 | cross p99 | cross/same p99 | <= 1.25 | cross-zone B/s | % of produced | handoff B/s | replica B/s | forward B/s | client B/s | handoff PUT/s |"
    );
    let _ = writeln!(
        o,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for pt in &report.points {
        let Some(m) = &pt.measured else { continue };
        let (same50, same99, cross50, cross99, ratio, met) = match &m.run.paths {
            Some(p) => (
                ms(p.same_zone.p50_ms),
                ms(p.same_zone.p99_ms),
                ms(p.cross_zone.p50_ms),
                ms(p.cross_zone.p99_ms),
                p.cross_same_p99_ratio
                    .map_or("-".into(), |r| format!("{r:.2}")),
                p.cross_same_p99_ratio
                    .map_or("-", |r| if r <= 1.25 { "yes" } else { "NO" }),
            ),
            None => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-",
            ),
        };
        let kind = |k: &str| {
            format!(
                "{:.0}",
                m.rates
                    .cross_zone_by_kind_per_sec
                    .get(k)
                    .copied()
                    .unwrap_or(0.0)
            )
        };
        let (bytes, share) = if m.rates.cross_zone_measured {
            (
                format!("{:.0}", m.rates.cross_zone_bytes_per_sec),
                m.cross_zone_fraction
                    .map_or("-".into(), |f| format!("{:.3}%", f * 100.0)),
            )
        } else {
            ("not measured".into(), "-".into())
        };
        let _ = writeln!(
            o,
            "| {} ms | {} MiB | {same50} | {same99} | {cross50} | {cross99} | {ratio} | {met} | {bytes} | {share} | {} | {} | {} | {} | {:.1} |",
            pt.point.batch_interval_ms,
            pt.point.max_mib(),
            kind("handoff"),
            kind("replica"),
            kind("forward"),
            kind("client"),
            m.rates.handoff_puts_per_sec
        );
    }
    let moved: Vec<String> = report
        .points
        .iter()
        .filter(|p| {
            p.measured
                .as_ref()
                .and_then(|m| m.run.paths.as_ref())
                .is_some_and(|p| p.leaders_moved != Some(false))
        })
        .map(|p| p.point.label())
        .collect();
    if !moved.is_empty() {
        let _ = writeln!(
            o,
            "\nWarning: leaders moved, or could not be read again, during {}; their split follows the leaders before the load.",
            moved.join(", ")
        );
    }
    let unknown: u64 = report
        .points
        .iter()
        .filter_map(|p| p.measured.as_ref()?.run.paths.as_ref())
        .map(|p| p.unknown_zone_records)
        .sum();
    if unknown > 0 {
        let _ = writeln!(
            o,
            "\nNote: {unknown} measured records went to leaders of unknown zone and are in neither path."
        );
    }
}

/// `out_dir/<timestamp>-<name>`.
pub fn results_dir(out_dir: &Path, name: &str, unix_ms: u64) -> PathBuf {
    out_dir.join(format!("{}-{name}", timestamp(unix_ms)))
}

fn write(path: PathBuf, text: &str) -> Result<(), BenchError> {
    std::fs::write(&path, text).map_err(|source| BenchError::Io {
        op: "writing",
        path,
        source,
    })
}

/// Writes `sweep.json`, `sweep.csv`, the plots and `report.md` into a new
/// results directory; returns it.
pub fn write_all(report: &SweepReport) -> Result<PathBuf, BenchError> {
    let dir = results_dir(&report.config.out_dir, &report.name, report.started_unix_ms);
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Io {
        op: "creating",
        path: dir.clone(),
        source,
    })?;
    let mut json = serde_json::to_string_pretty(report)?;
    json.push('\n');
    write(dir.join("sweep.json"), &json)?;
    write(dir.join("sweep.csv"), &to_csv(report))?;
    let plots = plots::draw_all(report, &dir)?;
    let names: Vec<(&str, &str)> = plots.iter().map(|(f, t)| (*f, *t)).collect();
    write(dir.join("report.md"), &to_markdown(report, &names))?;
    Ok(dir)
}

/// A small, fully known sweep report, for tests here and in `plots`.
#[cfg(test)]
pub(crate) fn sample_report() -> SweepReport {
    use crate::cli::{Acks, Compression, RunConfig};
    use crate::cost::Prices;
    use crate::sweep::{price, LatencyModel};

    let latency = |p50: f64, p99: f64| LatencySummary {
        count: 1_000,
        min_ms: 1.0,
        mean_ms: p50,
        p50_ms: p50,
        p90_ms: (p50 + p99) / 2.0,
        p99_ms: p99,
        p999_ms: p99 * 1.5,
        max_ms: p99 * 2.0,
    };
    let run = |p50: f64, p99: f64| RunSummary {
        publish: latency(p50, p99),
        // 50,000 records of 1,000 B in 10 s: 5,000 records/s, 5 MB/s.
        publish_throughput: Throughput::new(50_000, 50_000_000, 10.0),
        end_to_end: Some(latency(p50 + 2.0, p99 + 4.0)),
        records_acked: 50_000,
        records_lost: 0,
        records_missing: 0,
        errors: BTreeMap::new(),
        paths: None,
    };
    let rates = |puts: f64| Rates {
        puts_per_sec: puts,
        gets_per_sec: 0.0,
        cross_zone_bytes_per_sec: 0.0,
        cross_zone_measured: false,
        cross_zone_by_kind_per_sec: BTreeMap::new(),
        handoff_puts_per_sec: 0.0,
        hedges_per_sec: 0.0,
        seconds: 9.75,
    };
    let prices = Prices::default();
    let point = |ms: u64, mib: u64| GridPoint {
        batch_interval_ms: ms,
        max_bytes_in_batch: mib << 20,
    };
    SweepReport {
        tool: "ferry-bench sweep",
        version: "0.1.0",
        name: "test".into(),
        command: vec!["ferry-bench".into(), "sweep".into(), "--small".into()],
        started_unix_ms: 1_764_000_000_000,
        finished_unix_ms: 1_764_000_060_000,
        machine: Machine {
            hostname: "host".into(),
            cpu_model: "CPU".into(),
            cores: 2,
            logical_cpus: 2,
            kernel: "6.1".into(),
            os: "Debian".into(),
            memory_bytes: 1 << 30,
            librdkafka: "2.0.2".into(),
        },
        config: SweepConfig {
            workload: RunConfig {
                endpoints: Vec::new(),
                topic: "ferry-bench".into(),
                partitions: 6,
                replication_factor: 1,
                record_bytes: 1_000,
                rate_per_sec: 5_000.0,
                acks: Acks::All,
                producers: 1,
                consumers: 1,
                warmup_secs: 2,
                duration_secs: 10,
                drain_secs: 30,
                connect_timeout_secs: 10,
                linger_ms: 5,
                batch_bytes: 1_000_000,
                compression: Compression::None,
                client_config: Vec::new(),
                producer_config: Vec::new(),
                consumer_config: Vec::new(),
            },
            grid: vec![point(50, 1), point(250, 1), point(50, 8)],
            layout: Layout::ONE_NODE,
            latency_model: Some(LatencyModel {
                put_p50_ms: 50.0,
                put_p99_ms: 300.0,
                get_p50_ms: 20.0,
                get_p99_ms: 100.0,
                ms_per_mib: 20.0,
            }),
            s3_params: Vec::new(),
            peers: vec![Peer {
                name: "tansu".into(),
                bootstrap: "127.0.0.1:9093".into(),
            }],
            ferry: PathBuf::from("target/release/ferry"),
            work_dir: PathBuf::from("/tmp"),
            out_dir: PathBuf::from("perf/results"),
            name: "test".into(),
            prices,
            retention_hours: 24.0,
            start_timeout_secs: 30,
        },
        peers: vec![PeerResult {
            peer: Peer {
                name: "tansu".into(),
                bootstrap: "127.0.0.1:9093".into(),
            },
            measured: Some(run(5.0, 20.0)),
            error: None,
            seconds: 13.0,
        }],
        points: vec![
            PointResult {
                point: point(50, 1),
                measured: Some(price(&prices, run(90.0, 400.0), rates(20.0), 24.0)),
                error: None,
                on_frontier: false,
                seconds: 14.0,
            },
            PointResult {
                point: point(250, 1),
                measured: Some(price(&prices, run(210.0, 600.0), rates(4.0), 24.0)),
                error: None,
                on_frontier: true,
                seconds: 14.0,
            },
            PointResult {
                point: point(50, 8),
                measured: None,
                error: Some("ferry node (start): exited, \"port\" in use".into()),
                on_frontier: false,
                seconds: 1.0,
            },
        ],
        notes: notes(Layout::ONE_NODE),
    }
}

/// [`sample_report`] run across 3 zones of one node: its first point
/// (50 ms / 1 MiB, publish p50 90 / p99 400 ms, 5 MB/s) has same-zone p50
/// 80 / p99 300 ms and cross-zone p50 120 / p99 360 ms, 20 WAL PUT/s and 12
/// handoff objects/s, 2.5 hedges/s, and 50,000 B/s across zones: handoff
/// 40,000, replica 6,000, forward 1,000, client 3,000; with
/// `--s3-params putLatencyP999Ms=1500&slowDownRate=0.01`.
#[cfg(test)]
pub(crate) fn sample_zoned_report() -> SweepReport {
    use crate::cost::Prices;
    use crate::report::PartitionLeader;
    use crate::sweep::price;

    let mut report = sample_report();
    let layout = Layout {
        zones: 3,
        nodes_per_zone: 1,
    };
    report.config.layout = layout;
    report.config.s3_params = vec![
        ("putLatencyP999Ms".to_string(), "1500".to_string()),
        ("slowDownRate".to_string(), "0.01".to_string()),
    ];
    report.notes = notes(layout);
    let summary = |p50: f64, p99: f64, count: u64| LatencySummary {
        count,
        min_ms: 1.0,
        mean_ms: p50,
        p50_ms: p50,
        p90_ms: p99,
        p99_ms: p99,
        p999_ms: p99,
        max_ms: p99,
    };
    let Some(first) = report.points[0].measured.clone() else {
        unreachable!("the sample's first point is measured")
    };
    let mut run = first.run;
    run.paths = Some(PublishPaths {
        same_zone: summary(80.0, 300.0, 300),
        cross_zone: summary(120.0, 360.0, 700),
        unknown_zone_records: 0,
        cross_same_p99_ratio: Some(360.0 / 300.0),
        leaders: vec![PartitionLeader {
            partition: 0,
            leader: 1,
            address: "127.0.0.1:9093".into(),
            zone: Some("az2".into()),
        }],
        leaders_moved: Some(false),
    });
    let rates = Rates {
        puts_per_sec: 20.0,
        gets_per_sec: 0.0,
        cross_zone_bytes_per_sec: 50_000.0,
        cross_zone_measured: true,
        cross_zone_by_kind_per_sec: [
            ("client", 3_000.0),
            ("forward", 1_000.0),
            ("handoff", 40_000.0),
            ("replica", 6_000.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        handoff_puts_per_sec: 12.0,
        hedges_per_sec: 2.5,
        seconds: 9.75,
    };
    report.points[0].measured = Some(price(&Prices::default(), run, rates, 24.0));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frontier_keeps_what_nothing_beats_on_both() {
        // (cost $, p99 ms):
        //   0: (10, 500)  cheapest: on it
        //   1: (20, 300)  on it: only 0 is cheaper, and it is slower
        //   2: (25, 300)  beaten by 1 (cheaper, as fast)
        //   3: (40, 100)  fastest: on it
        //   4: (40, 100)  equal to 3: both stay
        //   5: not measured: never on it
        //   6: (30, 350)  beaten by 1 (cheaper and faster)
        let points = [
            Some((10.0, 500.0)),
            Some((20.0, 300.0)),
            Some((25.0, 300.0)),
            Some((40.0, 100.0)),
            Some((40.0, 100.0)),
            None,
            Some((30.0, 350.0)),
        ];
        assert_eq!(
            frontier(&points),
            [true, true, false, true, true, false, false]
        );
        assert_eq!(frontier(&[]), Vec::<bool>::new());
        assert_eq!(frontier(&[Some((1.0, 1.0))]), [true]);
    }

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("ok"), "ok");
        assert_eq!(csv_field("12.500"), "12.500");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn timestamps_name_results_in_utc() {
        // 1,764,000,000 s = 20,416 days + 57,600 s. Day 20,089 is
        // 2025-01-01 (55 years, 14 of them leap); day 327 of 2025 is
        // 24 November (304 days to the end of October); 57,600 s = 16:00.
        assert_eq!(timestamp(1_764_000_000_000), "20251124T160000Z");
        assert_eq!(timestamp(0), "19700101T000000Z");
        assert_eq!(
            results_dir(Path::new("perf/results"), "quick", 0),
            Path::new("perf/results/19700101T000000Z-quick")
        );
    }

    #[test]
    fn shell_quoting_of_the_command() {
        let c = [
            "ferry-bench".to_string(),
            "sweep".to_string(),
            "--name".to_string(),
            "a b".to_string(),
            "it's".to_string(),
        ];
        assert_eq!(
            command_text(&c),
            "ferry-bench sweep --name 'a b' 'it'\\''s'"
        );
    }
    #[test]
    fn the_csv_has_one_line_per_point_and_peer_with_hand_worked_numbers() {
        // Point 50 ms / 1 MiB: 20 PUT/s -> $262.80 + storage 5e6 B/s x 86,400 s
        // = 432 GB x $0.023 = $9.936 -> $272.736, printed $272.74. Kafka RF=3
        // at 5 MB/s: $700.80. Point 250 ms: 4 PUT/s = $52.56 + $9.936 =
        // $62.496 -> $62.50. The failed point's error holds a comma and
        // quotes, so it is quoted with its quotes doubled. The peer has no
        // S3 columns.
        // One zone: the path and cross-zone columns are empty or 0.
        let csv = to_csv(&sample_report());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 5, "{csv}");
        assert_eq!(lines[0], CSV_HEADER);
        // The end-to-end p99.9 (1.5 x its p99 of 404 and 604 ms) and the
        // hedges come after the error: the columns added last.
        assert_eq!(lines[0].split(',').count(), 36);
        assert!(lines[0].ends_with(",error,e2e_p999_ms,hedges_per_sec"));
        assert_eq!(
            lines[1],
            "ferry,50,1048576,ok,90.000,245.000,400.000,600.000,800.000,,,,,,92.000,404.000,\
             5000.0,5.000,0,20.000,0.000,0.000,0.000,,false,0.000,0.000,0.000,0.000,0.000,\
             272.74,700.80,false,,606.000,0.000"
        );
        assert_eq!(
            lines[2],
            "ferry,250,1048576,ok,210.000,405.000,600.000,900.000,1200.000,,,,,,212.000,604.000,\
             5000.0,5.000,0,4.000,0.000,0.000,0.000,,false,0.000,0.000,0.000,0.000,0.000,\
             62.50,700.80,true,,906.000,0.000"
        );
        assert_eq!(
            lines[3],
            format!(
                "ferry,50,8388608,failed{},false,\
                 \"ferry node (start): exited, \"\"port\"\" in use\",,",
                ",".repeat(28)
            )
        );
        // The peer: end-to-end p99.9 1.5 x 24 ms, no hedges (no S3).
        assert_eq!(
            lines[4],
            format!(
                "tansu,,,ok,5.000,12.500,20.000,30.000,40.000,,,,,,7.000,24.000,5000.0,5.000,0{},false,,36.000,",
                ",".repeat(13)
            )
        );
        // 36 cells; the failed point's error holds one comma of its own.
        for line in [lines[1], lines[2], lines[4]] {
            assert_eq!(line.matches(',').count(), 35, "{line}");
        }
        assert_eq!(lines[3].matches(',').count(), 36);
    }

    #[test]
    fn the_markdown_report_says_what_was_measured_and_what_was_not() {
        let md = to_markdown(&sample_report(), &[("latency.svg", "latency")]);
        assert!(md.contains("# Sweep `test`"), "{md}");
        assert!(md.contains("- Date: 2025-11-24 16:00 UTC (60 s)"), "{md}");
        assert!(
            md.contains("- Command: `ferry-bench sweep --small`"),
            "{md}"
        );
        assert!(
            md.contains("CPU (2 cores usable, 2 logical), Debian, kernel 6.1"),
            "{md}"
        );
        assert!(md.contains("PUT p50 50 ms, p99 300 ms"), "{md}");
        assert!(
            md.contains(
                "- More bucket URI parameters (`--s3-params`, on the WAL and handoff URIs): none"
            ),
            "{md}"
        );
        // 5,000 records/s of 1,000 B = 5.00 MB/s.
        assert!(md.contains("5000 records/s (5.00 MB/s) of 1000 B"), "{md}");
        assert!(
            md.contains("| 50 ms | 1 MiB | 90.0 | 400.0 | 600.0 | 92.0 | 404.0 | 606.0 | 5.00 | 20.0 | 0.0 | 0.0 | 0 (not measured) | 272.74 | 700.80 |  |"),
            "{md}"
        );
        assert!(md.contains("| 250 ms | 1 MiB | 210.0 | 600.0"), "{md}");
        assert!(
            md.contains("| 50 ms | 8 MiB | failed: ferry node (start)"),
            "{md}"
        );
        assert!(
            md.contains("- 250 ms / 1 MiB (p99 600.0 ms, $62.50/month)"),
            "{md}"
        );
        // Ratios against tansu: p50 90 / 5 = 18.00, p99 400 / 20 = 20.00,
        // MB/s 5 / 5 = 1.00.
        assert!(
            md.contains("| 50 ms / 1 MiB | 18.00 | 20.00 | 1.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| tansu (127.0.0.1:9093) | 5.0 | 20.0 | 30.0 | 24.0 | 36.0 | 5.00 | 0 |"),
            "{md}"
        );
        assert!(md.contains("![latency](latency.svg)"), "{md}");
        assert!(md.contains("ferry_cross_zone_bytes_total"), "{md}");
        assert!(md.contains("every latency here is same-zone"), "{md}");
        assert!(!md.contains("## Zones"), "{md}");
    }

    #[test]
    fn a_sweep_across_zones_reports_both_paths_and_its_cross_zone_bytes() {
        // The first point (see sample_zoned_report): cross/same p99 360 /
        // 300 = 1.20, met. 50,000 B/s of 5e6 B/s produced = 1.000%. Ferry:
        // (20 + 12) PUT/s x 2,628,000 s x $0.000005 = $420.48, storage
        // $9.936, cross-zone 50,000 x 2,628,000 = 131.4 GB x $0.02 = $2.628:
        // $433.044, printed 433.04.
        let report = sample_zoned_report();
        let csv = to_csv(&report);
        let line = csv.lines().nth(1).unwrap();
        assert_eq!(
            line,
            "ferry,50,1048576,ok,90.000,245.000,400.000,600.000,800.000,\
             80.000,300.000,120.000,360.000,1.200,92.000,404.000,5000.0,5.000,0,\
             20.000,12.000,0.000,50000.000,0.010000,true,\
             40000.000,6000.000,1000.000,3000.000,0.000,433.04,700.80,false,,606.000,2.500"
        );
        let md = to_markdown(&report, &[]);
        assert!(
            md.contains("dev --zones 3 --nodes-per-zone 1`, 3 node(s) in zones az1..az3"),
            "{md}"
        );
        assert!(md.contains("## Zones"), "{md}");
        assert!(
            md.contains("on the WAL and handoff URIs): `putLatencyP999Ms=1500&slowDownRate=0.01`"),
            "{md}"
        );
        assert!(
            md.contains("| 50 ms | 1 MiB | 90.0 | 400.0 | 600.0 | 92.0 | 404.0 | 606.0 | 5.00 | 20.0 | 0.0 | 2.5 | 50000 |"),
            "{md}"
        );
        assert!(
            md.contains("| 50 ms | 1 MiB | 80.0 | 300.0 | 120.0 | 360.0 | 1.20 | yes | 50000 | 1.000% | 40000 | 6000 | 1000 | 3000 | 12.0 |"),
            "{md}"
        );
        // The second point has no split: dashes, and 0 B/s not measured.
        assert!(
            md.contains("| 250 ms | 1 MiB | - | - | - | - | - | - | not measured | - | 0 | 0 | 0 | 0 | 0.0 |"),
            "{md}"
        );
        assert!(md.contains("| 433.04 | 700.80 |"), "{md}");
        assert!(md.contains("a zone is a label"), "{md}");
        assert!(!md.contains("every latency here is same-zone"), "{md}");
        let json = serde_json::to_value(&report).unwrap();
        let m = &json["points"][0]["measured"];
        assert_eq!(m["cross_zone_fraction"], 0.01);
        assert_eq!(m["run"]["paths"]["cross_zone"]["p99_ms"], 360.0);
        assert_eq!(
            m["rates"]["cross_zone_by_kind_per_sec"]["handoff"],
            40_000.0
        );
        assert_eq!(json["config"]["layout"]["zones"], 3);
        assert_eq!(m["rates"]["hedges_per_sec"], 2.5);
        assert_eq!(
            json["config"]["s3_params"],
            serde_json::json!([["putLatencyP999Ms", "1500"], ["slowDownRate", "0.01"]])
        );
    }

    #[test]
    fn every_file_is_written_into_a_new_results_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let mut report = sample_zoned_report();
        report.config.out_dir = tmp.path().to_path_buf();
        let dir = write_all(&report).unwrap();
        assert_eq!(dir, tmp.path().join("20251124T160000Z-test"));
        for f in [
            "sweep.json",
            "sweep.csv",
            "report.md",
            "latency.svg",
            "frontier.svg",
            "throughput.svg",
            "zones.svg",
        ] {
            let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
            assert!(len > 100, "{f}: {len} bytes");
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap())
                .unwrap();
        assert_eq!(json["points"][1]["on_frontier"], true);
        assert_eq!(json["points"][0]["measured"]["rates"]["puts_per_sec"], 20.0);
        assert_eq!(json["config"]["grid"][2]["max_bytes_in_batch"], 8_388_608);
    }
}
