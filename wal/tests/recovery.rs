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
use ferry_wal::{FaultWindow, ReadFault, WalError, WalWriter};
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
    // Small object: one GET reads footer, index and header (after a HEAD
    // for its size, which a scan takes from the listing instead).
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
    assert_eq!(store.get_count() - before, 2);

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
    assert_eq!(store.get_count() - before, 4);
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
        matches!(&err, WalError::Store { op, key, .. } if *op == "HEAD" && key.ends_with("99.wal")),
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

/// Writes `small_object`-like objects of node `node`: one per list item,
/// each holding the given (topic, partition, base offset) entries of 10
/// records.
fn put_objects(
    io: &ferry_wal::IoRuntime,
    s: &Arc<dyn ObjectStore>,
    node: u32,
    objects: &[&[(&str, i32, i64)]],
) {
    for (seq, entries) in objects.iter().enumerate() {
        let mut b = ObjectBuilder::new(ObjectHeader {
            node_id: node,
            seq: seq as u64,
            created_ms: 1,
        });
        for (topic, p, base) in entries.iter() {
            b.push(&entry(topic, *p, *base, 50)).expect("push");
        }
        let bytes = b.finish().expect("finish").to_bytes();
        wait(
            io,
            s.put(
                &object_key("wal", node, seq as u64),
                PutPayload::from(bytes),
            ),
        )
        .expect("put");
    }
}

#[test]
fn a_read_error_other_than_not_found_fails_the_scan_instead_of_skipping() {
    let (_dir, store) = local_bucket();
    let s = as_store(&store);
    let io = test_io();
    put_objects(
        &io,
        &s,
        6,
        &[&[("t", 0, 0)], &[("t", 0, 10)], &[("t", 0, 20)]],
    );
    // The store answers 500 for longer than the scan retries, to the
    // listing and the index reads, or to the index reads alone: the scan
    // fails, it does not come back with objects left out.
    for spare_lists in [false, true] {
        store.set_spare_lists(spare_lists);
        for fault in [ReadFault::Status(500), ReadFault::Status(503)] {
            store.fail_reads(Some((fault, FaultWindow::Attempts(1_000))));
            let err = wait(&io, recovery::scan(&*s, "wal", 6)).unwrap_err();
            assert!(matches!(err, WalError::Store { .. }), "{err}");
            assert!(!err.is_not_found());
            let want = if spare_lists { "GET" } else { "LIST" };
            assert!(err.to_string().contains(want), "{err}");
            store.fail_reads(None);
        }
    }
    store.set_spare_lists(false);
    // Faults for fewer attempts than the scan's retries (a 503 burst, a
    // stalled request): everything is read.
    for fault in [
        ReadFault::Status(503),
        ReadFault::Timeout(Duration::from_millis(50)),
    ] {
        store.fail_reads(Some((fault, FaultWindow::Attempts(3))));
        let rec = wait(&io, recovery::scan(&*s, "wal", 6)).unwrap();
        assert!(rec.skipped.is_empty(), "{:?}", rec.skipped);
        assert_eq!(rec.entries.len(), 3);
        assert_eq!(rec.next_seq, 3);
    }
    assert!(store.read_failures() >= 6);
}

#[test]
fn only_a_missing_object_reads_as_not_found() {
    let (dir, store) = local_bucket();
    let s = as_store(&store);
    let io = test_io();
    put_objects(&io, &s, 7, &[&[("t", 0, 0)], &[("t", 0, 10)]]);
    // A listed object that is gone at the read: NotFound, proven absent.
    let listed = wait(&io, reader::list_objects(&*s, "wal", 7)).unwrap();
    std::fs::remove_file(dir.path().join(listed[0].key.as_ref())).unwrap();
    let err = wait(&io, reader::read_index(&*s, &listed[0].key)).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    // A scan lists again, so it does not see it; the rule is in `take_index`:
    // NotFound skips, while any other error fails (above).
    let rec = wait(&io, recovery::scan(&*s, "wal", 7)).unwrap();
    assert_eq!(rec.entries.len(), 1);
    assert!(rec.skipped.is_empty());
}

