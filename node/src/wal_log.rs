//! The durable log over the `ferry-wal` writer: WAL objects in the bucket,
//! metadata objects (`meta/<name>`) beside them, and recovery at start-up.

use crate::durable::{AppendAck, AppendEntry, DurableError, DurableLog, ReadAck};
use crate::node::Recovered;
use crate::partition::LogBatch;
use crate::topics::TopicTable;
use bytes::Bytes;
use ferry_wal::{
    recovery, IoRuntime, WalConfig, WalEntry, WalError, WalHandle, WalReader, WalWriter,
};
use futures_channel::oneshot;
use object_store::{path::Path, ObjectStore, ObjectStoreExt, PutPayload};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Where WAL objects go in the bucket.
pub const WAL_PREFIX: &str = "wal";

pub struct WalLog {
    writer: parking_lot::Mutex<Option<WalWriter>>,
    handle: WalHandle,
    reader: WalReader,
    io: IoRuntime,
    store: Arc<dyn ObjectStore>,
    inflight_bytes_max: usize,
    node_id: u32,
    /// Per metadata name: the last version written, held while writing.
    meta_written:
        parking_lot::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<u64>>>>,
    objects_deleted: Arc<std::sync::atomic::AtomicU64>,
}

/// The wall-clock time `age` ago, in object_store's timestamp type.
fn chrono_now_minus(age: Duration) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::Utc::now().checked_sub_signed(chrono::Duration::from_std(age).ok()?)
}

/// What opening the log found in the bucket.
pub struct Opened {
    pub log: Arc<WalLog>,
    pub topics: TopicTable,
    /// The committed-offsets snapshot (`meta/groups`), if one was written.
    pub groups: Option<Bytes>,
    pub recovered: Recovered,
    pub objects_read: u64,
    pub batches: usize,
}

fn wal_error(e: WalError) -> DurableError {
    match e {
        WalError::Backpressure { .. } => DurableError::Backpressure(0),
        WalError::Closed => DurableError::Closed,
        other => DurableError::Failed(other.to_string()),
    }
}

impl WalLog {
    /// Recovers what the bucket holds for `config.node_id`, then starts the
    /// writer after the last object found.
    pub fn open(store: Arc<dyn ObjectStore>, mut config: WalConfig) -> Result<Opened, WalError> {
        let io = IoRuntime::new(config.io_threads.max(1))?;
        let node_id = config.node_id;
        let topics = match io.block_on(get_meta(&*store, "topics"))? {
            Some(b) => TopicTable::decode(&b).map_err(|e| WalError::Config {
                param: "meta/topics".into(),
                expected: "a topic table written by Ferry".into(),
                found: e.to_string(),
            })?,
            None => TopicTable::default(),
        };
        let groups = io.block_on(get_meta(&*store, "groups"))?;
        let rec = io.block_on(recovery::scan(&*store, WAL_PREFIX, node_id))?;
        for s in &rec.skipped {
            tracing::warn!(object_key = %s.key, error = %s.error, "skipped a WAL object at recovery");
        }
        // Only entries of the topics that exist now, by id: a topic deleted
        // and created again under its name starts empty.
        let live: Vec<_> = rec
            .entries
            .iter()
            .filter(|e| {
                topics
                    .get(&e.entry.topic)
                    .is_some_and(|t| t.id.0 == e.entry.topic_id)
            })
            .cloned()
            .collect();
        let logs = recovery::rebuild(&live);
        let mut recovered = Recovered::new();
        let mut batches = 0;
        for (key, log) in logs {
            let list = recovered.entry(key).or_default();
            for e in &log.entries {
                let i = &e.entry;
                let p = i.producer;
                list.push((
                    LogBatch {
                        base_offset: i.base_offset,
                        last_offset: i.last_offset,
                        max_timestamp: i.max_timestamp,
                        len: i.len,
                        data: None,
                        location: Some(e.location()),
                    },
                    (p.id >= 0).then_some((p.id, p.epoch, p.first_sequence, p.last_sequence)),
                ));
                batches += 1;
            }
        }
        config.first_seq = rec.next_seq;
        config.prefix = WAL_PREFIX.to_string();
        let inflight_bytes_max = config.inflight_bytes_max;
        let writer = WalWriter::start_on(&io, store.clone(), config)?;
        let handle = writer.handle();
        let reader = writer.reader();
        let log = Arc::new(WalLog {
            writer: parking_lot::Mutex::new(Some(writer)),
            handle,
            reader,
            io,
            store,
            inflight_bytes_max,
            node_id,
            meta_written: Default::default(),
            objects_deleted: Default::default(),
        });
        Ok(Opened {
            log,
            topics,
            groups,
            recovered,
            objects_read: rec.objects_read,
            batches,
        })
    }

    /// Uploads what is pending and stops the writer (a clean stop).
    pub fn shutdown(&self, timeout: Duration) {
        if let Some(w) = self.writer.lock().take() {
            if let Err(e) = w.shutdown(timeout) {
                tracing::warn!(error = %e, "WAL shutdown");
            }
        }
    }
}

async fn get_meta(store: &dyn ObjectStore, name: &str) -> Result<Option<Bytes>, WalError> {
    let key = Path::from(format!("meta/{name}"));
    match store.get(&key).await {
        Ok(r) => r.bytes().await.map(Some).map_err(|e| WalError::Store {
            op: "get",
            key: key.to_string(),
            source: Arc::new(e),
        }),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(WalError::Store {
            op: "get",
            key: key.to_string(),
            source: Arc::new(e),
        }),
    }
}

