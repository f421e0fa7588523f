//! Every message in the schemas, at every valid version: a sampled value is
//! encoded, decoded and compared, and encoding it again gives the same bytes.

use ferry_protocol::messages::ROUND_TRIPS;
use ferry_protocol::testkit::SampleRng;
use ferry_protocol::wire::VersionRange;

const SEEDS_PER_VERSION: u64 = 24;

/// The round-trip checks of a generated message table.
#[allow(clippy::type_complexity)]
type Checks = [(
    &'static str,
    VersionRange,
    fn(&mut SampleRng, i16) -> Result<(), String>,
)];

/// Runs every check at every version: the (message, version) pairs run
/// and the failures.
fn run(checks: &Checks) -> (usize, Vec<String>) {
    let mut pairs = 0usize;
    let mut failures = Vec::new();
    for (name, versions, check) in checks {
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
    (pairs, failures)
}

#[test]
fn every_message_round_trips_at_every_version() {
    let (pairs, failures) = run(ROUND_TRIPS);
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

/// Ferry's own node-to-node messages (`schemas/ferry/`) go through the same
/// check.
#[test]
fn every_ferry_message_round_trips_at_every_version() {
    let checks = ferry_protocol::ferry_messages::ROUND_TRIPS;
    let (pairs, failures) = run(checks);
    println!(
        "round trip: {} Ferry messages, {pairs} (message, version) pairs, {SEEDS_PER_VERSION} samples each",
        checks.len()
    );
    assert_eq!(checks.len(), 6, "three Ferry APIs, request and response");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
