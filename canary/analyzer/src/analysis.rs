//! The decision: is the canary as good as stable? A pure function of the two tracks' windows and
//! the thresholds, so every rule has a unit test.

use serde::Serialize;

use crate::window::TrackWindow;

/// Limits a canary must stay within to be promoted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    /// Fewest requests the canary must have served in the window for a verdict.
    pub min_requests: u64,
    /// Highest acceptable canary error ratio (5xx / requests, 0-1), whatever stable does.
    pub max_error_ratio: f64,
    /// Highest acceptable canary error ratio minus stable error ratio (0-1).
    pub max_error_ratio_delta: f64,
    /// Highest acceptable canary p95 / stable p95.
    pub max_p95_ratio: f64,
    /// The p95 ratio only fails when the canary is also this much slower (seconds): sub-millisecond
    /// latencies make ratios noisy.
    pub p95_tolerance_seconds: f64,
    /// Highest acceptable canary p95 in seconds, whatever stable does (None: no ceiling).
    pub max_p95_seconds: Option<f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_requests: 50,
            max_error_ratio: 0.05,
            max_error_ratio_delta: 0.02,
            max_p95_ratio: 1.5,
            p95_tolerance_seconds: 0.025,
            max_p95_seconds: None,
        }
    }
}

/// The outcome of one analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check passed: go on (next weight, or make the canary stable).
    Promote,
    /// A check failed: roll the canary back.
    Rollback,
    /// Not enough data for a verdict (too few canary requests, no metrics): wait and retry.
    Inconclusive,
}

impl Verdict {
    /// The CLI's exit status for this verdict (documented in canary/README.md).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Promote => 0,
            Verdict::Rollback => 1,
            Verdict::Inconclusive => 2,
        }
    }
}

/// One track's figures in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackSummary {
    /// Pods scraped (or seen by Prometheus) at the end of the window.
    pub pods: usize,
    /// Requests of the analysed route in the window.
    pub requests: f64,
    /// Of those, 5xx.
    pub errors: f64,
    /// errors / requests (null without requests).
    pub error_ratio: Option<f64>,
    /// p95 latency in seconds (null without histogram data).
    pub p95_seconds: Option<f64>,
    /// Pods whose counters were reset during the window.
    pub counter_resets: usize,
}

impl TrackSummary {
    fn of(w: &TrackWindow) -> Self {
        Self {
            pods: w.pods,
            requests: w.requests,
            errors: w.errors,
            error_ratio: w.error_ratio(),
            p95_seconds: w.p95(),
            counter_resets: w.counter_resets,
        }
    }
}

/// One rule's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// Rule name: `error_ratio`, `error_ratio_delta`, `p95_ratio`, `p95_ceiling`.
    pub name: &'static str,
    /// Whether the canary is within the limit.
    pub passed: bool,
    /// Observed value.
    pub observed: f64,
    /// The limit it is compared with.
    pub limit: f64,
}

/// The result of [`analyze`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// promote, rollback or inconclusive.
    pub verdict: Verdict,
    /// Stable's figures.
    pub stable: TrackSummary,
    /// The canary's figures.
    pub canary: TrackSummary,
    /// Every rule evaluated (none when inconclusive).
    pub checks: Vec<Check>,
    /// Why, in words: failed rules, skipped rules, missing data.
    pub reasons: Vec<String>,
}

