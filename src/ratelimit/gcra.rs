//! The generic cell rate algorithm (GCRA), as pure arithmetic on one
//! number per key, the theoretical arrival time (TAT): with the emission
//! interval `T = period / rate` and the tolerance `τ = burst × T`, a
//! request at `t` conforms when `TAT − t ≤ τ`, and then moves the TAT to
//! `max(TAT, t) + T`; otherwise it is refused, and would conform
//! `TAT − τ − t` later. A TAT in the past is the same as none, so a key's
//! state never needs expiring. Times are nanoseconds on a clock the caller
//! passes in.

/// One limit's constants, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// `T`: the time one request uses up.
    pub(crate) interval: u64,
    /// `τ = burst × T`: how far ahead of the rate a key may run.
    pub(crate) tolerance: u64,
}

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted: the key's new TAT, and how long the request waits first
    /// (always 0 in `reject` mode).
    Allow { tat: u64, wait: u64 },
    /// Refused: the key's TAT is unchanged; a request conforms again
    /// `retry_after` from now.
    Refuse { retry_after: u64 },
}

impl Gcra {
    /// `rate` requests per `period_ns`, `burst` more ahead of it.
    pub(crate) fn new(rate: u32, period_ns: u64, burst: u32) -> Gcra {
        let interval = (period_ns / u64::from(rate.max(1))).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst)),
        }
    }

    /// The decision for a request at `now` on a key whose TAT is `tat`.
    /// `delay` (nginx's default): a request ahead of the rate but within
    /// the burst waits until `max(TAT, now) − now`, its slot at the rate,
    /// so that admitted requests leave spaced by `T`; otherwise
    /// (`nodelay`) it goes at once.
    pub(crate) fn decide(&self, tat: u64, now: u64, delay: bool) -> Decision {
        let ahead = tat.saturating_sub(now);
        if ahead > self.tolerance {
            return Decision::Refuse {
                retry_after: ahead - self.tolerance,
            };
        }
        Decision::Allow {
            tat: tat.max(now).saturating_add(self.interval),
            wait: if delay { ahead } else { 0 },
        }
    }

    /// How many more requests would be admitted at `now` with the key's
    /// TAT at `tat` (the `r` of the `RateLimit` field, which admitted
    /// responses do not carry yet).
    #[cfg(test)]
    pub(crate) fn remaining(&self, tat: u64, now: u64) -> u64 {
        let room = (self.tolerance + self.interval).saturating_sub(tat.saturating_sub(now));
        room / self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn run(g: &Gcra, tat: &mut u64, now: u64, delay: bool) -> Decision {
        let d = g.decide(*tat, now, delay);
        if let Decision::Allow { tat: t, .. } = d {
            *tat = t;
        }
        d
    }

    #[test]
    fn burst_passes_at_once_then_the_rate() {
        // 1 per second, burst 3: 4 at once, the 5th waits a second.
        let g = Gcra::new(1, S, 3);
        assert_eq!(
            g,
            Gcra {
                interval: S,
                tolerance: 3 * S
            }
        );
        let mut tat = 0;
        let t0 = 100 * S;
        for i in 0..4 {
            assert_eq!(
                run(&g, &mut tat, t0, false),
                Decision::Allow {
                    tat: t0 + (i + 1) * S,
                    wait: 0
                },
                "request {i}"
            );
        }
        assert_eq!(g.remaining(tat, t0), 0);
        assert_eq!(
            run(&g, &mut tat, t0, false),
            Decision::Refuse { retry_after: S }
        );
        assert_eq!(
            run(&g, &mut tat, t0 + S / 2, false),
            Decision::Refuse { retry_after: S / 2 }
        );
        // One interval on, one more conforms, and only one.
        assert!(matches!(
            run(&g, &mut tat, t0 + S, false),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            run(&g, &mut tat, t0 + S, false),
            Decision::Refuse { .. }
        ));
        // Idle long enough, the whole burst is back.
        assert_eq!(g.remaining(tat, t0 + 100 * S), 4);
    }

    #[test]
    fn no_burst_spaces_requests_by_the_interval() {
        let g = Gcra::new(10, S, 0);
        let mut tat = 0;
        let t0 = S;
        assert!(matches!(
            run(&g, &mut tat, t0, false),
            Decision::Allow { .. }
        ));
        assert_eq!(g.remaining(tat, t0), 0);
        assert_eq!(
            run(&g, &mut tat, t0 + S / 20, false),
            Decision::Refuse {
                retry_after: S / 20
            }
        );
        assert!(matches!(
            run(&g, &mut tat, t0 + S / 10, false),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn delay_mode_waits_each_request_for_its_slot() {
        // 1 per second, burst 2: the first goes at once, the next two wait
        // 1 s and 2 s, a fourth is refused.
        let g = Gcra::new(1, S, 2);
        let mut tat = 0;
        let t0 = 10 * S;
        let waits: Vec<_> = (0..3)
            .map(|_| match run(&g, &mut tat, t0, true) {
                Decision::Allow { wait, .. } => wait,
                d => panic!("{d:?}"),
            })
            .collect();
        assert_eq!(waits, [0, S, 2 * S]);
        assert_eq!(
            run(&g, &mut tat, t0, true),
            Decision::Refuse { retry_after: S }
        );
    }

    #[test]
    fn remaining_counts_down() {
        let g = Gcra::new(1, 60 * S, 3);
        let mut tat = 0;
        let left: Vec<_> = (0..4)
            .map(|_| {
                run(&g, &mut tat, 5 * S, false);
                g.remaining(tat, 5 * S)
            })
            .collect();
        assert_eq!(left, [3, 2, 1, 0]);
    }
}
