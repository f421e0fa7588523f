//! One run's clock: monotonic nanoseconds since the run's origin, and the
//! wall-clock instant of that origin.
//!
//! Every time the tool reasons about (intended send, delivery report,
//! consumer receipt, the warm-up and measurement window) is a `u64` of
//! nanoseconds on this clock, so the pacing and recording code is plain
//! arithmetic that tests drive with made-up times. Records carry the
//! intended send time as Unix nanoseconds ([`RunClock::unix_ns`]), so that a
//! consumer in another process, on a clock synchronised by NTP, can still
//! compute an end-to-end latency; in one process both ends use this clock and
//! the difference is exact.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A monotonic clock whose zero is the start of the run.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    origin: Instant,
    origin_unix_ns: u64,
}

impl RunClock {
    /// Starts a clock at zero now.
    pub fn start() -> Self {
        let origin = Instant::now();
        let origin_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        RunClock {
            origin,
            origin_unix_ns,
        }
    }

    /// Nanoseconds since the origin.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The Unix time, in nanoseconds, of `run_ns` on this clock.
    pub fn unix_ns(&self, run_ns: u64) -> u64 {
        self.origin_unix_ns.saturating_add(run_ns)
    }

    /// The time on this clock of the Unix time `unix_ns`, or `None` if it is
    /// before the origin (a record stamped by an earlier run).
    pub fn run_ns_of_unix(&self, unix_ns: u64) -> Option<u64> {
        unix_ns.checked_sub(self.origin_unix_ns)
    }

    /// The Unix time of the origin, in milliseconds, for reports.
    pub fn origin_unix_ms(&self) -> u64 {
        self.origin_unix_ns / 1_000_000
    }

    /// Sleeps until `run_ns` on this clock (at once if it has passed).
    pub fn sleep_until(&self, run_ns: u64) {
        let now = self.now_ns();
        if run_ns > now {
            std::thread::sleep(Duration::from_nanos(run_ns - now));
        }
    }
}

/// Seconds as nanoseconds, saturating.
pub fn secs_to_ns(secs: u64) -> u64 {
    secs.saturating_mul(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_and_run_times_convert_both_ways() {
        let clock = RunClock::start();
        let unix = clock.unix_ns(1_500);
        assert_eq!(clock.run_ns_of_unix(unix), Some(1_500));
        assert_eq!(clock.run_ns_of_unix(clock.unix_ns(0) - 1), None);
    }

    #[test]
    fn the_clock_moves_forward() {
        let clock = RunClock::start();
        let a = clock.now_ns();
        clock.sleep_until(a + 1_000_000);
        assert!(clock.now_ns() >= a + 1_000_000);
    }
}
