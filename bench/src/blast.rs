//! `ferry-bench blast`: a produce load that costs the client almost nothing,
//! to measure what one broker can take when the load generator does not
//! share its cores with it.
//!
//! librdkafka spends CPU on every record: it copies the value, allocates,
//! computes the batch CRC and reports each delivery. On a small machine
//! that is shared with the broker (the single-node benchmark's two cores),
//! the client then sets the peak, not the broker. `blast` speaks the Kafka
//! protocol itself with Ferry's codec. It builds one Produce request once
//! (every partition of the topic, one batch of `--batch-records` records of
//! `--record-bytes` each, no key, not idempotent, so the broker assigns
//! offsets) and sends those same bytes again and again over `--connections`
//! connections, with at most `--in-flight` requests outstanding on each,
//! patching only the correlation id. Per request the client does one
//! write, one read and a decode of the small response.
//!
//! It drives one broker: the bootstrap must be the leader of every
//! partition (a single-node Ferry, or a peer broker). Every response's
//! partitions must carry error code 0; errors are counted by code and
//! their records are not counted as acknowledged. Latency is per request,
//! from the write to the response.

use crate::error::BenchError;
use crate::machine::Machine;
use crate::payload;
use crate::stats::LatencySummary;
use crossbeam::channel;
use ferry_protocol::frame::{concat, encode_request, response_header_version};
use ferry_protocol::messages::*;
use ferry_protocol::records::{NewRecord, RecordBatchBuilder};
use ferry_protocol::wire::Message;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `blast` does.
#[derive(Debug, Clone, Serialize)]
pub struct BlastConfig {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub record_bytes: usize,
    /// Records per partition per request.
    pub batch_records: usize,
    pub connections: usize,
    pub in_flight: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// How long a request may wait for its response.
    pub timeout: Duration,
}

/// What one `blast` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BlastReport {
    pub config: BlastConfig,
    pub machine: Machine,
    pub produce_version: i16,
    /// Acknowledged in the measured window (responses that arrived in it).
    pub records_per_sec: f64,
    /// Record value bytes per second, 10^6 bytes to the MB.
    pub mb_per_sec: f64,
    pub requests: u64,
    /// Records acknowledged over the whole run (warm-up, window and drain):
    /// with no errors, what the topic holds after the run.
    pub acked_total: u64,
    /// Request latency, write to response, in the measured window.
    pub latency: LatencySummary,
    /// Partition errors by error code, over the whole run.
    pub errors: BTreeMap<i16, u64>,
    /// CPU seconds (user + system) this process used over the run.
    pub client_cpu_s: f64,
    pub wall_s: f64,
}

impl BlastReport {
    pub fn render_text(&self) -> String {
        let l = &self.latency;
        let mut s = format!(
            "blast: {} connection(s) x {} in flight, {} partitions x {} records of {} B per request, Produce v{}\n",
            self.config.connections,
            self.config.in_flight,
            self.config.partitions,
            self.config.batch_records,
            self.config.record_bytes,
            self.produce_version,
        );
        s += &format!(
            "publish: {:.0} records/s, {:.2} MB/s, {} requests\n",
            self.records_per_sec, self.mb_per_sec, self.requests
        );
        s += &format!(
            "  request latency p50 {:.3} p99 {:.3} max {:.3} ms\n",
            l.p50_ms, l.p99_ms, l.max_ms
        );
        s += &format!(
            "  client CPU {:.1} s over {:.1} s wall\n",
            self.client_cpu_s, self.wall_s
        );
        if !self.errors.is_empty() {
            s += &format!("  partition errors by code: {:?}\n", self.errors);
        }
        s
    }
}

fn io_err<'a>(op: &'static str, addr: &'a str) -> impl Fn(std::io::Error) -> BenchError + 'a {
    move |e| BenchError::Node {
        what: format!("blast: {op} {addr}"),
        reason: e.to_string(),
    }
}

fn fail(what: &str, reason: impl std::fmt::Display) -> BenchError {
    BenchError::Node {
        what: format!("blast: {what}"),
        reason: reason.to_string(),
    }
}

/// One request-response exchange on a set-up connection.
fn call(
    conn: &mut TcpStream,
    addr: &str,
    version: i16,
    body: &RequestBody,
) -> Result<bytes::Bytes, BenchError> {
    let api = body.api_key();
    let frame = concat(
        &encode_request(1, Some("ferry-bench-blast"), version, body)
            .map_err(|e| fail("encoding a request", e))?,
    );
    conn.write_all(&frame).map_err(io_err("writing to", addr))?;
    let mut buf = Vec::new();
    let resp = read_frame(conn, addr, &mut buf)?;
    let header = if response_header_version(api, version) == 1 {
        5
    } else {
        4
    };
    resp.get(header..)
        .map(bytes::Bytes::copy_from_slice)
        .ok_or_else(|| fail("reading a response", "shorter than its header"))
}

