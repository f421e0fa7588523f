//! `ferry-bench sweep`: the same fixed-rate workload at every point of a
//! `batchInterval` x `maxBytesInBatch` grid, each against a fresh `ferry dev`
//! with the S3 latency model on, and once against each peer broker.
//!
//! For each grid point:
//!
//! 1. A fresh temporary directory (the bucket) and two free loopback ports
//!    (Kafka, `/metrics`); `ferry dev` starts with
//!    `s3.wal.path=0@file://DIR/bucket?batchInterval=..&maxBytesInBatch=..`
//!    and the latency model's parameters, and is ready when both ports
//!    accept (bounded by `start_timeout`; a node that exits early is started
//!    again on new ports, at most [`START_ATTEMPTS`] times).
//! 2. A sampler thread scrapes `/metrics` every [`SAMPLE_EVERY`].
//! 3. The load runs in process ([`crate::run::run`]), with all its bounds.
//! 4. PUT and GET rates (and cross-zone bytes, once the node exports them)
//!    come from the samples inside the run's measured window
//!    ([`prom::window_rates`]); the cost model prices them.
//! 5. The node is killed and its directory deleted, whatever happened.
//!
//! A point that fails is recorded with its error and the sweep goes on. The
//! results are written by [`crate::results`] and [`crate::plots`].

use crate::cli::{Endpoint, RunConfig};
use crate::cost::{self, FerryUsage, Prices};
use crate::error::BenchError;
use crate::machine;
use crate::prom::{self, Rates, Sample};
use crate::results::{
    frontier, PeerResult, PointMeasure, PointResult, RunSummary, SweepReport, NOTES,
};
use crate::run;
use serde::Serialize;
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
    /// The bucket URI parameters that turn it on.
    pub fn query(&self) -> String {
        format!(
            "putLatencyP50Ms={}&putLatencyP99Ms={}&getLatencyP50Ms={}&getLatencyP99Ms={}&latencyMsPerMiB={}",
            self.put_p50_ms, self.put_p99_ms, self.get_p50_ms, self.get_p99_ms, self.ms_per_mib
        )
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
    /// `None`: the bucket is a bare local directory.
    pub latency_model: Option<LatencyModel>,
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

/// Two ports that were free a moment ago on 127.0.0.1.
fn free_ports() -> Result<(u16, u16), BenchError> {
    let bind = || {
        TcpListener::bind("127.0.0.1:0").map_err(|e| node_err("finding a free port", e.to_string()))
    };
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(|e| node_err("finding a free port", e.to_string()))
    };
    Ok((port(&a)?, port(&b)?))
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
    pub bootstrap: SocketAddr,
    pub metrics: SocketAddr,
    log: PathBuf,
    // Dropped after the child is killed (see `Drop`).
    _dir: tempfile::TempDir,
}

impl DevNode {
    /// Starts `ferry dev` for `point`, with the latency model if given.
    pub fn start(
        ferry: &Path,
        work_dir: &Path,
        point: GridPoint,
        model: Option<&LatencyModel>,
        timeout: Duration,
    ) -> Result<DevNode, BenchError> {
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match DevNode::start_once(ferry, work_dir, point, model, timeout) {
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
        model: Option<&LatencyModel>,
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
        let mut wal = format!(
            "0@file://{bucket_text}?batchInterval={}&maxBytesInBatch={}",
            point.batch_interval_ms, point.max_bytes_in_batch
        );
        if let Some(m) = model {
            wal.push('&');
            wal.push_str(&m.query());
        }
        let (port, metrics_port) = free_ports().map_err(StartError::Fatal)?;
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
        let child = Command::new(ferry)
            .arg("dev")
            .arg("--dir")
            .arg(dir.path())
            .args(["--port", &port.to_string()])
            .args([
                "--override",
                &format!("ferry.metrics.listener=127.0.0.1:{metrics_port}"),
            ])
            .args(["--override", &format!("s3.wal.path={wal}")])
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
        let mut node = DevNode {
            child,
            bootstrap: SocketAddr::from(([127, 0, 0, 1], port)),
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
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
            if accepts(node.bootstrap) && accepts(node.metrics) {
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
    fn start(addr: SocketAddr) -> Result<Sampler, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-sampler".into())
            .spawn(move || {
                let mut samples = Vec::new();
                let mut last_error = None;
                while !stop2.load(Ordering::Relaxed) {
                    let before = unix_ms();
                    match prom::scrape(addr, SCRAPE_TIMEOUT)
                        .and_then(|text| Sample::parse(&text, before / 2 + unix_ms() / 2))
                    {
                        Ok(s) => samples.push(s),
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

fn with_endpoint(workload: &RunConfig, bootstrap: String, topic: Option<String>) -> RunConfig {
    let mut c = workload.clone();
    c.endpoints = vec![Endpoint {
        zone: None,
        bootstrap,
    }];
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
        config.latency_model.as_ref(),
        Duration::from_secs(config.start_timeout_secs),
    )?;
    let sampler = Sampler::start(node.metrics)?;
    let run_config = with_endpoint(&config.workload, node.bootstrap.to_string(), None);
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

/// Prices a measured point: Ferry at the measured request rates and
/// cross-zone bytes, storing the produced rate for `retention_hours`; Kafka
/// at the same produced rate.
pub fn price(prices: &Prices, run: RunSummary, rates: Rates, retention_hours: f64) -> PointMeasure {
    let t = &run.publish_throughput;
    let produced = if t.seconds > 0.0 {
        t.bytes as f64 / t.seconds
    } else {
        0.0
    };
    let usage = FerryUsage {
        puts_per_sec: rates.puts_per_sec,
        gets_per_sec: rates.gets_per_sec,
        cross_zone_bytes_per_sec: rates.cross_zone_bytes_per_sec,
        stored_bytes: produced * retention_hours * 3_600.0,
    };
    PointMeasure {
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
        (Some(m), _) => format!(
            "{head} publish p50 {:.1} p99 {:.1} ms, e2e p99 {}, {:.2} MB/s, {:.1} PUT/s, {:.1} GET/s, ${:.2}/month ({:.0} s)",
            m.run.publish.p50_ms,
            m.run.publish.p99_ms,
            m.run
                .end_to_end
                .map_or("-".to_string(), |e| format!("{:.1} ms", e.p99_ms)),
            m.run.publish_throughput.mb_per_sec,
            m.rates.puts_per_sec,
            m.rates.gets_per_sec,
            m.cost.total_usd,
            p.seconds
        ),
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
        let run_config = with_endpoint(&config.workload, peer.bootstrap.clone(), Some(topic));
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
                "sweep: peer {}: publish p50 {:.1} p99 {:.1} ms, {:.2} MB/s ({:.0} s)",
                peer.name,
                m.publish.p50_ms,
                m.publish.p99_ms,
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
        notes: NOTES.iter().map(|s| s.to_string()).collect(),
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
        let run = RunSummary {
            publish: crate::stats::LatencySummary::from_histogram_us(
                &crate::stats::latency_histogram(),
            ),
            publish_throughput: crate::stats::Throughput::new(50_000, 50_000_000, 10.0),
            end_to_end: None,
            records_acked: 50_000,
            records_lost: 0,
            records_missing: 0,
            errors: Default::default(),
        };
        let rates = Rates {
            puts_per_sec: 20.0,
            gets_per_sec: 2.0,
            cross_zone_bytes_per_sec: 0.0,
            cross_zone_measured: false,
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
    }

    #[test]
    fn a_missing_binary_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = DevNode::start(
            &dir.path().join("no-such-ferry"),
            dir.path(),
            grid(&[10], &[1])[0],
            None,
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
