//! A small parser for the Prometheus text exposition format (0.0.4), enough for what the app's
//! `/metrics` serves: `# HELP`/`# TYPE` comments, samples with optional labels and an optional
//! timestamp, escaped label values, `NaN`/`+Inf`/`-Inf`.
//!
//! NB: no crate in the workspace parses this format, and the analyzer needs only samples (not
//! metric families), so ~100 lines here beat a dependency.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, with any `_bucket`/`_count`/`_sum` suffix kept.
    pub name: String,
    /// Label pairs, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// Sample value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, or "" when absent (Prometheus treats both alike).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Parses a whole exposition; `source` names the input in errors (a file or pod name).
pub fn parse(text: &str, source: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_line(line).map_err(|reason| Error::Parse {
            source_name: source.to_owned(),
            line: index + 1,
            reason,
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> std::result::Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or_else(|| "a sample needs a value".to_owned())?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| "a sample needs a value".to_owned())
        .and_then(parse_value)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("invalid timestamp {ts:?}"))?;
    }
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the value"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}` (the opening brace already consumed); returns what follows the `}`.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> std::result::Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s
            .find('=')
            .ok_or_else(|| "label without '=' or unclosed '{'".to_owned())?;
        let key = s[..eq].trim();
        if !valid_name(key) || key.contains(':') {
            return Err(format!("invalid label name {key:?}"));
        }
        s = s[eq + 1..].trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("label {key} value must be quoted"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {key}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => {
                        return Err(format!(
                            "bad escape {:?} in label {key}",
                            other.map(|(_, c)| c)
                        ));
                    }
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("duplicate label {key}"));
        }
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {key}"));
        }
    }
}

/// Parses a sample value or bucket bound (`1.5`, `+Inf`, `NaN`): the same floats the query API
/// answers with.
pub use selfheal_promql::parse_value;

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_apps_exposition() {
        let text = r#"# HELP http_requests_total HTTP requests answered.
# TYPE http_requests_total counter
http_requests_total{method="GET",route="/",status="200"} 42
http_requests_total{method="GET",route="/",status="500"} 3

# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{method="GET",route="/",le="0.0005"} 40
http_request_duration_seconds_bucket{method="GET",route="/",le="+Inf"} 45
http_request_duration_seconds_sum{method="GET",route="/"} 0.0123
selfheal_app_info{track="canary",version="0.1.0"} 1
process_start_time_seconds 1.7e9
"#;
        let samples = parse(text, "t").unwrap();
        assert_eq!(samples.len(), 7);
        assert_eq!(samples[1].label("status"), "500");
        assert_eq!(samples[1].value, 3.0);
        assert_eq!(samples[3].label("le"), "+Inf");
        assert_eq!(samples[5].label("track"), "canary");
        assert_eq!(samples[6].value, 1.7e9);
        assert!(samples[6].labels.is_empty());
    }

    #[test]
    fn special_values_timestamps_and_escapes() {
        let text =
            "a NaN\nb +Inf 1700000000000\nc -Inf\nd{x=\"q\\\"u\\\\o\\nte\", y = \"}{,\" ,} 1\n";
        let s = parse(text, "t").unwrap();
        assert!(s[0].value.is_nan());
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        assert_eq!(s[3].label("x"), "q\"u\\o\nte");
        assert_eq!(s[3].label("y"), "}{,");
        assert_eq!(s[3].label("absent"), "");
    }

    #[test]
    fn malformed_lines_name_the_source_and_line() {
        for (text, want) in [
            ("ok 1\nbad{a=\"x\" 1\n", "line 2"),
            ("m{a=x} 1", "must be quoted"),
            ("m{a=\"x\",a=\"y\"} 1", "duplicate label"),
            ("m 1 2 3", "unexpected"),
            ("m", "needs a value"),
            ("m{} abc", "invalid value"),
            ("9m 1", "invalid metric name"),
            ("m{a=\"x\\q\"} 1", "bad escape"),
            ("m 1 notatime", "invalid timestamp"),
        ] {
            let err = parse(text, "pod-a").unwrap_err().to_string();
            assert!(err.contains("pod-a"), "{err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
