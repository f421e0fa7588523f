//! Decode a 1 MiB produce request made of 16 KiB batches of 1 KiB records,
//! and CRC-check every batch. Reports GB/s and heap allocations per request
//! (a counting global allocator), beside the machine's memory bandwidth as
//! the baseline (a plain 1 MiB copy, measured in the same run).
//!
//! Run: `cargo bench -p ferry-protocol --bench decode_produce`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferry_protocol::frame::{self, decode_request, SupportedApis};
use ferry_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use ferry_protocol::messages::RequestBody;
use ferry_protocol::records::{NewRecord, RecordBatch, RecordBatchBuilder, RecordBatches};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const REQUEST_BYTES: usize = 1 << 20;
const BATCH_BYTES: usize = 16 << 10;
const RECORD_BYTES: usize = 1 << 10;
const PARTITIONS: usize = 8;

fn request_frame() -> (Bytes, usize, usize) {
    let value = vec![b'x'; RECORD_BYTES - 40];
    let records_per_batch = BATCH_BYTES / RECORD_BYTES;
    let mut batches = 0;
    let mut records = 0;
    let mut parts: Vec<Vec<u8>> = vec![Vec::new(); PARTITIONS];
    let mut total = 0;
    while total + BATCH_BYTES <= REQUEST_BYTES - 4096 {
        let mut b = RecordBatchBuilder::new().producer(7, 0, (batches * records_per_batch) as i32);
        for r in 0..records_per_batch {
            let key = format!("key-{r:06}");
            b.push(NewRecord::new(
                1_700_000_000_000 + r as i64,
                Some(key.as_bytes()),
                Some(&value),
            ));
        }
        let bytes = b.build().unwrap();
        total += bytes.len();
        parts[batches % PARTITIONS].extend_from_slice(&bytes);
        batches += 1;
        records += records_per_batch;
    }
    let body = RequestBody::Produce(ProduceRequest {
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: "bench".into(),
            partition_data: parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| PartitionProduceData {
                    index: i as i32,
                    records: Some(p.into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let segs = frame::encode_request(1, Some("bench"), 9, &body).unwrap();
    (frame::concat(&segs).slice(4..), batches, records)
}

/// Decode the request and CRC-check every batch; returns the batch count.
fn decode_and_check(frame: &Bytes, supported: &SupportedApis) -> usize {
    let req = decode_request(frame, supported).unwrap();
    let RequestBody::Produce(p) = req.body else {
        unreachable!()
    };
    let mut n = 0;
    for t in &p.topic_data {
        for part in &t.partition_data {
            let Some(records) = &part.records else {
                continue;
            };
            for batch in RecordBatches::new(records.to_bytes()) {
                let batch: RecordBatch = batch.unwrap();
                batch.verify_crc().unwrap();
                n += 1;
            }
        }
    }
    n
}

fn time<F: FnMut()>(mut f: F) -> (Duration, u64) {
    // Warm up, then run for about a second.
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let mut iters = 0;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..16 {
            f();
        }
        iters += 16;
    }
    (start.elapsed(), iters)
}

fn main() {
    let (frame, batches, records) = request_frame();
    let supported = SupportedApis::all();
    assert_eq!(decode_and_check(&frame, &supported), batches);

    let before = ALLOCS.load(Ordering::Relaxed);
    black_box(decode_and_check(black_box(&frame), &supported));
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;

    let (elapsed, iters) = time(|| {
        black_box(decode_and_check(black_box(&frame), &supported));
    });
    let gbps = (frame.len() as f64 * iters as f64) / elapsed.as_secs_f64() / 1e9;

    let mut dst = vec![0u8; frame.len()];
    let (c_elapsed, c_iters) = time(|| {
        dst.copy_from_slice(black_box(&frame));
        black_box(&dst);
    });
    let copy_gbps = (frame.len() as f64 * c_iters as f64) / c_elapsed.as_secs_f64() / 1e9;

    println!("machine: {}", machine());
    println!(
        "request: {} bytes, {PARTITIONS} partitions, {batches} batches of ~{BATCH_BYTES} bytes, {records} records of {RECORD_BYTES} bytes",
        frame.len()
    );
    println!(
        "decode + CRC32C check: {gbps:.2} GB/s ({iters} requests in {:.2}s)",
        elapsed.as_secs_f64()
    );
    println!(
        "memory copy baseline:  {copy_gbps:.2} GB/s (ratio {:.2})",
        gbps / copy_gbps
    );
    println!(
        "allocations per request: {allocs} ({:.3} per batch, {:.4} per record)",
        allocs as f64 / batches as f64,
        allocs as f64 / records as f64
    );
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{cpu}, {cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
