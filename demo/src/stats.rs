//! Pure statistics over load samples: availability, failures by kind, latency percentiles and a
//! per-second series. No I/O, no clock: the load generator records [`Sample`]s, these functions
//! summarise them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer.
    Ok {
        /// The HTTP status code.
        status: u16,
    },
    /// An answer outside 2xx.
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// No TCP connection (refused, reset before an answer, no route).
    Connect,
    /// No complete answer within the per-request timeout.
    Timeout,
    /// Anything else: a broken body, a protocol error.
    Other,
}

impl Outcome {
    /// Whether the request counts as served.
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }

    /// The bounded failure label used in summaries (`status_503`, `connect`, `timeout`, `other`);
    /// `None` for a success.
    pub fn failure_label(self) -> Option<String> {
        match self {
            Outcome::Ok { .. } => None,
            Outcome::Status { status } => Some(format!("status_{status}")),
            Outcome::Connect => Some("connect".to_owned()),
            Outcome::Timeout => Some("timeout".to_owned()),
            Outcome::Other => Some("other".to_owned()),
        }
    }
}

/// One request: when it started (ms after the load began), how long it took and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Start of the request, milliseconds after the start of the load.
    pub offset_ms: u64,
    /// Time until the answer (or the failure), microseconds.
    pub latency_us: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// Requests started in one second of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondBucket {
    /// Seconds after the start of the load.
    pub second: u64,
    /// Served requests.
    pub ok: u64,
    /// Failed requests.
    pub failed: u64,
}

/// Latency percentiles in milliseconds, over served requests only (a refused connection in
/// 0.1 ms is not a fast answer).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// What a load run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Requests sent.
    pub total: u64,
    /// Requests served (2xx).
    pub ok: u64,
    /// Requests failed.
    pub failed: u64,
    /// `ok / total`; 1.0 when nothing was sent (nothing failed).
    pub success_ratio: f64,
    /// Failures by kind: `status_NNN`, `connect`, `timeout`, `other`.
    pub failures: BTreeMap<String, u64>,
    /// Latency of served requests; `None` when nothing was served.
    pub latency: Option<Latency>,
    /// Wall time of the run, seconds.
    pub duration_secs: f64,
    /// Requests per second over the run.
    pub rate_per_sec: f64,
    /// Served and failed requests per second, for plotting.
    pub series: Vec<SecondBucket>,
}

/// Nearest-rank percentile (`p` in 0..=100) of an ascending slice; `None` when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // Nearest rank: the smallest value with at least p % of the values at or below it.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.saturating_sub(1).min(sorted.len() - 1);
    sorted.get(index).copied()
}

/// Served and failed requests per second of start time, with empty seconds filled in up to
/// `duration_secs` so a plot shows gaps where nothing was sent.
pub fn per_second(samples: &[Sample], duration_secs: f64) -> Vec<SecondBucket> {
    let last_sample = samples.iter().map(|s| s.offset_ms / 1000).max();
    let covered = (duration_secs.max(0.0).ceil() as u64).max(last_sample.map_or(0, |s| s + 1));
    let mut buckets: Vec<SecondBucket> = (0..covered)
        .map(|second| SecondBucket {
            second,
            ok: 0,
            failed: 0,
        })
        .collect();
    for s in samples {
        let second = (s.offset_ms / 1000) as usize;
        if let Some(b) = buckets.get_mut(second) {
            if s.outcome.is_ok() {
                b.ok += 1;
            } else {
                b.failed += 1;
            }
        }
    }
    buckets
}

/// Summarise a run that lasted `duration_secs`.
pub fn summarize(samples: &[Sample], duration_secs: f64) -> Summary {
    let total = samples.len() as u64;
    let mut failures = BTreeMap::new();
    let mut served: Vec<u64> = Vec::with_capacity(samples.len());
    for s in samples {
        match s.outcome.failure_label() {
            None => served.push(s.latency_us),
            Some(label) => *failures.entry(label).or_insert(0) += 1,
        }
    }
    served.sort_unstable();
    let ok = served.len() as u64;
    let ms = |us: Option<u64>| us.map_or(0.0, |v| v as f64 / 1000.0);
    let latency = (!served.is_empty()).then(|| Latency {
        p50_ms: ms(percentile(&served, 50.0)),
        p95_ms: ms(percentile(&served, 95.0)),
        p99_ms: ms(percentile(&served, 99.0)),
        max_ms: ms(served.last().copied()),
    });
    Summary {
        total,
        ok,
        failed: total - ok,
        success_ratio: if total == 0 {
            1.0
        } else {
            ok as f64 / total as f64
        },
        failures,
        latency,
        duration_secs,
        rate_per_sec: if duration_secs > 0.0 {
            total as f64 / duration_secs
        } else {
            0.0
        },
        series: per_second(samples, duration_secs),
    }
}

/// The samples that started inside `[from_ms, to_ms)`, re-based so `from_ms` becomes 0: one
/// layer's share of a load that ran across several layers.
pub fn window(samples: &[Sample], from_ms: u64, to_ms: u64) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.offset_ms >= from_ms && s.offset_ms < to_ms)
        .map(|s| Sample {
            offset_ms: s.offset_ms - from_ms,
            ..*s
        })
        .collect()
}

