//! What each track served during the analysis window: user requests, 5xx answers and the latency
//! histogram, from two scrapes of every pod's `/metrics` (counter deltas, with counter resets
//! handled the way Prometheus' `increase()` does).
//!
//! "User traffic" is the platform's one definition (the `sli` recording rules of
//! `self-healing/alerts.yaml`): every route except [`EXCLUDED_ROUTES`], any method, 5xx = error.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::expfmt::Sample;
use crate::{Error, Result};

/// Counter of answered requests (labels `method`, `route`, `status`).
pub const REQUESTS: &str = "http_requests_total";
/// Latency histogram buckets (labels `method`, `route`, `le`).
pub const BUCKETS: &str = "http_request_duration_seconds_bucket";
/// Info gauge whose `track` label says which track a pod belongs to (set from `APP_TRACK`).
pub const INFO: &str = "selfheal_app_info";

/// Routes that are not user traffic: the kubelet's probes, Prometheus' scrape and the
/// fault-injection API. The same list as `excluded_routes` in `self-healing/alerts.yaml`, which
/// the recording rules (and so the alerts, the deploy verification and [`crate::prometheus`])
/// use; a test below holds the two together.
pub const EXCLUDED_ROUTES: [&str; 4] = ["/health", "/ready", "/metrics", "/crash"];

/// [`EXCLUDED_ROUTES`] as the PromQL regex the recording rules use (`route!~"..."`).
pub const EXCLUDED_ROUTES_REGEX: &str = "/(health|ready|metrics|crash)";

/// Whether a sample is user traffic: its `route` label is not one of [`EXCLUDED_ROUTES`]
/// (PromQL's `!~` is anchored, so this is an exact comparison).
pub fn is_user_traffic(s: &Sample) -> bool {
    !EXCLUDED_ROUTES.contains(&s.label("route"))
}

/// One pod's `/metrics` at one instant.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Pod name: pairs the two scrapes of the same pod.
    pub pod: String,
    /// Every sample of the exposition.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The pod's track from `selfheal_app_info{track}`.
    pub fn track(&self) -> Result<&str> {
        self.samples
            .iter()
            .find(|s| s.name == INFO && !s.label("track").is_empty())
            .map(|s| s.label("track"))
            .ok_or_else(|| Error::MissingTrack(self.pod.clone()))
    }
}

/// What one track served in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrackWindow {
    /// Pods that contributed (scraped at the end of the window).
    pub pods: usize,
    /// Whether any `http_requests_total` series of the route exists (false: missing metrics).
    pub series_found: bool,
    /// Requests answered in the window.
    pub requests: f64,
    /// Of those, answered with a 5xx status.
    pub errors: f64,
    /// Cumulative latency histogram of the window: (upper bound in seconds, count), sorted.
    #[serde(skip)]
    pub buckets: Vec<(f64, f64)>,
    /// The p95 in seconds as Prometheus recorded it (`selfheal:http_request_duration_seconds:p95_rate1m`);
    /// None from scrapes, which compute it from [`Self::buckets`].
    #[serde(skip)]
    pub recorded_p95: Option<f64>,
    /// Pods whose counters went backwards (restarted) during the window.
    pub counter_resets: usize,
}

impl TrackWindow {
    /// Errors / requests, or None without requests.
    pub fn error_ratio(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| self.errors / self.requests)
    }

    /// The q-quantile of the window's latency in seconds, computed like PromQL's
    /// `histogram_quantile` (linear interpolation inside the bucket), or None without data.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        histogram_quantile(q, &self.buckets)
    }

    /// The p95 latency in seconds: the recorded one when Prometheus gave it, else computed from
    /// the window's histogram.
    pub fn p95(&self) -> Option<f64> {
        self.recorded_p95.or_else(|| self.quantile(0.95))
    }

    /// Adds one status's request delta.
    pub fn add_requests(&mut self, status: &str, delta: f64) {
        self.series_found = true;
        self.requests += delta;
        if status.starts_with('5') {
            self.errors += delta;
        }
    }

    /// Adds one bucket's delta (buckets with the same bound are summed).
    pub fn add_bucket(&mut self, le: f64, delta: f64) {
        match self.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, count)) => *count += delta,
            None => {
                self.buckets.push((le, delta));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }
}

/// PromQL's `histogram_quantile` on cumulative buckets sorted by bound (the last one `+Inf`).
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_le, total) = buckets.last()?;
    if !last_le.is_infinite() || total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|&(_, count)| count >= rank)?;
    if i == buckets.len() - 1 {
        // Above every finite bound: the highest finite bound is all we know (as PromQL does).
        return buckets.len().checked_sub(2).map(|j| buckets[j].0);
    }
    let (upper, count) = buckets[i];
    let (lower, below) = if i == 0 {
        (0.0_f64.min(upper), 0.0)
    } else {
        buckets[i - 1]
    };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / in_bucket)
}

