//! Never silent about SNAT exhaustion: a rate-limited log line when new
//! connections are dropped for want of a SNAT tuple, or take over tuples
//! that were still held.

use std::time::{Duration, Instant};

/// At most one warning this often.
pub const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// What happened since the last warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pressure {
    /// New connections dropped: no tuple free and none evictable.
    pub dropped: u64,
    /// New connections that took over a closed or half-open tuple.
    pub evicted: u64,
}

/// Follows the data plane's `drop_nat_ports_exhausted` and
/// `forward_new_evicting` counters.
#[derive(Debug, Default)]
pub struct PressureWatch {
    seen: Option<Pressure>,
    pending: Option<Pressure>,
    warned_at: Option<Instant>,
}

impl PressureWatch {
    /// Takes the counters' totals at `now`; returns what to warn about, if
    /// anything grew and no warning was given within WARN_INTERVAL.
    pub fn observe(&mut self, totals: Pressure, now: Instant) -> Option<Pressure> {
        let Some(seen) = self.seen.replace(totals) else {
            return None; // the first reading is the baseline
        };
        let grown = Pressure {
            dropped: totals.dropped.saturating_sub(seen.dropped),
            evicted: totals.evicted.saturating_sub(seen.evicted),
        };
        let pending = self.pending.get_or_insert(Pressure {
            dropped: 0,
            evicted: 0,
        });
        pending.dropped += grown.dropped;
        pending.evicted += grown.evicted;
        if pending.dropped == 0 && pending.evicted == 0 {
            return None;
        }
        if self
            .warned_at
            .is_some_and(|at| now.duration_since(at) < WARN_INTERVAL)
        {
            return None;
        }
        self.warned_at = Some(now);
        self.pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(dropped: u64, evicted: u64) -> Pressure {
        Pressure { dropped, evicted }
    }

    #[test]
    fn warns_once_per_interval_with_everything_since_the_last_warning() {
        let mut watch = PressureWatch::default();
        let t0 = Instant::now();
        assert_eq!(watch.observe(totals(5, 0), t0), None, "baseline");
        assert_eq!(watch.observe(totals(5, 0), t0 + Duration::from_secs(2)), None);
        assert_eq!(
            watch.observe(totals(8, 1), t0 + Duration::from_secs(4)),
            Some(totals(3, 1))
        );
        assert_eq!(watch.observe(totals(10, 1), t0 + Duration::from_secs(6)), None);
        assert_eq!(watch.observe(totals(11, 4), t0 + Duration::from_secs(8)), None);
        assert_eq!(
            watch.observe(totals(11, 4), t0 + Duration::from_secs(14)),
            Some(totals(3, 3)),
            "held back within the interval, then reported whole"
        );
        assert_eq!(watch.observe(totals(11, 4), t0 + Duration::from_secs(30)), None);
    }
}
