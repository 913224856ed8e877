//! The circuit breaker's state machine: closed → open → half-open → closed (pure).
//!
//! A dependency that keeps failing should not be hammered by every replica of its callers, and a
//! service that only answers errors should not keep taking traffic. The breaker watches a
//! target's error ratio (a PromQL answer) and:
//! - **closed → open** after `trip_after` consecutive answers over the threshold: the target is
//!   scaled to zero and its replicas remembered;
//! - **open → half-open** once the open time has passed: one replica comes back as a probe. The
//!   open time doubles with every re-open inside `max_open_for` of the last close (backoff, so a
//!   target that stays broken is probed less and less often), up to `max_open_for`;
//! - **half-open → open** when an answer while the probe serves is over the threshold;
//! - **half-open → closed** when the probe time has passed with at least one good answer and no
//!   bad one: the remembered replicas come back.
//!
//! Someone scaling the target by hand while it is open or half-open wins: the breaker closes
//! (`ManualOverride`) instead of fighting them. No answer never trips and never closes.
//!
//! The memory is the resource's status, so a restarted or newly elected controller goes on where
//! the last one stopped. Time is passed in.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum State {
    /// Traffic flows; answers over the threshold are counted.
    #[default]
    Closed,
    /// The target is scaled to zero until the open time has passed.
    Open,
    /// A probe replica serves; its answers decide.
    HalfOpen,
}

impl State {
    /// The name in status, Events and metrics.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "Closed",
            State::Open => "Open",
            State::HalfOpen => "HalfOpen",
        }
    }

    /// Parse a status value (unknown values read as `Closed`: the safe state acts on nothing).
    pub fn parse(s: &str) -> Self {
        match s {
            "Open" => State::Open,
            "HalfOpen" => State::HalfOpen,
            _ => State::Closed,
        }
    }
}

/// The breaker's thresholds (from a `CircuitBreaker` spec).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Error ratio over which an answer counts as bad (0 to 1).
    pub threshold: f64,
    /// Consecutive bad answers that open the circuit.
    pub trip_after: u32,
    /// Open time after the first open.
    pub open_for: SignedDuration,
    /// Cap of the doubling open time; also how long after a close a new open still counts as
    /// a re-open.
    pub max_open_for: SignedDuration,
    /// Replicas the half-open probe runs.
    pub probe_replicas: i32,
    /// How long the probe serves before the circuit may close.
    pub probe_for: SignedDuration,
}

/// What the breaker remembers (its status).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Memory {
    /// Current state.
    pub state: State,
    /// When the current state began (`None` = never transitioned).
    pub since: Option<Timestamp>,
    /// Replicas before the circuit opened (restored on close).
    pub previous_replicas: Option<i32>,
    /// Opens in the current streak (the backoff exponent).
    pub opens: u32,
    /// When the circuit last closed after being open.
    pub last_closed: Option<Timestamp>,
    /// Consecutive bad answers while closed.
    pub bad_answers: u32,
    /// Good answers while half-open.
    pub probe_good: u32,
}

/// What the breaker sees this round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    /// The error ratio (`None` = no answer).
    pub ratio: Option<f64>,
    /// The target's desired replicas.
    pub replicas: i32,
    /// The target's ready replicas (half-open answers count only while the probe serves).
    pub ready_replicas: i32,
    /// Now.
    pub now: Timestamp,
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Closed → open: `trip_after` answers over the threshold.
    Tripped,
    /// Open → half-open: the open time passed.
    OpenTimeElapsed,
    /// Half-open → open: the probe answered over the threshold.
    ProbeFailed,
    /// Half-open → closed: the probe answered under the threshold for the probe time.
    ProbeSucceeded,
    /// Open/half-open → closed: the target was scaled by someone else.
    ManualOverride,
}

impl Cause {
    /// The name in status and Events.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Tripped => "Tripped",
            Cause::OpenTimeElapsed => "OpenTimeElapsed",
            Cause::ProbeFailed => "ProbeFailed",
            Cause::ProbeSucceeded => "ProbeSucceeded",
            Cause::ManualOverride => "ManualOverride",
        }
    }
}

/// One transition, for status and Events.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// State left.
    pub from: State,
    /// State entered.
    pub to: State,
    /// Why.
    pub cause: Cause,
    /// One line for humans.
    pub message: String,
}

/// The outcome of one round.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What to remember.
    pub memory: Memory,
    /// Replicas to set on the target, if any.
    pub scale_to: Option<i32>,
    /// The transition, if the state changed.
    pub transition: Option<Transition>,
}

