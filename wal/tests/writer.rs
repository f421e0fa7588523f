//! The WAL writer against a local-directory bucket behind a fault-injecting
//! store: batching, the size trigger, retries, the deadline, backpressure,
//! ordering, and reading back what was acknowledged.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use ferry_wal::reader::{self, object_key};
use ferry_wal::{WalError, WalWriter};

#[test]
fn concurrent_appenders_within_one_interval_make_exactly_one_put() {
    let (_dir, store) = local_bucket();
    let writer = WalWriter::start(as_store(&store), config(1, Duration::from_secs(1))).unwrap();
    const THREADS: usize = 4;
    const PER_THREAD: i64 = 25;
    let barrier = Arc::new(Barrier::new(THREADS));
    let started = Instant::now();
    let joins: Vec<_> = (0..THREADS)
        .map(|t| {
            let handle = writer.handle();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                (0..PER_THREAD)
                    .map(|i| {
                        // Two partitions per thread, interleaved.
                        let (topic, partition, base) =
                            ("orders", (t * 2) as i32 + (i % 2) as i32, i * 10);
                        let rx = handle.append(entry(topic, partition, base, 200 + i as usize));
                        ((topic, partition, base, 200 + i as usize), rx)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let pending: Vec<_> = joins.into_iter().flat_map(|j| j.join().unwrap()).collect();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "appending took too long for the test to mean anything"
    );

    let mut locations = Vec::new();
    for ((topic, partition, base, len), rx) in pending {
        let loc = wait(writer.io(), rx)
            .expect("oneshot completed")
            .expect("entry acknowledged");
        locations.push(((topic, partition, base, len), loc));
    }
    assert_eq!(
        store.put_count(),
        1,
        "one PUT for all appenders in one interval"
    );
    let stats = writer.stats().snapshot();
    assert_eq!(stats.objects_uploaded, 1);
    assert_eq!(stats.sealed_by_interval, 1);
    assert_eq!(stats.entries_acked, THREADS as u64 * PER_THREAD as u64);
    assert_eq!(stats.inflight_bytes, 0);
    assert_eq!(stats.upload_latency_count, 1);

    // One object; ranges are distinct and the data reads back.
    let keys: HashSet<_> = locations.iter().map(|(_, l)| l.key.clone()).collect();
    assert_eq!(keys.len(), 1);
    let mut ranges: Vec<_> = locations.iter().map(|(_, l)| l.range()).collect();
    ranges.sort_by_key(|r| r.start);
    assert!(
        ranges.windows(2).all(|w| w[0].end <= w[1].start),
        "entries overlap"
    );
    let r = writer.reader();
    for ((topic, partition, base, len), loc) in &locations {
        let data = wait(writer.io(), r.read_entry(loc.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(data, payload(topic, *partition, *base, *len));
    }

    // Each partition's entries are adjacent, in offset order: one GET reads them.
    let key = object_key("wal", 1, 0);
    let index = wait(writer.io(), r.read_index(key.clone()))
        .unwrap()
        .unwrap();
    assert_eq!(index.entries.len(), THREADS * PER_THREAD as usize);
    for p in 0..(THREADS as i32 * 2) {
        let run = index.partition_entries("orders", p).to_vec();
        assert_eq!(
            run.len(),
            (PER_THREAD / 2) as usize + usize::from(p % 2 == 0),
            "partition {p}"
        );
        assert!(run.windows(2).all(|w| w[0].base_offset < w[1].base_offset));
        let gets_before = store.get_count();
        let datas = wait(writer.io(), r.read_entries(key.clone(), run.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(
            store.get_count() - gets_before,
            1,
            "one ranged GET per partition"
        );
        for (e, d) in run.iter().zip(datas) {
            assert_eq!(d, payload("orders", p, e.base_offset, e.len as usize));
        }
    }
}

#[test]
fn the_size_trigger_seals_before_the_interval() {
    let (_dir, store) = local_bucket();
    let mut cfg = config(2, Duration::from_secs(60));
    cfg.max_bytes_in_batch = 10_000;
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    let h = writer.handle();
    // 3 entries of 3000 bytes fit in 10 000; a 4th does not.
    let mut rxs: Vec<_> = (0..10)
        .map(|i| h.append(entry("big", 0, i * 10, 3000)))
        .collect();
    let last = rxs.pop().unwrap();
    for rx in rxs {
        wait(writer.io(), rx)
            .unwrap()
            .expect("acknowledged without waiting 60 s");
    }
    let stats = writer.stats().snapshot();
    assert_eq!(stats.sealed_by_size, 3);
    assert_eq!(stats.sealed_by_interval, 0);
    assert_eq!(store.put_count(), 3);
    let objects = wait(
        writer.io(),
        reader::list_objects(&*as_store(&store), "wal", 2),
    )
    .unwrap();
    assert_eq!(
        objects.iter().map(|o| o.seq).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(objects.iter().all(|o| o.size <= 10_000), "{objects:?}");
    // The 10th waits for its interval, or a flush.
    thread::sleep(Duration::from_millis(100));
    let mut last = last;
    assert!(
        matches!(last.try_recv(), Ok(None)),
        "the 10th entry was not sealed yet"
    );
    wait(writer.io(), h.flush()).unwrap().unwrap();
    let loc = wait(writer.io(), last).unwrap().unwrap();
    assert_eq!(loc.seq, 3);
    assert_eq!(writer.stats().snapshot().sealed_by_flush, 1);
}

#[test]
fn failed_puts_are_retried_until_durable() {
    let (_dir, store) = local_bucket();
    let writer = WalWriter::start(as_store(&store), config(3, Duration::from_millis(20))).unwrap();
    store.fail_next_puts(3);
    let rx = writer.handle().append(entry("t", 0, 0, 100));
    let loc = wait(writer.io(), rx)
        .unwrap()
        .expect("durable after retries");
    assert_eq!(store.put_count(), 4);
    assert_eq!(store.put_failures(), 3);
    let stats = writer.stats().snapshot();
    assert_eq!(stats.put_requests, 4);
    assert_eq!(stats.put_errors, 3);
    assert_eq!(stats.objects_uploaded, 1);
    assert_eq!(stats.objects_failed, 0);
    let data = wait(writer.io(), writer.reader().read_entry(loc))
        .unwrap()
        .unwrap();
    assert_eq!(data, payload("t", 0, 0, 100));
}

#[test]
fn a_bucket_down_past_the_deadline_fails_entries_fast_and_stops_their_partitions() {
    let (_dir, store) = local_bucket();
    let mut cfg = config(4, Duration::from_millis(10));
    cfg.upload_deadline = Duration::from_millis(300);
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    let h = writer.handle();
    store.set_puts_failing(true);
    let started = Instant::now();
    let a = h.append(entry("t", 0, 0, 100));
    let b = h.append(entry("t", 1, 0, 100));
    for rx in [a, b] {
        let err = wait(writer.io(), rx).unwrap().unwrap_err();
        assert!(matches!(err, WalError::UploadFailed { .. }), "{err}");
        assert!(err.is_retriable());
        assert!(
            err.to_string().contains("wal/4/00000000000000000000.wal"),
            "error names the key: {err}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed in {:?}",
        started.elapsed()
    );
    assert!(store.put_count() >= 2, "retried before giving up");
    assert_eq!(writer.stats().snapshot().objects_failed, 1);

    // The bucket is back, but t-0 and t-1 stay stopped until resumed.
    store.set_puts_failing(false);
    let err = wait(writer.io(), h.append(entry("t", 0, 10, 100)))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, WalError::PartitionFailed { partition: 0, .. }),
        "{err}"
    );
    let other = wait(writer.io(), h.append(entry("u", 0, 0, 100))).unwrap();
    assert!(
        other.is_ok(),
        "another partition is not affected: {other:?}"
    );
    h.resume_partition("t", 0);
    let resumed = wait(writer.io(), h.append(entry("t", 0, 0, 100))).unwrap();
    assert!(resumed.is_ok(), "{resumed:?}");
    let err = wait(writer.io(), h.append(entry("t", 1, 0, 100)))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, WalError::PartitionFailed { partition: 1, .. }),
        "{err}"
    );
}

#[test]
fn a_failed_object_fails_later_entries_of_its_partitions_only() {
    let (_dir, store) = local_bucket();
    let mut cfg = config(5, Duration::from_secs(60));
    cfg.upload_deadline = Duration::from_millis(400);
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    let h = writer.handle();
    store.fail_puts_to(Some(object_key("wal", 5, 0)));
    let a = h.append(entry("t", 0, 0, 100));
    drop(h.flush()); // object 0: t-0, will fail
    let b = h.append(entry("t", 0, 10, 100));
    let c = h.append(entry("u", 0, 0, 100));
    let flushed = h.flush(); // object 1: t-0 and u-0, uploads fine
    let err_a = wait(writer.io(), a).unwrap().unwrap_err();
    assert!(matches!(err_a, WalError::UploadFailed { .. }), "{err_a}");
    let err_b = wait(writer.io(), b).unwrap().unwrap_err();
    assert!(
        matches!(&err_b, WalError::PartitionFailed { failed_key, .. } if failed_key.ends_with("00000000000000000000.wal")),
        "{err_b}"
    );
    let loc_c = wait(writer.io(), c).unwrap().expect("u-0 is acknowledged");
    assert_eq!(loc_c.seq, 1);
    wait(writer.io(), flushed).unwrap().unwrap();
    let stats = writer.stats().snapshot();
    assert_eq!((stats.entries_acked, stats.entries_failed), (1, 2));
    assert_eq!(stats.inflight_bytes, 0);
}

/// The acknowledgement rule: an entry waits for every earlier object that
/// holds its partition, and for no other. Object 0 (t/0) is slow; object 1
/// holds t/0 and t/1: its t/1 entry is acknowledged as soon as object 1 is
/// durable, its t/0 entry only after object 0.
#[test]
fn an_entry_waits_for_earlier_objects_of_its_partition_only() {
    let (_dir, store) = local_bucket();
    let writer = WalWriter::start(as_store(&store), config(6, Duration::from_secs(60))).unwrap();
    let h = writer.handle();
    store.set_put_latency(Duration::from_millis(1500));
    let mut a = h.append(entry("t", 0, 0, 100));
    drop(h.flush());
    let deadline = Instant::now() + WAIT_MAX;
    while store.put_count() < 1 {
        assert!(Instant::now() < deadline, "object 0's PUT never started");
        thread::sleep(Duration::from_millis(5));
    }
    store.set_put_latency(Duration::ZERO);
    let started = Instant::now();
    let mut b = h.append(entry("t", 0, 10, 100));
    let other = h.append(entry("t", 1, 0, 100));
    drop(h.flush());
    let loc_other = wait(writer.io(), other).unwrap().unwrap();
    assert_eq!(loc_other.seq, 1);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "t/1 waited for object 0, which does not hold t/1: {:?}",
        started.elapsed()
    );
    assert!(
        matches!(b.try_recv(), Ok(None)),
        "t/0 in object 1 was acknowledged before object 0 (t/0) was durable"
    );
    assert!(matches!(a.try_recv(), Ok(None)));
    let loc_b = wait(writer.io(), b).unwrap().unwrap();
    assert_eq!(loc_b.seq, 1);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let loc_a = a
        .try_recv()
        .unwrap()
        .expect("object 0 acknowledged before t/0's entry in object 1")
        .unwrap();
    assert_eq!(loc_a.seq, 0);
    assert_eq!(store.put_count(), 2);
    let stats = writer.stats();
    assert_eq!(stats.wait_earlier.count(), 3);
    assert_eq!(stats.put.count(), 3);
    assert_eq!(stats.wait_interval.count(), 3);
}

/// A failed object fails its partitions' later entries, but an entry of
/// another partition in a later object is acknowledged while it uploads.
#[test]
fn a_slow_failing_object_holds_back_and_fails_only_its_partitions() {
    let (_dir, store) = local_bucket();
    let mut cfg = config(8, Duration::from_secs(60));
    cfg.upload_deadline = Duration::from_millis(1200);
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    let h = writer.handle();
    store.fail_puts_to(Some(object_key("wal", 8, 0)));
    let a = h.append(entry("t", 0, 0, 100));
    drop(h.flush());
    let b = h.append(entry("t", 0, 10, 100));
    let other = h.append(entry("u", 0, 0, 100));
    drop(h.flush());
    let started = Instant::now();
    let loc_other = wait(writer.io(), other).unwrap().unwrap();
    assert_eq!(loc_other.seq, 1);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        wait(writer.io(), a).unwrap(),
        Err(WalError::UploadFailed { .. })
    ));
    assert!(matches!(
        wait(writer.io(), b).unwrap(),
        Err(WalError::PartitionFailed { .. })
    ));
}

#[test]
fn backpressure_bounds_unacknowledged_bytes() {
    let (_dir, store) = local_bucket();
    let mut cfg = config(7, Duration::from_millis(10));
    let charge = 1000 + 1 + ferry_wal::writer::ENTRY_OVERHEAD_BYTES; // data + topic + overhead
    cfg.inflight_bytes_max = 5 * charge + 10;
    let writer = WalWriter::start(as_store(&store), cfg.clone()).unwrap();
    let h = writer.handle();
    store.set_put_latency(Duration::from_millis(500));
    let accepted: Vec<_> = (0..5)
        .map(|i| h.append(entry("t", 0, i * 10, 1000)))
        .collect();
    assert_eq!(h.inflight_bytes(), 5 * charge as u64);
    let mut refused = h.append(entry("t", 0, 50, 1000));
    match refused.try_recv() {
        Ok(Some(Err(WalError::Backpressure {
            inflight_bytes,
            inflight_bytes_max,
            ..
        }))) => {
            assert_eq!(inflight_bytes, 5 * charge);
            assert_eq!(inflight_bytes_max, cfg.inflight_bytes_max);
        }
        other => panic!("expected an immediate Backpressure error, got {other:?}"),
    }
    assert!(h.inflight_bytes() <= cfg.inflight_bytes_max as u64);
    assert_eq!(writer.stats().snapshot().backpressure_rejections, 1);
    for rx in accepted {
        wait(writer.io(), rx).unwrap().unwrap();
    }
    assert_eq!(h.inflight_bytes(), 0, "acknowledged bytes are given back");
    store.set_put_latency(Duration::ZERO);
    // The refusal stopped the partition: later offsets must not get in
    // until its owner rewinds and resumes it.
    let stopped = wait(writer.io(), h.append(entry("t", 0, 60, 1000))).unwrap();
    assert!(
        matches!(stopped, Err(WalError::PartitionFailed { .. })),
        "{stopped:?}"
    );
    h.resume_partition("t", 0);
    let again = wait(writer.io(), h.append(entry("t", 0, 50, 1000))).unwrap();
    assert!(again.is_ok(), "{again:?}");
}

#[test]
fn every_oneshot_completes_under_mixed_faults_and_recovery_agrees() {
    let (_dir, store) = local_bucket();
    let mut cfg = config(8, Duration::from_millis(15));
    cfg.uploads_inflight_max = 3;
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    store.set_put_latency(Duration::from_millis(30));
    let joins: Vec<_> = (0..3)
        .map(|t| {
            let h = writer.handle();
            let store = store.clone();
            thread::spawn(move || {
                let mut rxs = Vec::new();
                for i in 0..50i64 {
                    if t == 0 && i == 20 {
                        store.fail_next_puts(4);
                    }
                    rxs.push((
                        (t, i * 10),
                        h.append(entry("mixed", t, i * 10, 64 + i as usize)),
                    ));
                    thread::sleep(Duration::from_millis(2));
                }
                rxs
            })
        })
        .collect();
    let mut acked = BTreeMap::new();
    for j in joins {
        for ((partition, base), rx) in j.join().unwrap() {
            let loc = wait(writer.io(), rx)
                .expect("oneshot completed")
                .expect("acknowledged");
            acked.insert((partition, base), loc);
        }
    }
    assert_eq!(acked.len(), 150);
    assert_eq!(store.put_failures(), 4);
    let stats = writer.stats().snapshot();
    assert!(
        stats.objects_uploaded > 1,
        "the run spans several intervals"
    );
    assert_eq!(stats.objects_uploaded, store.put_count() - 4);
    let rec = wait(writer.io(), writer.reader().recover("wal", 8))
        .unwrap()
        .unwrap();
    assert!(rec.skipped.is_empty());
    assert_eq!(rec.next_seq, stats.objects_uploaded);
    let found: BTreeMap<_, _> = rec
        .entries
        .iter()
        .map(|e| ((e.entry.partition, e.entry.base_offset), e.location()))
        .collect();
    assert_eq!(found, acked);
}

#[test]
fn shutdown_settles_everything_then_appends_are_refused() {
    let (_dir, store) = local_bucket();
    let writer = WalWriter::start(as_store(&store), config(9, Duration::from_secs(60))).unwrap();
    let h = writer.handle();
    let io = writer.io().clone();
    let mut rx = h.append(entry("t", 0, 0, 10));
    writer.shutdown(Duration::from_secs(10)).unwrap();
    assert!(
        matches!(rx.try_recv(), Ok(Some(Ok(_)))),
        "settled by shutdown"
    );
    let err = wait(&io, h.append(entry("t", 0, 10, 10)))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, WalError::Closed), "{err}");
    assert!(matches!(
        wait(&io, h.flush()).unwrap(),
        Err(WalError::Closed)
    ));
}

