//! `POST /crash?mode=...`: deliberate failures, one per recovery layer; `GET /crash`: what is active.
//!
//! Parameters come from the query string and/or a JSON object body (body wins):
//! `mode` (default `exit`), `seconds`, `percent`, `ms`, `threads`, `mib_per_sec`, `cap_mib`,
//! `held`.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::faults::{
    CRASH_EXIT_CODE, FaultKind, Injection, MAX_CPU_THREADS, MAX_LATENCY_MS, MAX_LEAK_CAP_MIB,
    MAX_LEAK_MIB_PER_SEC, MAX_SECONDS,
};
use crate::state::AppState;
use crate::{Error, Result};

const PARAMS: [&str; 8] = [
    "mode",
    "seconds",
    "percent",
    "ms",
    "threads",
    "mib_per_sec",
    "cap_mib",
    "held",
];
const MODES: &str = "exit, unhealthy, unready, cpu, errors, latency, leak, pool-exhaust, reset";

/// Default duration of the `cpu` fault, in seconds.
pub const DEFAULT_CPU_SECONDS: u64 = 60;
/// Default error rate of the `errors` fault, in percent.
pub const DEFAULT_ERROR_PERCENT: u8 = 50;
/// Default added latency of the `latency` fault, in ms.
pub const DEFAULT_LATENCY_MS: u64 = 500;
/// Default growth rate of the `leak` fault, in MiB per second.
pub const DEFAULT_LEAK_MIB_PER_SEC: u32 = 1;
/// Default cap of the `leak` fault, in MiB.
pub const DEFAULT_LEAK_CAP_MIB: u32 = 256;

/// `GET /crash`: whether injection is enabled and which faults are active.
pub async fn status(State(state): State<AppState>) -> Response {
    Json(json!({
        "chaos_enabled": state.chaos_enabled(),
        "token_required": state.chaos_token().is_some(),
        "faults": state.faults().snapshot(Instant::now()),
    }))
    .into_response()
}

/// `POST /crash`: validates, applies and counts one injection.
pub async fn inject(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    if !state.chaos_enabled() {
        return Err(Error::ChaosDisabled);
    }
    if let Some(token) = state.chaos_token() {
        check_bearer(&headers, token)?;
    }
    let Query(query) = query.map_err(|e| invalid("query", e.body_text()))?;
    let mut params: BTreeMap<String, String> = query.into_iter().collect();
    merge_json_body(&mut params, &body)?;
    let injection = parse_injection(&params, state.pool().size())?;
    let kind = injection.kind();

    let now = Instant::now();
    state.metrics().fault_injected(kind);
    tracing::warn!(mode = kind.as_str(), ?injection, "fault injected");

    if injection == Injection::Exit {
        state.request_exit(CRASH_EXIT_CODE);
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "mode": "exit",
                "exit_code": CRASH_EXIT_CODE,
                "message": "exiting: the container restarts, restartCount grows",
            })),
        )
            .into_response());
    }
    state.faults().apply(injection, now);
    Ok((
        StatusCode::OK,
        Json(json!({ "mode": kind.as_str(), "faults": state.faults().snapshot(now) })),
    )
        .into_response())
}

fn check_bearer(headers: &HeaderMap, token: &str) -> Result<()> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(Error::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidParam {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Adds the fields of a JSON object body to `params` (empty body = nothing to add).
fn merge_json_body(params: &mut BTreeMap<String, String>, body: &[u8]) -> Result<()> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(invalid(
            "body",
            "expected a JSON object such as {\"mode\":\"cpu\",\"seconds\":30}",
        ));
    };
    for (key, v) in map {
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(invalid(
                    &key,
                    format!("expected a string or number, got {other}"),
                ));
            }
        };
        params.insert(key, text);
    }
    Ok(())
}

