//! Recovery after a crash, corrupt and partial objects, and checked reads.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ferry_wal::object::{ObjectBuilder, ObjectHeader};
use ferry_wal::reader::{self, object_key};
use ferry_wal::recovery::{self, rebuild};
use ferry_wal::{WalError, WalWriter};
use futures_channel::oneshot;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[test]
fn after_a_crash_recovery_sees_exactly_the_acknowledged_entries() {
    let (_dir, store) = local_bucket();
    let writer = WalWriter::start(as_store(&store), config(1, Duration::from_millis(10))).unwrap();

    // Acknowledged: 2 threads x 15 entries over 3 partitions.
    let joins: Vec<_> = (0..2)
        .map(|t| {
            let h = writer.handle();
            thread::spawn(move || {
                (0..15i64)
                    .map(|i| {
                        let p = (i % 3) as i32;
                        let base = (i / 3) * 10;
                        (
                            (format!("topic-{t}"), p, base),
                            h.append(entry(&format!("topic-{t}"), p, base, 300)),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked = BTreeMap::new();
    for j in joins {
        for (k, rx) in j.join().unwrap() {
            acked.insert(k, wait(writer.io(), rx).unwrap().unwrap());
        }
    }
    // Not acknowledged: the bucket goes down, entries are appended, the node dies.
    store.set_puts_failing(true);
    let lost: Vec<_> = (0..10i64)
        .map(|i| {
            writer
                .handle()
                .append(entry("topic-0", 0, 10_000 + i * 10, 300))
        })
        .collect();
    thread::sleep(Duration::from_millis(60));
    let io = writer.io().clone();
    drop(writer);
    for rx in lost {
        assert!(
            matches!(wait(&io, rx), Err(oneshot::Canceled)),
            "nothing of the crash was acknowledged"
        );
    }

    let rec = wait(&io, recovery::scan(&*as_store(&store), "wal", 1)).unwrap();
    assert!(rec.skipped.is_empty(), "{:?}", rec.skipped);
    let found: BTreeMap<_, _> = rec
        .entries
        .iter()
        .map(|e| {
            (
                (
                    e.entry.topic.to_string(),
                    e.entry.partition,
                    e.entry.base_offset,
                ),
                e.location(),
            )
        })
        .collect();
    assert_eq!(
        found, acked,
        "recovery finds exactly the acknowledged entries, at their locations"
    );
    let max_seq = acked.values().map(|l| l.seq).max().unwrap();
    assert_eq!(rec.next_seq, max_seq + 1);

    // The data reads back, and the rebuilt logs end where the entries do.
    for (topic, partition, base) in acked.keys() {
        let loc = &found[&(topic.clone(), *partition, *base)];
        let data = wait(&io, reader::read_entry(&*as_store(&store), loc)).unwrap();
        assert_eq!(data, payload(topic, *partition, *base, 300));
    }
    let logs = rebuild(&rec.entries);
    assert_eq!(logs.len(), 6);
    for log in logs.values() {
        assert!(log.gaps.is_empty() && log.superseded.is_empty(), "{log:?}");
        assert_eq!((log.log_start, log.entries.len()), (0, 5));
        assert_eq!(
            log.log_end,
            log.entries.last().unwrap().entry.last_offset + 1
        );
    }

    // A restarted writer continues the sequence, and a new scan sees both lives.
    store.set_puts_failing(false);
    let mut cfg = config(1, Duration::from_millis(10));
    cfg.first_seq = rec.next_seq;
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    let loc = wait(
        writer.io(),
        writer.handle().append(entry("topic-0", 0, 20_000, 10)),
    )
    .unwrap()
    .unwrap();
    assert_eq!(loc.seq, rec.next_seq);
    let rec2 = wait(writer.io(), writer.reader().recover("wal", 1))
        .unwrap()
        .unwrap();
    assert_eq!(rec2.entries.len(), acked.len() + 1);
    assert_eq!(rec2.next_seq, rec.next_seq + 1);
}

fn small_object(node: u32, seq: u64, topic: &str) -> Bytes {
    let mut b = ObjectBuilder::new(ObjectHeader {
        node_id: node,
        seq,
        created_ms: 1,
    });
    b.push(&entry(topic, 0, seq as i64 * 10, 50)).expect("push");
    b.finish().expect("finish").to_bytes()
}

#[test]
fn corrupt_and_partial_objects_are_skipped_and_later_ones_still_read() {
    let (dir, store) = local_bucket();
    let s = as_store(&store);
    let io = test_io();
    for seq in 0..7u64 {
        let mut bytes = small_object(2, seq, &format!("t{seq}")).to_vec();
        match seq {
            1 => bytes[40] ^= 0x01,               // a flipped bit in the data
            2 => bytes.truncate(bytes.len() / 2), // a partial object
            3 => bytes = b"hello".to_vec(),       // garbage, too short for a footer
            4 => bytes.clear(),                   // empty
            _ => {}
        }
        let key = object_key("wal", 2, seq);
        wait(&io, s.put(&key, PutPayload::from(bytes))).unwrap();
    }
    // An object whose header says it belongs elsewhere.
    wait(
        &io,
        s.put(
            &object_key("wal", 2, 7),
            PutPayload::from(small_object(9, 7, "t7")),
        ),
    )
    .unwrap();
    // A stray file in the node's folder is ignored.
    std::fs::write(dir.path().join("wal/2/notes.txt"), b"x").unwrap();

    let rec = wait(&io, recovery::scan(&*s, "wal", 2)).unwrap();
    let skipped: Vec<_> = rec.skipped.iter().map(|o| o.seq).collect();
    // Object 1's index is intact: its bad data shows on the ranged read, below.
    assert_eq!(skipped, vec![2, 3, 4, 7]);
    for o in &rec.skipped {
        assert!(matches!(o.error, WalError::Corrupt { .. }), "{}", o.error);
        assert!(
            o.error.to_string().contains(&o.key),
            "the error names the key: {}",
            o.error
        );
    }
    assert_eq!(rec.objects_read, 4);
    let topics: Vec<_> = rec
        .entries
        .iter()
        .map(|e| e.entry.topic.to_string())
        .collect();
    assert_eq!(topics, vec!["t0", "t1", "t5", "t6"]);
    assert_eq!(rec.next_seq, 8);

    let good = rec.entries[0].location();
    assert_eq!(
        wait(&io, reader::read_entry(&*s, &good)).unwrap(),
        payload("t0", 0, 0, 50)
    );
    let bad = rec.entries[1].location();
    let err = wait(&io, reader::read_entry(&*s, &bad)).unwrap_err();
    assert!(
        matches!(&err, WalError::Corrupt { key, .. } if key.ends_with("00000000000000000001.wal")),
        "{err}"
    );
}

#[test]
fn an_empty_wal_recovers_to_sequence_zero() {
    let (_dir, store) = local_bucket();
    let io = test_io();
    let rec = wait(&io, recovery::scan(&*as_store(&store), "wal", 3)).unwrap();
    assert_eq!(rec.next_seq, 0);
    assert!(rec.entries.is_empty() && rec.skipped.is_empty());
}

#[test]
fn large_indexes_and_large_objects_read_with_few_gets() {
    let (_dir, store) = local_bucket();
    let s = as_store(&store);
    let io = test_io();
    // Small object: one GET reads footer, index and header.
    wait(
        &io,
        s.put(
            &object_key("wal", 4, 0),
            PutPayload::from(small_object(4, 0, "t")),
        ),
    )
    .unwrap();
    let before = store.get_count();
    let index = wait(&io, reader::read_index(&*s, &object_key("wal", 4, 0))).unwrap();
    assert_eq!(index.entries.len(), 1);
    assert_eq!(store.get_count() - before, 1);

    // An index over 64 KiB behind 200 KiB of data: tail, then header and index.
    let mut b = ObjectBuilder::new(ObjectHeader {
        node_id: 4,
        seq: 1,
        created_ms: 1,
    });
    let topic = "a-rather-long-topic-name-for-a-big-index";
    b.push(&entry(topic, 9999, 0, 200 * 1024)).unwrap();
    for p in 0..2000 {
        b.push(&entry(topic, p, 0, 1)).unwrap();
    }
    let obj = b.finish().unwrap();
    assert!(obj.index.footer.index_len > 64 * 1024);
    wait(&io, s.put(&object_key("wal", 4, 1), obj.payload())).unwrap();
    let before = store.get_count();
    let index = wait(&io, reader::read_index(&*s, &object_key("wal", 4, 1))).unwrap();
    assert_eq!(index, obj.index);
    assert_eq!(store.get_count() - before, 3);
    let run = index.partition_entries(topic, 1500);
    let datas = wait(
        &io,
        reader::read_entries(&*s, &object_key("wal", 4, 1), run),
    )
    .unwrap();
    assert_eq!(datas, vec![payload(topic, 1500, 0, 1)]);
}

#[test]
fn reads_refuse_bytes_that_do_not_match() {
    let (dir, store) = local_bucket();
    let s: Arc<dyn ObjectStore> = as_store(&store);
    let io = test_io();
    let key = object_key("wal", 5, 0);
    wait(&io, s.put(&key, PutPayload::from(small_object(5, 0, "t")))).unwrap();
    let index = wait(&io, reader::read_index(&*s, &key)).unwrap();
    let e = &index.entries[0];
    // A wrong CRC and a range that is not an entry both fail.
    let err = wait(&io, reader::read_range(&*s, &key, e.range(), e.crc ^ 1)).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    let ok = wait(&io, reader::read_range(&*s, &key, e.range(), e.crc)).unwrap();
    assert_eq!(ok.len(), e.len as usize);
    // Non-adjacent entries cannot be read with one GET.
    let mut far = e.clone();
    far.position += 1000;
    let err = wait(&io, reader::read_entries(&*s, &key, &[e.clone(), far])).unwrap_err();
    assert!(matches!(err, WalError::InvalidEntry { .. }), "{err}");
    // A missing object is a store error naming the operation and key.
    let err = wait(&io, reader::read_index(&*s, &object_key("wal", 5, 99))).unwrap_err();
    assert!(
        matches!(&err, WalError::Store { op, key, .. } if *op == "GET footer" && key.ends_with("99.wal")),
        "{err}"
    );
    // A bit flip on disk in the index is caught by the index read.
    let path = dir.path().join(key.as_ref());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = index.footer.index_offset as usize + 6;
    bytes[at] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let err = wait(&io, reader::read_index(&*s, &key)).unwrap_err();
    assert!(
        err.to_string()
            .contains("CRC32C mismatch over header and index"),
        "{err}"
    );
}
