//! One benchmark run against a broker, with librdkafka clients.
//!
//! The run goes:
//!
//! 1. **Topic.** An admin client on the first endpoint finds the topic in the
//!    cluster's metadata, or creates it and waits until every partition has a
//!    leader.
//! 2. **Consumers.** Consumer `k` is assigned partitions `p` with
//!    `p % consumers == k`, at each partition's high watermark read just
//!    before the load, so it sees every record of this run and none before.
//!    They use `assign`, not group membership, so they are never paused by
//!    rebalances, and they commit nothing.
//! 3. **Producers.** Each producer is a librdkafka `ThreadedProducer` with its
//!    own thread driving a [`Pacer`] over the window; it sends keyless records
//!    to the partitions in turn, each stamped with its intended send time
//!    ([`crate::payload`]). librdkafka's polling thread runs the delivery
//!    callback, which records the publish latency.
//! 4. **Load.** From `start`, warm-up then measurement; the calling thread
//!    prints a progress line to stderr every second.
//! 5. **Drain.** When the window ends, producers stop sending; the run waits
//!    for the outstanding delivery reports (librdkafka's `message.timeout.ms`
//!    is the drain time), then for the consumers to receive every
//!    acknowledged record, up to the drain deadline, `end + drain_secs`.
//!
//! Every wait has a deadline: the connect timeout before the load, the
//! window during it, the drain deadline after it.

use crate::cli::{Endpoint, RunConfig};
use crate::clock::{secs_to_ns, RunClock};
use crate::error::BenchError;
use crate::machine;
use crate::pacer::{Pace, Pacer};
use crate::payload::{self, Stamp};
use crate::recorder::{Phase, Recorder, Window};
use crate::report::{
    p99_ratio, EndToEnd, MeasuredWindow, PartitionLeader, Publish, PublishPaths, Report,
    ZoneLatencies, ZonePair, ZonePublish,
};
use crate::stats::{LatencySummary, Throughput};
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a sender waits before retrying a record librdkafka's queue had no
/// room for.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_micros(200);
/// How long a consumer's poll blocks; the bound on noticing the stop flag.
const CONSUMER_POLL: Duration = Duration::from_millis(100);
/// The pause between metadata checks while a new topic gets its leaders.
const METADATA_RETRY: Duration = Duration::from_millis(200);
/// The gap between the last client set-up and the first record.
const START_DELAY_NS: u64 = 20_000_000;
/// Distinct error messages kept per client; later ones are counted under
/// [`OTHER_ERRORS`].
const ERROR_KINDS_MAX: usize = 32;
const OTHER_ERRORS: &str = "other errors";

/// Counts errors by message, with a bound on the number of messages.
#[derive(Debug, Default)]
struct ErrorCounts(Mutex<BTreeMap<String, u64>>);

impl ErrorCounts {
    fn add(&self, prefix: &str, message: impl std::fmt::Display) {
        let key = format!("{prefix}: {message}");
        let mut map = self.0.lock();
        let key = if map.contains_key(&key) || map.len() < ERROR_KINDS_MAX {
            key
        } else {
            OTHER_ERRORS.to_string()
        };
        *map.entry(key).or_insert(0) += 1;
    }

    fn merge_into(&self, out: &mut BTreeMap<String, u64>) {
        for (k, v) in self.0.lock().iter() {
            *out.entry(k.clone()).or_insert(0) += v;
        }
    }
}

/// Routes librdkafka's logs and errors to `tracing`, with the client's id.
fn log_librdkafka(client: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => tracing::warn!(client, fac, message, "librdkafka"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(client, fac, message, "librdkafka")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(client, fac, message, "librdkafka"),
    }
}

/// The context of admin clients and consumers: logging only.
struct LogContext {
    client_id: String,
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(&self.client_id, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(client = %self.client_id, %error, reason, "librdkafka client error");
    }
}

impl ConsumerContext for LogContext {}

/// What a producer's sender thread and its delivery callback share with the
/// rest of the run.
struct ProducerShared {
    clock: RunClock,
    record_bytes: u64,
    recorder: Mutex<Recorder>,
    /// The path to each partition's leader, by partition.
    paths: Vec<LeaderPath>,
    /// Records to leaders in the producer's zone, and in other zones.
    same_zone: Mutex<Recorder>,
    cross_zone: Mutex<Recorder>,
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    not_sent: AtomicU64,
    errors: ErrorCounts,
}

impl ProducerShared {
    /// Records an acknowledged record of `partition`: in the producer's
    /// latency, and in the path's to the partition's leader.
    fn record(&self, partition: i32, intended_ns: u64, done_ns: u64) {
        self.recorder
            .lock()
            .record(intended_ns, done_ns, self.record_bytes);
        let path = usize::try_from(partition)
            .ok()
            .and_then(|p| self.paths.get(p));
        let by_path = match path {
            Some(LeaderPath::SameZone) => Some(&self.same_zone),
            Some(LeaderPath::CrossZone) => Some(&self.cross_zone),
            Some(LeaderPath::Unknown) | None => None,
        };
        if let Some(r) = by_path {
            r.lock().record(intended_ns, done_ns, self.record_bytes);
        }
    }
}

