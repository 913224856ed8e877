//! The same per-track window from a Prometheus server (HTTP query API), when one scrapes the pods.
//!
//! The `track` label is joined from `selfheal_app_info` by scrape target (`instance`, `job`), so
//! the queries work whether or not the scrape config copies the pod's `track` label onto series.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::window::{BUCKETS, INFO, REQUESTS, RouteFilter, TrackWindow};
use crate::{Error, Result};

/// Where and what to ask.
#[derive(Debug, Clone)]
pub struct Query {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// Extra label matchers for every series, e.g. `namespace="shop",service="web"` (may be empty).
    pub selector: String,
    /// Window length, as a PromQL duration (`60s`, `5m`).
    pub window: String,
    /// Route and method analysed.
    pub filter: RouteFilter,
}

/// `{a="x",b="y"}` from matchers, or "" when there are none (PromQL rejects `{}`).
fn braces(matchers: &[&str]) -> String {
    let m: Vec<&str> = matchers
        .iter()
        .copied()
        .filter(|m| !m.trim().is_empty())
        .collect();
    if m.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", m.join(","))
    }
}

fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The two PromQL queries: requests by (track, status), and latency buckets by (track, le).
pub fn queries(q: &Query) -> (String, String) {
    let route = format!("route={}", quote(&q.filter.route));
    let method = format!("method={}", quote(&q.filter.method));
    let series = braces(&[&route, &method, &q.selector]);
    let info = braces(&[&q.selector]);
    let join = format!(
        "* on (instance, job) group_left (track) max by (instance, job, track) ({INFO}{info})"
    );
    (
        format!(
            "sum by (track, status) (increase({REQUESTS}{series}[{w}]) {join})",
            w = q.window
        ),
        format!(
            "sum by (track, le) (increase({BUCKETS}{series}[{w}]) {join})",
            w = q.window
        ),
    )
}

#[derive(Debug, Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Debug, Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Parses one instant-vector answer into (labels, value) pairs.
fn parse_vector(body: &str, query: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
    let bad = |reason: String| Error::PrometheusAnswer {
        query: query.to_owned(),
        reason,
    };
    let r: Response = serde_json::from_str(body).map_err(|e| bad(e.to_string()))?;
    if r.status != "success" {
        return Err(bad(r.error.unwrap_or(r.status)));
    }
    let data = r.data.ok_or_else(|| bad("no data".into()))?;
    if data.result_type != "vector" {
        return Err(bad(format!("expected a vector, got {}", data.result_type)));
    }
    data.result
        .into_iter()
        .map(|s| {
            let v = crate::expfmt::parse_value(&s.value.1).map_err(bad)?;
            Ok((s.metric, v))
        })
        .collect()
}

/// Builds the windows from the two answers (bodies of `/api/v1/query`).
pub fn windows_from_answers(
    requests_body: &str,
    buckets_body: &str,
    q: &Query,
) -> Result<BTreeMap<String, TrackWindow>> {
    let (rq, bq) = queries(q);
    let mut tracks: BTreeMap<String, TrackWindow> = BTreeMap::new();
    for (labels, v) in parse_vector(requests_body, &rq)? {
        let track = labels.get("track").cloned().unwrap_or_default();
        let status = labels.get("status").map_or("", String::as_str);
        tracks.entry(track).or_default().add_requests(status, v);
    }
    for (labels, v) in parse_vector(buckets_body, &bq)? {
        let track = labels.get("track").cloned().unwrap_or_default();
        let le = labels.get("le").map_or("", String::as_str);
        let bound = crate::expfmt::parse_value(le).map_err(|reason| Error::PrometheusAnswer {
            query: bq.clone(),
            reason,
        })?;
        tracks.entry(track).or_default().add_bucket(bound, v);
    }
    // Prometheus does not say how many pods: count a track as present when it has series.
    for w in tracks.values_mut() {
        w.pods = 1;
    }
    Ok(tracks)
}

