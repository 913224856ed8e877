//! The same per-track window from a Prometheus server (HTTP query API) that has the platform's
//! recording rules loaded (`self-healing/rules/*.rules.yaml` or `prometheusrules/*.yaml`).
//!
//! It reads the recorded series — the one definition of user traffic, error ratio and p95 that
//! the alerts and the deploy verification read too — never the raw counters:
//! `selfheal:http_requests:rate1m`, `selfheal:http_errors:rate1m` and
//! `selfheal:http_request_duration_seconds:p95_rate1m`, averaged over the window
//! (`avg_over_time`), by `track`. Requests and errors in the window are those rates times the
//! window's length. NB: each recorded value covers the minute before it, so the figures reach up
//! to a minute further back than the window; the scrape path measures exactly the window.
//!
//! The series carry `track` from the scrape (the chart's ServiceMonitor `podTargetLabels`, or
//! `prom::pod_proxy_config`'s relabelling), as the recording rules aggregate `by (namespace, job,
//! track)`. When Prometheus has no recorded series at all, the rules are not loaded: that is an
//! error ([`crate::Error::NotRecorded`]), not an "inconclusive" that would wait forever.

use std::collections::BTreeMap;
use std::time::Duration;

use selfheal_promql::{Client, parse_vector};

use crate::window::TrackWindow;
use crate::{Error, Result};

/// Recorded user requests per second, by (namespace, job, track).
pub const REQUESTS_RATE: &str = "selfheal:http_requests:rate1m";
/// Recorded 5xx answers per second (0 when none), by (namespace, job, track).
pub const ERRORS_RATE: &str = "selfheal:http_errors:rate1m";
/// Recorded p95 latency in seconds, by (namespace, job, track).
pub const P95: &str = "selfheal:http_request_duration_seconds:p95_rate1m";

/// Where and what to ask.
#[derive(Debug, Clone)]
pub struct Query {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// Extra label matchers on the recorded series (labels `namespace`, `job`, `track`), e.g.
    /// `namespace="shop",job="web"` (may be empty).
    pub selector: String,
    /// Window length, as a PromQL duration (`60s`, `5m`).
    pub window: String,
}

/// The three PromQL queries: requests and errors (per second, summed per track) and p95 (the
/// highest of the track's jobs: quantiles cannot be added).
pub fn queries(q: &Query) -> [String; 3] {
    let sel = if q.selector.trim().is_empty() {
        String::new()
    } else {
        format!("{{{}}}", q.selector.trim())
    };
    let w = &q.window;
    [
        format!("sum by (track) (avg_over_time({REQUESTS_RATE}{sel}[{w}]))"),
        format!("sum by (track) (avg_over_time({ERRORS_RATE}{sel}[{w}]))"),
        format!("max by (track) (avg_over_time({P95}{sel}[{w}]))"),
    ]
}

