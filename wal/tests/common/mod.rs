//! Helpers shared by the WAL's integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_wal::{FaultyStore, IoRuntime, WalConfig, WalEntry};
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

/// Longest any single wait in these tests may take.
pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// A local-directory bucket in a fresh temp dir, behind a `FaultyStore`.
pub fn local_bucket() -> (tempfile::TempDir, Arc<FaultyStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = LocalFileSystem::new_with_prefix(dir.path()).expect("local store");
    (dir, Arc::new(FaultyStore::new(Arc::new(fs))))
}

pub fn as_store(s: &Arc<FaultyStore>) -> Arc<dyn ObjectStore> {
    s.clone()
}

/// A config for tests: short interval, fast retries.
pub fn config(node_id: u32, batch_interval: Duration) -> WalConfig {
    let mut c = WalConfig::new(node_id);
    c.batch_interval = batch_interval;
    c.retry_backoff_initial = Duration::from_millis(10);
    c.retry_backoff_max = Duration::from_millis(50);
    c.upload_deadline = Duration::from_secs(10);
    c.io_threads = 2;
    c
}

/// Recognisable bytes for (topic, partition, base offset).
pub fn payload(topic: &str, partition: i32, base: i64, len: usize) -> Bytes {
    let seed = format!("{topic}/{partition}@{base};");
    Bytes::from(seed.bytes().cycle().take(len).collect::<Vec<u8>>())
}

/// An entry of 10 records whose data is `payload(..)`, split in two segments.
pub fn entry(topic: &str, partition: i32, base: i64, len: usize) -> WalEntry {
    let data = payload(topic, partition, base, len);
    let cut = len / 3;
    WalEntry {
        data_crc: None,
        topic: Arc::from(topic),
        topic_id: [1; 16],
        partition,
        base_offset: base,
        last_offset: base + 9,
        record_count: 10,
        max_timestamp: 1_700_000_000_000 + base,
        producer: Default::default(),
        data: vec![data.slice(..cut), data.slice(cut..)],
        leader_epoch: 0,
        external: None,
    }
}

/// Waits for `fut` on `io`, at most `WAIT_MAX`.
pub fn wait<F: Future>(io: &IoRuntime, fut: F) -> F::Output {
    io.block_on(async {
        tokio::time::timeout(WAIT_MAX, fut)
            .await
            .expect("a wait in the test took longer than WAIT_MAX")
    })
}

/// A runtime for waiting in tests that have no writer.
pub fn test_io() -> IoRuntime {
    IoRuntime::new(1).expect("io runtime")
}