/// The body of one instant query (`GET {url}/api/v1/query`, plain HTTP, bounded by `timeout`).
fn get(url: &str, query: &str, timeout: Duration) -> Result<String> {
    let unreachable = |e| Error::PrometheusUnreachable {
        url: url.to_owned(),
        source: e,
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(unreachable)?;
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let full = reqwest::Url::parse_with_params(&endpoint, &[("query", query)]).map_err(|e| {
        Error::PrometheusAnswer {
            query: query.to_owned(),
            reason: format!("bad URL {endpoint}: {e}"),
        }
    })?;
    // Prometheus answers 400/422 with a JSON error body: read it either way.
    client
        .get(full)
        .send()
        .and_then(reqwest::blocking::Response::text)
        .map_err(unreachable)
}

/// One instant query whose answer is a vector: its (labels, value) pairs. Blocking; async
/// callers run it on a blocking thread (`selfheal-controller`'s errorRate trigger does).
pub fn instant_vector(
    url: &str,
    query: &str,
    timeout: Duration,
) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
    parse_vector(&get(url, query, timeout)?, query)
}

/// Asks the server (plain HTTP GET, bounded by `timeout`).
pub fn fetch(q: &Query, timeout: Duration) -> Result<BTreeMap<String, TrackWindow>> {
    let (rq, bq) = queries(q);
    windows_from_answers(&get(&q.url, &rq, timeout)?, &get(&q.url, &bq, timeout)?, q)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn query(selector: &str) -> Query {
        Query {
            url: "http://prom:9090".into(),
            selector: selector.into(),
            window: "60s".into(),
            filter: RouteFilter {
                route: "/".into(),
                method: "GET".into(),
            },
        }
    }

    #[test]
    fn queries_join_the_track_and_carry_the_selector() {
        let (r, b) = queries(&query("namespace=\"shop\""));
        assert_eq!(
            r,
            "sum by (track, status) (increase(http_requests_total{route=\"/\",method=\"GET\",namespace=\"shop\"}[60s]) \
             * on (instance, job) group_left (track) max by (instance, job, track) (selfheal_app_info{namespace=\"shop\"}))"
        );
        assert!(
            b.starts_with("sum by (track, le) (increase(http_request_duration_seconds_bucket{")
        );
        // No selector: no empty braces (PromQL rejects `{}`).
        let (r, _) = queries(&query(""));
        assert!(r.ends_with("(selfheal_app_info))"), "{r}");
    }

    #[test]
    fn answers_become_track_windows() {
        let req = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"track":"stable","status":"200"},"value":[1.7e9,"900"]},
            {"metric":{"track":"canary","status":"200"},"value":[1.7e9,"50"]},
            {"metric":{"track":"canary","status":"500"},"value":[1.7e9,"50"]}]}}"#;
        let buckets = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"track":"canary","le":"0.001"},"value":[1.7e9,"100"]},
            {"metric":{"track":"canary","le":"+Inf"},"value":[1.7e9,"100"]}]}}"#;
        let w = windows_from_answers(req, buckets, &query("")).unwrap();
        assert_eq!(w["stable"].requests, 900.0);
        assert_eq!(w["canary"].error_ratio(), Some(0.5));
        assert_eq!(w["canary"].buckets.len(), 2);
        assert!(w["stable"].buckets.is_empty());
    }

    #[test]
    fn an_error_answer_names_the_query() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        let err = windows_from_answers(body, body, &query(""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("parse error at char 3"), "{err}");
        assert!(err.contains("http_requests_total"), "{err}");
        let err = windows_from_answers("not json", "{}", &query("")).unwrap_err();
        assert!(matches!(err, Error::PrometheusAnswer { .. }));
    }

    #[test]
    fn an_unreachable_server_is_an_error() {
        let mut q = query("");
        // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
        q.url = "http://127.0.0.1:9".into();
        let err = fetch(&q, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, Error::PrometheusUnreachable { .. }), "{err}");
    }
}