impl DurableLog for WalLog {
    fn reserve(&self, bytes: usize) -> Result<(), DurableError> {
        let inflight = self.handle.inflight_bytes();
        if inflight + bytes as u64 > self.inflight_bytes_max as u64 {
            return Err(DurableError::Backpressure(inflight));
        }
        Ok(())
    }

    fn append(&self, e: AppendEntry) -> AppendAck {
        let rx = self.handle.append(WalEntry {
            topic: e.topic,
            topic_id: e.topic_id,
            partition: e.partition,
            base_offset: e.base_offset,
            last_offset: e.last_offset,
            record_count: e.record_count.max(0) as u32,
            max_timestamp: e.max_timestamp,
            producer: e.producer,
            data: e.segments.to_vec(),
        });
        Box::pin(async move {
            match rx.await {
                Ok(r) => r.map_err(wal_error),
                Err(_) => Err(DurableError::Closed),
            }
        })
    }

    fn read(&self, location: &crate::durable::Location) -> ReadAck {
        let rx = self.reader.read_entry(location.clone());
        let key = location.key.to_string();
        Box::pin(async move {
            match rx.await {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(DurableError::Read {
                    key,
                    error: e.to_string(),
                }),
                Err(_) => Err(DurableError::Closed),
            }
        })
    }

    fn resume_partition(&self, topic: &str, partition: i32) {
        self.handle.resume_partition(topic, partition);
    }

    fn put_meta(
        &self,
        name: &str,
        version: u64,
        data: Bytes,
    ) -> oneshot::Receiver<Result<(), DurableError>> {
        let store = self.store.clone();
        let key = Path::from(format!("meta/{name}"));
        let written = self
            .meta_written
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone();
        self.io.spawn(async move {
            // One write of a name at a time; an older version than the last
            // written is already covered by it.
            let mut last = written.lock().await;
            if version <= *last {
                return Ok(());
            }
            store
                .put(&key, PutPayload::from(data))
                .await
                .map_err(|e| DurableError::Failed(format!("put {key}: {e}")))?;
            *last = version;
            Ok(())
        })
    }

    fn get_meta(&self, name: &str) -> oneshot::Receiver<Result<Option<Bytes>, DurableError>> {
        let store = self.store.clone();
        let name = name.to_string();
        self.io
            .spawn(async move { get_meta(&*store, &name).await.map_err(wal_error) })
    }

    fn delete_objects_below(
        &self,
        seq: u64,
        min_age: Duration,
    ) -> oneshot::Receiver<Result<usize, DurableError>> {
        let store = self.store.clone();
        let node = self.node_id;
        let deleted = self.objects_deleted.clone();
        self.io.spawn(async move {
            use futures_util::StreamExt;
            let prefix = ferry_wal::reader::node_prefix(WAL_PREFIX, node);
            let cutoff = chrono_now_minus(min_age);
            let mut listing = store.list(Some(&prefix));
            let mut doomed = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| DurableError::Failed(format!("list {prefix}: {e}")))?;
                let old_enough = cutoff.is_some_and(|c| meta.last_modified <= c);
                if old_enough
                    && ferry_wal::reader::parse_seq(&meta.location).is_some_and(|s| s < seq)
                {
                    doomed.push(meta.location);
                }
            }
            let mut n = 0;
            for key in doomed {
                store
                    .delete(&key)
                    .await
                    .map_err(|e| DurableError::Failed(format!("delete {key}: {e}")))?;
                n += 1;
            }
            deleted.fetch_add(n as u64, Relaxed);
            Ok(n)
        })
    }

    fn render_metrics(&self) -> String {
        let s = self.handle.stats();
        let mut o = String::new();
        let node = self.node_id;
        for (name, kind, v) in [
            (
                "ferry_wal_objects_total",
                "counter",
                s.objects_uploaded.load(Relaxed),
            ),
            (
                "ferry_wal_bytes_total",
                "counter",
                s.bytes_uploaded.load(Relaxed),
            ),
            (
                "ferry_s3_puts_total",
                "counter",
                s.put_requests.load(Relaxed),
            ),
            (
                "ferry_s3_put_errors_total",
                "counter",
                s.put_errors.load(Relaxed),
            ),
            (
                "ferry_s3_gets_total",
                "counter",
                s.get_requests.load(Relaxed),
            ),
            (
                "ferry_s3_get_errors_total",
                "counter",
                s.get_errors.load(Relaxed),
            ),
            (
                "ferry_wal_inflight_bytes",
                "gauge",
                s.inflight_bytes.load(Relaxed),
            ),
            (
                "ferry_wal_objects_deleted_total",
                "counter",
                self.objects_deleted.load(Relaxed),
            ),
        ] {
            let _ = writeln!(o, "# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {v}");
        }
        let mut lat = s.recent_upload_latencies_us();
        if !lat.is_empty() {
            lat.sort_unstable();
            let _ = writeln!(o, "# TYPE ferry_wal_upload_latency_seconds summary");
            for q in [0.5, 0.99] {
                let i = ((lat.len() as f64 * q) as usize).min(lat.len() - 1);
                let _ = writeln!(
                    o,
                    "ferry_wal_upload_latency_seconds{{quantile=\"{q}\"}} {:.6}",
                    lat[i] as f64 / 1e6
                );
            }
        }
        o
    }
}
