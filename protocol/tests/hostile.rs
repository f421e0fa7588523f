//! Hostile input to the request decoder: truncation at every byte, bit
//! flips, huge and negative lengths and counts, and nested arrays that claim
//! more than the frame holds. Each gets an error or a value, never a panic,
//! and never an allocation larger than the frame.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use ferry_protocol::frame::{self, decode_request, SupportedApis};
use ferry_protocol::messages::{RequestBody, APIS};
use ferry_protocol::testkit::SampleRng;
use ferry_protocol::wire::DecodeError;
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Records the largest single allocation made by the current thread while
/// `TRACK` is on (tests run on several threads at once).
struct Largest;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            let _ = TOTAL.try_with(|l| l.set(l.get() + size));
        }
    });
}

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note(n);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Largest = Largest;

/// Decodes `frame`, returning the result and the largest and total
/// allocation the decode made.
fn decode_measured(frame: &Bytes) -> (Result<frame::Request, frame::RequestError>, usize, usize) {
    let supported = SupportedApis::all();
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|l| l.set(0));
    TRACK.with(|t| t.set(true));
    let r = decode_request(frame, &supported);
    TRACK.with(|t| t.set(false));
    (r, LARGEST.with(Cell::get), TOTAL.with(Cell::get))
}

/// One sampled request frame (without size prefix) per (API, version).
fn sample_frames(seed: u64) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    let mut r = SampleRng::new(seed);
    for api in APIS {
        for v in api.versions.min..=api.versions.max {
            let body = sample_request(api.key, v, &mut r);
            let segs =
                frame::encode_request(r.next_u64() as i32, Some("hostile"), v, &body).unwrap();
            out.push((
                format!("{} v{v}", api.name),
                frame::concat(&segs).slice(4..),
            ));
        }
    }
    out
}

fn sample_request(key: i16, v: i16, r: &mut SampleRng) -> RequestBody {
    RequestBody::sample_for(key, r, v).expect("every API in APIS has a request")
}

#[test]
fn truncation_at_every_byte_is_an_error() {
    let mut cases = 0;
    for (name, frame) in sample_frames(1) {
        for cut in 0..frame.len() {
            let short = frame.slice(..cut);
            let (r, largest, _) = decode_measured(&short);
            assert!(r.is_err(), "{name} cut at {cut} of {} decoded", frame.len());
            // A vector's first growth reserves four elements, so tiny frames
            // get a small constant floor.
            assert!(
                largest <= short.len().max(1024),
                "{name} cut at {cut}: allocated {largest} bytes"
            );
            cases += 1;
        }
    }
    println!("truncation: {cases} truncated frames, all refused");
}

#[test]
fn bit_flips_never_panic_or_amplify_memory() {
    let mut cases = 0;
    for (name, frame) in sample_frames(2) {
        for bit in 0..frame.len() * 8 {
            let mut b = frame.to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            let b = Bytes::from(b);
            let (_r, _largest, total) = decode_measured(&b);
            // Each element takes at least one byte on the wire and at most a
            // few hundred in memory; anything beyond that is amplification.
            assert!(
                total <= 512 * b.len() + 4096,
                "{name} flip {bit}: {total} bytes allocated"
            );
            cases += 1;
        }
    }
    println!("bit flips: {cases} flipped frames decoded or refused without panic");
}

/// A Metadata v4 request header followed by `body`.
fn metadata_v4(body: &[u8]) -> Bytes {
    let mut f = vec![0, 3, 0, 4, 0, 0, 0, 9, 0, 1, b'c'];
    f.extend_from_slice(body);
    Bytes::from(f)
}

#[test]
fn huge_and_negative_counts_are_refused_before_allocating() {
    for count in [i32::MAX, 1 << 20, 1000, -2, i32::MIN] {
        let frame = metadata_v4(&[&count.to_be_bytes()[..], &[0, 3, b'a', b'b', b'c', 1]].concat());
        let (r, largest, _) = decode_measured(&frame);
        let err = r.expect_err("must be refused");
        assert!(largest <= frame.len(), "count {count}: allocated {largest}");
        let frame::RequestError::Malformed { error, .. } = err else {
            panic!("{err:?}")
        };
        if count >= 0 {
            assert!(
                matches!(error, DecodeError::TooLong { .. }),
                "count {count}: {error}"
            );
        } else {
            assert!(
                matches!(error, DecodeError::Invalid { .. }),
                "count {count}: {error}"
            );
        }
    }
    // A string whose length runs past the frame.
    let frame = metadata_v4(&[0, 0, 0, 1, 0x7f, 0xff, b'a']);
    assert!(decode_measured(&frame).0.is_err());
    // A compact (flexible) array count that is an over-long varint.
    let mut f = vec![0, 3, 0, 12, 0, 0, 0, 9, 0, 1, b'c', 0];
    f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(decode_measured(&Bytes::from(f)).0.is_err());
}