#[test]
fn invalid_entries_fail_at_once() {
    let (_dir, store) = local_bucket();
    let mut cfg = config(10, Duration::from_millis(10));
    cfg.inflight_bytes_max = 4096;
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    let h = writer.handle();
    let mut bad = entry("t", 0, 10, 10);
    bad.last_offset = 5;
    let mut rx = h.append(bad);
    assert!(matches!(
        rx.try_recv(),
        Ok(Some(Err(WalError::InvalidEntry { .. })))
    ));
    let mut rx = h.append(entry("t", 0, 10, 5000));
    match rx.try_recv() {
        Ok(Some(Err(WalError::InvalidEntry { topic, reason, .. }))) => {
            assert_eq!(topic, "t");
            assert!(reason.contains("inflight_bytes_max"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.inflight_bytes(), 0);
    assert_eq!(store.put_count(), 0);
}

#[test]
fn sequence_numbers_continue_from_first_seq() {
    let (_dir, store) = local_bucket();
    let mut cfg = config(11, Duration::from_millis(5));
    cfg.first_seq = 41;
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    let loc = wait(writer.io(), writer.handle().append(entry("t", 0, 0, 10)))
        .unwrap()
        .unwrap();
    assert_eq!(loc.seq, 41);
    assert_eq!(&*loc.key, "wal/11/00000000000000000041.wal");
}

/// A proxy's handoff object holds the bytes; the leader's WAL object holds
/// an external entry pointing at them, beside its own data and an epoch
/// marker. Each is acknowledged with the location the node reads from.
#[test]
fn external_entries_and_markers_are_acknowledged_with_their_locations() {
    use ferry_wal::object::ExternalRef;
    let (_dir, store) = local_bucket();
    // The proxy (node 3) writes the batch bytes to its handoff object.
    let mut proxy_cfg = config(3, Duration::from_millis(5));
    proxy_cfg.prefix = "handoff".into();
    let proxy = WalWriter::start(as_store(&store), proxy_cfg).unwrap();
    let handed = wait(proxy.io(), proxy.handle().append(entry("t", 0, 0, 500)))
        .unwrap()
        .unwrap();
    assert!(handed.key.starts_with("handoff/3/"));

    // The leader (node 1) records the offsets, pointing at those bytes.
    let mut cfg = config(1, Duration::from_millis(50));
    cfg.first_seq = 7;
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    let h = writer.handle();
    let marker = h.append(ferry_wal::WalEntry::epoch_marker(
        Arc::from("t"),
        [1; 16],
        0,
        4,
        100,
        0,
    ));
    let external = ferry_wal::WalEntry {
        data_crc: None,
        data: Vec::new(),
        leader_epoch: 4,
        external: Some(ExternalRef {
            key: handed.key.clone(),
            position: handed.position,
            len: handed.len,
            crc: handed.crc,
        }),
        ..entry("t", 0, 100, 0)
    };
    let external = h.append(external);
    let own = h.append(ferry_wal::WalEntry {
        data_crc: None,
        leader_epoch: 4,
        ..entry("t", 0, 110, 300)
    });
    let marker = wait(writer.io(), marker).unwrap().unwrap();
    let external = wait(writer.io(), external).unwrap().unwrap();
    let own = wait(writer.io(), own).unwrap().unwrap();

    let wal_key = object_key("wal", 1, 7);
    assert_eq!(&*own.key, wal_key.as_ref());
    assert_eq!((marker.seq, external.seq, own.seq), (7, 7, 7), "one object");
    // The external entry: the handoff object's range, the WAL object's seq.
    assert_eq!(
        external,
        ferry_wal::WalLocation {
            key: handed.key.clone(),
            seq: 7,
            node: 1,
            position: handed.position,
            len: handed.len,
            crc: handed.crc,
        }
    );
    // The marker: nothing to read, in the WAL object.
    assert_eq!((&*marker.key, marker.len), (wal_key.as_ref(), 0));
    // Both read back through their locations and checks.
    let io = writer.io().clone();
    assert_eq!(
        wait(&io, reader::read_entry(&*as_store(&store), &external)).unwrap(),
        payload("t", 0, 0, 500)
    );
    assert_eq!(
        wait(&io, reader::read_entry(&*as_store(&store), &own)).unwrap(),
        payload("t", 0, 110, 300)
    );
    // Recovery answers the same locations.
    let rec = wait(&io, ferry_wal::recovery::scan(&*as_store(&store), "wal", 1)).unwrap();
    let locs: Vec<_> = rec.entries.iter().map(|e| e.location()).collect();
    assert_eq!(locs, vec![marker, external, own]);
    assert!(rec.entries[0].entry.is_epoch_marker());
    assert_eq!(rec.entries[1].entry.leader_epoch, 4);

    // An external entry with data of its own is refused at once.
    let bad = ferry_wal::WalEntry {
        data_crc: None,
        external: Some(ExternalRef {
            key: handed.key.clone(),
            position: 0,
            len: 10,
            crc: 0,
        }),
        ..entry("t", 1, 0, 10)
    };
    let bad = wait(&io, h.append(bad)).unwrap();
    assert!(
        matches!(bad, Err(WalError::InvalidEntry { ref reason, .. }) if reason.contains("no data")),
        "{bad:?}"
    );
}

/// External entries and markers fail like any entry when their object
/// cannot be made durable, and stop their partition.
#[test]
fn external_entries_and_markers_follow_the_failure_rules() {
    use ferry_wal::object::ExternalRef;
    let (_dir, store) = local_bucket();
    let mut cfg = config(1, Duration::from_millis(5));
    cfg.upload_deadline = Duration::from_millis(200);
    let writer = WalWriter::start(as_store(&store), cfg).unwrap();
    let h = writer.handle();
    store.set_puts_failing(true);
    let marker = h.append(ferry_wal::WalEntry::epoch_marker(
        Arc::from("t"),
        [1; 16],
        0,
        2,
        0,
        0,
    ));
    let external = h.append(ferry_wal::WalEntry {
        data_crc: None,
        data: Vec::new(),
        external: Some(ExternalRef {
            key: Arc::from("handoff/9/00000000000000000001.wal"),
            position: 32,
            len: 100,
            crc: 1,
        }),
        ..entry("t", 0, 0, 0)
    });
    let m = wait(writer.io(), marker).unwrap();
    assert!(matches!(m, Err(WalError::UploadFailed { .. })), "{m:?}");
    let x = wait(writer.io(), external).unwrap();
    assert!(
        matches!(
            x,
            Err(WalError::UploadFailed { .. } | WalError::PartitionFailed { .. })
        ),
        "{x:?}"
    );
    store.set_puts_failing(false);
    let later = wait(writer.io(), h.append(entry("t", 0, 10, 10))).unwrap();
    assert!(
        matches!(later, Err(WalError::PartitionFailed { .. })),
        "{later:?}"
    );
}
