//! Recording completions (delivery reports, consumer receipts) against the
//! run's window.
//!
//! A run is `start .. warmup_end .. end` on the [`crate::clock`]. Two rules
//! decide what counts:
//!
//! - **Latency** is `done - intended` and goes to the measured histogram when
//!   the record's *intended* send time is in `warmup_end .. end`. A record due
//!   in the window but delivered late, during the drain, still counts, with
//!   all of its lateness. Latencies of warm-up records are kept apart, for the
//!   progress line only.
//! - **Throughput** counts records whose *completion* is in
//!   `warmup_end .. end`: what the system actually delivered during the
//!   window, not what was offered to it.

use crate::stats::{latency_histogram, record_latency_ns};
use hdrhistogram::Histogram;

/// The phases of a run, in nanoseconds on the run clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When producers start sending.
    pub start_ns: u64,
    /// When the warm-up ends and measurement begins.
    pub warmup_end_ns: u64,
    /// When producers stop sending and measurement ends.
    pub end_ns: u64,
}

/// Where a time falls in a [`Window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Before,
    Warmup,
    Measured,
    After,
}

impl Window {
    /// No window yet: every time is after it, so nothing is measured.
    pub const NONE: Window = Window {
        start_ns: 0,
        warmup_end_ns: 0,
        end_ns: 0,
    };

    /// A window starting at `start_ns` with the given warm-up and measured
    /// lengths.
    pub fn new(start_ns: u64, warmup_ns: u64, measured_ns: u64) -> Self {
        let warmup_end_ns = start_ns.saturating_add(warmup_ns);
        Window {
            start_ns,
            warmup_end_ns,
            end_ns: warmup_end_ns.saturating_add(measured_ns),
        }
    }

    /// The phase of time `t_ns`.
    pub fn phase(&self, t_ns: u64) -> Phase {
        if t_ns < self.start_ns {
            Phase::Before
        } else if t_ns < self.warmup_end_ns {
            Phase::Warmup
        } else if t_ns < self.end_ns {
            Phase::Measured
        } else {
            Phase::After
        }
    }

    /// The length of the measured part, in seconds.
    pub fn measured_secs(&self) -> f64 {
        self.end_ns.saturating_sub(self.warmup_end_ns) as f64 / 1e9
    }
}

/// Latencies and counts of one stream of completions.
#[derive(Debug, Clone)]
pub struct Recorder {
    window: Window,
    /// Latencies (µs) of records intended during the measured window.
    pub measured: Histogram<u64>,
    /// Latencies (µs) of records intended during the warm-up.
    pub warmup: Histogram<u64>,
    /// Every completion recorded, whatever its time.
    pub completed: u64,
    /// Completions whose completion time is in the measured window.
    pub completed_in_window: u64,
    /// Their bytes.
    pub bytes_in_window: u64,
}

impl Recorder {
    /// An empty recorder for `window`.
    pub fn new(window: Window) -> Self {
        Recorder {
            window,
            measured: latency_histogram(),
            warmup: latency_histogram(),
            completed: 0,
            completed_in_window: 0,
            bytes_in_window: 0,
        }
    }

    /// The window this recorder counts against.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Records a record of `bytes` bytes, intended to be sent at
    /// `intended_ns` and completed at `done_ns`.
    pub fn record(&mut self, intended_ns: u64, done_ns: u64, bytes: u64) {
        self.completed += 1;
        let latency_ns = done_ns.saturating_sub(intended_ns);
        match self.window.phase(intended_ns) {
            Phase::Measured => record_latency_ns(&mut self.measured, latency_ns),
            Phase::Warmup => record_latency_ns(&mut self.warmup, latency_ns),
            Phase::Before | Phase::After => {}
        }
        if self.window.phase(done_ns) == Phase::Measured {
            self.completed_in_window += 1;
            self.bytes_in_window += bytes;
        }
    }