/// The window of every track: `after` minus `before` per pod and series.
///
/// A pod missing from `before` started during the window: all its counts are new. A series that
/// went down was reset (the container restarted): its whole current value is new, as in
/// Prometheus' `increase()`. Pods only in `before` are gone and contribute nothing.
pub fn from_scrapes(before: &[Scrape], after: &[Scrape]) -> Result<BTreeMap<String, TrackWindow>> {
    let mut tracks: BTreeMap<String, TrackWindow> = BTreeMap::new();
    for pod in after {
        let track = pod.track()?.to_owned();
        let window = tracks.entry(track).or_default();
        window.pods += 1;
        let earlier = before.iter().find(|b| b.pod == pod.pod);
        let mut reset = false;
        for s in pod
            .samples
            .iter()
            .filter(|s| (s.name == REQUESTS || s.name == BUCKETS) && is_user_traffic(s))
        {
            let previous = earlier
                .and_then(|b| {
                    b.samples
                        .iter()
                        .find(|p| p.name == s.name && p.labels == s.labels)
                })
                .map_or(0.0, |p| p.value);
            let delta = if s.value >= previous {
                s.value - previous
            } else {
                reset = true;
                s.value
            };
            if s.name == REQUESTS {
                window.add_requests(s.label("status"), delta);
            } else {
                let le = s.label("le");
                let bound = crate::expfmt::parse_value(le).map_err(|_| Error::BadBucket {
                    pod: pod.pod.clone(),
                    le: le.to_owned(),
                })?;
                window.add_bucket(bound, delta);
            }
        }
        window.counter_resets += usize::from(reset);
    }
    Ok(tracks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::expfmt::parse;

    fn scrape(pod: &str, track: &str, ok: u32, err: u32, fast: u32) -> Scrape {
        // `fast` requests under 1 ms, the rest between 0.25 s and 0.5 s.
        let total = ok + err;
        let text = format!(
            "selfheal_app_info{{track=\"{track}\",version=\"1\"}} 1\n\
             http_requests_total{{method=\"GET\",route=\"/\",status=\"200\"}} {ok}\n\
             http_requests_total{{method=\"GET\",route=\"/\",status=\"500\"}} {err}\n\
             http_requests_total{{method=\"GET\",route=\"/health\",status=\"200\"}} 999\n\
             http_request_duration_seconds_bucket{{method=\"GET\",route=\"/\",le=\"0.001\"}} {fast}\n\
             http_request_duration_seconds_bucket{{method=\"GET\",route=\"/\",le=\"0.25\"}} {fast}\n\
             http_request_duration_seconds_bucket{{method=\"GET\",route=\"/\",le=\"0.5\"}} {total}\n\
             http_request_duration_seconds_bucket{{method=\"GET\",route=\"/\",le=\"+Inf\"}} {total}\n"
        );
        Scrape {
            pod: pod.to_owned(),
            samples: parse(&text, pod).unwrap(),
        }
    }

    #[test]
    fn deltas_are_summed_per_track_and_other_routes_ignored() {
        let before = [
            scrape("s1", "stable", 100, 0, 100),
            scrape("s2", "stable", 50, 1, 51),
            scrape("c1", "canary", 10, 0, 10),
        ];
        let after = [
            scrape("s1", "stable", 190, 0, 190),
            scrape("s2", "stable", 140, 1, 141),
            scrape("c1", "canary", 15, 5, 20),
        ];
        let w = from_scrapes(&before, &after).unwrap();
        assert_eq!(w["stable"].pods, 2);
        assert_eq!(w["stable"].requests, 180.0);
        assert_eq!(w["stable"].errors, 0.0);
        assert_eq!(w["canary"].requests, 10.0);
        assert_eq!(w["canary"].errors, 5.0);
        assert_eq!(w["canary"].error_ratio(), Some(0.5));
        assert_eq!(w["canary"].counter_resets, 0);
    }

    /// The input of the promtool test "recording rules: user traffic only ..." in
    /// `self-healing/tests/{production,workshop}.test.yaml`, per 15 s: (track, method, route,
    /// status, requests).
    const SLI_REQUESTS: [(&str, &str, &str, &str, u32); 10] = [
        ("stable", "GET", "/", "200", 24),
        ("stable", "GET", "/", "500", 2),
        ("stable", "GET", "/", "503", 1),
        ("stable", "GET", "unmatched", "404", 3),
        ("stable", "GET", "/health", "200", 15),
        ("stable", "GET", "/ready", "503", 15),
        ("stable", "GET", "/metrics", "200", 3),
        ("stable", "POST", "/crash", "500", 3),
        ("canary", "GET", "/", "200", 12),
        ("canary", "GET", "/", "500", 3),
    ];
    /// Its stable latency buckets per 15 s: (route, le, cumulative count).
    const SLI_BUCKETS: [(&str, &str, u32); 12] = [
        ("/", "0.1", 12),
        ("/", "0.5", 27),
        ("/", "+Inf", 27),
        ("unmatched", "0.1", 3),
        ("unmatched", "0.5", 3),
        ("unmatched", "+Inf", 3),
        ("/health", "0.1", 15),
        ("/health", "0.5", 15),
        ("/health", "+Inf", 15),
        ("/metrics", "0.1", 0),
        ("/metrics", "0.5", 0),
        ("/metrics", "+Inf", 3),
    ];

    /// One pod of `track` after `n` periods of 15 s of the input above.
    fn sli_scrape(track: &str, n: u32) -> Scrape {
        let mut text = format!("selfheal_app_info{{track=\"{track}\",version=\"1\"}} 1\n");
        for (t, method, route, status, per) in SLI_REQUESTS {
            if t == track {
                text += &format!(
                    "http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}\n",
                    per * n
                );
            }
        }
        if track == "stable" {
            for (route, le, per) in SLI_BUCKETS {
                text += &format!(
                    "http_request_duration_seconds_bucket{{method=\"GET\",route=\"{route}\",le=\"{le}\"}} {}\n",
                    per * n
                );
            }
        }
        Scrape {
            pod: format!("{track}-0"),
            samples: parse(&text, track).unwrap(),
        }
    }

    #[test]
    fn scrape_path_counts_what_the_recording_rules_count() {
        // Two scrapes 15 s apart. promtool asserts the recording rules give, for this input:
        // stable 2 req/s, 0.2 errors/s, ratio 0.1, p95 0.46 s; canary 1 req/s, 0.2/s, ratio 0.2.
        let before = [sli_scrape("stable", 40), sli_scrape("canary", 40)];
        let after = [sli_scrape("stable", 41), sli_scrape("canary", 41)];
        let w = from_scrapes(&before, &after).unwrap();
        assert_eq!((w["stable"].requests, w["stable"].errors), (30.0, 3.0));
        assert_eq!(w["stable"].error_ratio(), Some(0.1));
        assert!(
            (w["stable"].p95().unwrap() - 0.46).abs() < 1e-9,
            "{:?}",
            w["stable"].p95()
        );
        assert_eq!((w["canary"].requests, w["canary"].errors), (15.0, 3.0));
        assert_eq!(w["canary"].error_ratio(), Some(0.2));
    }

    #[test]
    fn excluded_routes_are_the_recording_rules_excluded_routes() {
        // The one source of the recording rules: its `excluded_routes:` constant.
        let source = include_str!("../../../self-healing/alerts.yaml");
        let line = source
            .lines()
            .find_map(|l| l.trim().strip_prefix("excluded_routes:"))
            .expect("self-healing/alerts.yaml has an excluded_routes constant");
        assert_eq!(line.trim(), EXCLUDED_ROUTES_REGEX);
        let names: Vec<&str> = EXCLUDED_ROUTES
            .iter()
            .map(|r| r.trim_start_matches('/'))
            .collect();
        assert_eq!(format!("/({})", names.join("|")), EXCLUDED_ROUTES_REGEX);
    }

    #[test]
    fn a_restarted_pod_counts_from_zero_and_a_new_pod_counts_whole() {
        let before = [scrape("s1", "stable", 1000, 0, 1000)];
        // s1 restarted (counters 1000 -> 30); s2 is new.
        let after = [
            scrape("s1", "stable", 30, 0, 30),
            scrape("s2", "stable", 20, 0, 20),
        ];
        let w = from_scrapes(&before, &after).unwrap();
        assert_eq!(w["stable"].requests, 50.0);
        assert_eq!(w["stable"].counter_resets, 1);
        assert_eq!(w["stable"].buckets.last(), Some(&(f64::INFINITY, 50.0)));
    }

    #[test]
    fn a_pod_without_info_gauge_is_an_error() {
        let mut s = scrape("x", "stable", 1, 0, 1);
        s.samples.retain(|s| s.name != INFO);
        let err = from_scrapes(&[], &[s]).unwrap_err();
        assert!(err.to_string().contains("selfheal_app_info"), "{err}");
    }

    #[test]
    fn missing_request_series_leave_series_found_false() {
        let mut s = scrape("c", "canary", 0, 0, 0);
        s.samples.retain(|s| s.name == INFO);
        let w = from_scrapes(&[], &[s]).unwrap();
        assert!(!w["canary"].series_found);
        assert_eq!(w["canary"].error_ratio(), None);
        assert_eq!(w["canary"].quantile(0.95), None);
    }

    #[test]
    fn quantile_interpolates_like_promql() {
        // 90 under 1 ms, 10 between 0.25 and 0.5 s: p95 is half-way into the 0.25-0.5 bucket.
        let b = [
            (0.001, 90.0),
            (0.25, 90.0),
            (0.5, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let p95 = histogram_quantile(0.95, &b).unwrap();
        assert!((p95 - 0.375).abs() < 1e-9, "{p95}");
        let p50 = histogram_quantile(0.5, &b).unwrap();
        assert!((p50 - 0.001 * 50.0 / 90.0).abs() < 1e-9, "{p50}");
        // Everything above the highest finite bound: that bound.
        assert_eq!(
            histogram_quantile(0.95, &[(0.5, 0.0), (f64::INFINITY, 10.0)]),
            Some(0.5)
        );
        assert_eq!(
            histogram_quantile(0.95, &[(0.5, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(histogram_quantile(0.95, &[(0.5, 3.0)]), None);
    }
}
