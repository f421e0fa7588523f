//! Reading record batches allocates nothing per record: cutting batches,
//! checking CRCs and walking records and headers allocate nothing at all,
//! and a compressed batch costs the same few allocations (the output buffer
//! and the decoder's state) whatever its record count.
//!
//! A counting global allocator is installed for this test binary only.

// Test code: an unwrap that fails is a failing test.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use ferry_protocol::compression::Compression;
use ferry_protocol::records::{NewRecord, RecordBatchBuilder, RecordBatches, Records};

struct Counting;

thread_local! {
    // Only allocations made on the measuring thread, while it measures, count.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

fn batch(records: usize, codec: Compression) -> Bytes {
    let mut builder = RecordBatchBuilder::new().compression(codec);
    for i in 0..records {
        let value = format!("value-{i}-").repeat(10);
        builder.push(
            NewRecord::new(
                i as i64,
                Some(format!("key-{i}").as_bytes()),
                Some(value.as_bytes()),
            )
            .header(b"trace", Some(b"abc"))
            .header(b"empty", None),
        );
    }
    let raw = builder.build().unwrap();
    // Two batches back to back, as in a produce request's records field.
    let mut two = raw.clone();
    two.extend_from_slice(&raw);
    let buf = Bytes::from(two);
    // A `Bytes` made from a `Vec` allocates its shared header on its first
    // clone or slice; a frame buffer from the socket is shared already.
    // Clone once here so the measurement sees the steady state.
    drop(buf.clone());
    buf
}

/// Walks everything a broker reads on produce; returns a checksum of what
/// it saw so nothing is optimized away.
fn walk(buf: &Bytes) -> usize {
    let mut seen = 0;
    for batch in RecordBatches::new(buf.clone()) {
        let batch = batch.unwrap();
        batch.verify_crc().unwrap();
        let data = batch.decompress(1 << 24).unwrap();
        for record in Records::new(&data, batch.records_count()).unwrap() {
            let record = record.unwrap();
            seen += record.key().map_or(0, <[u8]>::len) + record.value().map_or(0, <[u8]>::len);
            for header in record.headers() {
                let header = header.unwrap();
                seen += header.key().len() + header.value().map_or(0, <[u8]>::len);
            }
        }
    }
    seen
}

#[test]
fn uncompressed_reading_allocates_nothing() {
    let buf = batch(1000, Compression::None);
    let mut seen = 0;
    let n = allocations_in(|| seen = walk(&buf));
    assert!(seen > 100_000, "walked {seen} bytes");
    assert_eq!(n, 0, "allocations while reading 2000 uncompressed records");
}

#[test]
fn compressed_reading_allocates_per_batch_not_per_record() {
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let small = batch(10, codec);
        let large = batch(1000, codec);
        let n_small = allocations_in(|| {
            walk(&small);
        });
        let n_large = allocations_in(|| {
            walk(&large);
        });
        // The output buffer may grow a few times more for the bigger batch
        // (doubling), but nothing scales with the record count.
        assert!(
            n_large <= n_small + 2 * 8,
            "{codec}: {n_small} allocations for 20 records, {n_large} for 2000"
        );
        assert!(
            n_large < 100,
            "{codec}: {n_large} allocations for 2000 records"
        );
    }
}