/// Turns raw parameters into a validated [`Injection`]; every error names its field.
/// `pool_size` bounds the `held` connections of `pool-exhaust` (and is its default).
pub fn parse_injection(params: &BTreeMap<String, String>, pool_size: u32) -> Result<Injection> {
    if let Some(unknown) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(invalid(
            unknown,
            format!("unknown parameter; expected one of {}", PARAMS.join(", ")),
        ));
    }
    let mode = match params.get("mode").map(String::as_str) {
        None | Some("") => FaultKind::Exit,
        Some(m) => FaultKind::parse(m).ok_or_else(|| {
            invalid(
                "mode",
                format!("unknown mode `{m}`; expected one of {MODES}"),
            )
        })?,
    };
    let seconds = number(params, "seconds", 1, MAX_SECONDS)?;
    Ok(match mode {
        FaultKind::Exit => Injection::Exit,
        FaultKind::Unhealthy => Injection::Unhealthy,
        FaultKind::Reset => Injection::Reset,
        FaultKind::Unready => Injection::Unready { seconds },
        FaultKind::Cpu => Injection::Cpu {
            seconds: seconds.unwrap_or(DEFAULT_CPU_SECONDS),
            threads: number(params, "threads", 1, u64::from(MAX_CPU_THREADS))?
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(1),
        },
        FaultKind::Errors => Injection::Errors {
            percent: number(params, "percent", 0, 100)?
                .and_then(|p| u8::try_from(p).ok())
                .unwrap_or(DEFAULT_ERROR_PERCENT),
            seconds,
        },
        FaultKind::Latency => Injection::Latency {
            ms: number(params, "ms", 1, MAX_LATENCY_MS)?.unwrap_or(DEFAULT_LATENCY_MS),
            seconds,
        },
        FaultKind::Leak => Injection::Leak {
            mib_per_sec: number_u32(params, "mib_per_sec", 1, MAX_LEAK_MIB_PER_SEC)?
                .unwrap_or(DEFAULT_LEAK_MIB_PER_SEC),
            cap_mib: number_u32(params, "cap_mib", 1, MAX_LEAK_CAP_MIB)?
                .unwrap_or(DEFAULT_LEAK_CAP_MIB),
            seconds,
        },
        FaultKind::PoolExhaust => Injection::PoolExhaust {
            held: number_u32(params, "held", 1, pool_size)
                .map_err(|e| match e {
                    Error::InvalidParam { field, reason } => Error::InvalidParam {
                        reason: format!("{reason} (the pool has {pool_size} connections)"),
                        field,
                    },
                    other => other,
                })?
                .unwrap_or(pool_size),
            seconds,
        },
    })
}

/// [`number`] for a `u32` field; the bounds keep the conversion lossless.
fn number_u32(
    params: &BTreeMap<String, String>,
    field: &str,
    min: u32,
    max: u32,
) -> Result<Option<u32>> {
    number(params, field, u64::from(min), u64::from(max))?
        .map(|n| u32::try_from(n).map_err(|_| invalid(field, format!("{n} does not fit in u32"))))
        .transpose()
}

