//! The memory-leak trend: is a container's working set climbing steadily towards its limit?
//!
//! A leak is recycled *before* the OOM kill: the kill loses every in-flight request at once and,
//! repeated, ends in CrashLoopBackOff. The rule (from the ops-healers issue) is deliberately
//! simple and explainable in an Event:
//! - at least `min_samples` samples inside the window (one noisy sample proves nothing);
//! - more than `rising_share` of the steps between consecutive samples go up (a garbage-collected
//!   heap saws up and down; a leak only climbs);
//! - the latest sample is above `limit_share` of the container's memory limit (a slow climb far
//!   from the limit is growth, not an emergency).
//!
//! Pure: samples come from the metrics API through [`crate::healers::memory_trend::sampler`]; time is passed in.

use std::collections::{HashMap, VecDeque};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Thresholds of the memory-trend trigger (`spec.triggers.memoryTrend` of a HealingPolicy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakRule {
    /// Samples older than this are forgotten.
    pub window: SignedDuration,
    /// Fewer samples than this never fire.
    pub min_samples: usize,
    /// Share of rising steps that must be exceeded (0 to 1).
    pub rising_share: f64,
    /// Share of the memory limit the latest sample must exceed (0 to 1).
    pub limit_share: f64,
}

impl Default for LeakRule {
    fn default() -> Self {
        Self {
            window: SignedDuration::from_mins(5),
            min_samples: 12,
            rising_share: 0.8,
            limit_share: 0.85,
        }
    }
}

/// One working-set reading of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the metrics pipeline took it (not when the controller read it).
    pub at: Timestamp,
    /// Working set in bytes.
    pub bytes: u64,
}

/// A container found leaking, with what the Event tells a human.
#[derive(Debug, Clone, PartialEq)]
pub struct Leak {
    /// Container name.
    pub container: String,
    /// Latest working set, bytes.
    pub usage_bytes: u64,
    /// Memory limit, bytes.
    pub limit_bytes: u64,
    /// Share of the steps that rose.
    pub rising_share: f64,
    /// Samples the verdict rests on.
    pub samples: usize,
    /// Least-squares growth rate over the window, bytes per second.
    pub bytes_per_sec: f64,
    /// When the limit is reached at that rate (`None` when the fit is flat).
    pub time_to_limit: Option<SignedDuration>,
}

impl Leak {
    /// One line for Events and logs: `container app at 112 MiB of 128 MiB (87 %), 13 of 14
    /// steps rising, +0.5 MiB/s: limit in about 32s`.
    pub fn describe(&self) -> String {
        let ttl = self.time_to_limit.map_or_else(
            || "limit not reached at the current rate".to_owned(),
            |d| format!("limit in about {}s", d.as_secs()),
        );
        #[allow(clippy::cast_precision_loss)] // a display figure
        let pct = self.usage_bytes as f64 * 100.0 / self.limit_bytes.max(1) as f64;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rising = (self.rising_share * (self.samples.saturating_sub(1)) as f64).round() as usize;
        format!(
            "container {} at {} of {} ({pct:.0} %), {rising} of {} steps rising, {:+.2} MiB/s: {ttl}",
            self.container,
            mib(self.usage_bytes),
            mib(self.limit_bytes),
            self.samples.saturating_sub(1),
            self.bytes_per_sec / MIB,
        )
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // a display figure
    let m = bytes as f64 / MIB;
    format!("{m:.0} MiB")
}

/// The verdict on one container's series.
#[derive(Debug, Clone, PartialEq)]
pub enum Trend {
    /// Not enough samples in the window yet.
    TooFewSamples {
        /// Samples held.
        have: usize,
        /// Samples needed.
        need: usize,
    },
    /// The container has no memory limit: nothing to predict against.
    NoLimit,
    /// Too few steps rise (steady, or a GC sawtooth).
    NotRising {
        /// Share of the steps that rose.
        rising_share: f64,
    },
    /// Climbing, but still far from the limit.
    BelowThreshold {
        /// Latest sample over the limit.
        usage_share: f64,
    },
    /// Climbing and close to the limit: recycle before the OOM kill.
    Leaking(Leak),
}

/// Judge one container's samples (oldest first) against its memory limit.
pub fn assess(container: &str, samples: &[Sample], limit: Option<u64>, rule: &LeakRule) -> Trend {
    let need = rule.min_samples.max(2);
    if samples.len() < need {
        return Trend::TooFewSamples {
            have: samples.len(),
            need,
        };
    }
    let Some(limit) = limit.filter(|l| *l > 0) else {
        return Trend::NoLimit;
    };
    let steps = samples.len() - 1;
    let rising = samples
        .windows(2)
        .filter(|w| w[1].bytes > w[0].bytes)
        .count();
    #[allow(clippy::cast_precision_loss)] // sample counts are small
    let rising_share = rising as f64 / steps as f64;
    if rising_share <= rule.rising_share {
        return Trend::NotRising { rising_share };
    }
    let last = samples[samples.len() - 1];
    #[allow(clippy::cast_precision_loss)] // byte counts far below 2^52
    let usage_share = last.bytes as f64 / limit as f64;
    if usage_share <= rule.limit_share {
        return Trend::BelowThreshold { usage_share };
    }
    let bytes_per_sec = slope(samples);
    #[allow(clippy::cast_precision_loss)]
    let left = limit.saturating_sub(last.bytes) as f64;
    let time_to_limit = (bytes_per_sec > 0.0)
        .then(|| SignedDuration::try_from_secs_f64(left / bytes_per_sec).ok())
        .flatten();
    Trend::Leaking(Leak {
        container: container.to_owned(),
        usage_bytes: last.bytes,
        limit_bytes: limit,
        rising_share,
        samples: samples.len(),
        bytes_per_sec,
        time_to_limit,
    })
}

/// Least-squares slope of bytes over seconds.
fn slope(samples: &[Sample]) -> f64 {
    let t0 = samples[0].at;
    #[allow(clippy::cast_precision_loss)]
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.at.duration_since(t0).as_secs_f64(), s.bytes as f64))
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_b = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_b)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
    if var > 0.0 { cov / var } else { 0.0 }
}

