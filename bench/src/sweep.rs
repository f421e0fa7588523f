//! `ferry-bench sweep`: the same fixed-rate workload at every point of a
//! `batchInterval` x `maxBytesInBatch` grid, each against a fresh `ferry dev`
//! with the S3 latency model on, and once against each peer broker.
//!
//! For each grid point:
//!
//! 1. A fresh temporary directory (the bucket) and free loopback ports (a
//!    block for the Kafka listeners, one for `/metrics`); `ferry dev`
//!    starts with
//!    `s3.wal.path=0@file://DIR/bucket?batchInterval=..&maxBytesInBatch=..`
//!    plus the latency model's parameters and then `--s3-params` (see
//!    [`bucket_uri`]), and the same URI as `automq.zonerouter.channels`
//!    (the handoff writer's batch settings).
//!    With `--zones N` (or `--nodes-per-zone M` above 1) it is
//!    `ferry dev --zones N --nodes-per-zone M`: nodes `0..N*M` in one
//!    process, node `k` in zone `az{k / M + 1}`, on Kafka port `P + k` and
//!    `/metrics` port `Q + k`. It is ready when every port accepts (bounded
//!    by `start_timeout`; a process that exits early is started again on
//!    new ports, at most [`START_ATTEMPTS`] times).
//! 2. A sampler thread scrapes every node's `/metrics` every
//!    [`SAMPLE_EVERY`] and sums them, and counts the handoff objects in the
//!    bucket (the node's metrics leave the handoff writer's PUTs out).
//! 3. The load runs in process ([`crate::run::run`]), with all its bounds.
//!    With zones, producers and consumers are placed round-robin over
//!    them, tagged `automq_az=azK` and given that zone's nodes as
//!    bootstrap; publish latency is split by whether the partition's true
//!    leader is in the producer's zone ([`crate::report::PublishPaths`]).
//! 4. PUT, GET and handoff-object rates and cross-zone bytes (in total and
//!    by kind) come from the samples inside the run's measured window
//!    ([`prom::window_rates`]); the cost model prices them.
//! 5. The process is killed and its directory deleted, whatever happened.
//!
//! A point that fails is recorded with its error and the sweep goes on. The
//! results are written by [`crate::results`] and [`crate::plots`].

use crate::cli::{Endpoint, RunConfig};
use crate::cost::{self, FerryUsage, Prices};
use crate::error::BenchError;
use crate::machine;
use crate::prom::{self, Rates, Sample};
use crate::results::{
    frontier, notes, PeerResult, PointMeasure, PointResult, RunSummary, SweepReport,
};
use crate::run;
use serde::Serialize;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often `/metrics` is sampled during a point.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Times a node that exits at once (a port taken in between) is restarted.
pub const START_ATTEMPTS: usize = 3;
/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of a failed node's log quoted in the error.
const LOG_TAIL_LINES: usize = 15;
/// Tries at finding a block of consecutive free ports.
const PORT_BLOCK_ATTEMPTS: usize = 64;

/// One point of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GridPoint {
    pub batch_interval_ms: u64,
    pub max_bytes_in_batch: u64,
}

impl GridPoint {
    /// `maxBytesInBatch` in MiB, for labels.
    pub fn max_mib(&self) -> f64 {
        self.max_bytes_in_batch as f64 / (1u64 << 20) as f64
    }

    /// `100 ms / 4 MiB`.
    pub fn label(&self) -> String {
        format!("{} ms / {} MiB", self.batch_interval_ms, self.max_mib())
    }
}

/// Every `batch_intervals_ms` x `max_mib` pair, interval-major.
pub fn grid(batch_intervals_ms: &[u64], max_mib: &[u64]) -> Vec<GridPoint> {
    batch_intervals_ms
        .iter()
        .flat_map(|&ms| {
            max_mib.iter().map(move |&mib| GridPoint {
                batch_interval_ms: ms,
                max_bytes_in_batch: mib << 20,
            })
        })
        .collect()
}

/// The bucket URI parameter the grid's `batchInterval` goes in.
pub const BATCH_INTERVAL_PARAM: &str = "batchInterval";
/// The bucket URI parameter the grid's `maxBytesInBatch` goes in.
pub const MAX_BYTES_IN_BATCH_PARAM: &str = "maxBytesInBatch";

/// The S3 latency model the nodes run with (see `wal/src/store.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyModel {
    pub put_p50_ms: f64,
    pub put_p99_ms: f64,
    pub get_p50_ms: f64,
    pub get_p99_ms: f64,
    pub ms_per_mib: f64,
}

