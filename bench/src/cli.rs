//! The command line, and the checked run configuration it turns into.
//!
//! `ferry-bench run` drives a broker; `ferry-bench cost` prices a workload.
//! Parsing is clap's; [`RunArgs::into_config`] then checks every value and
//! names the flag when one is wrong.

use crate::cost::Prices;
use crate::error::BenchError;
use crate::payload::STAMP_BYTES;
use crate::sweep::{self, LatencyModel, Layout, Peer, SweepConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;

/// The largest record `--record-bytes` accepts (librdkafka's own default
/// `message.max.bytes` is 1,000,000).
pub const RECORD_BYTES_MAX: usize = 16 << 20;
/// The most producers or consumers one run starts (one thread each).
pub const CLIENTS_MAX: usize = 1_024;

/// Ferry's load generator and cost model.
#[derive(Debug, Parser)]
#[command(name = "ferry-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Produce and consume against a Kafka-compatible broker and report
    /// publish and end-to-end latency and throughput.
    Run(RunArgs),
    /// Price a workload per month: Kafka RF=3, Kafka with follower fetching,
    /// and Ferry from measured request rates; and the handoff break-even.
    Cost(CostArgs),
    /// Run the workload on a fresh `ferry dev` at every batchInterval x
    /// maxBytesInBatch point, with the S3 latency model, and once against
    /// each peer broker; write JSON, CSV, Markdown and SVG plots.
    // Boxed: by far the largest set of flags.
    Sweep(Box<SweepArgs>),
    /// Produce to one broker as fast as it takes, with the same pre-encoded
    /// request sent again and again: a load that costs the client almost no
    /// CPU, to measure the broker rather than the client.
    Blast(BlastArgs),
}

/// `ferry-bench blast`.
#[derive(Debug, Clone, Args)]
pub struct BlastArgs {
    /// The broker (which must lead every partition of the topic).
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: String,
    /// The topic; created if missing.
    #[arg(long, default_value = "ferry-blast")]
    pub topic: String,
    /// Partitions of the topic; every request carries one batch for each.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Bytes in each record value.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records in each partition's batch of a request.
    #[arg(long, default_value_t = 128)]
    pub batch_records: usize,
    /// Connections, each with its own writer and reader thread.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Requests outstanding per connection.
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Seconds before the measured window.
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 15)]
    pub duration_secs: u64,
    /// Seconds a request may wait for its response (also the produce timeout).
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

impl BlastArgs {
    /// Checks every value; the error names the flag.
    pub fn into_config(self) -> Result<crate::blast::BlastConfig, BenchError> {
        let bad = |flag: &'static str, expected: &str, got: String| BenchError::Flag {
            flag,
            reason: format!("expected {expected}, got {got}"),
        };
        if !(1..=10_000).contains(&self.partitions) {
            return Err(bad(
                "--partitions",
                "1 to 10000",
                self.partitions.to_string(),
            ));
        }
        if !(1..=RECORD_BYTES_MAX).contains(&self.record_bytes) {
            return Err(bad(
                "--record-bytes",
                "1 to 16777216",
                self.record_bytes.to_string(),
            ));
        }
        if !(1..=100_000).contains(&self.batch_records) {
            return Err(bad(
                "--batch-records",
                "1 to 100000",
                self.batch_records.to_string(),
            ));
        }
        let request_bytes =
            self.partitions as u64 * self.batch_records as u64 * self.record_bytes as u64;
        if request_bytes > 64 << 20 {
            return Err(bad(
                "--batch-records",
                "partitions x batch records x record bytes at most 64 MiB",
                format!("{request_bytes} B"),
            ));
        }
        if !(1..=CLIENTS_MAX).contains(&self.connections) {
            return Err(bad(
                "--connections",
                "1 to 1024",
                self.connections.to_string(),
            ));
        }
        if !(1..=1_024).contains(&self.in_flight) {
            return Err(bad("--in-flight", "1 to 1024", self.in_flight.to_string()));
        }
        if self.duration_secs == 0 {
            return Err(bad("--duration-secs", "at least 1", "0".into()));
        }
        if !(1..=3_600).contains(&self.timeout_secs) {
            return Err(bad(
                "--timeout-secs",
                "1 to 3600",
                self.timeout_secs.to_string(),
            ));
        }
        Ok(crate::blast::BlastConfig {
            bootstrap: self.bootstrap,
            topic: self.topic,
            partitions: self.partitions,
            record_bytes: self.record_bytes,
            batch_records: self.batch_records,
            connections: self.connections,
            in_flight: self.in_flight,
            warmup: std::time::Duration::from_secs(self.warmup_secs),
            duration: std::time::Duration::from_secs(self.duration_secs),
            timeout: std::time::Duration::from_secs(self.timeout_secs),
        })
    }
}