/// Reads one size-prefixed frame into `buf` (reused) and returns it.
fn read_frame<'a>(
    conn: &mut TcpStream,
    addr: &str,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], BenchError> {
    let mut size = [0u8; 4];
    conn.read_exact(&mut size)
        .map_err(io_err("reading from", addr))?;
    let size = i32::from_be_bytes(size);
    if !(4..=(64 << 20)).contains(&size) {
        return Err(fail("reading a response", format!("frame size {size}")));
    }
    buf.resize(size as usize, 0);
    conn.read_exact(buf).map_err(io_err("reading from", addr))?;
    Ok(buf)
}

/// The version of `api` to use: the highest both sides speak, at most `want`.
fn pick_version(
    versions: &api_versions_response::ApiVersionsResponse,
    api: i16,
    want: i16,
    least: i16,
) -> Result<i16, BenchError> {
    let v = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == api)
        .ok_or_else(|| {
            fail(
                "ApiVersions",
                format!("the broker does not offer API {api}"),
            )
        })?;
    let pick = want.min(v.max_version);
    if pick < least.max(v.min_version) {
        return Err(fail(
            "ApiVersions",
            format!(
                "API {api}: the broker speaks {}..={}, blast needs {least}..={want}",
                v.min_version, v.max_version
            ),
        ));
    }
    Ok(pick)
}

fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, BenchError> {
    let sock = addr
        .to_socket_addrs()
        .map_err(io_err("resolving", addr))?
        .next()
        .ok_or_else(|| fail("resolving", format!("{addr} has no address")))?;
    let conn = TcpStream::connect_timeout(&sock, timeout).map_err(io_err("connecting to", addr))?;
    conn.set_nodelay(true).map_err(io_err("setting up", addr))?;
    conn.set_read_timeout(Some(timeout))
        .map_err(io_err("setting up", addr))?;
    Ok(conn)
}