/// Working-set samples per container of each pod (by pod UID), bounded by a window.
#[derive(Debug, Default)]
pub struct MemorySamples {
    series: HashMap<String, HashMap<String, VecDeque<Sample>>>,
}

/// Upper bound of samples kept per container, whatever the window (a 1 h window at 15 s).
const MAX_SAMPLES: usize = 240;

impl MemorySamples {
    /// Add a sample of `container` in pod `uid`; drop those older than `keep` before it. A
    /// sample not newer than the last one is the same reading again (the metrics pipeline
    /// refreshes slower than it is read) and is ignored: a repeated value would count as a flat step.
    pub fn observe(&mut self, uid: &str, container: &str, sample: Sample, keep: SignedDuration) {
        let series = self
            .series
            .entry(uid.to_owned())
            .or_default()
            .entry(container.to_owned())
            .or_default();
        if series.back().is_some_and(|last| sample.at <= last.at) {
            return;
        }
        series.push_back(sample);
        while series
            .front()
            .is_some_and(|s| s.at < sample.at - keep || series.len() > MAX_SAMPLES)
        {
            series.pop_front();
        }
    }

    /// The samples of `container` in pod `uid` within `window` before `now`, oldest first.
    pub fn window(
        &self,
        uid: &str,
        container: &str,
        window: SignedDuration,
        now: Timestamp,
    ) -> Vec<Sample> {
        self.series
            .get(uid)
            .and_then(|c| c.get(container))
            .map(|s| s.iter().copied().filter(|s| s.at >= now - window).collect())
            .unwrap_or_default()
    }

    /// Containers with samples in pod `uid`.
    pub fn containers(&self, uid: &str) -> Vec<&str> {
        self.series
            .get(uid)
            .map(|c| c.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Forget every pod `keep` says no to (gone from the cache).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.series.retain(|uid, _| keep(uid));
    }

    /// Pods with samples.
    pub fn pods(&self) -> usize {
        self.series.len()
    }
}

/// The memory limit of each container of `pod` that has one, in bytes.
pub fn memory_limits(pod: &Pod) -> Vec<(String, u64)> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| {
            let q = c.resources.as_ref()?.limits.as_ref()?.get("memory")?;
            Some((c.name.clone(), parse_bytes(&q.0)?))
        })
        .collect()
}

/// The first container of `pod` whose samples (within `rule.window` before `now`) are a leak.
pub fn leak(samples: &MemorySamples, pod: &Pod, rule: &LeakRule, now: Timestamp) -> Option<Leak> {
    let uid = pod.metadata.uid.as_deref()?;
    memory_limits(pod).into_iter().find_map(|(name, limit)| {
        match assess(
            &name,
            &samples.window(uid, &name, rule.window, now),
            Some(limit),
            rule,
        ) {
            Trend::Leaking(l) => Some(l),
            _ => None,
        }
    })
}