#[test]
fn index_reads_use_explicit_ranges_from_the_listed_size() {
    let (_dir, store) = local_bucket();
    let s = as_store(&store);
    let io = test_io();
    // Like s3s-fs, the store answers a suffix range with a 500.
    store.set_refuse_suffix_ranges(true);
    put_objects(&io, &s, 8, &[&[("t", 0, 0)], &[("t", 0, 10), ("u", 1, 0)]]);
    let rec = wait(&io, recovery::scan(&*s, "wal", 8)).unwrap();
    assert!(rec.skipped.is_empty(), "{:?}", rec.skipped);
    assert_eq!(rec.entries.len(), 3);
    let index = wait(&io, reader::read_index(&*s, &object_key("wal", 8, 1))).unwrap();
    assert_eq!(index.entries.len(), 2);
}

#[test]
fn a_corrupt_object_blocks_the_partitions_it_may_hold_and_no_others() {
    let (dir, store) = local_bucket();
    let s = as_store(&store);
    let io = test_io();
    // Object 1 (to be corrupted) holds a's 10..19. Afterwards b and c go
    // on from where they stood, d starts at 0 and e jumps over a gap.
    put_objects(
        &io,
        &s,
        9,
        &[
            &[("a", 0, 0), ("b", 0, 0), ("c", 0, 0), ("e", 0, 0)],
            &[("a", 0, 10), ("e", 0, 10)],
            &[("b", 0, 10), ("c", 0, 10), ("d", 0, 0), ("e", 0, 20)],
        ],
    );
    let key = object_key("wal", 9, 1);
    let path = dir.path().join(key.as_ref());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 30;
    bytes[last] ^= 0x10; // in the index or footer
    std::fs::write(&path, bytes).unwrap();

    let rec = wait(&io, recovery::scan(&*s, "wal", 9)).unwrap();
    assert_eq!(rec.skipped.len(), 1);
    assert!(matches!(rec.skipped[0].error, WalError::Corrupt { .. }));
    // Every entry has topic id [1; 16]; partitions stand for topics here.
    let ids: BTreeMap<&str, i32> = [("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", 4), ("f", 5)]
        .into_iter()
        .collect();
    let entries: Vec<_> = rec
        .entries
        .iter()
        .cloned()
        .map(|mut e| {
            e.entry.partition = ids[&*e.entry.topic];
            e
        })
        .collect();
    let candidates = || ids.values().map(|p| ([1u8; 16], *p)).collect::<Vec<_>>();
    let none = |_: &str| false;
    let blocked = recovery::unread_blocks(&entries, &rec.skipped, candidates(), &none);
    let blocked: Vec<i32> = blocked.keys().map(|(_, p)| *p).collect();
    // a: its last write is in the object. e: a gap after it. f: nothing
    // after it proves the object held none of it. b, c, d: proven.
    assert_eq!(blocked, vec![0, 4, 5]);
    // What compacted objects hold counts as where a partition stood: a
    // compacted copy of e up to offset 19 clears it (its first entry after
    // the object starts at 20); f, with no WAL entries, stays blocked, and
    // so does a, as nothing of a follows the object.
    let mut with_compacted = entries.clone();
    let mut compacted_e = entries
        .iter()
        .find(|e| e.entry.partition == 4)
        .unwrap()
        .clone();
    compacted_e.seq = ferry_wal::compact::COMPACTED_SEQ;
    compacted_e.entry.base_offset = 10;
    compacted_e.entry.last_offset = 19;
    with_compacted.push(compacted_e);
    let blocked = recovery::unread_blocks(&with_compacted, &rec.skipped, candidates(), &none);
    let blocked: Vec<i32> = blocked.keys().map(|(_, p)| *p).collect();
    assert_eq!(blocked, vec![0, 5]);
    // The operator accepted the object's loss: nothing is blocked.
    let corrupt_key = rec.skipped[0].key.clone();
    let accepted = move |k: &str| k == corrupt_key;
    let blocked = recovery::unread_blocks(&entries, &rec.skipped, candidates(), &accepted);
    assert!(blocked.is_empty(), "{blocked:?}");
}