/// Seconds of a PromQL duration such as `60s`, `1m30s`, `500ms`.
pub fn duration_seconds(d: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = d.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            "y" => 31_536_000.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Builds the windows from the three answers (bodies of `/api/v1/query`).
pub fn windows_from_answers(
    requests_body: &str,
    errors_body: &str,
    p95_body: &str,
    q: &Query,
) -> Result<BTreeMap<String, TrackWindow>> {
    let [rq, eq, pq] = queries(q);
    let seconds = duration_seconds(&q.window).ok_or_else(|| selfheal_promql::Error::Answer {
        query: rq.clone(),
        reason: format!("window {:?} is not a PromQL duration", q.window),
    })?;
    let mut tracks: BTreeMap<String, TrackWindow> = BTreeMap::new();
    for (labels, rate) in parse_vector(requests_body, &rq)? {
        let w = tracks
            .entry(labels.get("track").cloned().unwrap_or_default())
            .or_default();
        w.series_found = true;
        w.requests += rate * seconds;
    }
    for (labels, rate) in parse_vector(errors_body, &eq)? {
        let w = tracks
            .entry(labels.get("track").cloned().unwrap_or_default())
            .or_default();
        w.errors += rate * seconds;
    }
    for (labels, p95) in parse_vector(p95_body, &pq)? {
        // NaN: no request in the recording window (histogram_quantile of empty buckets).
        if p95.is_finite() {
            tracks
                .entry(labels.get("track").cloned().unwrap_or_default())
                .or_default()
                .recorded_p95 = Some(p95);
        }
    }
    // Prometheus does not say how many pods: count a track as present when it has series.
    for w in tracks.values_mut() {
        w.pods = 1;
    }
    Ok(tracks)
}

/// Asks the server (instant queries over plain HTTP, each bounded by `timeout`). No recorded
/// series for the selector: when Prometheus has none at all, [`Error::NotRecorded`].
pub async fn fetch(q: &Query, timeout: Duration) -> Result<BTreeMap<String, TrackWindow>> {
    let client = Client::new(&q.url, timeout)?;
    let [rq, eq, pq] = queries(q);
    let requests = client.query_body(&rq).await?;
    let errors = client.query_body(&eq).await?;
    let p95 = client.query_body(&pq).await?;
    let windows = windows_from_answers(&requests, &errors, &p95, q)?;
    if windows.is_empty() {
        let probe = format!("count({REQUESTS_RATE})");
        if client.instant_vector(&probe).await?.is_empty() {
            return Err(Error::NotRecorded {
                url: q.url.clone(),
                series: REQUESTS_RATE,
            });
        }
    }
    Ok(windows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Error;

    fn query(selector: &str) -> Query {
        Query {
            url: "http://prom:9090".into(),
            selector: selector.into(),
            window: "60s".into(),
        }
    }

    fn answer(rows: &[(&str, &str)]) -> String {
        let result: Vec<String> = rows
            .iter()
            .map(|(track, v)| {
                format!(r#"{{"metric":{{"track":"{track}"}},"value":[1.7e9,"{v}"]}}"#)
            })
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            result.join(",")
        )
    }

    #[test]
    fn queries_read_the_recorded_series_with_the_selector() {
        let [r, e, p] = queries(&query("namespace=\"shop\""));
        assert_eq!(
            r,
            "sum by (track) (avg_over_time(selfheal:http_requests:rate1m{namespace=\"shop\"}[60s]))"
        );
        assert_eq!(
            e,
            "sum by (track) (avg_over_time(selfheal:http_errors:rate1m{namespace=\"shop\"}[60s]))"
        );
        assert_eq!(
            p,
            "max by (track) (avg_over_time(selfheal:http_request_duration_seconds:p95_rate1m{namespace=\"shop\"}[60s]))"
        );
        // No selector: no empty braces (PromQL rejects `{}`).
        let [r, _, _] = queries(&query(" "));
        assert!(r.contains("rate1m[60s]"), "{r}");
    }

    #[test]
    fn durations_in_seconds() {
        for (d, want) in [
            ("60s", 60.0),
            ("5m", 300.0),
            ("1m30s", 90.0),
            ("500ms", 0.5),
        ] {
            assert_eq!(duration_seconds(d), Some(want), "{d}");
        }
        for bad in ["", "s", "60", "5x", "1.5m"] {
            assert_eq!(duration_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn answers_become_track_windows() {
        let req = answer(&[("stable", "15"), ("canary", "1.6666666666666667")]);
        let err = answer(&[("stable", "0"), ("canary", "0.8333333333333334")]);
        let p95 = answer(&[("stable", "0.012"), ("canary", "NaN")]);
        let w = windows_from_answers(&req, &err, &p95, &query("")).unwrap();
        assert_eq!(w["stable"].requests, 900.0);
        assert_eq!(w["stable"].error_ratio(), Some(0.0));
        assert_eq!(w["stable"].p95(), Some(0.012));
        assert!((w["canary"].requests - 100.0).abs() < 1e-9);
        assert!((w["canary"].error_ratio().unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(w["canary"].p95(), None, "NaN = no latency data");
        assert!(w["canary"].series_found);
    }

    #[test]
    fn prometheus_path_agrees_with_the_scrape_path() {
        // What Prometheus records for the input of window.rs's
        // `scrape_path_counts_what_the_recording_rules_count` (promtool asserts these values in
        // self-healing/tests/*.test.yaml), read over the same 15 s window.
        let req = answer(&[("stable", "2"), ("canary", "1")]);
        let err = answer(&[("stable", "0.2"), ("canary", "0.2")]);
        let p95 = answer(&[("stable", "0.46")]);
        let mut q = query("");
        q.window = "15s".into();
        let w = windows_from_answers(&req, &err, &p95, &q).unwrap();
        assert_eq!((w["stable"].requests, w["stable"].errors), (30.0, 3.0));
        assert_eq!(w["stable"].error_ratio(), Some(0.1));
        assert_eq!(w["stable"].p95(), Some(0.46));
        assert_eq!((w["canary"].requests, w["canary"].errors), (15.0, 3.0));
        assert_eq!(w["canary"].error_ratio(), Some(0.2));
    }

    #[test]
    fn an_error_answer_names_the_query() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        let err = windows_from_answers(body, body, body, &query(""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("parse error at char 3"), "{err}");
        assert!(err.contains("selfheal:http_requests:rate1m"), "{err}");
        let err = windows_from_answers("not json", "{}", "{}", &query("")).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Prometheus(selfheal_promql::Error::Answer { .. })
            ),
            "{err}"
        );
        assert_eq!(err.metric_label(), "prometheus_answer");
        let mut q = query("");
        q.window = "a minute".into();
        let ok = answer(&[]);
        let err = windows_from_answers(&ok, &ok, &ok, &q).unwrap_err();
        assert!(err.to_string().contains("not a PromQL duration"), "{err}");
    }

    /// A server on 127.0.0.1 that answers every query with an empty vector (a Prometheus without
    /// the recording rules); returns its URL.
    fn empty_prometheus() -> String {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0_u8; 4096];
                let _ = conn.read(&mut buf);
                let body = answer(&[]);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        url
    }

    #[tokio::test]
    async fn no_recorded_series_at_all_is_an_error_not_inconclusive() {
        let mut q = query("namespace=\"shop\"");
        q.url = empty_prometheus();
        let err = fetch(&q, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.metric_label(), "not_recorded", "{err}");
        assert!(err.to_string().contains("recording rules"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error() {
        let mut q = query("");
        // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
        q.url = "http://127.0.0.1:9".into();
        let err = fetch(&q, Duration::from_secs(2)).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Prometheus(selfheal_promql::Error::Unreachable { .. })
            ),
            "{err}"
        );
        assert_eq!(err.metric_label(), "prometheus_unreachable");
    }
}