    /// Adds `other`'s records to this one. Both must share a window.
    pub fn merge(&mut self, other: &Recorder) {
        debug_assert_eq!(self.window, other.window, "merging different windows");
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.measured.add(&other.measured);
        let _ = self.warmup.add(&other.warmup);
        self.completed += other.completed;
        self.completed_in_window += other.completed_in_window;
        self.bytes_in_window += other.bytes_in_window;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacer::{Pace, Pacer};
    use crate::stats::LatencySummary;

    const MS: u64 = 1_000_000;

    fn assert_hdr(actual_ms: f64, expected_ms: f64) {
        assert!(
            actual_ms >= expected_ms && actual_ms <= expected_ms * 1.001,
            "{actual_ms} ms is not {expected_ms} ms to 0.1%"
        );
    }

    /// Runs a simulated sender at 1,000 records/s over `0 .. 2,000 ms` against
    /// a system that acknowledges each record 1 ms after it is actually sent.
    /// The sender is frozen from 500 ms to 1,500 ms (a GC pause, a full
    /// queue). Returns the latencies measured from the intended send time and
    /// from the actual one.
    fn stalled_sender() -> (Recorder, Recorder) {
        let window = Window::new(0, 0, 2_000 * MS);
        let mut corrected = Recorder::new(window);
        let mut naive = Recorder::new(window);
        let mut pacer = Pacer::fixed(1_000.0, 0, 2_000 * MS);
        let mut now = 0;
        loop {
            if (500 * MS..1_500 * MS).contains(&now) {
                now = 1_500 * MS;
            }
            match pacer.next(now) {
                Pace::Send { intended_ns, .. } => {
                    let ack = now + MS;
                    corrected.record(intended_ns, ack, 1);
                    naive.record(now, ack, 1);
                }
                Pace::WaitUntil(t) => now = t,
                Pace::Done => break,
            }
        }
        (corrected, naive)
    }

    #[test]
    fn a_stalled_senders_latencies_include_the_stall() {
        // Hand computation. Records 0..=499 (due 0..499 ms) go out on time:
        // latency 1 ms. At 500 ms the sender freezes until 1,500 ms, then gets
        // records 500..=1500 at once; record i is acknowledged at 1,501 ms, so
        // its latency is 1,501 - i ms: 1,001 ms down to 1 ms. Records
        // 1501..=1999 are on time again: 1 ms. So 2,000 latencies: 1,000 of
        // 1 ms (500 + 1 + 499) and one each of 2, 3, ..., 1,001 ms.
        // Nearest rank: p50 = 1,000th = 1 ms; p90 = 1,800th = the 800th of
        // the ramp 2..=1001 = 801 ms; p99 = 1,980th = 981 ms; p99.9 = 1,998th
        // = 999 ms; max 1,001 ms.
        let (corrected, naive) = stalled_sender();
        let s = LatencySummary::from_histogram_us(&corrected.measured);
        assert_eq!(s.count, 2_000);
        assert_hdr(s.p50_ms, 1.0);
        assert_hdr(s.p90_ms, 801.0);
        assert_hdr(s.p99_ms, 981.0);
        assert_hdr(s.p999_ms, 999.0);
        assert_hdr(s.max_ms, 1_001.0);

        // Timed from the actual send, every latency is 1 ms: the stall is
        // invisible. This is the error the correction exists to avoid.
        let n = LatencySummary::from_histogram_us(&naive.measured);
        assert_eq!(n.count, 2_000);
        assert_hdr(n.max_ms, 1.0);
    }

    #[test]
    fn warmup_latencies_are_kept_apart_and_throughput_counts_completions_in_the_window() {
        // Window: warm-up 0..100 ms, measured 100..300 ms.
        let w = Window::new(0, 100 * MS, 200 * MS);
        let mut r = Recorder::new(w);
        r.record(50 * MS, 60 * MS, 10); // warm-up record, done in warm-up
        r.record(90 * MS, 110 * MS, 10); // warm-up record, done in the window
        r.record(150 * MS, 155 * MS, 10); // measured, done in the window
        r.record(290 * MS, 400 * MS, 10); // measured, done during the drain
        assert_eq!(r.completed, 4);
        assert_eq!(r.warmup.len(), 2);
        assert_eq!(r.measured.len(), 2);
        // Measured latencies: 5 ms and 110 ms (the late one keeps its delay).
        assert_hdr(LatencySummary::from_histogram_us(&r.measured).max_ms, 110.0);
        // Completed in 100..300 ms: the 110 ms and 155 ms completions.
        assert_eq!(r.completed_in_window, 2);
        assert_eq!(r.bytes_in_window, 20);
        assert_eq!(w.measured_secs(), 0.2);
    }

    #[test]
    fn merging_adds_everything() {
        let w = Window::new(0, 0, 10 * MS);
        let mut a = Recorder::new(w);
        let mut b = Recorder::new(w);
        a.record(MS, 2 * MS, 3);
        b.record(2 * MS, 5 * MS, 4);
        a.merge(&b);
        assert_eq!(a.completed, 2);
        assert_eq!(a.bytes_in_window, 7);
        assert_eq!(a.measured.len(), 2);
        assert_hdr(LatencySummary::from_histogram_us(&a.measured).max_ms, 3.0);
    }

    #[test]
    fn phases_are_half_open() {
        let w = Window::new(10, 5, 5);
        assert_eq!(w.phase(9), Phase::Before);
        assert_eq!(w.phase(10), Phase::Warmup);
        assert_eq!(w.phase(15), Phase::Measured);
        assert_eq!(w.phase(20), Phase::After);
    }
}