/// `acks` as librdkafka spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Acks {
    #[value(name = "0")]
    #[serde(rename = "0")]
    None,
    #[value(name = "1")]
    #[serde(rename = "1")]
    Leader,
    #[value(name = "all")]
    #[serde(rename = "all")]
    All,
}

impl Acks {
    /// The value of librdkafka's `acks`.
    pub fn as_config(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// librdkafka's `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The value of librdkafka's `compression.type`.
    pub fn as_config(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// `ferry-bench run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A broker to bootstrap from, with no zone tag. Repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Vec<String>,
    /// A zone and a broker in it. Clients are spread over the zones given, and
    /// each tags its client.id with `automq_az=NAME` (consumers also set
    /// client.rack). Repeatable.
    #[arg(long, value_name = "NAME=HOST:PORT")]
    pub zone: Vec<String>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// The workload of a run, wherever it is sent: shared by `run` and `sweep`.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// The topic; created if missing.
    #[arg(long, default_value = "ferry-bench")]
    pub topic: String,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Replication factor of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
    /// Bytes in each record value (at least 32, the stamp).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per second over all producers; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// acks for every producer.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Producers, one librdkafka client and one thread each.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Consumers, each assigned every n-th partition; 0 measures publish only.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Seconds after the load stops to wait for delivery reports and
    /// consumers; also librdkafka's message.timeout.ms.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// Seconds to wait for the broker when creating clients and the topic.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout_secs: u64,
    /// librdkafka linger.ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// librdkafka batch.size, in bytes.
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_bytes: u64,
    /// librdkafka compression.type.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// A librdkafka setting for every client (admin, producers, consumers),
    /// e.g. `security.protocol=SASL_SSL`. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub client_config: Vec<String>,
    /// Any other librdkafka producer setting. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub producer_config: Vec<String>,
    /// Any other librdkafka consumer setting. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub consumer_config: Vec<String>,
}

/// A broker address, with the zone its clients say they are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub zone: Option<String>,
    pub bootstrap: String,
}

impl Endpoint {
    /// The name this endpoint's clients are reported under.
    pub fn label(&self) -> &str {
        self.zone.as_deref().unwrap_or("untagged")
    }

    /// The `client.id` of the `index`-th client of `role` placed here: with a
    /// zone it starts with the `automq_az=<zone>` tag, as a URL query string.
    pub fn client_id(&self, role: &str, index: usize) -> String {
        match &self.zone {
            Some(zone) => format!("automq_az={zone}&ferry-bench-{role}-{index}"),
            None => format!("ferry-bench-{role}-{index}"),
        }
    }
}

/// A checked `run` configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunConfig {
    /// Clients are placed round-robin over these: client `i` uses
    /// `endpoints[i % endpoints.len()]`.
    pub endpoints: Vec<Endpoint>,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub record_bytes: usize,
    /// Records per second over all producers; 0 is as fast as possible.
    pub rate_per_sec: f64,
    pub acks: Acks,
    pub producers: usize,
    pub consumers: usize,
    pub warmup_secs: u64,
    pub duration_secs: u64,
    pub drain_secs: u64,
    pub connect_timeout_secs: u64,
    pub linger_ms: u64,
    pub batch_bytes: u64,
    pub compression: Compression,
    pub client_config: Vec<(String, String)>,
    pub producer_config: Vec<(String, String)>,
    pub consumer_config: Vec<(String, String)>,
}

