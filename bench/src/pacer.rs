//! When each record is meant to be sent: the schedule that corrects
//! coordinated omission.
//!
//! A closed-loop load generator that waits for the system before sending
//! the next record stops measuring exactly when the system is slow: the
//! records it *would* have sent during a stall are never timed, so the stall
//! vanishes from the percentiles ("coordinated omission"). In fixed-rate mode
//! the [`Pacer`] fixes record `i`'s *intended* send time in advance,
//! `start + i / rate`, whatever happens. A sender that falls behind gets the
//! overdue records at once, still stamped with their intended times, and every
//! latency is measured from the intended time, so a stall of `s` seconds shows
//! up as latencies of up to `s`.
//!
//! In open mode (`--rate 0`, as fast as possible) there is no schedule: a
//! record's intended time is the moment the sender first tries to send it.
//!
//! The pacer is plain arithmetic on [`crate::clock`] nanoseconds; the sender
//! asks it what to do at `now` and sleeps or sends.

/// What a sender does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Send record `seq` now, stamped with `intended_ns`.
    Send { seq: u64, intended_ns: u64 },
    /// Nothing is due before this time.
    WaitUntil(u64),
    /// The schedule has ended: send nothing more.
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Record `i` is due at `start_ns + i * interval_ns`.
    Fixed { start_ns: u64, interval_ns: f64 },
    /// Every record is due at once.
    Open { start_ns: u64 },
}

/// The send schedule of one producer.
#[derive(Debug, Clone)]
pub struct Pacer {
    mode: Mode,
    end_ns: u64,
    next_seq: u64,
}

impl Pacer {
    /// `rate_per_sec` records per second from `start_ns`, nothing due at or
    /// after `end_ns`. `rate_per_sec` must be positive and finite.
    pub fn fixed(rate_per_sec: f64, start_ns: u64, end_ns: u64) -> Self {
        assert!(
            rate_per_sec.is_finite() && rate_per_sec > 0.0,
            "a fixed rate must be positive, got {rate_per_sec}"
        );
        Pacer {
            mode: Mode::Fixed {
                start_ns,
                interval_ns: 1e9 / rate_per_sec,
            },
            end_ns,
            next_seq: 0,
        }
    }

    /// As fast as the sender can go, from `start_ns` until `end_ns`.
    pub fn open(start_ns: u64, end_ns: u64) -> Self {
        Pacer {
            mode: Mode::Open { start_ns },
            end_ns,
            next_seq: 0,
        }
    }

    /// The intended send time of record `seq` in fixed mode.
    fn due_ns(start_ns: u64, interval_ns: f64, seq: u64) -> u64 {
        // f64 holds integers exactly up to 2^53 ns (104 days): enough.
        start_ns.saturating_add((seq as f64 * interval_ns).round() as u64)
    }

    /// What to do at `now_ns`. A `Send` moves the schedule on by one record.
    pub fn next(&mut self, now_ns: u64) -> Pace {
        let (seq, intended_ns) = match self.mode {
            Mode::Fixed {
                start_ns,
                interval_ns,
            } => {
                let due = Self::due_ns(start_ns, interval_ns, self.next_seq);
                if due >= self.end_ns {
                    return Pace::Done;
                }
                if due > now_ns {
                    return Pace::WaitUntil(due);
                }
                (self.next_seq, due)
            }
            Mode::Open { start_ns } => {
                if now_ns >= self.end_ns {
                    return Pace::Done;
                }
                if now_ns < start_ns {
                    return Pace::WaitUntil(start_ns);
                }
                (self.next_seq, now_ns)
            }
        };
        self.next_seq += 1;
        Pace::Send { seq, intended_ns }
    }

    /// How many records the schedule has handed out.
    pub fn sent(&self) -> u64 {
        self.next_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn fixed_rate_spaces_records_evenly_and_stops_at_the_end() {
        // 1,000 records/s from t=10 ms to t=13 ms: records at 10, 11, 12 ms.
        let mut p = Pacer::fixed(1_000.0, 10 * MS, 13 * MS);
        assert_eq!(p.next(0), Pace::WaitUntil(10 * MS));
        assert_eq!(
            p.next(10 * MS),
            Pace::Send {
                seq: 0,
                intended_ns: 10 * MS
            }
        );
        assert_eq!(p.next(10 * MS), Pace::WaitUntil(11 * MS));
        // A late sender gets every overdue record at once, stamped on time.
        assert_eq!(
            p.next(50 * MS),
            Pace::Send {
                seq: 1,
                intended_ns: 11 * MS
            }
        );
        assert_eq!(
            p.next(50 * MS),
            Pace::Send {
                seq: 2,
                intended_ns: 12 * MS
            }
        );
        assert_eq!(p.next(50 * MS), Pace::Done);
        assert_eq!(p.sent(), 3);
    }

    #[test]
    fn fractional_intervals_do_not_drift() {
        // 3 records/s: 333,333,333.3 ns apart; record 3 is due at exactly 1 s,
        // record 300 at exactly 100 s, because times are computed from the
        // start, not accumulated.
        let mut p = Pacer::fixed(3.0, 0, 200_000_000_000);
        let mut last = 0;
        for _ in 0..=300 {
            match p.next(u64::MAX / 2) {
                Pace::Send { intended_ns, .. } => last = intended_ns,
                other => panic!("expected a send, got {other:?}"),
            }
        }
        assert_eq!(last, 100_000_000_000);
    }

    #[test]
    fn open_mode_stamps_the_attempt_time() {
        let mut p = Pacer::open(5, 100);
        assert_eq!(p.next(0), Pace::WaitUntil(5));
        assert_eq!(
            p.next(7),
            Pace::Send {
                seq: 0,
                intended_ns: 7
            }
        );
        assert_eq!(
            p.next(7),
            Pace::Send {
                seq: 1,
                intended_ns: 7
            }
        );
        assert_eq!(p.next(100), Pace::Done);
    }
}