/// Parse a Kubernetes memory quantity (`123456Ki`, `64Mi`, `1G`, `1e6`, `512`) into bytes.
pub fn parse_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => MIB,
        "Gi" => MIB * 1024.0,
        "Ti" => MIB * MIB,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "m" => 1e-3,
        _ => return None,
    };
    let value: f64 = num.parse().ok()?;
    let bytes = (value * factor).ceil();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // range checked
    (0.0..1.8e19).contains(&bytes).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;
    const LIMIT: u64 = 128 * MI;

    /// Samples every 15 s from the given MiB values.
    fn series(mib: &[f64]) -> Vec<Sample> {
        let t0: Timestamp = "2026-12-01T10:00:00Z".parse().expect("a timestamp");
        mib.iter()
            .enumerate()
            .map(|(i, m)| Sample {
                at: t0 + SignedDuration::from_secs(15 * i as i64),
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                bytes: (m * MI as f64) as u64,
            })
            .collect()
    }

    fn judge(mib: &[f64]) -> Trend {
        assess("app", &series(mib), Some(LIMIT), &LeakRule::default())
    }

    #[test]
    fn steady_usage_near_the_limit_is_not_a_leak() {
        let flat = [115.0; 14];
        assert_eq!(judge(&flat), Trend::NotRising { rising_share: 0.0 });
    }

    #[test]
    fn a_gc_sawtooth_near_the_limit_is_not_a_leak() {
        // Three allocations, one collection, over and over; peaks at 90 % of the limit.
        let saw: Vec<f64> = (0..16).map(|i| 100.0 + f64::from(i % 4) * 5.0).collect();
        match judge(&saw) {
            Trend::NotRising { rising_share } => assert!(rising_share <= 0.8, "{rising_share}"),
            other => panic!("sawtooth judged {other:?}"),
        }
    }

    #[test]
    fn a_real_leak_near_the_limit_is_caught_with_its_time_to_limit() {
        // +7.5 MiB per 15 s sample = 0.5 MiB/s, from 10 to 115 MiB.
        let leak: Vec<f64> = (0..15).map(|i| 10.0 + f64::from(i) * 7.5).collect();
        let Trend::Leaking(l) = judge(&leak) else {
            panic!("leak not caught: {:?}", judge(&leak));
        };
        assert_eq!(l.container, "app");
        assert_eq!(l.samples, 15);
        assert!((l.rising_share - 1.0).abs() < 1e-9);
        assert!(
            (l.bytes_per_sec / MIB - 0.5).abs() < 0.01,
            "{}",
            l.bytes_per_sec
        );
        // 13 MiB left at 0.5 MiB/s.
        assert_eq!(l.time_to_limit.map(|d| d.as_secs()), Some(26));
        let line = l.describe();
        assert!(line.contains("115 MiB of 128 MiB (90 %)"), "{line}");
        assert!(line.contains("14 of 14 steps rising"), "{line}");
        assert!(line.contains("limit in about 26s"), "{line}");
    }

    #[test]
    fn a_leak_with_a_few_dips_still_counts_when_over_the_rising_share() {
        // 13 steps, 1 dip: 92 % rising.
        let mut v: Vec<f64> = (0..14).map(|i| 50.0 + f64::from(i) * 5.0).collect();
        v[6] -= 8.0;
        assert!(matches!(judge(&v), Trend::Leaking(_)), "{:?}", judge(&v));
    }

    #[test]
    fn too_few_samples_never_fire_however_steep() {
        let leak: Vec<f64> = (0..11).map(|i| 20.0 + f64::from(i) * 10.0).collect();
        assert_eq!(judge(&leak), Trend::TooFewSamples { have: 11, need: 12 });
    }

    #[test]
    fn a_climb_far_from_the_limit_is_only_growth() {
        let slow: Vec<f64> = (0..14).map(|i| 10.0 + f64::from(i)).collect();
        match judge(&slow) {
            Trend::BelowThreshold { usage_share } => assert!(usage_share < 0.2),
            other => panic!("judged {other:?}"),
        }
    }

    #[test]
    fn no_limit_means_no_verdict() {
        let leak: Vec<f64> = (0..14).map(|i| 10.0 + f64::from(i) * 8.0).collect();
        assert_eq!(
            assess("app", &series(&leak), None, &LeakRule::default()),
            Trend::NoLimit
        );
    }

    #[test]
    fn repeated_readings_are_ignored_and_old_ones_expire() {
        let mut m = MemorySamples::default();
        let s = series(&[1.0, 2.0, 3.0]);
        let keep = SignedDuration::from_secs(20);
        m.observe("uid", "app", s[0], keep);
        m.observe("uid", "app", s[0], keep); // the same reading, read twice
        m.observe("uid", "app", s[1], keep);
        assert_eq!(m.window("uid", "app", keep, s[1].at).len(), 2);
        m.observe("uid", "app", s[2], keep); // s[0] is 30 s older: dropped
        assert_eq!(m.window("uid", "app", keep, s[2].at), vec![s[1], s[2]]);
        assert_eq!(m.containers("uid"), vec!["app"]);
        m.retain(|uid| uid != "uid");
        assert_eq!(m.pods(), 0);
    }

    #[test]
    fn memory_quantities_parse_to_bytes() {
        for (q, want) in [
            ("123456Ki", Some(123_456 * 1024)),
            ("64Mi", Some(64 * MI)),
            ("1Gi", Some(1024 * MI)),
            ("1G", Some(1_000_000_000)),
            ("512", Some(512)),
            ("1e6", Some(1_000_000)),
            ("1500m", Some(2)),
            ("12Qi", None),
            ("", None),
            ("-1Mi", None),
        ] {
            assert_eq!(parse_bytes(q), want, "{q}");
        }
    }
}