fn key_values(flag: &'static str, items: &[String]) -> Result<Vec<(String, String)>, BenchError> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(BenchError::flag(
                flag,
                format!("expected KEY=VALUE, got {item:?}"),
            )),
        })
        .collect()
}

fn check_address(flag: &'static str, address: &str) -> Result<(), BenchError> {
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(BenchError::flag(
            flag,
            format!("expected HOST:PORT, got {address:?}"),
        )),
    }
}

/// Checks `--s3-params`: `K=V` pairs joined by `&`, each key ASCII letters
/// and digits, each value non-empty and free of `&`, `?`, `#`, whitespace
/// and control characters (it goes into a URI as it is), no key twice and
/// none of `taken` (the keys the sweep sets itself).
fn s3_params(text: &str, taken: &[&str]) -> Result<Vec<(String, String)>, BenchError> {
    let bad = |reason: String| BenchError::flag("--s3-params", reason);
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in text.split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(bad(format!(
                "expected KEY=VALUE pairs joined by '&', got {pair:?} in {text:?}"
            )));
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad(format!(
                "keys are ASCII letters and digits, got {key:?} in {text:?}"
            )));
        }
        if value.is_empty()
            || value
                .chars()
                .any(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
        {
            return Err(bad(format!(
                "values are non-empty, without '&', '?', '#' or whitespace, got {key}={value:?}"
            )));
        }
        if taken.contains(&key) {
            return Err(bad(format!(
                "{key} is set by the sweep itself (the grid or the latency model's flags)"
            )));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(bad(format!("{key} is given twice in {text:?}")));
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// Checks `NAME=HOST:PORT` zone placements and plain bootstrap addresses.
fn endpoints(bootstrap: &[String], zones: &[String]) -> Result<Vec<Endpoint>, BenchError> {
    let mut endpoints = Vec::new();
    for address in bootstrap {
        check_address("--bootstrap", address)?;
        endpoints.push(Endpoint {
            zone: None,
            bootstrap: address.clone(),
        });
    }
    for item in zones {
        let Some((zone, address)) = item.split_once('=') else {
            return Err(BenchError::flag(
                "--zone",
                format!("expected NAME=HOST:PORT, got {item:?}"),
            ));
        };
        let zone_ok = !zone.is_empty()
            && zone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !zone_ok {
            return Err(BenchError::flag(
                "--zone",
                format!("zone names are letters, digits, '-', '_' and '.', got {zone:?}"),
            ));
        }
        check_address("--zone", address)?;
        endpoints.push(Endpoint {
            zone: Some(zone.to_string()),
            bootstrap: address.to_string(),
        });
    }
    Ok(endpoints)
}

impl RunArgs {
    /// Checks every value and builds the run configuration.
    pub fn into_config(self) -> Result<RunConfig, BenchError> {
        let endpoints = endpoints(&self.bootstrap, &self.zone)?;
        if endpoints.is_empty() {
            return Err(BenchError::flag(
                "--bootstrap",
                "give a broker with --bootstrap HOST:PORT or --zone NAME=HOST:PORT",
            ));
        }
        self.workload.into_config(endpoints)
    }
}

impl WorkloadArgs {
    /// Checks every value and builds the run configuration for `endpoints`.
    pub fn into_config(self, endpoints: Vec<Endpoint>) -> Result<RunConfig, BenchError> {
        if self.topic.is_empty() {
            return Err(BenchError::flag("--topic", "must not be empty"));
        }
        if self.partitions < 1 {
            return Err(BenchError::flag("--partitions", "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(BenchError::flag(
                "--replication-factor",
                "must be at least 1",
            ));
        }
        if !(STAMP_BYTES..=RECORD_BYTES_MAX).contains(&self.record_bytes) {
            return Err(BenchError::flag(
                "--record-bytes",
                format!(
                    "must be from {STAMP_BYTES} (the stamp) to {RECORD_BYTES_MAX}, got {}",
                    self.record_bytes
                ),
            ));
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(BenchError::flag(
                "--rate",
                format!(
                    "must be 0 (as fast as possible) or a positive rate, got {}",
                    self.rate
                ),
            ));
        }
        if !(1..=CLIENTS_MAX).contains(&self.producers) {
            return Err(BenchError::flag(
                "--producers",
                format!("must be from 1 to {CLIENTS_MAX}"),
            ));
        }
        if self.consumers > CLIENTS_MAX {
            return Err(BenchError::flag(
                "--consumers",
                format!("must be from 0 to {CLIENTS_MAX}"),
            ));
        }
        if self.duration_secs == 0 {
            return Err(BenchError::flag("--duration-secs", "must be at least 1"));
        }
        if self.drain_secs == 0 {
            return Err(BenchError::flag("--drain-secs", "must be at least 1"));
        }
        // The drain is librdkafka's message.timeout.ms, which must exceed
        // linger.ms.
        if self.drain_secs.saturating_mul(1_000) <= self.linger_ms {
            return Err(BenchError::flag(
                "--linger-ms",
                format!(
                    "must be less than --drain-secs ({} s), got {} ms",
                    self.drain_secs, self.linger_ms
                ),
            ));
        }
        if self.connect_timeout_secs == 0 {
            return Err(BenchError::flag(
                "--connect-timeout-secs",
                "must be at least 1",
            ));
        }
        Ok(RunConfig {
            endpoints,
            topic: self.topic,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            record_bytes: self.record_bytes,
            rate_per_sec: self.rate,
            acks: self.acks,
            producers: self.producers,
            consumers: self.consumers,
            warmup_secs: self.warmup_secs,
            duration_secs: self.duration_secs,
            drain_secs: self.drain_secs,
            connect_timeout_secs: self.connect_timeout_secs,
            linger_ms: self.linger_ms,
            batch_bytes: self.batch_bytes,
            compression: self.compression,
            client_config: key_values("--client-config", &self.client_config)?,
            producer_config: key_values("--producer-config", &self.producer_config)?,
            consumer_config: key_values("--consumer-config", &self.consumer_config)?,
        })
    }
}

/// The grid of `--small`: 2 x 2 points.
pub const SMALL_GRID: ([u64; 2], [u64; 2]) = ([50, 250], [1, 8]);

/// `ferry-bench sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// batchInterval values, in ms, comma-separated.
    #[arg(long, value_name = "MS,...", value_delimiter = ',', default_values_t = [10, 50, 100, 250, 500])]
    pub batch_interval_ms: Vec<u64>,
    /// maxBytesInBatch values, in MiB, comma-separated.
    #[arg(long, value_name = "MIB,...", value_delimiter = ',', default_values_t = [1, 4, 8, 16])]
    pub max_bytes_mib: Vec<u64>,
    /// A quick 2 x 2 grid: 50, 250 ms x 1, 8 MiB (instead of the two lists).
    #[arg(long, conflicts_with_all = ["batch_interval_ms", "max_bytes_mib"])]
    pub small: bool,
    /// The `ferry` binary to start for each point.
    #[arg(long, value_name = "PATH", default_value = "target/release/ferry")]
    pub ferry: PathBuf,
    /// Zones of the cluster each point runs on (`ferry dev --zones N`,
    /// az1..azN, one process). Above 1, producers and consumers are placed
    /// round-robin over the zones with zone tags, and publish latency is
    /// split into same-zone and cross-zone.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub zones: u16,
    /// Nodes in each zone (`ferry dev --nodes-per-zone M`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4))]
    pub nodes_per_zone: u16,
    /// A broker to run the same workload against once, for ratios, e.g.
    /// tansu=127.0.0.1:9093. Repeatable.
    #[arg(long, value_name = "NAME=HOST:PORT")]
    pub peer: Vec<String>,
    /// The sweep's name, the end of its results directory.
    #[arg(long, default_value = "sweep")]
    pub name: String,
    /// Results go to OUT_DIR/<UTC timestamp>-<name>/.
    #[arg(long, value_name = "DIR", default_value = "perf/results")]
    pub out_dir: PathBuf,
    /// Where each point's node directory (the bucket) goes; deleted after
    /// the point. Default: the system's temporary directory.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// S3 PUT latency, median, ms.
    #[arg(long, default_value_t = 50.0)]
    pub put_p50_ms: f64,
    /// S3 PUT latency, 99th percentile, ms.
    #[arg(long, default_value_t = 300.0)]
    pub put_p99_ms: f64,
    /// S3 GET latency, median, ms.
    #[arg(long, default_value_t = 20.0)]
    pub get_p50_ms: f64,
    /// S3 GET latency, 99th percentile, ms.
    #[arg(long, default_value_t = 100.0)]
    pub get_p99_ms: f64,
    /// Added to a request per MiB it moves, ms.
    #[arg(long, default_value_t = 20.0)]
    pub ms_per_mib: f64,
    /// Run on a bare local directory, without the S3 latency model.
    #[arg(long)]
    pub no_latency_model: bool,
    /// More bucket URI parameters for every node's WAL and handoff URI,
    /// after the latency model's, e.g.
    /// `hedge=false&putLatencyP999Ms=1500&slowDownRate=0.01` (see
    /// perf/s3-model.md). Not the grid's or the latency model's own keys.
    #[arg(long, value_name = "K=V&...")]
    pub s3_params: Option<String>,
    /// A prices file (see bench/prices.toml). Defaults otherwise.
    #[arg(long, value_name = "PATH")]
    pub prices: Option<PathBuf>,
    /// Hours the bucket keeps data, for the storage cost.
    #[arg(long, default_value_t = 24.0)]
    pub retention_hours: f64,
    /// Seconds a node may take to listen.
    #[arg(long, default_value_t = 30)]
    pub start_timeout_secs: u64,
}

impl SweepArgs {
    /// Checks every value and builds the sweep configuration.
    pub fn into_config(self) -> Result<SweepConfig, BenchError> {
        if !(self.workload.rate.is_finite() && self.workload.rate > 0.0) {
            return Err(BenchError::flag(
                "--rate",
                "a sweep needs a fixed rate (records/s over all producers), e.g. --rate 5000",
            ));
        }
        let (intervals, sizes) = if self.small {
            (SMALL_GRID.0.to_vec(), SMALL_GRID.1.to_vec())
        } else {
            (self.batch_interval_ms.clone(), self.max_bytes_mib.clone())
        };
        if intervals.is_empty() || intervals.iter().any(|ms| !(1..=60_000).contains(ms)) {
            return Err(BenchError::flag(
                "--batch-interval-ms",
                format!("expected milliseconds from 1 to 60000, got {intervals:?}"),
            ));
        }
        if sizes.is_empty() || sizes.iter().any(|mib| !(1..=1024).contains(mib)) {
            return Err(BenchError::flag(
                "--max-bytes-mib",
                format!("expected MiB from 1 to 1024, got {sizes:?}"),
            ));
        }
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(BenchError::flag(
                "--name",
                format!(
                    "letters, digits, '-', '_' and '.' only, got {:?}",
                    self.name
                ),
            ));
        }
        let latency_model = if self.no_latency_model {
            None
        } else {
            for (flag, v) in [
                ("--put-p50-ms", self.put_p50_ms),
                ("--put-p99-ms", self.put_p99_ms),
                ("--get-p50-ms", self.get_p50_ms),
                ("--get-p99-ms", self.get_p99_ms),
            ] {
                if !(v.is_finite() && v > 0.0 && v <= 600_000.0) {
                    return Err(BenchError::flag(
                        flag,
                        format!("expected milliseconds above 0 and at most 600000, got {v}"),
                    ));
                }
            }
            if self.put_p99_ms < self.put_p50_ms {
                return Err(BenchError::flag(
                    "--put-p99-ms",
                    format!("must be at least --put-p50-ms ({})", self.put_p50_ms),
                ));
            }
            if self.get_p99_ms < self.get_p50_ms {
                return Err(BenchError::flag(
                    "--get-p99-ms",
                    format!("must be at least --get-p50-ms ({})", self.get_p50_ms),
                ));
            }
            if !(self.ms_per_mib.is_finite() && (0.0..=60_000.0).contains(&self.ms_per_mib)) {
                return Err(BenchError::flag(
                    "--ms-per-mib",
                    format!(
                        "expected milliseconds from 0 to 60000, got {}",
                        self.ms_per_mib
                    ),
                ));
            }
            Some(LatencyModel {
                put_p50_ms: self.put_p50_ms,
                put_p99_ms: self.put_p99_ms,
                get_p50_ms: self.get_p50_ms,
                get_p99_ms: self.get_p99_ms,
                ms_per_mib: self.ms_per_mib,
            })
        };
        // The keys the sweep sets itself: the node refuses a key given twice.
        let mut taken = vec![sweep::BATCH_INTERVAL_PARAM, sweep::MAX_BYTES_IN_BATCH_PARAM];
        if let Some(m) = &latency_model {
            taken.extend(m.params().map(|(k, _)| k));
        }
        let s3_params = match &self.s3_params {
            Some(text) => s3_params(text, &taken)?,
            None => Vec::new(),
        };
        if !(self.retention_hours.is_finite() && self.retention_hours >= 0.0) {
            return Err(BenchError::flag(
                "--retention-hours",
                format!("must be >= 0, got {}", self.retention_hours),
            ));
        }
        if self.start_timeout_secs == 0 {
            return Err(BenchError::flag(
                "--start-timeout-secs",
                "must be at least 1",
            ));
        }
        let mut peers = Vec::new();
        for item in &self.peer {
            let Some((name, address)) = item.split_once('=') else {
                return Err(BenchError::flag(
                    "--peer",
                    format!("expected NAME=HOST:PORT, got {item:?}"),
                ));
            };
            if name.is_empty() || name.contains([',', '|', '"']) {
                return Err(BenchError::flag(
                    "--peer",
                    format!("expected a name without ',', '|' or '\"', got {name:?}"),
                ));
            }
            check_address("--peer", address)?;
            peers.push(Peer {
                name: name.to_string(),
                bootstrap: address.to_string(),
            });
        }
        let prices = match &self.prices {
            Some(path) => Prices::load(path)?,
            None => Prices::default(),
        };
        let work_dir = match self.work_dir {
            Some(d) => std::path::absolute(&d).map_err(|source| BenchError::Io {
                op: "resolving",
                path: d.clone(),
                source,
            })?,
            None => std::env::temp_dir(),
        };
        Ok(SweepConfig {
            // Endpoints are set per point and per peer.
            workload: self.workload.into_config(Vec::new())?,
            grid: sweep::grid(&intervals, &sizes),
            layout: Layout {
                zones: self.zones,
                nodes_per_zone: self.nodes_per_zone,
            },
            latency_model,
            s3_params,
            peers,
            ferry: self.ferry,
            work_dir,
            out_dir: self.out_dir,
            name: self.name,
            prices,
            retention_hours: self.retention_hours,
            start_timeout_secs: self.start_timeout_secs,
        })
    }
}