struct ProducerCtx {
    client_id: String,
    shared: Arc<ProducerShared>,
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(&self.client_id, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(client = %self.client_id, %error, reason, "librdkafka client error");
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let s = &self.shared;
        let done_ns = s.clock.now_ns();
        match result {
            Ok(message) => {
                s.acked.fetch_add(1, Ordering::Relaxed);
                let intended = message
                    .payload()
                    .and_then(Stamp::read)
                    .and_then(|stamp| s.clock.run_ns_of_unix(stamp.intended_unix_ns));
                if let Some(intended_ns) = intended {
                    s.record(message.partition(), intended_ns, done_ns);
                }
            }
            // Purged at the drain deadline: neither acknowledged nor failed,
            // counted as unreported.
            Err((
                KafkaError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight,
                ),
                _,
            )) => {}
            Err((error, _)) => {
                s.failed.fetch_add(1, Ordering::Relaxed);
                s.errors.add("delivery", error);
            }
        }
    }
}

/// What a consumer thread shares with the rest of the run.
struct ConsumerShared {
    /// One recorder per producer zone (endpoint index).
    recorders: Vec<Mutex<Recorder>>,
    consumed: AtomicU64,
    foreign: AtomicU64,
    errors: ErrorCounts,
}

struct ProducerHandle {
    zone: usize,
    producer: ThreadedProducer<ProducerCtx>,
    shared: Arc<ProducerShared>,
}

struct ConsumerHandle {
    zone: usize,
    consumer: BaseConsumer<LogContext>,
    shared: Arc<ConsumerShared>,
}

fn kafka_err(op: impl Into<String>, endpoint: &Endpoint) -> impl FnOnce(KafkaError) -> BenchError {
    let op = op.into();
    let bootstrap = endpoint.bootstrap.clone();
    move |source| BenchError::Kafka {
        op,
        bootstrap,
        source: Box::new(source),
    }
}

fn base_config(config: &RunConfig, endpoint: &Endpoint, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &endpoint.bootstrap)
        .set("client.id", client_id);
    for (k, v) in &config.client_config {
        c.set(k, v);
    }
    c
}

/// Finds or creates the topic; returns its partition count.
fn ensure_topic(config: &RunConfig, timeout: Duration) -> Result<i32, BenchError> {
    let endpoint = &config.endpoints[0];
    let client_id = endpoint.client_id("admin", 0);
    let admin: AdminClient<LogContext> = AdminClient::from_config_and_context(
        &base_config(config, endpoint, &client_id),
        LogContext {
            client_id: client_id.clone(),
        },
    )
    .map_err(kafka_err("creating the admin client", endpoint))?;
    let topic = config.topic.as_str();
    // The topic's partition count and whether every partition has a leader,
    // from metadata for every topic, so that asking cannot auto-create it.
    let topic_state = |admin: &AdminClient<LogContext>| -> Result<Option<(i32, bool)>, BenchError> {
        let metadata = admin
            .inner()
            .fetch_metadata(None, timeout)
            .map_err(kafka_err("reading cluster metadata", endpoint))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
            .map(|t| {
                let led = t
                    .partitions()
                    .iter()
                    .all(|p| p.leader() >= 0 && p.error().is_none());
                (i32::try_from(t.partitions().len()).unwrap_or(i32::MAX), led)
            }))
    };
    match topic_state(&admin)? {
        Some((found, _)) => {
            if found != config.partitions {
                tracing::warn!(
                    topic,
                    partitions = found,
                    asked = config.partitions,
                    "the topic exists with another partition count; using it as it is"
                );
            }
        }
        None => {
            let new_topic = NewTopic::new(
                topic,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            );
            let options = AdminOptions::new()
                .request_timeout(Some(timeout))
                .operation_timeout(Some(timeout));
            let results =
                futures_lite::future::block_on(admin.create_topics([&new_topic], &options))
                    .map_err(kafka_err(format!("creating topic {topic}"), endpoint))?;
            for result in results {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(BenchError::Broker {
                            op: format!("creating topic {name}"),
                            bootstrap: endpoint.bootstrap.clone(),
                            reason: code.to_string(),
                        })
                    }
                }
            }
        }
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some((found, true)) = topic_state(&admin)? {
            tracing::info!(topic, partitions = found, "topic ready");
            return Ok(found);
        }
        if std::time::Instant::now() >= deadline {
            return Err(BenchError::Broker {
                op: format!("waiting for topic {topic}"),
                bootstrap: endpoint.bootstrap.clone(),
                reason: format!(
                    "its partitions have no leaders after {} s",
                    timeout.as_secs()
                ),
            });
        }
        std::thread::sleep(METADATA_RETRY);
    }
}

/// Whether a client call's error is one Kafka says to retry: a leader
/// moving or loading.
fn retriable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NotCoordinator
        )
    )
}

/// Where a partition's leader is, seen from a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderPath {
    /// In the producer's zone.
    SameZone,
    /// In another zone: the producer reaches it through its zone's proxy.
    CrossZone,
    /// The producer has no zone, or the leader's address is in no zone.
    Unknown,
}