/// Creates the topic if it is not there and waits until every partition
/// has a leader; returns the versions to speak.
fn prepare(config: &BlastConfig) -> Result<i16, BenchError> {
    let addr = config.bootstrap.as_str();
    let mut conn = connect(addr, config.timeout)?;
    let resp = call(
        &mut conn,
        addr,
        0,
        &RequestBody::ApiVersions(api_versions_request::ApiVersionsRequest::default()),
    )?;
    let versions = api_versions_response::ApiVersionsResponse::decode(&resp, 0)
        .map_err(|e| fail("ApiVersions", e))?;
    let produce = pick_version(&versions, 0, 9, 3)?;
    let metadata = pick_version(&versions, 3, 9, 1)?;
    let create = pick_version(&versions, 19, 7, 2)?;

    let body = RequestBody::CreateTopics(create_topics_request::CreateTopicsRequest {
        topics: vec![create_topics_request::CreatableTopic {
            name: config.topic.clone().into(),
            num_partitions: config.partitions,
            replication_factor: 1,
            ..Default::default()
        }],
        timeout_ms: 30_000,
        ..Default::default()
    });
    let resp = call(&mut conn, addr, create, &body)?;
    let created = create_topics_response::CreateTopicsResponse::decode(&resp, create)
        .map_err(|e| fail("CreateTopics", e))?;
    let code = created.topics.first().map_or(-1, |t| t.error_code);
    // 0: created; 36: TOPIC_ALREADY_EXISTS.
    if code != 0 && code != 36 {
        return Err(fail(
            "CreateTopics",
            format!("topic {} got error code {code}", config.topic),
        ));
    }

    let deadline = Instant::now() + config.timeout;
    loop {
        let body = RequestBody::Metadata(metadata_request::MetadataRequest {
            topics: Some(vec![metadata_request::MetadataRequestTopic {
                name: Some(config.topic.clone().into()),
                ..Default::default()
            }]),
            allow_auto_topic_creation: false,
            ..Default::default()
        });
        let resp = call(&mut conn, addr, metadata, &body)?;
        let m = metadata_response::MetadataResponse::decode(&resp, metadata)
            .map_err(|e| fail("Metadata", e))?;
        let leaders: Vec<i32> = m
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.error_code == 0)
            .map(|p| p.leader_id)
            .collect();
        let found = leaders.len() as i32;
        if found >= config.partitions && leaders.iter().all(|&l| l >= 0) {
            if m.brokers.len() != 1 || leaders.iter().any(|&l| l != leaders[0]) {
                return Err(fail(
                    "Metadata",
                    format!(
                        "blast drives one broker, but {} lists {} brokers and leaders {leaders:?}",
                        addr,
                        m.brokers.len()
                    ),
                ));
            }
            if found != config.partitions {
                return Err(fail(
                    "Metadata",
                    format!(
                        "topic {} has {found} partitions, not {}",
                        config.topic, config.partitions
                    ),
                ));
            }
            return Ok(produce);
        }
        if Instant::now() >= deadline {
            return Err(fail(
                "Metadata",
                format!(
                    "topic {} has no leader for every partition after {:?}",
                    config.topic, config.timeout
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Produce request every connection sends, encoded once.
fn build_request(config: &BlastConfig, version: i16) -> Result<Vec<u8>, BenchError> {
    let value = payload::filler(config.record_bytes, 0x5eed);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut batch = RecordBatchBuilder::new();
    for _ in 0..config.batch_records {
        batch.push(NewRecord::new(now_ms, None, Some(&value)));
    }
    let batch = bytes::Bytes::from(
        batch
            .build()
            .map_err(|e| fail("building the record batch", e))?,
    );
    let body = RequestBody::Produce(produce_request::ProduceRequest {
        acks: -1,
        timeout_ms: i32::try_from(config.timeout.as_millis()).unwrap_or(i32::MAX),
        topic_data: vec![produce_request::TopicProduceData {
            name: config.topic.clone().into(),
            partition_data: (0..config.partitions)
                .map(|index| produce_request::PartitionProduceData {
                    index,
                    records: Some(batch.clone().into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    Ok(concat(
        &encode_request(0, Some("ferry-bench-blast"), version, &body)
            .map_err(|e| fail("encoding the Produce request", e))?,
    )
    .to_vec())
}

/// What the connections add up, shared.
struct Totals {
    start: Instant,
    window_start: Duration,
    window_end: Duration,
    records_per_request: u64,
    acked_in_window: AtomicU64,
    requests_in_window: AtomicU64,
    acked_total: AtomicU64,
    errors: Mutex<BTreeMap<i16, u64>>,
    latency: Mutex<Histogram<u64>>,
}

/// One connection: a writer that keeps `in_flight` requests outstanding
/// until the window ends, and a reader (this thread) that matches
/// responses to them in order.
fn connection(
    config: &BlastConfig,
    version: i16,
    request: &[u8],
    totals: &Totals,
) -> Result<(), BenchError> {
    let addr = config.bootstrap.as_str();
    let mut reader = connect(addr, config.timeout)?;
    let mut writer = reader.try_clone().map_err(io_err("setting up", addr))?;
    // A credit per request that may be outstanding; the reader gives one
    // back per response. Each request's correlation id and send time go to
    // the reader once the writer holds a credit, just before the write.
    let (credit_tx, credit_rx) = channel::bounded::<()>(config.in_flight);
    for _ in 0..config.in_flight {
        let _ = credit_tx.send(());
    }
    let (sent_tx, sent_rx) = channel::unbounded::<(i32, Instant)>();
    let end = totals.start + totals.window_end;
    let mut frame = request.to_vec();
    let writing = std::thread::scope(|scope| {
        let w = scope.spawn(move || -> Result<(), BenchError> {
            let mut correlation: i32 = 0;
            while Instant::now() < end {
                if credit_rx.recv().is_err() {
                    return Ok(()); // the reader stopped; it says why
                }
                correlation = correlation.wrapping_add(1);
                // Size (4), API key (2), version (2), then the correlation id.
                frame[8..12].copy_from_slice(&correlation.to_be_bytes());
                if sent_tx.send((correlation, Instant::now())).is_err() {
                    return Ok(());
                }
                if let Err(e) = writer.write_all(&frame) {
                    // The reader waits for this request's answer: end its read.
                    let _ = writer.shutdown(std::net::Shutdown::Both);
                    return Err(io_err("writing to", addr)(e));
                }
            }
            Ok(())
        });
        let mut buf = Vec::new();
        let header = if response_header_version(0, version) == 1 {
            5
        } else {
            4
        };
        let read = (|| -> Result<(), BenchError> {
            // Ends when the writer has stopped and every request is answered.
            for (correlation, sent) in sent_rx.iter() {
                let resp = read_frame(&mut reader, addr, &mut buf)?;
                let done = Instant::now();
                let answered = resp
                    .get(..4)
                    .map(|id| i32::from_be_bytes([id[0], id[1], id[2], id[3]]));
                if answered != Some(correlation) {
                    return Err(fail(
                        "reading a response",
                        format!("correlation id {answered:?}, expected {correlation}: answers out of order"),
                    ));
                }
                let body = resp
                    .get(header..)
                    .ok_or_else(|| fail("reading a response", "shorter than its header"))?;
                let body = bytes::Bytes::copy_from_slice(body);
                let r = produce_response::ProduceResponse::decode(&body, version)
                    .map_err(|e| fail("decoding a Produce response", e))?;
                let mut ok = 0u64;
                let mut bad = Vec::new();
                for p in r
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                {
                    if p.error_code == 0 {
                        ok += 1;
                    } else {
                        bad.push(p.error_code);
                    }
                }
                if !bad.is_empty() {
                    let mut errors = totals.errors.lock().unwrap_or_else(|e| e.into_inner());
                    for code in bad {
                        *errors.entry(code).or_default() += 1;
                    }
                }
                let _ = credit_tx.send(());
                let acked = ok * config.batch_records as u64;
                totals.acked_total.fetch_add(acked, Ordering::Relaxed);
                let at = done - totals.start;
                if at >= totals.window_start && at < totals.window_end {
                    totals.acked_in_window.fetch_add(acked, Ordering::Relaxed);
                    totals.requests_in_window.fetch_add(1, Ordering::Relaxed);
                    crate::stats::record_latency_ns(
                        &mut totals.latency.lock().unwrap_or_else(|e| e.into_inner()),
                        (done - sent).as_nanos() as u64,
                    );
                }
            }
            Ok(())
        })();
        // A failed read leaves the writer waiting for a credit: end it.
        drop(credit_tx);
        drop(sent_rx);
        let _ = reader.shutdown(std::net::Shutdown::Both);
        let wrote = w.join().unwrap_or_else(|_| Err(fail("writer", "panicked")));
        // A failed write is the cause of the failed read that follows it.
        wrote.and(read)
    });
    writing
}

fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Runs the load and reports it; prints a progress line a second on stderr.
pub fn blast(config: &BlastConfig) -> Result<BlastReport, BenchError> {
    let version = prepare(config)?;
    let request = build_request(config, version)?;
    let cpu_before = process_cpu_seconds();
    let totals = Arc::new(Totals {
        start: Instant::now(),
        window_start: config.warmup,
        window_end: config.warmup + config.duration,
        records_per_request: config.partitions as u64 * config.batch_records as u64,
        acked_in_window: AtomicU64::new(0),
        requests_in_window: AtomicU64::new(0),
        acked_total: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        latency: Mutex::new(crate::stats::latency_histogram()),
    });
    let outcome = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..config.connections)
            .map(|_| scope.spawn(|| connection(config, version, &request, &totals)))
            .collect();
        // Progress, until every connection is done.
        let mut last = 0u64;
        let mut tick = 0u64;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(100));
            tick += 1;
            if tick % 10 == 0 {
                let now = totals.acked_total.load(Ordering::Relaxed);
                let phase = if totals.start.elapsed() < totals.window_start {
                    "warmup"
                } else if totals.start.elapsed() < totals.window_end {
                    "measure"
                } else {
                    "drain"
                };
                eprintln!(
                    "[{phase:>7} {:>3}s] acked {:>9} rec/s {:>9.2} MB/s",
                    tick / 10,
                    now - last,
                    (now - last) as f64 * config.record_bytes as f64 / 1e6
                );
                last = now;
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(fail("connection", "panicked")))
            })
            .collect::<Result<Vec<()>, BenchError>>()
    });
    outcome?;
    let wall_s = totals.start.elapsed().as_secs_f64();
    let window_s = config.duration.as_secs_f64();
    let acked = totals.acked_in_window.load(Ordering::Relaxed);
    let hist = totals.latency.lock().unwrap_or_else(|e| e.into_inner());
    let latency = LatencySummary::from_histogram_us(&hist);
    let errors = totals
        .errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    debug_assert!(totals.records_per_request > 0);
    Ok(BlastReport {
        config: config.clone(),
        machine: crate::machine::detect(),
        produce_version: version,
        records_per_sec: acked as f64 / window_s,
        mb_per_sec: acked as f64 * config.record_bytes as f64 / window_s / 1e6,
        requests: totals.requests_in_window.load(Ordering::Relaxed),
        acked_total: totals.acked_total.load(Ordering::Relaxed),
        latency,
        errors,
        client_cpu_s: process_cpu_seconds() - cpu_before,
        wall_s,
    })
}