impl LatencyModel {
    /// The bucket URI parameters that turn it on, by name.
    pub fn params(&self) -> [(&'static str, f64); 5] {
        [
            ("putLatencyP50Ms", self.put_p50_ms),
            ("putLatencyP99Ms", self.put_p99_ms),
            ("getLatencyP50Ms", self.get_p50_ms),
            ("getLatencyP99Ms", self.get_p99_ms),
            ("latencyMsPerMiB", self.ms_per_mib),
        ]
    }

    /// The bucket URI parameters that turn it on.
    pub fn query(&self) -> String {
        self.params()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// The bucket URI a point's nodes get, for the WAL (`s3.wal.path`) and the
/// handoff channel (`automq.zonerouter.channels`) alike: the local `bucket`, the
/// point's batch settings, then the latency model's parameters, then the
/// `--s3-params` pairs (checked when the flag was read).
pub fn bucket_uri(
    bucket: &str,
    point: GridPoint,
    model: Option<&LatencyModel>,
    s3_params: &[(String, String)],
) -> String {
    let mut uri = format!(
        "0@file://{bucket}?{BATCH_INTERVAL_PARAM}={}&{MAX_BYTES_IN_BATCH_PARAM}={}",
        point.batch_interval_ms, point.max_bytes_in_batch
    );
    if let Some(m) = model {
        uri.push('&');
        uri.push_str(&m.query());
    }
    for (k, v) in s3_params {
        let _ = write!(uri, "&{k}={v}");
    }
    uri
}

/// `--s3-params` as checked: `k=v&k=v` (empty when none).
pub fn s3_params_text(s3_params: &[(String, String)]) -> String {
    s3_params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The `ferry dev` cluster of each point: `zones` zones (`az1`...) of
/// `nodes_per_zone` nodes, in one process. One zone of one node is the plain
/// single-node `ferry dev` with untagged clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub zones: u16,
    pub nodes_per_zone: u16,
}

impl Layout {
    pub const ONE_NODE: Layout = Layout {
        zones: 1,
        nodes_per_zone: 1,
    };

    /// Nodes in all.
    pub fn nodes(&self) -> usize {
        usize::from(self.zones) * usize::from(self.nodes_per_zone)
    }

    /// Whether clients are placed in zones (more than one node).
    pub fn zoned(&self) -> bool {
        self.nodes() > 1
    }

    /// The zone of node `k` (`ferry dev` numbers nodes zone by zone).
    pub fn zone_of(&self, node: usize) -> String {
        format!("az{}", node / usize::from(self.nodes_per_zone.max(1)) + 1)
    }

    /// The clients' endpoints, given each node's Kafka address in node
    /// order: one per zone with that zone's nodes as bootstrap list, or
    /// one untagged endpoint for a single node.
    pub fn endpoints(&self, kafka: &[SocketAddr]) -> Vec<Endpoint> {
        if !self.zoned() {
            return kafka
                .iter()
                .map(|a| Endpoint {
                    zone: None,
                    bootstrap: a.to_string(),
                })
                .collect();
        }
        (0..self.zones)
            .map(|z| {
                let zone = format!("az{}", z + 1);
                let bootstrap: Vec<String> = kafka
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| self.zone_of(*k) == zone)
                    .map(|(_, a)| a.to_string())
                    .collect();
                Endpoint {
                    zone: Some(zone),
                    bootstrap: bootstrap.join(","),
                }
            })
            .collect()
    }
}

/// A broker to run the same workload against, for ratios.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub name: String,
    pub bootstrap: String,
}

/// A checked `sweep` configuration.
#[derive(Debug, Clone, Serialize)]
pub struct SweepConfig {
    /// The workload; its endpoints are set per point and per peer.
    pub workload: RunConfig,
    pub grid: Vec<GridPoint>,
    /// The cluster each point runs on.
    pub layout: Layout,
    /// `None`: the bucket is a bare local directory.
    pub latency_model: Option<LatencyModel>,
    /// More bucket URI parameters (`--s3-params`), after the latency
    /// model's, on the WAL's and the handoff channel's URI alike.
    pub s3_params: Vec<(String, String)>,
    pub peers: Vec<Peer>,
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// Where the nodes' temporary directories go.
    pub work_dir: PathBuf,
    /// Results go to `out_dir/<timestamp>-<name>/`.
    pub out_dir: PathBuf,
    pub name: String,
    pub prices: Prices,
    /// How long the bucket keeps data, for the storage cost.
    pub retention_hours: f64,
    pub start_timeout_secs: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn node_err(what: impl Into<String>, reason: impl Into<String>) -> BenchError {
    BenchError::Node {
        what: what.into(),
        reason: reason.into(),
    }
}

/// `count` consecutive ports that were free a moment ago on 127.0.0.1, held
/// (bound) until the listeners are dropped.
fn free_port_block(count: usize) -> Result<(u16, Vec<TcpListener>), BenchError> {
    let err = |e: std::io::Error| node_err("finding free ports", e.to_string());
    for _ in 0..PORT_BLOCK_ATTEMPTS {
        let first = TcpListener::bind("127.0.0.1:0").map_err(err)?;
        let base = first.local_addr().map_err(err)?.port();
        let mut held = vec![first];
        for k in 1..count {
            let Some(port) = u16::try_from(k).ok().and_then(|k| base.checked_add(k)) else {
                break;
            };
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => held.push(l),
                Err(_) => break,
            }
        }
        if held.len() == count {
            return Ok((base, held));
        }
    }
    Err(node_err(
        "finding free ports",
        format!("no {count} consecutive free ports in {PORT_BLOCK_ATTEMPTS} tries"),
    ))
}

/// Handoff objects (`handoff/<node>/<seq>.wal`) written so far into a local
/// bucket, all nodes: per node, its highest sequence number plus one, as a
/// writer numbers its objects from 0 in a fresh bucket. Objects the node has
/// deleted since still count. `None` if the bucket cannot be listed. Each
/// object is one PUT.
pub fn handoff_objects(bucket: &Path) -> Option<f64> {
    let nodes = match std::fs::read_dir(bucket.join("handoff")) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(0.0),
        Err(_) => return None,
    };
    let mut count = 0u64;
    for node in nodes {
        let mut next = 0u64;
        for o in std::fs::read_dir(node.ok()?.path()).ok()? {
            let name = o.ok()?.file_name();
            let seq = name
                .to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .filter(|d| d.len() == 20)
                .and_then(|d| d.parse::<u64>().ok());
            if let Some(seq) = seq {
                next = next.max(seq.saturating_add(1));
            }
        }
        count = count.saturating_add(next);
    }
    Some(count as f64)
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A `ferry dev` process on a temporary directory: killed, and its
/// directory deleted, when dropped.
pub struct DevNode {
    child: Child,
    /// Each node's Kafka listener, in node order.
    pub kafka: Vec<SocketAddr>,
    /// Each node's `/metrics`, in node order.
    pub metrics: Vec<SocketAddr>,
    /// The bucket directory.
    pub bucket: PathBuf,
    log: PathBuf,
    // Dropped after the child is killed (see `Drop`).
    _dir: tempfile::TempDir,
}

impl DevNode {
    /// Starts `ferry dev` for `point` with `layout`, with the latency model
    /// if given and `s3_params` on its bucket URIs ([`bucket_uri`]).
    pub fn start(
        ferry: &Path,
        work_dir: &Path,
        point: GridPoint,
        layout: Layout,
        model: Option<&LatencyModel>,
        s3_params: &[(String, String)],
        timeout: Duration,
    ) -> Result<DevNode, BenchError> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match DevNode::start_once(ferry, work_dir, point, layout, model, s3_params, timeout) {
                Ok(node) => return Ok(node),
                Err(StartError::ExitedEarly(e)) => {
                    tracing::warn!(error = %e, "ferry exited at start; trying other ports");
                    last_error = Some(e);
                }
                Err(StartError::Fatal(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| node_err("start", "no attempt made")))
    }