/// The zone of every broker address named in a zone's bootstrap list
/// (`HOST:PORT[,HOST:PORT...]`). An address listed under two zones is left
/// out: its zone is not known.
pub fn broker_zones(endpoints: &[Endpoint]) -> BTreeMap<String, String> {
    let mut zones = BTreeMap::new();
    let mut ambiguous = BTreeSet::new();
    for e in endpoints {
        let Some(zone) = &e.zone else { continue };
        for address in e
            .bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match zones.get(address) {
                Some(z) if z != zone => {
                    ambiguous.insert(address.to_string());
                }
                _ => {
                    zones.insert(address.to_string(), zone.clone());
                }
            }
        }
    }
    for a in ambiguous {
        zones.remove(&a);
    }
    zones
}

/// The path from a producer in `producer_zone` to each partition's leader,
/// given the leaders' zones in partition order.
pub fn leader_paths(leader_zones: &[Option<&str>], producer_zone: Option<&str>) -> Vec<LeaderPath> {
    leader_zones
        .iter()
        .map(|leader| match (producer_zone, leader) {
            (Some(p), Some(l)) if p == *l => LeaderPath::SameZone,
            (Some(_), Some(_)) => LeaderPath::CrossZone,
            _ => LeaderPath::Unknown,
        })
        .collect()
}

/// An admin client with no zone tag and no rack: Ferry shows such a client
/// the true leaders (not its zone's proxies).
fn untagged_admin(
    config: &RunConfig,
    endpoint: &Endpoint,
) -> Result<AdminClient<LogContext>, BenchError> {
    let client_id = "ferry-bench-leaders".to_string();
    AdminClient::from_config_and_context(
        &base_config(config, endpoint, &client_id),
        LogContext { client_id },
    )
    .map_err(kafka_err("creating the leader lookup client", endpoint))
}

/// Each partition's true leader (from `admin`, untagged), with the zone of
/// its address in `zones`; in partition order.
fn true_leaders(
    admin: &AdminClient<LogContext>,
    endpoint: &Endpoint,
    topic: &str,
    partitions: i32,
    zones: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Vec<PartitionLeader>, BenchError> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), timeout)
        .map_err(kafka_err(
            format!("reading the leaders of {topic}"),
            endpoint,
        ))?;
    let addresses: BTreeMap<i32, String> = metadata
        .brokers()
        .iter()
        .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
        .collect();
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| BenchError::Broker {
            op: format!("reading the leaders of {topic}"),
            bootstrap: endpoint.bootstrap.clone(),
            reason: "the topic is not in the metadata".into(),
        })?;
    (0..partitions)
        .map(|p| {
            let found = t.partitions().iter().find(|m| m.id() == p);
            let leader = found.map_or(-1, |m| m.leader());
            let address = addresses
                .get(&leader)
                .cloned()
                .ok_or_else(|| BenchError::Broker {
                    op: format!("reading the leader of {topic}-{p}"),
                    bootstrap: endpoint.bootstrap.clone(),
                    reason: format!("leader {leader} is not among the brokers listed"),
                })?;
            Ok(PartitionLeader {
                partition: p,
                leader,
                zone: zones.get(&address).cloned(),
                address,
            })
        })
        .collect()
}