/// Open time of the `opens`-th open in a streak: `open_for × 2^(opens−1)`, at most `max_open_for`.
pub fn open_time(rule: &Rule, opens: u32) -> SignedDuration {
    let factor = 2_i32.saturating_pow(opens.saturating_sub(1).min(20));
    rule.open_for
        .checked_mul(factor)
        .unwrap_or(rule.max_open_for)
        .min(rule.max_open_for)
}

/// When the current state ends on time alone (open: half-open at; half-open: probe may end).
pub fn deadline(mem: &Memory, rule: &Rule) -> Option<Timestamp> {
    let since = mem.since?;
    match mem.state {
        State::Closed => None,
        State::Open => Some(since + open_time(rule, mem.opens)),
        State::HalfOpen => Some(since + rule.probe_for),
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or_else(|| "no answer".to_owned(), |r| format!("{r:.3}"))
}

/// One round of the state machine.
pub fn step(mem: &Memory, rule: &Rule, inp: &Inputs) -> Step {
    let now = inp.now;
    let bad = inp.ratio.is_some_and(|r| r > rule.threshold);
    let good = inp.ratio.is_some_and(|r| r <= rule.threshold);
    let stay = |memory: Memory| Step {
        memory,
        scale_to: None,
        transition: None,
    };
    let go =
        |memory: Memory, from: State, cause: Cause, message: String, scale_to: Option<i32>| Step {
            memory: Memory {
                since: Some(now),
                ..memory
            },
            scale_to,
            transition: Some(Transition {
                from,
                to: memory.state,
                cause,
                message,
            }),
        };
    let override_close = |expected: i32| {
        go(
            Memory {
                state: State::Closed,
                previous_replicas: None,
                bad_answers: 0,
                probe_good: 0,
                last_closed: Some(now),
                ..*mem
            },
            mem.state,
            Cause::ManualOverride,
            format!(
                "the target was scaled to {} by someone else (expected {expected}); closing instead of fighting",
                inp.replicas
            ),
            None,
        )
    };
    match mem.state {
        State::Closed => {
            let bad_answers = if bad { mem.bad_answers + 1 } else { 0 };
            // NB: a target already at zero takes no traffic to protect; nothing to open.
            if bad_answers < rule.trip_after || inp.replicas <= 0 {
                return stay(Memory {
                    bad_answers,
                    ..*mem
                });
            }
            let streak = mem
                .last_closed
                .is_some_and(|c| now.duration_since(c) < rule.max_open_for);
            let opens = if streak { mem.opens + 1 } else { 1 };
            let open = open_time(rule, opens);
            go(
                Memory {
                    state: State::Open,
                    previous_replicas: Some(inp.replicas),
                    opens,
                    bad_answers: 0,
                    probe_good: 0,
                    ..*mem
                },
                State::Closed,
                Cause::Tripped,
                format!(
                    "error ratio {} over {} for {bad_answers} answers: scaled from {} to 0; half-open in {}s (open #{opens})",
                    ratio_text(inp.ratio),
                    rule.threshold,
                    inp.replicas,
                    open.as_secs()
                ),
                Some(0),
            )
        }
        State::Open => {
            if inp.replicas != 0 {
                return override_close(0);
            }
            if deadline(mem, rule).is_some_and(|d| now < d) {
                return stay(*mem);
            }
            let probe = rule
                .probe_replicas
                .min(mem.previous_replicas.unwrap_or(rule.probe_replicas))
                .max(1);
            go(
                Memory {
                    state: State::HalfOpen,
                    probe_good: 0,
                    ..*mem
                },
                State::Open,
                Cause::OpenTimeElapsed,
                format!(
                    "open for {}s: scaled to {probe} to probe for {}s",
                    open_time(rule, mem.opens).as_secs(),
                    rule.probe_for.as_secs()
                ),
                Some(probe),
            )
        }
        State::HalfOpen => {
            let probe = rule
                .probe_replicas
                .min(mem.previous_replicas.unwrap_or(rule.probe_replicas))
                .max(1);
            if inp.replicas != probe {
                return override_close(probe);
            }
            let serving = inp.ready_replicas > 0;
            if serving && bad {
                let opens = mem.opens + 1;
                return go(
                    Memory {
                        state: State::Open,
                        opens,
                        probe_good: 0,
                        ..*mem
                    },
                    State::HalfOpen,
                    Cause::ProbeFailed,
                    format!(
                        "the probe answered error ratio {} over {}: scaled to 0 again; half-open in {}s (open #{opens})",
                        ratio_text(inp.ratio),
                        rule.threshold,
                        open_time(rule, opens).as_secs()
                    ),
                    Some(0),
                );
            }
            let probe_good = mem.probe_good + u32::from(serving && good);
            let over = deadline(mem, rule).is_none_or(|d| now >= d);
            if !over || probe_good == 0 {
                // NB: no answer yet keeps probing: closing on silence would be a guess.
                return stay(Memory { probe_good, ..*mem });
            }
            let restore = mem.previous_replicas.unwrap_or(probe).max(probe);
            go(
                Memory {
                    state: State::Closed,
                    previous_replicas: None,
                    last_closed: Some(now),
                    bad_answers: 0,
                    probe_good: 0,
                    ..*mem
                },
                State::HalfOpen,
                Cause::ProbeSucceeded,
                format!(
                    "the probe answered error ratio {} (under {}) for {}s: scaled back to {restore}",
                    ratio_text(inp.ratio),
                    rule.threshold,
                    rule.probe_for.as_secs()
                ),
                Some(restore),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        threshold: 0.5,
        trip_after: 2,
        open_for: SignedDuration::from_secs(30),
        max_open_for: SignedDuration::from_secs(300),
        probe_replicas: 1,
        probe_for: SignedDuration::from_secs(20),
    };

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("valid")
    }

    fn inp(ratio: Option<f64>, replicas: i32, at: i64) -> Inputs {
        Inputs {
            ratio,
            replicas,
            ready_replicas: replicas,
            now: t(at),
        }
    }

    /// Run the rounds, applying every scale to the target as the controller would.
    fn run(
        mem: Memory,
        mut replicas: i32,
        rounds: &[(Option<f64>, i64)],
    ) -> (Memory, Vec<(State, State, Cause)>, i32) {
        let mut mem = mem;
        let mut seen = Vec::new();
        for (ratio, at) in rounds {
            let s = step(&mem, &RULE, &inp(*ratio, replicas, *at));
            if let Some(n) = s.scale_to {
                replicas = n;
            }
            if let Some(tr) = &s.transition {
                seen.push((tr.from, tr.to, tr.cause));
            }
            mem = s.memory;
        }
        (mem, seen, replicas)
    }

    #[test]
    fn the_full_cycle_closed_open_half_open_closed() {
        let (mem, seen, replicas) = run(
            Memory::default(),
            3,
            &[
                (Some(0.9), 0),  // bad 1
                (Some(0.9), 10), // bad 2: open
                (None, 20),      // open, no traffic
                (None, 40),      // 30 s passed: half-open
                (Some(0.0), 50), // good
                (Some(0.1), 60), // probe time passed: closed
            ],
        );
        assert_eq!(
            seen,
            [
                (State::Closed, State::Open, Cause::Tripped),
                (State::Open, State::HalfOpen, Cause::OpenTimeElapsed),
                (State::HalfOpen, State::Closed, Cause::ProbeSucceeded),
            ]
        );
        assert_eq!(replicas, 3, "the remembered replicas come back");
        assert_eq!(mem.state, State::Closed);
        assert_eq!(mem.previous_replicas, None);
        assert_eq!(mem.last_closed, Some(t(60)));
    }

    #[test]
    fn opening_remembers_the_replicas_and_scales_to_zero() {
        let s1 = step(&Memory::default(), &RULE, &inp(Some(0.9), 4, 0));
        assert_eq!(
            (s1.scale_to, s1.transition.is_none()),
            (None, true),
            "one bad answer"
        );
        let s2 = step(&s1.memory, &RULE, &inp(Some(0.6), 4, 10));
        assert_eq!(s2.scale_to, Some(0));
        assert_eq!(s2.memory.previous_replicas, Some(4));
        assert_eq!(s2.memory.since, Some(t(10)));
        let tr = s2.transition.expect("opened");
        assert_eq!(
            tr.message,
            "error ratio 0.600 over 0.5 for 2 answers: scaled from 4 to 0; half-open in 30s (open #1)"
        );
    }

    #[test]
    fn bad_answers_must_be_consecutive_and_no_answer_breaks_the_run() {
        let (mem, seen, _) = run(
            Memory::default(),
            2,
            &[
                (Some(0.9), 0),
                (Some(0.1), 10),
                (Some(0.9), 20),
                (None, 30),
                (Some(0.9), 40),
            ],
        );
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(mem.bad_answers, 1);
    }

    #[test]
    fn exactly_the_threshold_is_not_over_it() {
        let (_, seen, _) = run(Memory::default(), 2, &[(Some(0.5), 0), (Some(0.5), 10)]);
        assert!(seen.is_empty());
    }

    #[test]
    fn a_failing_probe_reopens_with_a_doubled_open_time() {
        let (mem, seen, replicas) = run(
            Memory::default(),
            2,
            &[
                (Some(1.0), 0),
                (Some(1.0), 10), // open #1, 30 s
                (None, 40),      // half-open
                (Some(1.0), 45), // probe fails: open #2, 60 s
                (None, 100),     // 55 s: still open
            ],
        );
        assert_eq!(
            seen.last(),
            Some(&(State::HalfOpen, State::Open, Cause::ProbeFailed))
        );
        assert_eq!((mem.state, mem.opens, replicas), (State::Open, 2, 0));
        assert_eq!(
            mem.previous_replicas,
            Some(2),
            "still the replicas from before the first open"
        );
        let s = step(&mem, &RULE, &inp(None, 0, 105));
        assert_eq!(s.scale_to, Some(1), "60 s after the re-open");
    }

    #[test]
    fn the_open_time_doubles_up_to_its_cap() {
        let secs: Vec<i64> = (1..=6).map(|n| open_time(&RULE, n).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 300, 300]);
        assert_eq!(open_time(&RULE, 40).as_secs(), 300, "no overflow");
    }

    #[test]
    fn reopening_soon_after_a_close_continues_the_backoff_and_a_calm_period_resets_it() {
        let closed = Memory {
            opens: 2,
            last_closed: Some(t(0)),
            bad_answers: 1,
            ..Memory::default()
        };
        let s = step(&closed, &RULE, &inp(Some(0.9), 2, 100));
        assert_eq!(s.memory.opens, 3, "within max_open_for of the close");
        let s = step(&closed, &RULE, &inp(Some(0.9), 2, 400));
        assert_eq!(s.memory.opens, 1, "after a calm period");
    }

    #[test]
    fn the_probe_waits_for_an_answer_while_it_serves_before_closing() {
        let half = Memory {
            state: State::HalfOpen,
            since: Some(t(0)),
            previous_replicas: Some(3),
            opens: 1,
            ..Memory::default()
        };
        // Not ready yet: a bad answer (old samples) does not reopen, a good one does not count.
        let s = step(
            &half,
            &RULE,
            &Inputs {
                ready_replicas: 0,
                ..inp(Some(0.9), 1, 5)
            },
        );
        assert_eq!((s.memory.state, s.scale_to), (State::HalfOpen, None));
        let s = step(
            &half,
            &RULE,
            &Inputs {
                ready_replicas: 0,
                ..inp(Some(0.0), 1, 25)
            },
        );
        assert_eq!(
            (s.memory.state, s.memory.probe_good),
            (State::HalfOpen, 0),
            "no good answer yet"
        );
        // Silence past the probe time keeps probing.
        let s = step(&half, &RULE, &inp(None, 1, 30));
        assert_eq!(s.memory.state, State::HalfOpen);
        let s = step(&s.memory, &RULE, &inp(Some(0.0), 1, 35));
        assert_eq!((s.memory.state, s.scale_to), (State::Closed, Some(3)));
    }

    #[test]
    fn scaling_by_hand_while_open_or_half_open_closes_instead_of_fighting() {
        let open = Memory {
            state: State::Open,
            since: Some(t(0)),
            previous_replicas: Some(3),
            opens: 1,
            ..Memory::default()
        };
        let s = step(&open, &RULE, &inp(None, 5, 10));
        let tr = s.transition.expect("closed");
        assert_eq!(
            (tr.to, tr.cause, s.scale_to),
            (State::Closed, Cause::ManualOverride, None)
        );
        assert_eq!(s.memory.previous_replicas, None);
        let half = Memory {
            state: State::HalfOpen,
            ..open
        };
        let s = step(&half, &RULE, &inp(Some(0.9), 0, 10));
        assert_eq!(s.transition.map(|t| t.cause), Some(Cause::ManualOverride));
        assert_eq!(s.scale_to, None, "scaled to 0 by hand: left there");
    }

    #[test]
    fn a_target_already_at_zero_is_not_opened() {
        let (_, seen, _) = run(Memory::default(), 0, &[(Some(1.0), 0), (Some(1.0), 10)]);
        assert!(seen.is_empty());
    }

    #[test]
    fn the_probe_never_asks_for_more_replicas_than_there_were() {
        let rule = Rule {
            probe_replicas: 3,
            ..RULE
        };
        let open = Memory {
            state: State::Open,
            since: Some(t(0)),
            previous_replicas: Some(2),
            opens: 1,
            ..Memory::default()
        };
        let s = step(&open, &rule, &inp(None, 0, 30));
        assert_eq!(s.scale_to, Some(2));
    }
}