/// Human-readable lines of a summary, as `selfheal-demo load` prints them.
pub fn render(summary: &Summary) -> String {
    let mut out = format!(
        "requests: {} in {:.1} s ({:.1}/s)\navailability: {:.2} % ({} ok, {} failed)\n",
        summary.total,
        summary.duration_secs,
        summary.rate_per_sec,
        summary.success_ratio * 100.0,
        summary.ok,
        summary.failed
    );
    if !summary.failures.is_empty() {
        let kinds: Vec<String> = summary
            .failures
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("failures: {}\n", kinds.join(" ")));
    }
    match summary.latency {
        Some(l) => out.push_str(&format!(
            "latency: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
        )),
        None => out.push_str("latency: no request was served\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(offset_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            offset_ms,
            latency_us: latency_ms * 1000,
            outcome,
        }
    }
    const OK: Outcome = Outcome::Ok { status: 200 };

    #[test]
    fn percentile_of_one_to_hundred_is_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 95.0), Some(95));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
    }

    #[test]
    fn percentile_of_small_sets_picks_an_existing_value() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 10], 50.0), Some(1));
        assert_eq!(percentile(&[1, 10], 51.0), Some(10));
        assert_eq!(percentile(&[1, 2, 3], 150.0), Some(3));
    }

    #[test]
    fn failures_are_counted_by_kind_and_excluded_from_latency() {
        let samples = vec![
            sample(0, 10, OK),
            sample(100, 20, OK),
            sample(200, 1, Outcome::Status { status: 503 }),
            sample(300, 1, Outcome::Status { status: 503 }),
            sample(400, 1, Outcome::Connect),
            sample(500, 2000, Outcome::Timeout),
            sample(600, 1, Outcome::Status { status: 500 }),
            sample(700, 30, OK),
        ];
        let s = summarize(&samples, 1.0);
        assert_eq!((s.total, s.ok, s.failed), (8, 3, 5));
        assert!((s.success_ratio - 3.0 / 8.0).abs() < 1e-9);
        assert_eq!(s.failures.get("status_503"), Some(&2));
        assert_eq!(s.failures.get("status_500"), Some(&1));
        assert_eq!(s.failures.get("connect"), Some(&1));
        assert_eq!(s.failures.get("timeout"), Some(&1));
        assert_eq!(s.failures.get("other"), None);
        let l = s.latency.expect("three served requests");
        assert_eq!(l.p50_ms, 20.0);
        assert_eq!(l.max_ms, 30.0);
        assert_eq!(s.rate_per_sec, 8.0);
    }

    #[test]
    fn nothing_sent_is_full_availability_without_latency() {
        let s = summarize(&[], 0.0);
        assert_eq!(s.total, 0);
        assert_eq!(s.success_ratio, 1.0);
        assert!(s.latency.is_none());
        assert!(s.series.is_empty());
        assert!(render(&s).contains("no request was served"));
    }

    #[test]
    fn all_failed_has_zero_availability() {
        let s = summarize(&[sample(0, 1, Outcome::Connect)], 1.0);
        assert_eq!(s.success_ratio, 0.0);
        assert!(s.latency.is_none());
    }

    #[test]
    fn per_second_fills_gaps_and_splits_ok_from_failed() {
        let samples = vec![
            sample(10, 1, OK),
            sample(999, 1, Outcome::Status { status: 503 }),
            sample(2500, 1, OK),
            sample(2600, 1, OK),
        ];
        let series = per_second(&samples, 4.0);
        assert_eq!(series.len(), 4);
        assert_eq!((series[0].ok, series[0].failed), (1, 1));
        assert_eq!((series[1].ok, series[1].failed), (0, 0));
        assert_eq!((series[2].ok, series[2].failed), (2, 0));
        assert_eq!(series[3].second, 3);
    }

    #[test]
    fn per_second_covers_samples_past_the_nominal_duration() {
        let series = per_second(&[sample(5200, 1, OK)], 2.0);
        assert_eq!(series.len(), 6);
        assert_eq!(series[5].ok, 1);
    }

    #[test]
    fn window_rebases_and_keeps_only_its_range() {
        let samples = vec![sample(900, 1, OK), sample(1000, 1, OK), sample(2999, 1, OK)];
        let w = window(&samples, 1000, 2999);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].offset_ms, 0);
    }

    #[test]
    fn render_names_availability_failures_and_percentiles() {
        let s = summarize(
            &[
                sample(0, 4, OK),
                sample(1, 1, Outcome::Status { status: 503 }),
            ],
            2.0,
        );
        let text = render(&s);
        assert!(
            text.contains("availability: 50.00 % (1 ok, 1 failed)"),
            "{text}"
        );
        assert!(text.contains("failures: status_503=1"), "{text}");
        assert!(text.contains("p50 4.0 ms"), "{text}");
    }

    #[test]
    fn outcomes_serialise_with_a_kind_tag() {
        let json = serde_json::to_string(&Outcome::Status { status: 503 }).expect("serialise");
        assert_eq!(json, r#"{"kind":"status","status":503}"#);
    }
}