    fn start_once(
        ferry: &Path,
        work_dir: &Path,
        point: GridPoint,
        layout: Layout,
        model: Option<&LatencyModel>,
        s3_params: &[(String, String)],
        timeout: Duration,
    ) -> Result<DevNode, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("ferry-sweep-")
            .tempdir_in(work_dir)
            .map_err(|source| {
                StartError::Fatal(BenchError::Io {
                    op: "creating a temporary directory in",
                    path: work_dir.to_path_buf(),
                    source,
                })
            })?;
        let bucket = dir.path().join("bucket");
        let bucket_text = bucket
            .to_str()
            .filter(|p| {
                p.starts_with('/')
                    && !p
                        .chars()
                        .any(|c| matches!(c, '?' | '#' | '%' | '&' | ' ') || c.is_control())
            })
            .ok_or_else(|| {
                StartError::Fatal(BenchError::flag(
                    "--work-dir",
                    format!(
                        "must be an absolute path that can go in a file:// URI as it is, got {}",
                        work_dir.display()
                    ),
                ))
            })?;
        // The WAL and the handoff channel: the same bucket, the point's
        // batch settings, the latency model and `--s3-params` (the handoff
        // writer uses the WAL's bucket and store; the channel names it too).
        let wal = bucket_uri(bucket_text, point, model, s3_params);
        let nodes = layout.nodes();
        let (port, kafka_held) = free_port_block(nodes).map_err(StartError::Fatal)?;
        let (metrics_port, metrics_held) = free_port_block(nodes).map_err(StartError::Fatal)?;
        drop((kafka_held, metrics_held));
        let log = dir.path().join("ferry.log");
        let log_file = std::fs::File::create(&log)
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|source| {
                StartError::Fatal(BenchError::Io {
                    op: "creating",
                    path: log.clone(),
                    source,
                })
            })?;
        let mut command = Command::new(ferry);
        command
            .arg("dev")
            .arg("--dir")
            .arg(dir.path())
            .args(["--port", &port.to_string()]);
        if layout.zoned() {
            command
                .args(["--zones", &layout.zones.to_string()])
                .args(["--nodes-per-zone", &layout.nodes_per_zone.to_string()]);
        }
        let child = command
            .args([
                "--override",
                &format!("ferry.metrics.listener=127.0.0.1:{metrics_port}"),
            ])
            .args(["--override", &format!("s3.wal.path={wal}")])
            .args(["--override", &format!("automq.zonerouter.channels={wal}")])
            .stdin(Stdio::null())
            .stdout(log_file.0)
            .stderr(log_file.1)
            .spawn()
            .map_err(|e| {
                StartError::Fatal(node_err(
                    format!("starting {}", ferry.display()),
                    format!(
                        "{e}; build it with `cargo build --release -p ferry-node --bin ferry` or pass --ferry PATH"
                    ),
                ))
            })?;
        // Node k listens on port + k and serves /metrics on metrics_port + k
        // (node/src/main.rs, run_zones); the blocks were checked free.
        let addrs = |base: u16| -> Vec<SocketAddr> {
            (0..nodes)
                .filter_map(|k| u16::try_from(k).ok().and_then(|k| base.checked_add(k)))
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                .collect()
        };
        let mut node = DevNode {
            child,
            kafka: addrs(port),
            metrics: addrs(metrics_port),
            bucket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(StartError::ExitedEarly(node_err(
                    format!("ferry dev on port {port}"),
                    format!(
                        "exited with {status} at start; its log ends:\n{}",
                        log_tail(&node.log)
                    ),
                )));
            }
            if node.kafka.iter().chain(&node.metrics).all(|a| accepts(*a)) {
                return Ok(node);
            }
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(node_err(
                    format!("ferry dev on port {port}"),
                    format!(
                        "not listening after {} s; its log ends:\n{}",
                        timeout.as_secs(),
                        log_tail(&node.log)
                    ),
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's log so far, last lines.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        // SIGKILL: the bucket is thrown away, nothing needs a clean stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum StartError {
    /// The process exited before listening: perhaps a port race; retried.
    ExitedEarly(BenchError),
    Fatal(BenchError),
}

/// Scrapes `/metrics` on a thread until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<Sample>, Option<String>)>,
}

impl Sampler {
    /// Scrapes every node in `addrs` in turn and counts the handoff objects
    /// in `bucket`; a tick where any scrape fails is dropped.
    fn start(addrs: Vec<SocketAddr>, bucket: PathBuf) -> Result<Sampler, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-sampler".into())
            .spawn(move || {
                let mut samples = Vec::new();
                let mut last_error = None;
                while !stop2.load(Ordering::Relaxed) {
                    let before = unix_ms();
                    let texts: Result<Vec<String>, String> = addrs
                        .iter()
                        .map(|a| prom::scrape(*a, SCRAPE_TIMEOUT).map_err(|e| format!("{a}: {e}")))
                        .collect();
                    let handoff = handoff_objects(&bucket);
                    match texts.and_then(|t| Sample::parse_nodes(&t, before / 2 + unix_ms() / 2)) {
                        Ok(mut s) => {
                            s.handoff_objects = handoff;
                            samples.push(s);
                        }
                        Err(e) => last_error = Some(e),
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
                (samples, last_error)
            })
            .map_err(|e| BenchError::Thread {
                name: "metrics-sampler".into(),
                reason: e.to_string(),
            })?;
        Ok(Sampler { stop, thread })
    }

    fn stop(self) -> Result<(Vec<Sample>, Option<String>), BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| BenchError::Thread {
            name: "metrics-sampler".into(),
            reason: "panicked".into(),
        })
    }
}