fn create_consumer(
    config: &RunConfig,
    index: usize,
    partitions: i32,
    run_id: u64,
    timeout: Duration,
) -> Result<ConsumerHandle, BenchError> {
    let zone = index % config.endpoints.len();
    let endpoint = &config.endpoints[zone];
    let client_id = endpoint.client_id("consumer", index);
    let mut c = base_config(config, endpoint, &client_id);
    // librdkafka assigns partitions only through a group handle, so the
    // consumers name a group of their own; they never join it or commit.
    c.set("group.id", format!("ferry-bench-{run_id}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "latest");
    if let Some(rack) = &endpoint.zone {
        c.set("client.rack", rack);
    }
    for (k, v) in &config.consumer_config {
        c.set(k, v);
    }
    let consumer: BaseConsumer<LogContext> = BaseConsumer::from_config_and_context(
        &c,
        LogContext {
            client_id: client_id.clone(),
        },
    )
    .map_err(kafka_err(
        format!("creating consumer {client_id}"),
        endpoint,
    ))?;
    let mut assignment = TopicPartitionList::new();
    let deadline = std::time::Instant::now() + timeout;
    for p in (0..partitions).filter(|p| *p as usize % config.consumers == index) {
        // A leader that has just come to lead a partition may answer
        // LEADER_NOT_AVAILABLE while it loads it (Ferry does, in a
        // cluster): retriable, so retried until the connect timeout.
        let (_, high) = loop {
            match consumer.fetch_watermarks(&config.topic, p, timeout) {
                Ok(w) => break w,
                Err(e) if retriable(&e) && std::time::Instant::now() < deadline => {
                    tracing::info!(error = %e, partition = p, "retrying the end offset");
                    std::thread::sleep(METADATA_RETRY);
                }
                Err(e) => {
                    return Err(kafka_err(
                        format!("reading the end offset of {}-{p}", config.topic),
                        endpoint,
                    )(e))
                }
            }
        };
        assignment
            .add_partition_offset(&config.topic, p, Offset::Offset(high))
            .map_err(kafka_err("building an assignment", endpoint))?;
    }
    consumer.assign(&assignment).map_err(kafka_err(
        format!("assigning partitions to {client_id}"),
        endpoint,
    ))?;
    let shared = Arc::new(ConsumerShared {
        recorders: (0..config.endpoints.len())
            .map(|_| Mutex::new(Recorder::new(Window::NONE)))
            .collect(),
        consumed: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        errors: ErrorCounts::default(),
    });
    Ok(ConsumerHandle {
        zone,
        consumer,
        shared,
    })
}

fn create_producer(
    config: &RunConfig,
    index: usize,
    clock: RunClock,
    leaders: &[PartitionLeader],
    timeout: Duration,
) -> Result<ProducerHandle, BenchError> {
    let zone = index % config.endpoints.len();
    let endpoint = &config.endpoints[zone];
    let leader_zones: Vec<Option<&str>> = leaders.iter().map(|l| l.zone.as_deref()).collect();
    let paths = leader_paths(&leader_zones, endpoint.zone.as_deref());
    let client_id = endpoint.client_id("producer", index);
    let mut c = base_config(config, endpoint, &client_id);
    c.set("acks", config.acks.as_config())
        .set("linger.ms", config.linger_ms.to_string())
        .set("batch.size", config.batch_bytes.to_string())
        .set("compression.type", config.compression.as_config())
        .set(
            "message.timeout.ms",
            config.drain_secs.saturating_mul(1_000).to_string(),
        );
    for (k, v) in &config.producer_config {
        c.set(k, v);
    }
    let shared = Arc::new(ProducerShared {
        clock,
        record_bytes: config.record_bytes as u64,
        recorder: Mutex::new(Recorder::new(Window::NONE)),
        paths,
        same_zone: Mutex::new(Recorder::new(Window::NONE)),
        cross_zone: Mutex::new(Recorder::new(Window::NONE)),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        not_sent: AtomicU64::new(0),
        errors: ErrorCounts::default(),
    });
    let producer: ThreadedProducer<ProducerCtx> = ThreadedProducer::from_config_and_context(
        &c,
        ProducerCtx {
            client_id: client_id.clone(),
            shared: shared.clone(),
        },
    )
    .map_err(kafka_err(
        format!("creating producer {client_id}"),
        endpoint,
    ))?;
    // Connect and learn the leaders now, so that set-up is not timed.
    producer
        .client()
        .fetch_metadata(Some(&config.topic), timeout)
        .map_err(kafka_err(
            format!("connecting producer {client_id}"),
            endpoint,
        ))?;
    Ok(ProducerHandle {
        zone,
        producer,
        shared,
    })
}

/// The sender thread of producer `index`: follows the pacer until the window
/// ends.
fn send_loop(
    config: &RunConfig,
    index: usize,
    partitions: i32,
    run_id: u64,
    window: Window,
    handle: &ProducerHandle,
) {
    let s = &handle.shared;
    let clock = s.clock;
    let mut pacer = if config.rate_per_sec > 0.0 {
        let rate = config.rate_per_sec / config.producers as f64;
        // Stagger producers over one interval so they do not send in step.
        let phase_ns = (1e9 / config.rate_per_sec * index as f64) as u64;
        Pacer::fixed(rate, window.start_ns + phase_ns, window.end_ns)
    } else {
        Pacer::open(window.start_ns, window.end_ns)
    };
    let mut value = payload::filler(config.record_bytes, run_id ^ index as u64);
    let producer_index = u32::try_from(index).unwrap_or(u32::MAX);
    let mut partition = (index % partitions as usize) as i32;
    loop {
        match pacer.next(clock.now_ns()) {
            Pace::Done => break,
            Pace::WaitUntil(t) => clock.sleep_until(t),
            Pace::Send { seq, intended_ns } => {
                Stamp {
                    producer: producer_index,
                    run_id,
                    seq,
                    intended_unix_ns: clock.unix_ns(intended_ns),
                }
                .write(&mut value);
                let mut record = BaseRecord::<[u8], [u8]>::to(&config.topic)
                    .payload(&value[..])
                    .partition(partition);
                partition = (partition + 1) % partitions;
                loop {
                    match handle.producer.send(record) {
                        Ok(()) => {
                            s.sent.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            if clock.now_ns() >= window.end_ns {
                                s.not_sent.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            record = back;
                            std::thread::sleep(QUEUE_FULL_BACKOFF);
                        }
                        Err((error, _)) => {
                            s.not_sent.fetch_add(1, Ordering::Relaxed);
                            s.errors.add("send", error);
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The thread of one consumer: receives and records until told to stop or
/// the deadline passes.
fn consume_loop(
    handle: &ConsumerHandle,
    clock: RunClock,
    run_id: u64,
    zones: usize,
    stop: &AtomicBool,
    deadline_ns: u64,
) {
    let s = &handle.shared;
    while !stop.load(Ordering::Relaxed) && clock.now_ns() < deadline_ns {
        match handle.consumer.poll(CONSUMER_POLL) {
            None => {}
            Some(Ok(message)) => {
                let done_ns = clock.now_ns();
                let value = message.payload().unwrap_or(&[]);
                let stamp = Stamp::read(value).filter(|st| st.run_id == run_id);
                let intended = stamp.and_then(|st| {
                    clock
                        .run_ns_of_unix(st.intended_unix_ns)
                        .map(|ns| (st.producer as usize % zones, ns))
                });
                match intended {
                    Some((zone, intended_ns)) => {
                        s.recorders[zone]
                            .lock()
                            .record(intended_ns, done_ns, value.len() as u64);
                        s.consumed.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        s.foreign.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some(Err(error)) => s.errors.add("consume", error),
        }
    }
}

fn spawn_named<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: String,
    f: impl FnOnce() + Send + 'scope,
) -> Result<std::thread::ScopedJoinHandle<'scope, ()>, BenchError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn_scoped(scope, f)
        .map_err(|e| BenchError::Thread {
            name,
            reason: e.to_string(),
        })
}

/// The p99 so far over some recorders, in milliseconds: of the warm-up
/// records during the warm-up, of the measured ones after.
fn p99_ms(recorders: impl Iterator<Item = Recorder>, phase: Phase) -> String {
    let mut merged: Option<Recorder> = None;
    for r in recorders {
        match &mut merged {
            None => merged = Some(r),
            Some(m) => m.merge(&r),
        }
    }
    let Some(m) = merged else {
        return "-".into();
    };
    let h = if phase == Phase::Warmup {
        &m.warmup
    } else {
        &m.measured
    };
    if h.is_empty() {
        return "-".into();
    }
    format!("{:.3}", h.value_at_quantile(0.99) as f64 / 1_000.0)
}

struct Progress {
    /// Whether publish latency is split by the leader's zone.
    split: bool,
    last_acked: u64,
    last_consumed: u64,
    last_ns: u64,
}

impl Progress {
    fn print(
        &mut self,
        now_ns: u64,
        window: Window,
        record_bytes: usize,
        producers: &[ProducerHandle],
        consumers: &[ConsumerHandle],
    ) {
        let acked: u64 = producers
            .iter()
            .map(|p| p.shared.acked.load(Ordering::Relaxed))
            .sum();
        let failed: u64 = producers
            .iter()
            .map(|p| p.shared.failed.load(Ordering::Relaxed))
            .sum();
        let consumed: u64 = consumers
            .iter()
            .map(|c| c.shared.consumed.load(Ordering::Relaxed))
            .sum();
        let secs = (now_ns.saturating_sub(self.last_ns)) as f64 / 1e9;
        let rate = |now: u64, last: u64| {
            if secs > 0.0 {
                (now - last) as f64 / secs
            } else {
                0.0
            }
        };
        let acked_rate = rate(acked, self.last_acked);
        let consumed_rate = rate(consumed, self.last_consumed);
        let phase = window.phase(now_ns);
        let (label, into_secs) = match phase {
            Phase::Before => ("start", 0.0),
            Phase::Warmup => ("warm-up", (now_ns - window.start_ns) as f64 / 1e9),
            Phase::Measured => ("measure", (now_ns - window.warmup_end_ns) as f64 / 1e9),
            Phase::After => ("drain", (now_ns - window.end_ns) as f64 / 1e9),
        };
        let publish_p99 = p99_ms(
            producers.iter().map(|p| p.shared.recorder.lock().clone()),
            phase,
        );
        let mut line = format!(
            "[{label} {into_secs:>4.0}s] acked {acked_rate:>9.0} rec/s {:>8.2} MB/s  publish p99 {publish_p99:>8} ms",
            acked_rate * record_bytes as f64 / 1e6
        );
        if self.split {
            let same = p99_ms(
                producers.iter().map(|p| p.shared.same_zone.lock().clone()),
                phase,
            );
            let cross = p99_ms(
                producers.iter().map(|p| p.shared.cross_zone.lock().clone()),
                phase,
            );
            line.push_str(&format!(" (same zone {same} ms, cross zone {cross} ms)"));
        }
        if !consumers.is_empty() {
            let e2e_p99 = p99_ms(
                consumers
                    .iter()
                    .flat_map(|c| c.shared.recorders.iter().map(|r| r.lock().clone())),
                phase,
            );
            line.push_str(&format!(
                "  consumed {consumed_rate:>9.0} rec/s  e2e p99 {e2e_p99:>8} ms"
            ));
        }
        if failed > 0 {
            line.push_str(&format!("  failed {failed}"));
        }
        eprintln!("{line}");
        self.last_acked = acked;
        self.last_consumed = consumed;
        self.last_ns = now_ns;
    }
}

/// Runs the benchmark described by `config`; `command` is recorded in the
/// report.
pub fn run(config: &RunConfig, command: Vec<String>) -> Result<Report, BenchError> {
    let clock = RunClock::start();
    let machine = machine::detect();
    let run_id = clock.unix_ns(0) ^ (u64::from(std::process::id()) << 40);
    let timeout = Duration::from_secs(config.connect_timeout_secs);

    let partitions = ensure_topic(config, timeout)?;
    if config.consumers > partitions as usize {
        tracing::warn!(
            consumers = config.consumers,
            partitions,
            "more consumers than partitions: some consumers get none"
        );
    }

    // With zones, each partition's true leader and its zone, to split
    // publish latency by path.
    let leaders = if config.endpoints.iter().any(|e| e.zone.is_some()) {
        let endpoint = &config.endpoints[0];
        let admin = untagged_admin(config, endpoint)?;
        let zones = broker_zones(&config.endpoints);
        let found = true_leaders(&admin, endpoint, &config.topic, partitions, &zones, timeout)?;
        Some((admin, zones, found))
    } else {
        None
    };
    let no_leaders = Vec::new();
    let leader_list = leaders.as_ref().map_or(&no_leaders, |l| &l.2);

    // Clients are set up before the window is known (their set-up is not
    // timed), so their recorders start with no window and get it here,
    // before the first record is sent.
    let consumers = (0..config.consumers)
        .map(|i| create_consumer(config, i, partitions, run_id, timeout))
        .collect::<Result<Vec<_>, _>>()?;
    let producers = (0..config.producers)
        .map(|i| create_producer(config, i, clock, leader_list, timeout))
        .collect::<Result<Vec<_>, _>>()?;
    let window = Window::new(
        clock.now_ns() + START_DELAY_NS,
        secs_to_ns(config.warmup_secs),
        secs_to_ns(config.duration_secs),
    );
    for p in &producers {
        *p.shared.recorder.lock() = Recorder::new(window);
        *p.shared.same_zone.lock() = Recorder::new(window);
        *p.shared.cross_zone.lock() = Recorder::new(window);
    }
    for c in &consumers {
        for r in &c.shared.recorders {
            *r.lock() = Recorder::new(window);
        }
    }
    let drain_deadline_ns = window.end_ns + secs_to_ns(config.drain_secs);
    let stop = AtomicBool::new(false);
    let zones = config.endpoints.len();

    let threads: Result<(), BenchError> = std::thread::scope(|scope| {
        let mut consumer_threads = Vec::new();
        for (i, c) in consumers.iter().enumerate() {
            let stop = &stop;
            consumer_threads.push(spawn_named(scope, format!("consumer-{i}"), move || {
                consume_loop(c, clock, run_id, zones, stop, drain_deadline_ns)
            })?);
        }
        let mut sender_threads = Vec::new();
        for (i, p) in producers.iter().enumerate() {
            sender_threads.push(spawn_named(scope, format!("sender-{i}"), move || {
                send_loop(config, i, partitions, run_id, window, p)
            })?);
        }

        let mut progress = Progress {
            split: leaders.is_some(),
            last_acked: 0,
            last_consumed: 0,
            last_ns: clock.now_ns(),
        };
        let mut next_print_ns = window.start_ns + 1_000_000_000;
        let print_until = |progress: &mut Progress, next: &mut u64, done: &dyn Fn() -> bool| {
            while !done() && clock.now_ns() < drain_deadline_ns {
                let now = clock.now_ns();
                if now >= *next {
                    progress.print(now, window, config.record_bytes, &producers, &consumers);
                    // After a blocking flush, skip the missed seconds.
                    *next = (*next + 1_000_000_000).max(now + 500_000_000);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };

        // Load: until every sender has passed the end of the window.
        print_until(&mut progress, &mut next_print_ns, &|| {
            sender_threads.iter().all(|t| t.is_finished())
        });
        for t in sender_threads {
            if t.join().is_err() {
                return Err(BenchError::Thread {
                    name: "sender".into(),
                    reason: "panicked".into(),
                });
            }
        }

        // Drain: delivery reports (librdkafka's polling threads deliver
        // them), then consumers, up to the deadline, with the progress line.
        print_until(&mut progress, &mut next_print_ns, &|| {
            producers.iter().all(|p| p.producer.in_flight_count() <= 0)
        });
        let acked_total = || {
            producers
                .iter()
                .map(|p| p.shared.acked.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let consumed_total = || {
            consumers
                .iter()
                .map(|c| c.shared.consumed.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        if !consumers.is_empty() {
            print_until(&mut progress, &mut next_print_ns, &|| {
                consumed_total() >= acked_total()
            });
        }
        stop.store(true, Ordering::Relaxed);
        for t in consumer_threads {
            if t.join().is_err() {
                return Err(BenchError::Thread {
                    name: "consumer".into(),
                    reason: "panicked".into(),
                });
            }
        }
        Ok(())
    });
    threads?;

    // The split follows the leaders before the load; say if they moved.
    let paths = leaders.map(|(admin, zones, before)| {
        let endpoint = &config.endpoints[0];
        let leaders_moved =
            match true_leaders(&admin, endpoint, &config.topic, partitions, &zones, timeout) {
                Ok(after) => Some(after != before),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the leaders again after the load");
                    None
                }
            };
        (before, leaders_moved)
    });
    // Dropping a producer purges what it still holds, so that no delivery
    // report can arrive while the report is built.
    let producers: Vec<(usize, Arc<ProducerShared>)> =
        producers.into_iter().map(|h| (h.zone, h.shared)).collect();
    Ok(build_report(
        config, command, &clock, run_id, machine, partitions, window, &producers, &consumers, paths,
    ))
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    config: &RunConfig,
    command: Vec<String>,
    clock: &RunClock,
    run_id: u64,
    machine: machine::Machine,
    partitions: i32,
    window: Window,
    producers: &[(usize, Arc<ProducerShared>)],
    consumers: &[ConsumerHandle],
    leaders: Option<(Vec<PartitionLeader>, Option<bool>)>,
) -> Report {
    let endpoints = config.endpoints.len();
    let mut errors = BTreeMap::new();
    let sum = |f: &dyn Fn(&ProducerShared) -> &AtomicU64| -> u64 {
        producers
            .iter()
            .map(|(_, s)| f(s).load(Ordering::Relaxed))
            .sum()
    };

    let mut publish_all = Recorder::new(window);
    let mut publish_by_zone: Vec<Recorder> =
        (0..endpoints).map(|_| Recorder::new(window)).collect();
    let (mut same_zone, mut cross_zone) = (Recorder::new(window), Recorder::new(window));
    for (zone, shared) in producers {
        let r = shared.recorder.lock();
        publish_all.merge(&r);
        publish_by_zone[*zone].merge(&r);
        same_zone.merge(&shared.same_zone.lock());
        cross_zone.merge(&shared.cross_zone.lock());
        shared.errors.merge_into(&mut errors);
    }
    let paths = leaders.map(|(leaders, leaders_moved)| {
        let same = LatencySummary::from_histogram_us(&same_zone.measured);
        let cross = LatencySummary::from_histogram_us(&cross_zone.measured);
        PublishPaths {
            same_zone: same,
            cross_zone: cross,
            unknown_zone_records: publish_all
                .measured
                .len()
                .saturating_sub(same.count + cross.count),
            cross_same_p99_ratio: p99_ratio(&same, &cross),
            leaders,
            leaders_moved,
        }
    });
    let records_sent = sum(&|s| &s.sent);
    let records_acked = sum(&|s| &s.acked);
    let records_failed = sum(&|s| &s.failed);
    let publish = Publish {
        latency: LatencySummary::from_histogram_us(&publish_all.measured),
        throughput: Throughput::new(
            publish_all.completed_in_window,
            publish_all.bytes_in_window,
            window.measured_secs(),
        ),
        records_sent,
        records_acked,
        records_failed,
        records_not_sent: sum(&|s| &s.not_sent),
        records_unreported: records_sent.saturating_sub(records_acked + records_failed),
    };

    // e2e[producer zone][consumer zone]
    let mut e2e: Vec<Vec<Recorder>> = (0..endpoints)
        .map(|_| (0..endpoints).map(|_| Recorder::new(window)).collect())
        .collect();
    let mut e2e_all = Recorder::new(window);
    for c in consumers {
        for (from, r) in c.shared.recorders.iter().enumerate() {
            let r = r.lock();
            e2e_all.merge(&r);
            e2e[from][c.zone].merge(&r);
        }
        c.shared.errors.merge_into(&mut errors);
    }
    let end_to_end = (!consumers.is_empty()).then(|| {
        let consumed: u64 = consumers
            .iter()
            .map(|c| c.shared.consumed.load(Ordering::Relaxed))
            .sum();
        EndToEnd {
            latency: LatencySummary::from_histogram_us(&e2e_all.measured),
            throughput: Throughput::new(
                e2e_all.completed_in_window,
                e2e_all.bytes_in_window,
                window.measured_secs(),
            ),
            records_consumed: consumed,
            records_missing: records_acked.saturating_sub(consumed),
            records_foreign: consumers
                .iter()
                .map(|c| c.shared.foreign.load(Ordering::Relaxed))
                .sum(),
        }
    });

    let labels: Vec<&str> = config.endpoints.iter().map(Endpoint::label).collect();
    let zones = config.endpoints.iter().any(|e| e.zone.is_some()).then(|| {
        // Clients are placed on endpoints; two endpoints may name one zone,
        // so merge by name.
        let mut publish: BTreeMap<&str, Recorder> = BTreeMap::new();
        let mut pairs: BTreeMap<(&str, &str), Recorder> = BTreeMap::new();
        for (from, r) in publish_by_zone.iter().enumerate() {
            publish
                .entry(labels[from])
                .or_insert_with(|| Recorder::new(window))
                .merge(r);
            if consumers.is_empty() {
                continue;
            }
            for (to, r) in e2e[from].iter().enumerate() {
                pairs
                    .entry((labels[from], labels[to]))
                    .or_insert_with(|| Recorder::new(window))
                    .merge(r);
            }
        }
        ZoneLatencies {
            publish: publish
                .into_iter()
                .map(|(zone, r)| ZonePublish {
                    zone: zone.to_string(),
                    latency: LatencySummary::from_histogram_us(&r.measured),
                })
                .collect(),
            end_to_end: pairs
                .into_iter()
                .map(|((from, to), r)| ZonePair {
                    producer_zone: from.to_string(),
                    consumer_zone: to.to_string(),
                    latency: LatencySummary::from_histogram_us(&r.measured),
                })
                .collect(),
        }
    });

    Report {
        tool: "ferry-bench",
        version: env!("CARGO_PKG_VERSION"),
        command,
        run_id,
        started_unix_ms: clock.origin_unix_ms(),
        measured_window: MeasuredWindow {
            start_unix_ms: clock.unix_ns(window.warmup_end_ns) / 1_000_000,
            end_unix_ms: clock.unix_ns(window.end_ns) / 1_000_000,
        },
        machine,
        config: config.clone(),
        partitions,
        publish,
        end_to_end,
        zones,
        paths,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(name: &str, bootstrap: &str) -> Endpoint {
        Endpoint {
            zone: Some(name.into()),
            bootstrap: bootstrap.into(),
        }
    }

    #[test]
    fn broker_addresses_take_the_zone_whose_bootstrap_lists_them() {
        // Two zones of two nodes; az1 is given twice (two endpoints of one
        // zone agree); 127.0.0.1:9 is claimed by both zones, so its zone is
        // not known; an untagged endpoint names no zone.
        let endpoints = [
            zone("az1", "127.0.0.1:9092, 127.0.0.1:9093"),
            zone("az2", "127.0.0.1:9094,127.0.0.1:9095,127.0.0.1:9"),
            zone("az1", "127.0.0.1:9092,127.0.0.1:9"),
            Endpoint {
                zone: None,
                bootstrap: "127.0.0.1:7".into(),
            },
        ];
        let z = broker_zones(&endpoints);
        let expected: BTreeMap<String, String> = [
            ("127.0.0.1:9092", "az1"),
            ("127.0.0.1:9093", "az1"),
            ("127.0.0.1:9094", "az2"),
            ("127.0.0.1:9095", "az2"),
        ]
        .into_iter()
        .map(|(a, z)| (a.to_string(), z.to_string()))
        .collect();
        assert_eq!(z, expected);
    }

    #[test]
    fn a_record_is_cross_zone_when_its_partitions_leader_is_in_another_zone() {
        // Six partitions led in az1, az2, az3, az1, az2 and an unknown zone.
        let leaders = [
            Some("az1"),
            Some("az2"),
            Some("az3"),
            Some("az1"),
            Some("az2"),
            None,
        ];
        use LeaderPath::*;
        assert_eq!(
            leader_paths(&leaders, Some("az1")),
            [SameZone, CrossZone, CrossZone, SameZone, CrossZone, Unknown]
        );
        assert_eq!(
            leader_paths(&leaders, Some("az3")),
            [CrossZone, CrossZone, SameZone, CrossZone, CrossZone, Unknown]
        );
        // An untagged producer has no path.
        assert!(leader_paths(&leaders, None).iter().all(|p| *p == Unknown));
    }

    #[test]
    fn delivery_reports_are_split_by_path() {
        // One producer in az1 over three partitions led in az1, az2 and an
        // unknown zone; records due in the window at 1 s. Partition 0: 100
        // ms and 300 ms; partition 1: 500 ms; partition 2: 50 ms.
        // Same zone: {100, 300}, p99 = 300 ms; cross zone: {500}, p99 500
        // ms; ratio 500 / 300 = 1.667; one record in neither; all four in
        // the overall p99 (500 ms). A fifth, of a partition not in the
        // metadata, counts overall and in neither path.
        let window = Window::new(0, 0, 10_000_000_000);
        let shared = ProducerShared {
            clock: RunClock::start(),
            record_bytes: 1_000,
            recorder: Mutex::new(Recorder::new(window)),
            paths: leader_paths(&[Some("az1"), Some("az2"), None], Some("az1")),
            same_zone: Mutex::new(Recorder::new(window)),
            cross_zone: Mutex::new(Recorder::new(window)),
            sent: AtomicU64::new(4),
            acked: AtomicU64::new(4),
            failed: AtomicU64::new(0),
            not_sent: AtomicU64::new(0),
            errors: ErrorCounts::default(),
        };
        let ms = 1_000_000u64;
        for (partition, latency_ms) in [(0, 100u64), (0, 300), (1, 500), (2, 50)] {
            shared.record(partition, 1_000 * ms, (1_000 + latency_ms) * ms);
        }
        // A partition the metadata did not have: overall only.
        shared.record(7, 1_000 * ms, 1_010 * ms);
        let config = crate::cli::WorkloadArgs {
            topic: "t".into(),
            partitions: 3,
            replication_factor: 1,
            record_bytes: 1_000,
            rate: 0.0,
            acks: crate::cli::Acks::All,
            producers: 1,
            consumers: 0,
            warmup_secs: 0,
            duration_secs: 10,
            drain_secs: 1,
            connect_timeout_secs: 1,
            linger_ms: 5,
            batch_bytes: 1_000_000,
            compression: crate::cli::Compression::None,
            client_config: Vec::new(),
            producer_config: Vec::new(),
            consumer_config: Vec::new(),
        }
        .into_config(vec![zone("az1", "127.0.0.1:9092")])
        .expect("valid config");
        let leaders = vec![PartitionLeader {
            partition: 0,
            leader: 0,
            address: "127.0.0.1:9092".into(),
            zone: Some("az1".into()),
        }];
        let report = build_report(
            &config,
            Vec::new(),
            &RunClock::start(),
            1,
            machine::detect(),
            3,
            window,
            &[(0, Arc::new(shared))],
            &[],
            Some((leaders.clone(), Some(false))),
        );
        // Percentiles are within HdrHistogram's 0.1% (see stats.rs).
        let near = |a: f64, b: f64| (a - b).abs() <= b * 1e-3;
        let paths = report.paths.clone().expect("a split with zones");
        assert_eq!(paths.same_zone.count, 2);
        assert!(near(paths.same_zone.p99_ms, 300.0), "{:?}", paths.same_zone);
        assert_eq!(paths.cross_zone.count, 1);
        assert!(
            near(paths.cross_zone.p99_ms, 500.0),
            "{:?}",
            paths.cross_zone
        );
        assert_eq!(paths.unknown_zone_records, 2);
        let ratio = paths.cross_same_p99_ratio.expect("both paths have records");
        assert!(near(ratio, 500.0 / 300.0), "{ratio}");
        assert_eq!(paths.leaders, leaders);
        assert_eq!(report.publish.latency.count, 5);
        assert!(near(report.publish.latency.p99_ms, 500.0));
        let text = report.render_text();
        assert!(text.contains("cross/same p99 1.67"), "{text}");
    }
}