#[test]
fn nested_arrays_claiming_more_than_the_frame_allocate_at_most_the_frame() {
    // CreateTopics v4: topics [name, num_partitions, replication_factor,
    // assignments [partition, broker_ids [i32]], configs [...]], each
    // count claiming far more than the frame has.
    let mut body = Vec::new();
    body.extend_from_slice(&1i32.to_be_bytes()); // one topic
    body.extend_from_slice(&[0, 1, b't']);
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&40i32.to_be_bytes()); // 40 assignments claimed
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&30i32.to_be_bytes()); // 30 broker ids claimed
    body.extend_from_slice(&[0; 40]);
    let mut f = vec![0, 19, 0, 4, 0, 0, 0, 9, 0, 1, b'c'];
    f.extend_from_slice(&body);
    let frame = Bytes::from(f);
    let (r, largest, _) = decode_measured(&frame);
    assert!(r.is_err());
    assert!(
        largest <= frame.len(),
        "allocated {largest} for a {} byte frame",
        frame.len()
    );
}

#[test]
fn unknown_api_keys_and_short_frames_are_errors() {
    let supported = SupportedApis::all();
    for f in [
        &[][..],
        &[0, 0, 0],
        &[0x7f, 0x7f, 0, 0, 0, 0, 0, 1],
        &[0xff, 0xff, 0, 0, 0, 0, 0, 1],
    ] {
        assert!(decode_request(&Bytes::copy_from_slice(f), &supported).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            "tests/proptest-regressions/hostile.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// Random bodies behind every valid (API, version) header.
    #[test]
    fn random_bodies_never_panic(api in 0usize..APIS.len(), v in 0i16..20, body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let info = &APIS[api];
        let v = info.versions.min + v % (info.versions.max - info.versions.min + 1);
        let mut f = Vec::new();
        f.extend_from_slice(&info.key.to_be_bytes());
        f.extend_from_slice(&v.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
        f.extend_from_slice(&body);
        let frame = Bytes::from(f);
        let (_r, _largest, total) = decode_measured(&frame);
        prop_assert!(total <= 512 * frame.len() + 4096);
        frame::fuzz_request(&frame);
    }
}

#[test]
fn every_sample_frame_survives_the_fuzz_oracle() {
    for (name, frame) in sample_frames(3) {
        let (r, _, _) = decode_measured(&frame);
        assert!(r.is_ok(), "{name}: {:?}", r.err());
        frame::fuzz_request(&frame);
    }
}

// ---- Ferry's own node-to-node messages --------------------------------

mod ferry {
    use super::*;
    use ferry_protocol::ferry_messages::{
        self, RequestBody as FerryRequest, ResponseBody as FerryResponse,
    };
    use ferry_protocol::wire;

    /// Decodes `body` as the request or response of Ferry API `key`, v0,
    /// as a whole (nothing may follow), measuring allocations as
    /// [`decode_measured`] does.
    fn decode_ferry_measured(key: i16, request: bool, body: &Bytes) -> (bool, usize, usize) {
        LARGEST.with(|l| l.set(0));
        TOTAL.with(|l| l.set(0));
        TRACK.with(|t| t.set(true));
        let ok = if request {
            wire::finish(body.len(), FerryRequest::decode_from(key, 0, body, body))
                .is_ok_and(|(_, used)| used == body.len())
        } else {
            wire::finish(body.len(), FerryResponse::decode_from(key, 0, body, body))
                .is_ok_and(|(_, used)| used == body.len())
        };
        TRACK.with(|t| t.set(false));
        (ok, LARGEST.with(Cell::get), TOTAL.with(Cell::get))
    }

    /// One sampled body per Ferry message: (name, key, request?, bytes).
    fn samples(seed: u64) -> Vec<(String, i16, bool, Bytes)> {
        let mut r = SampleRng::new(seed);
        let mut out = Vec::new();
        for api in ferry_messages::APIS {
            let req = FerryRequest::sample_for(api.key, &mut r, 0).expect("a request");
            let mut w = wire::Writer::new();
            req.encode(&mut w, 0).expect("encode");
            out.push((
                format!("{} request", api.name),
                api.key,
                true,
                w.into_bytes(),
            ));
            let resp = FerryResponse::sample_for(api.key, &mut r, 0).expect("a response");
            let mut w = wire::Writer::new();
            resp.encode(&mut w, 0).expect("encode");
            out.push((
                format!("{} response", api.name),
                api.key,
                false,
                w.into_bytes(),
            ));
        }
        out
    }

    #[test]
    fn ferry_apis_are_not_kafka_apis() {
        assert_eq!(ferry_messages::APIS.len(), 3);
        for api in ferry_messages::APIS {
            assert!(api.key >= 32000, "{}", api.name);
            assert!(
                APIS.iter().all(|k| k.key != api.key),
                "{} in APIS",
                api.name
            );
            assert!(RequestBody::default_for(api.key).is_none());
            // The Kafka request decoder refuses the key, even with a
            // valid Kafka header and a valid Ferry body.
            let mut w = wire::Writer::new();
            FerryRequest::default_for(api.key)
                .expect("a request")
                .encode(&mut w, 0)
                .expect("encode");
            let body = w.into_bytes();
            let mut f = Vec::new();
            f.extend_from_slice(&api.key.to_be_bytes());
            f.extend_from_slice(&0i16.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
            f.extend_from_slice(&body);
            let frame = Bytes::from(f);
            assert!(decode_request(&frame, &SupportedApis::all()).is_err());
            frame::fuzz_request(&frame);
        }
    }

    #[test]
    fn ferry_truncation_at_every_byte_is_an_error() {
        let mut cases = 0;
        for seed in 0..8 {
            for (name, key, request, body) in samples(seed) {
                assert!(decode_ferry_measured(key, request, &body).0, "{name}");
                for cut in 0..body.len() {
                    let short = body.slice(..cut);
                    let (ok, largest, _) = decode_ferry_measured(key, request, &short);
                    assert!(!ok, "{name} cut at {cut} of {} decoded", body.len());
                    assert!(
                        largest <= short.len().max(1024),
                        "{name} cut at {cut}: allocated {largest} bytes"
                    );
                    cases += 1;
                }
            }
        }
        println!("Ferry truncation: {cases} truncated bodies, all refused");
    }

    #[test]
    fn ferry_bit_flips_never_panic_or_amplify_memory() {
        let mut cases = 0;
        for (name, key, request, body) in samples(9) {
            for bit in 0..body.len() * 8 {
                let mut b = body.to_vec();
                b[bit / 8] ^= 1 << (bit % 8);
                let b = Bytes::from(b);
                let (_ok, _largest, total) = decode_ferry_measured(key, request, &b);
                assert!(
                    total <= 512 * b.len() + 4096,
                    "{name} flip {bit}: {total} bytes allocated"
                );
                cases += 1;
            }
        }
        println!("Ferry bit flips: {cases} flipped bodies decoded or refused without panic");
    }

    /// The fuzz seeds (`fuzz/make_seeds.py`) are what their names say: the
    /// valid ones decode, the broken ones are refused.
    #[test]
    fn ferry_fuzz_seeds_are_what_they_say() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ferry_message");
        let decodes = |name: &str| {
            let data = std::fs::read(dir.join(name)).expect("seed");
            let (pick, body) = data.split_first().expect("a pick byte");
            let key = ferry_messages::APIS[usize::from(pick >> 1)].key;
            decode_ferry_measured(key, pick & 1 == 0, &Bytes::copy_from_slice(body)).0
        };
        for valid in [
            "handoff_commit",
            "handoff_commit_response",
            "replica_read",
            "replica_read_response",
            "forward",
            "forward_response_null",
            "handoff_commit_key_index_outside",
        ] {
            assert!(decodes(valid), "{valid}");
        }
        for broken in [
            "handoff_commit_huge_key_count",
            "forward_negative_length",
            "replica_read_response_truncated",
        ] {
            assert!(!decodes(broken), "{broken}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 1000,
            failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
                "tests/proptest-regressions/hostile.txt",
            ))),
            ..ProptestConfig::default()
        })]

        /// Random bodies for every Ferry message.
        #[test]
        fn ferry_random_bodies_never_panic(api in 0usize..3, request: bool, body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let key = ferry_messages::APIS[api].key;
            let body = Bytes::from(body);
            let (_ok, _largest, total) = decode_ferry_measured(key, request, &body);
            prop_assert!(total <= 512 * body.len() + 4096);
        }
    }
}