fn with_endpoints(
    workload: &RunConfig,
    endpoints: Vec<Endpoint>,
    topic: Option<String>,
) -> RunConfig {
    let mut c = workload.clone();
    c.endpoints = endpoints;
    if let Some(t) = topic {
        c.topic = t;
    }
    c
}

/// Measures one grid point on a fresh node.
fn measure_point(
    config: &SweepConfig,
    point: GridPoint,
    command: &[String],
) -> Result<PointMeasure, BenchError> {
    let node = DevNode::start(
        &config.ferry,
        &config.work_dir,
        point,
        config.layout,
        config.latency_model.as_ref(),
        &config.s3_params,
        Duration::from_secs(config.start_timeout_secs),
    )?;
    let sampler = Sampler::start(node.metrics.clone(), node.bucket.clone())?;
    let run_config = with_endpoints(&config.workload, config.layout.endpoints(&node.kafka), None);
    let report = run::run(&run_config, command.to_vec());
    let (samples, scrape_error) = sampler.stop()?;
    let report = report.map_err(|e| {
        node_err(
            format!("running the load at {}", point.label()),
            format!("{e}; the node's log ends:\n{}", node.log_tail()),
        )
    })?;
    drop(node);
    let window = report.measured_window;
    let rates = prom::window_rates(&samples, window.start_unix_ms, window.end_unix_ms).ok_or_else(
        || {
            node_err(
                "/metrics",
                format!(
                    "fewer than two samples in the measured window ({} taken{})",
                    samples.len(),
                    scrape_error
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                ),
            )
        },
    )?;
    Ok(price(
        &config.prices,
        RunSummary::of(&report),
        rates,
        config.retention_hours,
    ))
}