fn number(
    params: &BTreeMap<String, String>,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>> {
    let Some(raw) = params.get(field) else {
        return Ok(None);
    };
    let n: u64 = raw
        .trim()
        .parse()
        .map_err(|_| invalid(field, format!("`{raw}` is not a whole number")))?;
    if !(min..=max).contains(&n) {
        return Err(invalid(field, format!("{n} is out of range {min}..={max}")));
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Parses against a pool of 10 connections.
    fn parse(p: &BTreeMap<String, String>) -> Result<Injection> {
        parse_injection(p, 10)
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::InvalidParam { field, .. } => field,
            other => panic!("expected InvalidParam, got {other:?}"),
        }
    }

    #[test]
    fn no_mode_means_exit() {
        assert_eq!(parse(&params(&[])).unwrap(), Injection::Exit);
    }

    #[test]
    fn modes_take_their_parameters_and_defaults() {
        let cases = [
            (
                params(&[("mode", "unready"), ("seconds", "30")]),
                Injection::Unready { seconds: Some(30) },
            ),
            (
                params(&[("mode", "unready")]),
                Injection::Unready { seconds: None },
            ),
            (
                params(&[("mode", "cpu"), ("seconds", "5"), ("threads", "2")]),
                Injection::Cpu {
                    seconds: 5,
                    threads: 2,
                },
            ),
            (
                params(&[("mode", "cpu")]),
                Injection::Cpu {
                    seconds: DEFAULT_CPU_SECONDS,
                    threads: 1,
                },
            ),
            (
                params(&[("mode", "errors"), ("percent", "25")]),
                Injection::Errors {
                    percent: 25,
                    seconds: None,
                },
            ),
            (
                params(&[("mode", "latency"), ("ms", "300"), ("seconds", "9")]),
                Injection::Latency {
                    ms: 300,
                    seconds: Some(9),
                },
            ),
            (
                params(&[("mode", "leak"), ("mib_per_sec", "2"), ("cap_mib", "200")]),
                Injection::Leak {
                    mib_per_sec: 2,
                    cap_mib: 200,
                    seconds: None,
                },
            ),
            (
                params(&[
                    ("mode", "leak"),
                    ("mib_per_sec", "64"),
                    ("cap_mib", "4096"),
                    ("seconds", "600"),
                ]),
                Injection::Leak {
                    mib_per_sec: 64,
                    cap_mib: 4096,
                    seconds: Some(600),
                },
            ),
            (
                params(&[("mode", "leak")]),
                Injection::Leak {
                    mib_per_sec: DEFAULT_LEAK_MIB_PER_SEC,
                    cap_mib: DEFAULT_LEAK_CAP_MIB,
                    seconds: None,
                },
            ),
            (
                params(&[("mode", "pool-exhaust")]),
                Injection::PoolExhaust {
                    held: 10,
                    seconds: None,
                },
            ),
            (
                params(&[("mode", "pool-exhaust"), ("held", "1"), ("seconds", "90")]),
                Injection::PoolExhaust {
                    held: 1,
                    seconds: Some(90),
                },
            ),
            (
                params(&[("mode", "pool-exhaust"), ("held", " 10 ")]),
                Injection::PoolExhaust {
                    held: 10,
                    seconds: None,
                },
            ),
            (params(&[("mode", "unhealthy")]), Injection::Unhealthy),
            (params(&[("mode", "reset")]), Injection::Reset),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (params(&[("mode", "explode")]), "mode"),
            (params(&[("mode", "errors"), ("percent", "101")]), "percent"),
            (params(&[("mode", "errors"), ("percent", "ten")]), "percent"),
            (params(&[("mode", "cpu"), ("threads", "0")]), "threads"),
            (params(&[("mode", "unready"), ("seconds", "-1")]), "seconds"),
            (params(&[("mode", "latency"), ("ms", "999999999")]), "ms"),
            (params(&[("mode", "latency"), ("colour", "red")]), "colour"),
            (
                params(&[("mode", "leak"), ("mib_per_sec", "0")]),
                "mib_per_sec",
            ),
            (
                params(&[("mode", "leak"), ("mib_per_sec", "65")]),
                "mib_per_sec",
            ),
            (
                params(&[("mode", "leak"), ("mib_per_sec", "1.5")]),
                "mib_per_sec",
            ),
            (params(&[("mode", "leak"), ("cap_mib", "0")]), "cap_mib"),
            (params(&[("mode", "leak"), ("cap_mib", "4097")]), "cap_mib"),
            (
                params(&[("mode", "leak"), ("cap_mib", "99999999999")]),
                "cap_mib",
            ),
            (params(&[("mode", "leak"), ("seconds", "0")]), "seconds"),
            (params(&[("mode", "pool-exhaust"), ("held", "0")]), "held"),
            (params(&[("mode", "pool-exhaust"), ("held", "11")]), "held"),
            (params(&[("mode", "pool-exhaust"), ("held", "all")]), "held"),
            (params(&[("mode", "pool-exhaust"), ("held", "-3")]), "held"),
            (
                params(&[("mode", "pool-exhaust"), ("seconds", "0")]),
                "seconds",
            ),
            (params(&[("mode", "pool_exhaust")]), "mode"),
        ];
        for (input, field) in cases {
            assert_eq!(field_of(parse(&input).unwrap_err()), field, "{input:?}");
        }
    }

    #[test]
    fn held_is_bounded_by_the_actual_pool_size() {
        let p = params(&[("mode", "pool-exhaust"), ("held", "3")]);
        assert_eq!(
            parse_injection(&p, 3).unwrap(),
            Injection::PoolExhaust {
                held: 3,
                seconds: None
            }
        );
        match parse_injection(&p, 2).unwrap_err() {
            Error::InvalidParam { field, reason } => {
                assert_eq!(field, "held");
                assert!(reason.contains("1..=2"), "{reason}");
                assert!(reason.contains("the pool has 2 connections"), "{reason}");
            }
            other => panic!("expected InvalidParam, got {other:?}"),
        }
        let all = params(&[("mode", "pool-exhaust")]);
        assert_eq!(
            parse_injection(&all, 1000).unwrap(),
            Injection::PoolExhaust {
                held: 1000,
                seconds: None
            }
        );
    }

    #[test]
    fn modes_list_names_every_mode() {
        for k in FaultKind::ALL {
            assert!(
                MODES.contains(k.as_str()),
                "{} missing from MODES",
                k.as_str()
            );
        }
    }

    #[test]
    fn leak_defaults_match_the_start_up_profile_defaults() {
        use clap::Parser as _;
        let cfg = crate::config::Cli::try_parse_from(["selfheal-app"])
            .unwrap()
            .config;
        assert_eq!(DEFAULT_LEAK_MIB_PER_SEC, cfg.fault_leak_mib_per_sec);
        assert_eq!(DEFAULT_LEAK_CAP_MIB, cfg.fault_leak_cap_mib);
    }

    #[test]
    fn json_body_fields_override_query() {
        let mut p = params(&[("mode", "cpu")]);
        merge_json_body(&mut p, br#"{"mode":"errors","percent":10}"#).unwrap();
        assert_eq!(
            parse(&p).unwrap(),
            Injection::Errors {
                percent: 10,
                seconds: None
            }
        );
    }

    #[test]
    fn non_object_body_is_rejected() {
        let mut p = params(&[]);
        assert_eq!(
            field_of(merge_json_body(&mut p, b"[1,2]").unwrap_err()),
            "body"
        );
        assert_eq!(
            field_of(merge_json_body(&mut p, br#"{"seconds":true}"#).unwrap_err()),
            "seconds"
        );
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(check_bearer(&h, "s3cret").is_err());
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(check_bearer(&h, "s3cret").is_err());
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(check_bearer(&h, "s3cret").is_ok());
    }
}
