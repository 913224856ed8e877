//! The Prometheus HTTP query API, as the selfheal binaries use it: one instant query whose answer
//! is a vector (`GET {url}/api/v1/query?query=…`), plain HTTP, bounded by a timeout.
//!
//! Shared by `selfheal-controller` (errorRate and poolExhaustion triggers, CircuitBreakers) and
//! `selfheal-canary` (the per-track window from Prometheus). Async: callers run it on their tokio
//! runtime; one [`Client`] keeps its connections between queries.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// One series of an instant vector: its labels and value.
pub type Series = (BTreeMap<String, String>, f64);

/// What can go wrong asking Prometheus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Prometheus could not be reached (or the HTTP client could not be built).
    #[error("querying Prometheus at {url}: {source}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// Prometheus answered, but not with a usable instant vector.
    #[error("Prometheus query {query:?}: {reason}")]
    Answer {
        /// The PromQL query.
        query: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl Error {
    /// A bounded label for the kind of failure.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Unreachable { .. } => "unreachable",
            Error::Answer { .. } => "answer",
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client for one Prometheus server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    /// A client for the server at `url` (e.g. `http://prometheus.monitoring:9090`); every query
    /// is bounded by `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|source| Error::Unreachable {
                url: url.to_owned(),
                source,
            })?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The body of one instant query. Prometheus answers 400/422 with a JSON error body: it is
    /// returned either way, for [`parse_vector`] to report.
    pub async fn query_body(&self, query: &str) -> Result<String> {
        let unreachable = |source| Error::Unreachable {
            url: self.url.clone(),
            source,
        };
        let endpoint = format!("{}/api/v1/query", self.url);
        let full =
            reqwest::Url::parse_with_params(&endpoint, &[("query", query)]).map_err(|e| {
                Error::Answer {
                    query: query.to_owned(),
                    reason: format!("bad URL {endpoint}: {e}"),
                }
            })?;
        let response = self.http.get(full).send().await.map_err(unreachable)?;
        response.text().await.map_err(unreachable)
    }

    /// One instant query whose answer is a vector: its (labels, value) pairs.
    pub async fn instant_vector(&self, query: &str) -> Result<Vec<Series>> {
        parse_vector(&self.query_body(query).await?, query)
    }
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
    result: Vec<RawSeries>,
}

#[derive(Debug, Deserialize)]
struct RawSeries {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Parses one instant-vector answer (the body of `/api/v1/query`) into (labels, value) pairs;
/// `query` names the query in errors.
pub fn parse_vector(body: &str, query: &str) -> Result<Vec<Series>> {
    let bad = |reason: String| Error::Answer {
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
            let v = parse_value(&s.value.1).map_err(bad)?;
            Ok((s.metric, v))
        })
        .collect()
}

/// Parses a Prometheus float (`1.5`, `+Inf`, `NaN`): sample values and bucket bounds.
pub fn parse_value(s: &str) -> std::result::Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|_| format!("invalid value {s:?}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_answer_becomes_series() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"pod":"a"},"value":[1.7e9,"0.5"]},
            {"metric":{},"value":[1.7e9,"NaN"]}]}}"#;
        let s = parse_vector(body, "q").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].0["pod"].as_str(), s[0].1), ("a", 0.5));
        assert!(s[1].1.is_nan());
    }

    #[test]
    fn an_error_answer_names_the_query_and_the_reason() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        let err = parse_vector(body, "sum(x").unwrap_err();
        assert_eq!(err.metric_label(), "answer");
        let text = err.to_string();
        assert!(
            text.contains("parse error at char 3") && text.contains("sum(x"),
            "{text}"
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(
            parse_vector(matrix, "q")
                .unwrap_err()
                .to_string()
                .contains("matrix")
        );
        assert!(parse_vector("not json", "q").is_err());
    }

    #[test]
    fn special_values_parse() {
        assert_eq!(parse_value("+Inf"), Ok(f64::INFINITY));
        assert_eq!(parse_value("-Inf"), Ok(f64::NEG_INFINITY));
        assert!(parse_value("NaN").unwrap().is_nan());
        assert!(parse_value("x").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_error() {
        // Port 9 (discard) on loopback: nothing listens there in a test sandbox.
        let c = Client::new("http://127.0.0.1:9/", Duration::from_secs(2)).unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:9");
        let err = c.instant_vector("vector(1)").await.unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
        assert_eq!(err.metric_label(), "unreachable");
    }
}
