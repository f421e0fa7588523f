//! Every message in the schemas, at every valid version: a sampled value is
//! encoded, decoded and compared, and encoding it again gives the same bytes.

use ferry_protocol::messages::ROUND_TRIPS;
use ferry_protocol::testkit::SampleRng;

const SEEDS_PER_VERSION: u64 = 24;

#[test]
fn every_message_round_trips_at_every_version() {
    let mut pairs = 0usize;
    let mut failures = Vec::new();
    for (name, versions, check) in ROUND_TRIPS {
        for v in versions.min..=versions.max {
            pairs += 1;
            for seed in 0..SEEDS_PER_VERSION {
                let mut r = SampleRng::new(seed ^ (pairs as u64) << 20);
                if let Err(e) = check(&mut r, v) {
                    failures.push(format!("{name} v{v} seed {seed}: {e}"));
                    break;
                }
            }
        }
    }
    println!(
        "round trip: {} messages, {pairs} (message, version) pairs, {SEEDS_PER_VERSION} samples each",
        ROUND_TRIPS.len()
    );
    assert!(
        ROUND_TRIPS.len() >= 180,
        "only {} messages generated",
        ROUND_TRIPS.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