/// Prices a measured point: Ferry at the measured request rates (the
/// nodes' PUTs plus the handoff objects counted in the bucket) and
/// cross-zone bytes, storing the produced rate for `retention_hours`; Kafka
/// at the same produced rate. Also the cross-zone bytes as a fraction of
/// the produced bytes.
pub fn price(prices: &Prices, run: RunSummary, rates: Rates, retention_hours: f64) -> PointMeasure {
    let t = &run.publish_throughput;
    let produced = if t.seconds > 0.0 {
        t.bytes as f64 / t.seconds
    } else {
        0.0
    };
    let usage = FerryUsage {
        puts_per_sec: rates.puts_per_sec + rates.handoff_puts_per_sec,
        gets_per_sec: rates.gets_per_sec,
        cross_zone_bytes_per_sec: rates.cross_zone_bytes_per_sec,
        stored_bytes: produced * retention_hours * 3_600.0,
    };
    PointMeasure {
        cross_zone_fraction: (rates.cross_zone_measured && produced > 0.0)
            .then(|| rates.cross_zone_bytes_per_sec / produced),
        cost: cost::ferry(prices, &usage),
        kafka_rf3_usd: cost::kafka_rf3(prices, produced, 1.0).total_usd,
        kafka_follower_fetching_usd: cost::kafka_follower_fetching(prices, produced).total_usd,
        usage,
        rates,
        run,
    }
}

fn progress_line(index: usize, total: usize, p: &PointResult) -> String {
    let head = format!(
        "sweep [{}/{total}] batchInterval {} ms, maxBytesInBatch {} MiB:",
        index + 1,
        p.point.batch_interval_ms,
        p.point.max_mib()
    );
    match (&p.measured, &p.error) {
        (Some(m), _) => {
            let zones = match &m.run.paths {
                Some(paths) => format!(
                    " same-zone p50 {:.1} p99 {:.1} ms, cross-zone p50 {:.1} p99 {:.1} ms, cross/same p99 {},",
                    paths.same_zone.p50_ms,
                    paths.same_zone.p99_ms,
                    paths.cross_zone.p50_ms,
                    paths.cross_zone.p99_ms,
                    paths
                        .cross_same_p99_ratio
                        .map_or("-".to_string(), |r| format!("{r:.2}")),
                ),
                None => String::new(),
            };
            let cross = if m.rates.cross_zone_measured {
                format!(
                    ", cross-zone {:.0} B/s ({})",
                    m.rates.cross_zone_bytes_per_sec,
                    m.cross_zone_fraction.map_or("-".to_string(), |f| format!(
                        "{:.3}% of produced",
                        f * 100.0
                    ))
                )
            } else {
                ", cross-zone not measured".to_string()
            };
            format!(
                "{head} publish p50 {:.1} p99 {:.1} p99.9 {:.1} ms,{zones} e2e {}, {:.2} MB/s, {:.1} PUT/s (+{:.1} handoff), {:.1} GET/s, {:.1} hedges/s{cross}, ${:.2}/month ({:.0} s)",
                m.run.publish.p50_ms,
                m.run.publish.p99_ms,
                m.run.publish.p999_ms,
                m.run.end_to_end.map_or("-".to_string(), |e| format!(
                    "p99 {:.1} p99.9 {:.1} ms",
                    e.p99_ms, e.p999_ms
                )),
                m.run.publish_throughput.mb_per_sec,
                m.rates.puts_per_sec,
                m.rates.handoff_puts_per_sec,
                m.rates.gets_per_sec,
                m.rates.hedges_per_sec,
                m.cost.total_usd,
                p.seconds
            )
        }
        (None, Some(e)) => format!("{head} FAILED ({:.0} s): {e}", p.seconds),
        (None, None) => format!("{head} no result"),
    }
}