/// Compares the canary with stable. Without enough canary requests there is no verdict; without
/// enough stable requests (e.g. at 100 % canary weight) only the absolute limits are checked.
pub fn analyze(stable: &TrackWindow, canary: &TrackWindow, t: &Thresholds) -> Analysis {
    let mut out = Analysis {
        verdict: Verdict::Inconclusive,
        stable: TrackSummary::of(stable),
        canary: TrackSummary::of(canary),
        checks: Vec::new(),
        reasons: Vec::new(),
    };
    if canary.pods == 0 {
        out.reasons.push("no canary pod was measured".into());
        return out;
    }
    if !canary.series_found {
        out.reasons.push(
            "missing metrics: the canary has no http_requests_total series for the route (no traffic reached it yet?)"
                .into(),
        );
        return out;
    }
    let min = t.min_requests as f64;
    if canary.requests < min {
        out.reasons.push(format!(
            "too few canary requests: {} < {} (minimum)",
            canary.requests, t.min_requests
        ));
        return out;
    }
    let baseline = stable.requests >= min;
    if !baseline {
        out.reasons.push(format!(
            "stable served {} < {} requests: comparisons with stable skipped, absolute limits only",
            stable.requests, t.min_requests
        ));
    }

    let canary_ratio = out.canary.error_ratio.unwrap_or(0.0);
    out.checks.push(Check {
        name: "error_ratio",
        passed: canary_ratio <= t.max_error_ratio,
        observed: canary_ratio,
        limit: t.max_error_ratio,
    });
    if baseline {
        let delta = canary_ratio - out.stable.error_ratio.unwrap_or(0.0);
        out.checks.push(Check {
            name: "error_ratio_delta",
            passed: delta <= t.max_error_ratio_delta,
            observed: delta,
            limit: t.max_error_ratio_delta,
        });
    }

    match (out.canary.p95_seconds, out.stable.p95_seconds) {
        (Some(c), Some(s)) if baseline => {
            // Ratio against a zero-width stable p95 is meaningless; the tolerance covers it.
            let ratio = if s > 0.0 { c / s } else { f64::INFINITY };
            out.checks.push(Check {
                name: "p95_ratio",
                passed: ratio <= t.max_p95_ratio || c - s <= t.p95_tolerance_seconds,
                observed: ratio,
                limit: t.max_p95_ratio,
            });
        }
        (None, _) => out
            .reasons
            .push("no canary latency histogram: latency checks skipped".into()),
        _ => {}
    }
    if let (Some(c), Some(max)) = (out.canary.p95_seconds, t.max_p95_seconds) {
        out.checks.push(Check {
            name: "p95_ceiling",
            passed: c <= max,
            observed: c,
            limit: max,
        });
    }

    for c in out.checks.iter().filter(|c| !c.passed) {
        out.reasons.push(format!(
            "{} {:.4} exceeds {:.4}",
            c.name, c.observed, c.limit
        ));
    }
    out.verdict = if out.checks.iter().all(|c| c.passed) {
        Verdict::Promote
    } else {
        Verdict::Rollback
    };
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A window with `requests` requests, `errors` of them 5xx, and `slow` of them at 0.3 s
    /// (the rest under 1 ms).
    fn window(requests: u32, errors: u32, slow: u32) -> TrackWindow {
        let mut w = TrackWindow {
            pods: 1,
            ..TrackWindow::default()
        };
        w.add_requests("200", f64::from(requests - errors));
        w.add_requests("500", f64::from(errors));
        let fast = f64::from(requests - slow);
        let all = f64::from(requests);
        for (le, c) in [
            (0.001, fast),
            (0.25, fast),
            (0.5, all),
            (f64::INFINITY, all),
        ] {
            w.add_bucket(le, c);
        }
        w
    }

    #[test]
    fn an_equal_canary_is_promoted() {
        let a = analyze(
            &window(1000, 0, 0),
            &window(100, 0, 0),
            &Thresholds::default(),
        );
        assert_eq!(a.verdict, Verdict::Promote, "{a:?}");
        assert_eq!(a.checks.len(), 3);
        assert!(a.reasons.is_empty(), "{:?}", a.reasons);
    }

    #[test]
    fn a_better_canary_is_promoted() {
        let a = analyze(
            &window(1000, 10, 200),
            &window(100, 0, 0),
            &Thresholds::default(),
        );
        assert_eq!(a.verdict, Verdict::Promote, "{a:?}");
    }

    #[test]
    fn a_failing_canary_is_rolled_back() {
        let a = analyze(
            &window(1000, 0, 0),
            &window(100, 50, 0),
            &Thresholds::default(),
        );
        assert_eq!(a.verdict, Verdict::Rollback);
        let failed: Vec<_> = a
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        assert_eq!(failed, ["error_ratio", "error_ratio_delta"]);
        assert!(
            a.reasons[0].contains("error_ratio 0.5000 exceeds 0.0500"),
            "{:?}",
            a.reasons
        );
    }

    #[test]
    fn error_thresholds_are_inclusive_limits() {
        let t = Thresholds {
            max_error_ratio: 0.05,
            max_error_ratio_delta: 0.03,
            ..Thresholds::default()
        };
        // canary 4 %, stable 1 %: delta exactly 0.03, ratio under 0.05.
        assert_eq!(
            analyze(&window(100, 1, 0), &window(100, 4, 0), &t).verdict,
            Verdict::Promote
        );
        // canary 5 % vs stable 1 %: delta 0.04 > 0.03.
        let a = analyze(&window(100, 1, 0), &window(100, 5, 0), &t);
        assert_eq!(a.verdict, Verdict::Rollback);
        assert_eq!(a.checks.iter().filter(|c| !c.passed).count(), 1);
        // canary 6 % while stable also fails 6 %: the absolute ceiling still rolls back.
        assert_eq!(
            analyze(&window(100, 6, 0), &window(100, 6, 0), &t).verdict,
            Verdict::Rollback
        );
    }

    #[test]
    fn a_slow_canary_is_rolled_back_but_sub_millisecond_noise_is_not() {
        let t = Thresholds::default();
        // 20 % of canary requests take 0.3 s: p95 0.4375 s vs stable < 1 ms.
        let a = analyze(&window(1000, 0, 0), &window(100, 0, 20), &t);
        assert_eq!(a.verdict, Verdict::Rollback);
        assert_eq!(
            a.checks.iter().find(|c| !c.passed).map(|c| c.name),
            Some("p95_ratio")
        );
        // Ratio 3x but the gap is below the 25 ms tolerance.
        let mut stable = TrackWindow {
            pods: 1,
            ..TrackWindow::default()
        };
        stable.add_requests("200", 100.0);
        stable.add_bucket(0.001, 100.0);
        stable.add_bucket(f64::INFINITY, 100.0);
        let mut canary = TrackWindow {
            pods: 1,
            ..TrackWindow::default()
        };
        canary.add_requests("200", 100.0);
        canary.add_bucket(0.001, 0.0);
        canary.add_bucket(0.0025, 100.0);
        canary.add_bucket(f64::INFINITY, 100.0);
        assert_eq!(analyze(&stable, &canary, &t).verdict, Verdict::Promote);
    }

    #[test]
    fn p95_ceiling_applies_when_set() {
        let t = Thresholds {
            max_p95_seconds: Some(0.2),
            ..Thresholds::default()
        };
        let a = analyze(&window(1000, 0, 200), &window(100, 0, 20), &t);
        assert_eq!(a.verdict, Verdict::Rollback);
        assert_eq!(
            a.checks.iter().find(|c| !c.passed).map(|c| c.name),
            Some("p95_ceiling")
        );
    }

    #[test]
    fn too_few_canary_requests_are_inconclusive() {
        let a = analyze(
            &window(1000, 0, 0),
            &window(49, 49, 0),
            &Thresholds::default(),
        );
        assert_eq!(a.verdict, Verdict::Inconclusive);
        assert!(a.checks.is_empty());
        assert!(
            a.reasons[0].contains("too few canary requests: 49 < 50"),
            "{:?}",
            a.reasons
        );
    }

    #[test]
    fn missing_canary_metrics_or_pods_are_inconclusive() {
        let no_series = TrackWindow {
            pods: 1,
            ..TrackWindow::default()
        };
        let a = analyze(&window(1000, 0, 0), &no_series, &Thresholds::default());
        assert_eq!(a.verdict, Verdict::Inconclusive);
        assert!(a.reasons[0].contains("missing metrics"));
        let a = analyze(
            &window(1000, 0, 0),
            &TrackWindow::default(),
            &Thresholds::default(),
        );
        assert_eq!(a.verdict, Verdict::Inconclusive);
        assert!(a.reasons[0].contains("no canary pod"));
    }

    #[test]
    fn without_a_stable_baseline_only_absolute_limits_apply() {
        // Weight 100: stable got nothing. A healthy canary passes, a failing one does not.
        let t = Thresholds::default();
        let a = analyze(&TrackWindow::default(), &window(100, 0, 50), &t);
        assert_eq!(a.verdict, Verdict::Promote, "{a:?}");
        assert_eq!(a.checks.len(), 1);
        assert!(a.reasons[0].contains("comparisons with stable skipped"));
        assert_eq!(
            analyze(&TrackWindow::default(), &window(100, 10, 0), &t).verdict,
            Verdict::Rollback
        );
    }

    #[test]
    fn no_latency_histogram_skips_latency_checks() {
        let mut canary = TrackWindow {
            pods: 1,
            ..TrackWindow::default()
        };
        canary.add_requests("200", 100.0);
        let a = analyze(&window(100, 0, 0), &canary, &Thresholds::default());
        assert_eq!(a.verdict, Verdict::Promote);
        assert!(
            a.reasons
                .iter()
                .any(|r| r.contains("latency checks skipped"))
        );
    }

    #[test]
    fn exit_codes_are_stable() {
        assert_eq!(Verdict::Promote.exit_code(), 0);
        assert_eq!(Verdict::Rollback.exit_code(), 1);
        assert_eq!(Verdict::Inconclusive.exit_code(), 2);
    }
}