/// `ferry-bench cost`.
#[derive(Debug, Clone, Args)]
pub struct CostArgs {
    /// A prices file (key = value; see bench/prices.toml). Defaults otherwise.
    #[arg(long, value_name = "PATH")]
    pub prices: Option<PathBuf>,
    /// Produced bytes per second, in MB/s (10^6 bytes).
    #[arg(long)]
    pub produce_mb_per_sec: f64,
    /// Consumer groups reading everything (Kafka's consumer traffic).
    #[arg(long, default_value_t = 1.0)]
    pub consumer_groups: f64,
    /// Ferry's measured PUT requests per second, all nodes.
    #[arg(long, default_value_t = 0.0)]
    pub ferry_puts_per_sec: f64,
    /// Ferry's measured GET requests per second, all nodes.
    #[arg(long, default_value_t = 0.0)]
    pub ferry_gets_per_sec: f64,
    /// Ferry's measured cross-zone bytes per second, in MB/s.
    #[arg(long, default_value_t = 0.0)]
    pub ferry_cross_zone_mb_per_sec: f64,
    /// Bytes kept in the bucket, in GB (as the prices count GB).
    #[arg(long, default_value_t = 0.0)]
    pub stored_gb: f64,
    /// batchInterval values for the handoff break-even. Repeatable.
    #[arg(long, value_name = "MS", default_values_t = [10.0, 50.0, 100.0, 250.0, 500.0])]
    pub batch_interval_ms: Vec<f64>,
    /// Write the result as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

impl CostArgs {
    /// Checks that every rate is a finite, non-negative number.
    pub fn check(&self) -> Result<(), BenchError> {
        let values = [
            ("--produce-mb-per-sec", self.produce_mb_per_sec),
            ("--consumer-groups", self.consumer_groups),
            ("--ferry-puts-per-sec", self.ferry_puts_per_sec),
            ("--ferry-gets-per-sec", self.ferry_gets_per_sec),
            (
                "--ferry-cross-zone-mb-per-sec",
                self.ferry_cross_zone_mb_per_sec,
            ),
            ("--stored-gb", self.stored_gb),
        ];
        for (flag, v) in values {
            if !v.is_finite() || v < 0.0 {
                return Err(BenchError::flag(flag, format!("must be >= 0, got {v}")));
            }
        }
        if let Some(ms) = self
            .batch_interval_ms
            .iter()
            .find(|ms| !(**ms > 0.0 && ms.is_finite()))
        {
            return Err(BenchError::flag(
                "--batch-interval-ms",
                format!("must be > 0, got {ms}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> Result<RunConfig, String> {
        let mut argv = vec!["ferry-bench", "run"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Run(run) => run.into_config().map_err(|e| e.to_string()),
            _ => Err("not run".into()),
        }
    }

    #[test]
    fn defaults_are_one_kib_records_as_fast_as_possible_with_acks_all() {
        let c = run_args(&["--bootstrap", "127.0.0.1:9092"]).unwrap();
        assert_eq!(c.record_bytes, 1024);
        assert_eq!(c.rate_per_sec, 0.0);
        assert_eq!(c.acks, Acks::All);
        assert_eq!(c.partitions, 6);
        assert_eq!((c.producers, c.consumers), (1, 1));
        assert_eq!(c.endpoints[0].label(), "untagged");
    }

    #[test]
    fn zones_tag_client_ids_the_way_the_zone_router_reads_them() {
        let c = run_args(&[
            "--zone",
            "us-east-1a=10.0.0.1:9092",
            "--zone",
            "us-east-1b=10.0.64.1:9092",
            "--acks",
            "1",
            "--compression",
            "zstd",
            "--producer-config",
            "enable.idempotence=true",
        ])
        .unwrap();
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.endpoints[1].zone.as_deref(), Some("us-east-1b"));
        assert_eq!(
            c.endpoints[0].client_id("producer", 4),
            "automq_az=us-east-1a&ferry-bench-producer-4"
        );
        assert_eq!(c.acks.as_config(), "1");
        assert_eq!(c.compression.as_config(), "zstd");
        assert_eq!(
            c.producer_config,
            vec![("enable.idempotence".to_string(), "true".to_string())]
        );
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases: [(&[&str], &str); 9] = [
            (&[], "--bootstrap"),
            (&["--zone", "a:9092"], "--zone"),
            (&["--zone", "a&b=h:1"], "--zone"),
            (&["--bootstrap", "nohost"], "--bootstrap"),
            (
                &["--bootstrap", "h:1", "--record-bytes", "8"],
                "--record-bytes",
            ),
            (&["--bootstrap", "h:1", "--producers", "0"], "--producers"),
            (&["--bootstrap", "h:1", "--rate=-5"], "--rate"),
            (
                &["--bootstrap", "h:1", "--consumer-config", "x"],
                "--consumer-config",
            ),
            (
                &[
                    "--bootstrap",
                    "h:1",
                    "--drain-secs",
                    "1",
                    "--linger-ms",
                    "1000",
                ],
                "--linger-ms",
            ),
        ];
        for (args, flag) in cases {
            let e = run_args(args).unwrap_err();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    fn sweep_args(args: &[&str]) -> Result<SweepConfig, String> {
        let mut argv = vec!["ferry-bench", "sweep", "--rate", "100"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Sweep(s) => s.into_config().map_err(|e| e.to_string()),
            _ => Err("not sweep".into()),
        }
    }

    #[test]
    fn a_sweep_runs_on_one_node_unless_zones_are_asked_for() {
        let c = sweep_args(&["--small"]).unwrap();
        assert_eq!(c.layout, Layout::ONE_NODE);
        let c = sweep_args(&["--small", "--zones", "3", "--nodes-per-zone", "2"]).unwrap();
        assert_eq!(
            c.layout,
            Layout {
                zones: 3,
                nodes_per_zone: 2
            }
        );
        // ferry dev's own limits: 1..=9 zones, 1..=4 nodes per zone.
        assert!(sweep_args(&["--zones", "0"])
            .unwrap_err()
            .contains("--zones"));
        assert!(sweep_args(&["--zones", "10"]).is_err());
        assert!(sweep_args(&["--nodes-per-zone", "5"])
            .unwrap_err()
            .contains("--nodes-per-zone"));
    }

    #[test]
    fn s3_params_are_checked_pairs_after_the_model() {
        let c = sweep_args(&["--small"]).unwrap();
        assert!(c.s3_params.is_empty());
        let c = sweep_args(&[
            "--small",
            "--s3-params",
            "hedge=false&putLatencyP999Ms=1500&slowDownRate=0.01",
        ])
        .unwrap();
        let pairs: Vec<(&str, &str)> = c
            .s3_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("hedge", "false"),
                ("putLatencyP999Ms", "1500"),
                ("slowDownRate", "0.01")
            ]
        );
        // The model's keys are the sweep's own only while the model is on.
        let c = sweep_args(&[
            "--small",
            "--no-latency-model",
            "--s3-params",
            "putLatencyP50Ms=5&putLatencyP99Ms=9",
        ])
        .unwrap();
        assert_eq!(c.s3_params.len(), 2);
        for bad in [
            "",
            "hedge",
            "hedge=",
            "=false",
            "hedge=false&",
            "&hedge=false",
            "hedge=false&&stallRate=0.1",
            "put-latency=1",
            "put_latency=1",
            "h\u{e9}dge=1",
            "hedge=fal se",
            "hedge=false\t",
            "hedge=false\n",
            "hedge=false?x=1",
            "hedge=false#x",
            "hedge=true&hedge=false",
            "batchInterval=10",
            "maxBytesInBatch=1",
            "putLatencyP50Ms=5",
            "latencyMsPerMiB=0",
        ] {
            let e = sweep_args(&["--small", "--s3-params", bad]).unwrap_err();
            assert!(e.contains("--s3-params"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn cost_arguments_are_checked() {
        let cli = Cli::try_parse_from([
            "ferry-bench",
            "cost",
            "--produce-mb-per-sec",
            "30",
            "--batch-interval-ms",
            "0",
        ])
        .unwrap();
        let Command::Cost(cost) = cli.command else {
            panic!("expected cost");
        };
        assert!(cost
            .check()
            .unwrap_err()
            .to_string()
            .contains("--batch-interval-ms"));
    }
}