/// Hedged uploads: a third of the PUTs stall, so many objects are PUT twice
/// (the same key, the same bytes) and the node dies with copies still
/// uploading. Recovery finds every acknowledged entry once, at its place;
/// and a losing copy that lands late (the same bytes again, after the
/// restart) changes nothing a scan finds.
#[test]
fn hedged_copies_and_a_late_loser_leave_recovery_unchanged() {
    let (_dir, bucket) = local_bucket();
    let model = ferry_wal::LatencyModel {
        stall_ppm: 300_000,
        ..Default::default()
    };
    let modelled: Arc<dyn ObjectStore> =
        Arc::new(ferry_wal::LatencyStore::new(as_store(&bucket), model, 11));
    let hedge = ferry_wal::HedgeConfig {
        max_extra_percent: 100,
        delay_floor: Duration::from_millis(5),
        delay_initial: Duration::from_millis(5),
        request_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let hedged = Arc::new(ferry_wal::HedgedStore::new(modelled, hedge));
    let store: Arc<dyn ObjectStore> = hedged.clone();
    let writer = WalWriter::start(store.clone(), config(4, Duration::from_millis(10))).unwrap();
    let h = writer.handle();
    let mut acked = BTreeMap::new();
    for i in 0..30i64 {
        let (p, base) = ((i % 3) as i32, (i / 3) * 10);
        let loc = wait(writer.io(), h.append(entry("h", p, base, 200)))
            .unwrap()
            .expect("acknowledged through hedges and retries");
        acked.insert((p, base), loc);
    }
    let sent = hedged
        .stats()
        .hedges_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent > 0, "no PUT was hedged: the test shows nothing");
    // The node dies with more appended, some PUTs (and their hedges) still
    // uploading or stalled.
    let in_flight: Vec<_> = (0..6i64)
        .map(|i| h.append(entry("h", (i % 3) as i32, 100 + (i / 3) * 10, 200)))
        .collect();
    thread::sleep(Duration::from_millis(20));
    let io = writer.io().clone();
    drop(writer);
    drop(in_flight);

    let scan = |io: &ferry_wal::IoRuntime| {
        let rec = wait(io, recovery::scan(&*as_store(&bucket), "wal", 4)).unwrap();
        assert!(rec.skipped.is_empty(), "{:?}", rec.skipped);
        rec
    };
    let rec = scan(&io);
    let found: BTreeMap<_, _> = rec
        .entries
        .iter()
        .map(|e| ((e.entry.partition, e.entry.base_offset), e.location()))
        .collect();
    assert_eq!(found.len(), rec.entries.len(), "an entry was found twice");
    for (k, loc) in &acked {
        assert_eq!(
            found.get(k),
            Some(loc),
            "acknowledged {k:?} not at its place"
        );
        let data = wait(&io, reader::read_entry(&*as_store(&bucket), loc)).unwrap();
        assert_eq!(data, payload("h", k.0, k.1, 200));
    }
    let logs = rebuild(&rec.entries);
    for log in logs.values() {
        assert!(log.superseded.is_empty(), "{log:?}");
        assert!(log.log_end >= 100, "{log:?}");
    }

    // A loser lands late: the same bytes at the same key once more.
    let (_, first) = acked.first_key_value().unwrap();
    let key = first.path();
    let bytes = wait(&io, async {
        bucket.get(&key).await.unwrap().bytes().await.unwrap()
    });
    wait(&io, bucket.put(&key, PutPayload::from(bytes))).unwrap();
    let again = scan(&io);
    assert_eq!(again.entries, rec.entries);
    assert_eq!(again.next_seq, rec.next_seq);
}