/// Runs the sweep: every peer, then every grid point. Errors of single
/// points and peers are recorded, not returned; what is returned is what
/// stops the sweep as a whole (a missing binary, an unwritable directory).
pub fn sweep(config: &SweepConfig, command: Vec<String>) -> Result<SweepReport, BenchError> {
    if !config.ferry.is_file() {
        return Err(BenchError::flag(
            "--ferry",
            format!(
                "{} is not a file: build it with `cargo build --release -p ferry-node --bin ferry`",
                config.ferry.display()
            ),
        ));
    }
    std::fs::create_dir_all(&config.work_dir).map_err(|source| BenchError::Io {
        op: "creating",
        path: config.work_dir.clone(),
        source,
    })?;
    let started_unix_ms = unix_ms();
    let machine = machine::detect();

    let mut peers = Vec::new();
    for peer in &config.peers {
        eprintln!("sweep: peer {} at {}", peer.name, peer.bootstrap);
        let started = Instant::now();
        // A topic of its own: a long-lived peer may hold older runs' topics.
        let topic = format!("{}-{}", config.workload.topic, started_unix_ms / 1_000);
        let endpoint = Endpoint {
            zone: None,
            bootstrap: peer.bootstrap.clone(),
        };
        let run_config = with_endpoints(&config.workload, vec![endpoint], Some(topic));
        let result = run::run(&run_config, command.clone());
        let (measured, error) = match result {
            Ok(r) => (Some(RunSummary::of(&r)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let r = PeerResult {
            peer: peer.clone(),
            measured,
            error,
            seconds: started.elapsed().as_secs_f64(),
        };
        match (&r.measured, &r.error) {
            (Some(m), _) => eprintln!(
                "sweep: peer {}: publish p50 {:.1} p99 {:.1} p99.9 {:.1} ms, {:.2} MB/s ({:.0} s)",
                peer.name,
                m.publish.p50_ms,
                m.publish.p99_ms,
                m.publish.p999_ms,
                m.publish_throughput.mb_per_sec,
                r.seconds
            ),
            (None, e) => eprintln!(
                "sweep: peer {} FAILED: {}",
                peer.name,
                e.as_deref().unwrap_or("?")
            ),
        }
        peers.push(r);
    }

    let total = config.grid.len();
    let mut points = Vec::new();
    for (index, &point) in config.grid.iter().enumerate() {
        let started = Instant::now();
        let result = measure_point(config, point, &command);
        let (measured, error) = match result {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let p = PointResult {
            point,
            measured,
            error,
            on_frontier: false,
            seconds: started.elapsed().as_secs_f64(),
        };
        eprintln!("{}", progress_line(index, total, &p));
        points.push(p);
    }

    let costs_and_p99: Vec<Option<(f64, f64)>> = points
        .iter()
        .map(|p| {
            p.measured
                .as_ref()
                .map(|m| (m.cost.total_usd, m.run.publish.p99_ms))
        })
        .collect();
    for (p, on) in points.iter_mut().zip(frontier(&costs_and_p99)) {
        p.on_frontier = on;
    }

    Ok(SweepReport {
        tool: "ferry-bench sweep",
        version: env!("CARGO_PKG_VERSION"),
        name: config.name.clone(),
        command,
        started_unix_ms,
        finished_unix_ms: unix_ms(),
        machine,
        config: config.clone(),
        peers,
        points,
        notes: notes(config.layout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_every_pair_interval_major() {
        let g = grid(&[10, 50], &[1, 4, 8]);
        assert_eq!(g.len(), 6);
        assert_eq!(
            g[0],
            GridPoint {
                batch_interval_ms: 10,
                max_bytes_in_batch: 1_048_576
            }
        );
        // 4 MiB = 4,194,304 bytes; the fifth point is 50 ms / 4 MiB.
        assert_eq!(g[4].batch_interval_ms, 50);
        assert_eq!(g[4].max_bytes_in_batch, 4_194_304);
        assert_eq!(g[4].label(), "50 ms / 4 MiB");
    }

    #[test]
    fn the_latency_model_becomes_bucket_uri_parameters() {
        let m = LatencyModel {
            put_p50_ms: 50.0,
            put_p99_ms: 300.0,
            get_p50_ms: 12.5,
            get_p99_ms: 100.0,
            ms_per_mib: 20.0,
        };
        assert_eq!(
            m.query(),
            "putLatencyP50Ms=50&putLatencyP99Ms=300&getLatencyP50Ms=12.5&getLatencyP99Ms=100&latencyMsPerMiB=20"
        );
    }

    #[test]
    fn the_bucket_uri_is_the_grid_then_the_model_then_the_s3_params() {
        let m = LatencyModel {
            put_p50_ms: 50.0,
            put_p99_ms: 300.0,
            get_p50_ms: 20.0,
            get_p99_ms: 100.0,
            ms_per_mib: 20.0,
        };
        let point = grid(&[250], &[8])[0];
        let params = [
            ("hedge".to_string(), "false".to_string()),
            ("putLatencyP999Ms".to_string(), "1500".to_string()),
            ("slowDownRate".to_string(), "0.01".to_string()),
        ];
        // 8 MiB = 8,388,608 bytes.
        assert_eq!(
            bucket_uri("/tmp/b", point, Some(&m), &params),
            "0@file:///tmp/b?batchInterval=250&maxBytesInBatch=8388608\
             &putLatencyP50Ms=50&putLatencyP99Ms=300&getLatencyP50Ms=20&getLatencyP99Ms=100&latencyMsPerMiB=20\
             &hedge=false&putLatencyP999Ms=1500&slowDownRate=0.01"
        );
        // Without the model, the params follow the batch settings; without
        // either, the URI is the batch settings alone.
        assert_eq!(
            bucket_uri("/tmp/b", point, None, &params[..1]),
            "0@file:///tmp/b?batchInterval=250&maxBytesInBatch=8388608&hedge=false"
        );
        assert_eq!(
            bucket_uri("/tmp/b", point, None, &[]),
            "0@file:///tmp/b?batchInterval=250&maxBytesInBatch=8388608"
        );
        assert_eq!(
            s3_params_text(&params[..2]),
            "hedge=false&putLatencyP999Ms=1500"
        );
        assert_eq!(s3_params_text(&[]), "");
    }

    #[test]
    fn the_progress_line_has_the_tail_and_the_hedges() {
        let latency = |p50: f64, p99: f64, p999: f64| crate::stats::LatencySummary {
            count: 1_000,
            min_ms: 1.0,
            mean_ms: p50,
            p50_ms: p50,
            p90_ms: p99,
            p99_ms: p99,
            p999_ms: p999,
            max_ms: p999,
        };
        let mut run = five_mb_per_sec_for_ten_seconds();
        run.publish = latency(90.0, 400.0, 1_650.0);
        run.end_to_end = Some(latency(95.0, 420.0, 1_700.0));
        let rates = Rates {
            puts_per_sec: 90.5,
            gets_per_sec: 1.0,
            cross_zone_bytes_per_sec: 0.0,
            cross_zone_measured: true,
            cross_zone_by_kind_per_sec: Default::default(),
            handoff_puts_per_sec: 55.5,
            hedges_per_sec: 3.2,
            seconds: 10.0,
        };
        let mut p = PointResult {
            point: grid(&[50], &[1])[0],
            measured: Some(price(&Prices::default(), run, rates, 24.0)),
            error: None,
            on_frontier: false,
            seconds: 31.0,
        };
        let line = progress_line(0, 4, &p);
        assert!(
            line.starts_with("sweep [1/4] batchInterval 50 ms, maxBytesInBatch 1 MiB: publish p50 90.0 p99 400.0 p99.9 1650.0 ms, e2e p99 420.0 p99.9 1700.0 ms, 5.00 MB/s, 90.5 PUT/s (+55.5 handoff), 1.0 GET/s, 3.2 hedges/s, cross-zone 0 B/s"),
            "{line}"
        );
        // Without consumers: no end-to-end figures.
        if let Some(m) = p.measured.as_mut() {
            m.run.end_to_end = None;
        }
        let line = progress_line(0, 4, &p);
        assert!(line.contains(" ms, e2e -, 5.00 MB/s"), "{line}");
    }

    /// 50,000 records of 1,000 B acknowledged in 10 s: 5e6 B/s produced.
    fn five_mb_per_sec_for_ten_seconds() -> RunSummary {
        RunSummary {
            publish: crate::stats::LatencySummary::from_histogram_us(
                &crate::stats::latency_histogram(),
            ),
            publish_throughput: crate::stats::Throughput::new(50_000, 50_000_000, 10.0),
            end_to_end: None,
            records_acked: 50_000,
            records_lost: 0,
            records_missing: 0,
            errors: Default::default(),
            paths: None,
        }
    }

    #[test]
    fn a_point_is_priced_from_its_measured_rates() {
        // 50,000 records of 1,000 B acknowledged in 10 s: 5e6 B/s produced.
        // A month is 730 h = 2,628,000 s.
        //   PUT: 20/s x 2,628,000 = 52,560,000 x $0.005/1000 = $262.80
        //   GET: 2/s x 2,628,000 = 5,256,000 x $0.0004/1000 = $2.1024
        //   storage: 5e6 B/s x 24 h x 3,600 s = 4.32e11 B = 432 GB x $0.023
        //            = $9.936
        //   cross-zone: not measured, 0.
        //   Ferry: 262.80 + 2.1024 + 9.936 = $274.8384.
        //   Kafka RF=3: 5e6 x 8/3 B/s x 2,628,000 s = 35,040 GB x $0.02
        //               = $700.80; follower fetching: 5e6 x 2 x 2,628,000
        //               = 26,280 GB x $0.02 = $525.60.
        let run = five_mb_per_sec_for_ten_seconds();
        let rates = Rates {
            puts_per_sec: 20.0,
            gets_per_sec: 2.0,
            cross_zone_bytes_per_sec: 0.0,
            cross_zone_measured: false,
            cross_zone_by_kind_per_sec: Default::default(),
            handoff_puts_per_sec: 0.0,
            hedges_per_sec: 0.0,
            seconds: 10.0,
        };
        let m = price(&Prices::default(), run, rates, 24.0);
        let close = |a: f64, b: f64| (a - b).abs() <= b.abs() * 1e-12;
        assert!(close(m.cost.put_usd, 262.80), "{}", m.cost.put_usd);
        assert!(close(m.cost.get_usd, 2.1024), "{}", m.cost.get_usd);
        assert!(close(m.cost.storage_usd, 9.936), "{}", m.cost.storage_usd);
        assert_eq!(m.cost.cross_zone_usd, 0.0);
        assert!(close(m.cost.total_usd, 274.8384), "{}", m.cost.total_usd);
        assert!(close(m.kafka_rf3_usd, 700.80), "{}", m.kafka_rf3_usd);
        assert!(
            close(m.kafka_follower_fetching_usd, 525.60),
            "{}",
            m.kafka_follower_fetching_usd
        );
        assert!(close(m.usage.stored_bytes, 4.32e11));
        assert_eq!(m.cross_zone_fraction, None, "not measured");
    }

    #[test]
    fn measured_cross_zone_bytes_and_handoff_puts_are_priced() {
        // 5e6 B/s produced (as above), three zones. Measured: 20 WAL PUT/s
        // and 12 handoff objects/s, 0 GET/s, 50,000 B/s across zones.
        //   PUT: (20 + 12) x 2,628,000 = 84,096,000 x $0.000005 = $420.48
        //   cross-zone: 50,000 x 2,628,000 = 1.314e11 B = 131.4 GB x $0.02
        //               = $2.628
        //   storage: $9.936 (as above)
        //   Ferry: 420.48 + 2.628 + 9.936 = $433.044.
        //   Fraction: 50,000 / 5e6 = 1% of the produced bytes.
        let run = five_mb_per_sec_for_ten_seconds();
        let rates = Rates {
            puts_per_sec: 20.0,
            gets_per_sec: 0.0,
            cross_zone_bytes_per_sec: 50_000.0,
            cross_zone_measured: true,
            cross_zone_by_kind_per_sec: [("handoff".to_string(), 50_000.0)].into(),
            handoff_puts_per_sec: 12.0,
            hedges_per_sec: 0.0,
            seconds: 10.0,
        };
        let m = price(&Prices::default(), run, rates, 24.0);
        let close = |a: f64, b: f64| (a - b).abs() <= b.abs() * 1e-12;
        assert!(close(m.usage.puts_per_sec, 32.0));
        assert!(close(m.cost.put_usd, 420.48), "{}", m.cost.put_usd);
        assert!(
            close(m.cost.cross_zone_usd, 2.628),
            "{}",
            m.cost.cross_zone_usd
        );
        assert!(close(m.cost.total_usd, 433.044), "{}", m.cost.total_usd);
        assert!(close(m.cross_zone_fraction.unwrap(), 0.01));
    }

    #[test]
    fn zones_are_laid_out_as_ferry_dev_numbers_its_nodes() {
        // 3 zones x 2 nodes: nodes 0,1 in az1, 2,3 in az2, 4,5 in az3.
        let l = Layout {
            zones: 3,
            nodes_per_zone: 2,
        };
        assert_eq!(l.nodes(), 6);
        assert!(l.zoned());
        assert_eq!(
            (0..6).map(|k| l.zone_of(k)).collect::<Vec<_>>(),
            ["az1", "az1", "az2", "az2", "az3", "az3"]
        );
        let kafka: Vec<SocketAddr> = (0..6)
            .map(|k| SocketAddr::from(([127, 0, 0, 1], 9092 + k)))
            .collect();
        let e = l.endpoints(&kafka);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].zone.as_deref(), Some("az2"));
        assert_eq!(e[1].bootstrap, "127.0.0.1:9094,127.0.0.1:9095");
        // Each address maps back to its zone.
        let zones = crate::run::broker_zones(&e);
        assert_eq!(zones["127.0.0.1:9097"], "az3");
        assert_eq!(zones.len(), 6);
        // One node: one untagged endpoint, as before zones.
        let one = Layout::ONE_NODE.endpoints(&kafka[..1]);
        assert!(!Layout::ONE_NODE.zoned());
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].zone.as_deref(), one[0].bootstrap.as_str()),
            (None, "127.0.0.1:9092")
        );
    }

    #[test]
    fn handoff_objects_are_counted_in_the_bucket() {
        // Node 0 wrote objects 0 and 1, node 2 object 0, node 3 objects 0
        // to 4 of which only 4 is left (deleted ones still count): 2 + 1 +
        // 5 = 8. A staging file (object_store writes `<name>#<n>` then
        // renames) and a WAL object do not count.
        let dir = tempfile::tempdir().unwrap();
        let bucket = dir.path();
        assert_eq!(handoff_objects(bucket), Some(0.0), "no handoff/ yet");
        for (node, name) in [
            ("0", "00000000000000000000.wal"),
            ("0", "00000000000000000001.wal"),
            ("0", "00000000000000000002.wal#3"),
            ("2", "00000000000000000000.wal"),
            ("3", "00000000000000000004.wal"),
        ] {
            let d = bucket.join("handoff").join(node);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), b"x").unwrap();
        }
        std::fs::create_dir_all(bucket.join("wal/0")).unwrap();
        std::fs::write(bucket.join("wal/0/00000000000000000000.wal"), b"x").unwrap();
        assert_eq!(handoff_objects(bucket), Some(8.0));
    }

    #[test]
    fn port_blocks_are_consecutive_and_held() {
        let (base, held) = free_port_block(3).unwrap();
        assert_eq!(held.len(), 3);
        for (k, l) in held.iter().enumerate() {
            assert_eq!(l.local_addr().unwrap().port(), base + k as u16);
        }
        // Held: binding one again fails.
        assert!(TcpListener::bind(("127.0.0.1", base + 1)).is_err());
    }

    #[test]
    fn a_missing_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = DevNode::start(
            &dir.path().join("no-such-ferry"),
            dir.path(),
            grid(&[10], &[1])[0],
            Layout::ONE_NODE,
            None,
            &[],
            Duration::from_secs(1),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("no-such-ferry") && err.contains("cargo build"),
            "{err}"
        );
        // Its temporary directory is gone with it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
