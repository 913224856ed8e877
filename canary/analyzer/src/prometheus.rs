//! The same per-track window from a Prometheus server (HTTP query API), when one scrapes the pods.
//!
//! The `track` label is joined from `selfheal_app_info` by scrape target (`instance`, `job`), so
//! the queries work whether or not the scrape config copies the pod's `track` label onto series.

use std::collections::BTreeMap;
use std::time::Duration;

use selfheal_promql::{Client, parse_value, parse_vector};

use crate::Result;
use crate::window::{BUCKETS, INFO, REQUESTS, RouteFilter, TrackWindow};

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
        let bound = parse_value(le).map_err(|reason| selfheal_promql::Error::Answer {
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

/// Asks the server (two instant queries over plain HTTP, each bounded by `timeout`).
pub async fn fetch(q: &Query, timeout: Duration) -> Result<BTreeMap<String, TrackWindow>> {
    let client = Client::new(&q.url, timeout)?;
    let (rq, bq) = queries(q);
    let requests = client.query_body(&rq).await?;
    let buckets = client.query_body(&bq).await?;
    windows_from_answers(&requests, &buckets, q)
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
        assert!(
            matches!(
                err,
                Error::Prometheus(selfheal_promql::Error::Answer { .. })
            ),
            "{err}"
        );
        assert_eq!(err.metric_label(), "prometheus_answer");
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
