//! What a demo run found: per-layer results with their marks (fault → detected → healed), the
//! JSON report, and the terminal table. Pure: built by the runner, rendered here.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::extract::secs_between;
use crate::stats::{SecondBucket, Summary};

/// The seven recovery layers, then the four ops scenarios (8–11, also named `leak`, `pool`,
/// `breaker`, `zombie`): number, name, the fault injected, what detects it, what heals it.
pub const LAYERS: [(u8, &str, &str, &str, &str); 11] = [
    (
        1,
        "liveness restart",
        "/health answers 503 (mode=unhealthy)",
        "liveness probe (kubelet)",
        "container restart",
    ),
    (
        2,
        "readiness removal",
        "/ready answers 503 (mode=unready)",
        "readiness probe (kubelet)",
        "EndpointSlice drops, then restores the pod",
    ),
    (
        3,
        "controller recycle",
        "container exits repeatedly (mode=exit)",
        "selfheal-controller (restarts)",
        "eviction + fresh pod",
    ),
    (
        4,
        "Helm auto-rollback",
        "bad release (faultProfile=unready)",
        "auto-rollback.sh verification",
        "helm rollback to last good revision",
    ),
    (
        5,
        "HPA scale-out",
        "CPU burn on every pod (mode=cpu)",
        "HPA (metrics-server CPU)",
        "more Ready replicas",
    ),
    (
        6,
        "PDB-guarded drain",
        "evict every pod (Eviction API, like a drain)",
        "PodDisruptionBudget (429)",
        "pods replaced one budget at a time",
    ),
    (
        7,
        "canary rollback",
        "bad canary (errors)",
        "canary analysis",
        "canary removed, stable serves",
    ),
    (
        8,
        "memory-leak recycle",
        "memory grows 1 MiB/s towards the limit (mode=leak)",
        "selfheal-controller (memoryTrend policy)",
        "eviction before the OOM kill + fresh pod",
    ),
    (
        9,
        "pool-exhaustion recycle",
        "every pool connection held (mode=pool-exhaust)",
        "selfheal-controller (pool saturation + failing readiness)",
        "eviction + fresh pod; the healthy pod is spared",
    ),
    (
        10,
        "circuit breaker",
        "a dependency answers only 500s",
        "CircuitBreaker (error ratio from Prometheus)",
        "open (scaled to 0), half-open probe, closed with replicas restored",
    ),
    (
        11,
        "zombie reap",
        "a pod Terminating on a node that is gone",
        "selfheal-controller zombie reaper",
        "force-deleted after its delay",
    ),
];

/// The layers a run does without `--layer`: the seven recovery layers. The ops scenarios need
/// their own settings (the controller's Prometheus, a short zombie delay), so they are asked
/// for by name.
pub const DEFAULT_LAYERS: std::ops::RangeInclusive<u8> = 1..=7;

/// Names of the ops scenarios, as `--layer` accepts them.
pub const SCENARIOS: [(&str, u8); 4] = [("leak", 8), ("pool", 9), ("breaker", 10), ("zombie", 11)];

/// `--layer` values: a number 1–11, a scenario name, or `ops` for all four scenarios.
pub fn parse_layers(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if text == "ops" {
        return Ok(SCENARIOS.iter().map(|s| s.1).collect());
    }
    if let Some((_, n)) = SCENARIOS.iter().find(|(name, _)| *name == text) {
        return Ok(vec![*n]);
    }
    match text.parse::<u8>() {
        Ok(n) if LAYERS.iter().any(|l| l.0 == n) => Ok(vec![n]),
        _ => Err(format!(
            "`{text}` is not a layer: use 1-{}, or leak, pool, breaker, zombie, ops",
            LAYERS.len()
        )),
    }
}

/// Outcome of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fault injected, detected and healed within the deadline.
    Healed,
    /// Something did not happen within the deadline (or an API call failed).
    Failed,
    /// The layer's parts are not in this tree or cluster yet; nothing was injected.
    NotAvailable,
}

/// Kind of a point on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    /// The fault was injected.
    Fault,
    /// Kubernetes (or the platform) noticed.
    Detected,
    /// Service restored.
    Healed,
    /// Anything else worth a line (a refusal, an intermediate step).
    Info,
}

/// One point of a layer's story, timestamped by the API where it can be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// When it happened.
    pub at: Timestamp,
    /// What kind of point.
    pub kind: MarkKind,
    /// What happened.
    pub text: String,
    /// Where the time comes from (`pod condition Ready`, `Event Killing`, `runner clock`, …).
    pub source: String,
}

/// One layer's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// 1–11.
    pub layer: u8,
    /// Short name.
    pub name: String,
    /// The fault injected.
    pub fault: String,
    /// What detected it.
    pub detected_by: String,
    /// What healed it.
    pub healed_by: String,
    /// Outcome.
    pub status: Status,
    /// `status == healed`, for `jq`.
    pub healed: bool,
    /// Why it failed or is not available.
    pub reason: Option<String>,
    /// When the layer began and ended (runner clock).
    pub started_at: Timestamp,
    /// End of the layer.
    pub finished_at: Timestamp,
    /// Fault → detected, seconds.
    pub time_to_detect_secs: Option<f64>,
    /// Fault → healed, seconds.
    pub time_to_heal_secs: Option<f64>,
    /// The timeline points.
    pub marks: Vec<Mark>,
    /// Layer-specific proof (restart counts, endpoint states, revisions, refusals, …).
    pub evidence: BTreeMap<String, serde_json::Value>,
    /// Load during the layer.
    pub load: Option<Summary>,
    /// The lower bound the settings allow, and how it is computed.
    pub theoretical_min: Option<Theory>,
}

/// A recovery time the settings make impossible to beat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Theory {
    /// Seconds from fault to healed at best.
    pub heal_secs: f64,
    /// The formula with the values used.
    pub basis: String,
}

impl LayerReport {
    /// A report for layer `n` with its catalogue texts, no marks yet.
    pub fn new(n: u8, started_at: Timestamp) -> Self {
        let (_, name, fault, detected_by, healed_by) = LAYERS
            .iter()
            .copied()
            .find(|l| l.0 == n)
            .unwrap_or((n, "unknown", "", "", ""));
        LayerReport {
            layer: n,
            name: name.to_owned(),
            fault: fault.to_owned(),
            detected_by: detected_by.to_owned(),
            healed_by: healed_by.to_owned(),
            status: Status::Failed,
            healed: false,
            reason: None,
            started_at,
            finished_at: started_at,
            time_to_detect_secs: None,
            time_to_heal_secs: None,
            marks: Vec::new(),
            evidence: BTreeMap::new(),
            load: None,
            theoretical_min: None,
        }
    }

    /// Add a point.
    pub fn mark(&mut self, at: Timestamp, kind: MarkKind, text: impl Into<String>, source: &str) {
        self.marks.push(Mark {
            at,
            kind,
            text: text.into(),
            source: source.to_owned(),
        });
    }

    /// Record a piece of evidence.
    pub fn evidence(&mut self, key: &str, value: impl Serialize) {
        self.evidence.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        );
    }

    fn first(&self, kind: MarkKind) -> Option<Timestamp> {
        self.marks
            .iter()
            .filter(|m| m.kind == kind)
            .map(|m| m.at)
            .min()
    }

    /// Close the layer: healed only when it has fault, detected and healed marks and no
    /// failure reason; times are computed from the marks.
    pub fn finish(&mut self, finished_at: Timestamp) {
        self.finished_at = finished_at;
        self.marks.sort_by_key(|m| m.at);
        let fault = self.first(MarkKind::Fault);
        let detected = self.first(MarkKind::Detected);
        let healed = self.first(MarkKind::Healed);
        self.time_to_detect_secs = fault.zip(detected).map(|(f, d)| secs_between(f, d));
        self.time_to_heal_secs = fault.zip(healed).map(|(f, h)| secs_between(f, h));
        if self.status == Status::NotAvailable {
            self.healed = false;
            return;
        }
        let complete = fault.is_some() && detected.is_some() && healed.is_some();
        if complete && self.reason.is_none() {
            self.status = Status::Healed;
        } else {
            self.status = Status::Failed;
            if self.reason.is_none() {
                self.reason = Some(
                    match (fault, detected, healed) {
                        (None, _, _) => "the fault was never injected",
                        (_, None, _) => "the fault was never detected",
                        _ => "it never healed",
                    }
                    .to_owned(),
                );
            }
        }
        self.healed = self.status == Status::Healed;
    }
}

/// Ready replicas of the Deployment at a point in time (from the Deployment watch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplicaPoint {
    /// When the watch saw it.
    pub at: Timestamp,
    /// `status.readyReplicas`.
    pub ready: i32,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Namespace of the demo.
    pub namespace: String,
    /// Helm release.
    pub release: String,
    /// Where the load went.
    pub load_target: String,
    /// Schedulable nodes seen.
    pub schedulable_nodes: usize,
    /// Start and end (runner clock).
    pub started_at: Timestamp,
    /// End of the run.
    pub finished_at: Timestamp,
    /// Every layer asked for, in order.
    pub layers: Vec<LayerReport>,
    /// Ready replicas over time.
    pub replicas: Vec<ReplicaPoint>,
    /// Wall-clock start of the load series.
    pub load_started_at: Timestamp,
    /// Served/failed requests per second over the whole run.
    pub load_series: Vec<SecondBucket>,
    /// Every layer that was available healed.
    pub ok: bool,
}

impl RunReport {
    /// `ok` = no layer failed and at least one ran.
    pub fn compute_ok(layers: &[LayerReport]) -> bool {
        layers.iter().any(|l| l.status == Status::Healed)
            && layers.iter().all(|l| l.status != Status::Failed)
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"))
}

/// The terminal table: one row per layer.
pub fn table(layers: &[LayerReport]) -> String {
    let header = [
        "layer",
        "fault",
        "detected by",
        "healed by",
        "detect",
        "heal",
        "failed/total",
        "result",
    ];
    let rows: Vec<[String; 8]> = layers
        .iter()
        .map(|l| {
            [
                format!("{} {}", l.layer, l.name),
                l.fault.clone(),
                l.detected_by.clone(),
                l.healed_by.clone(),
                secs(l.time_to_detect_secs),
                secs(l.time_to_heal_secs),
                l.load
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |s| format!("{}/{}", s.failed, s.total)),
                match l.status {
                    Status::Healed => "healed".to_owned(),
                    Status::Failed => "FAILED".to_owned(),
                    Status::NotAvailable => "not available yet".to_owned(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(&header.map(str::to_owned));
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    for l in layers {
        if let Some(reason) = &l.reason {
            out.push_str(&format!("layer {}: {reason}\n", l.layer));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_parse_as_numbers_names_or_ops() {
        assert_eq!(parse_layers("3"), Ok(vec![3]));
        assert_eq!(parse_layers(" zombie "), Ok(vec![11]));
        assert_eq!(parse_layers("ops"), Ok(vec![8, 9, 10, 11]));
        for bad in ["0", "12", "seven", ""] {
            let e = parse_layers(bad).expect_err(bad);
            assert!(e.contains("leak, pool, breaker, zombie"), "{e}");
        }
        // Every scenario name is a catalogued layer; the default run is the seven.
        for (name, n) in SCENARIOS {
            assert!(LAYERS.iter().any(|l| l.0 == n), "{name}");
        }
        assert_eq!(DEFAULT_LAYERS.count(), 7);
    }
    use crate::stats::summarize;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp literal")
    }

    #[test]
    fn a_layer_with_all_three_marks_is_healed_with_times() {
        let mut l = LayerReport::new(1, t("2026-01-01T10:00:00Z"));
        l.mark(t("2026-01-01T10:00:16Z"), MarkKind::Healed, "ready", "pod");
        l.mark(
            t("2026-01-01T10:00:01Z"),
            MarkKind::Fault,
            "crash",
            "runner",
        );
        l.mark(
            t("2026-01-01T10:00:11Z"),
            MarkKind::Detected,
            "killing",
            "Event",
        );
        l.finish(t("2026-01-01T10:00:20Z"));
        assert_eq!(l.status, Status::Healed);
        assert!(l.healed);
        assert_eq!(l.time_to_detect_secs, Some(10.0));
        assert_eq!(l.time_to_heal_secs, Some(15.0));
        assert_eq!(l.marks[0].kind, MarkKind::Fault, "sorted by time");
        assert_eq!(l.name, "liveness restart");
    }

    #[test]
    fn a_layer_without_a_heal_mark_fails_and_says_why() {
        let mut l = LayerReport::new(2, t("2026-01-01T10:00:00Z"));
        l.mark(t("2026-01-01T10:00:01Z"), MarkKind::Fault, "x", "runner");
        l.mark(t("2026-01-01T10:00:05Z"), MarkKind::Detected, "x", "slice");
        l.finish(t("2026-01-01T10:03:00Z"));
        assert_eq!(l.status, Status::Failed);
        assert!(!l.healed);
        assert_eq!(l.reason.as_deref(), Some("it never healed"));
        assert_eq!(l.time_to_heal_secs, None);
    }

    #[test]
    fn a_failure_reason_wins_over_complete_marks() {
        let mut l = LayerReport::new(3, t("2026-01-01T10:00:00Z"));
        for k in [MarkKind::Fault, MarkKind::Detected, MarkKind::Healed] {
            l.mark(t("2026-01-01T10:00:01Z"), k, "x", "y");
        }
        l.reason = Some("deadline of 300 s passed".into());
        l.finish(t("2026-01-01T10:05:00Z"));
        assert_eq!(l.status, Status::Failed);
    }

    #[test]
    fn not_available_is_neither_healed_nor_failed() {
        let mut l = LayerReport::new(7, t("2026-01-01T10:00:00Z"));
        l.status = Status::NotAvailable;
        l.reason = Some("canary/deploy.sh is not in this tree yet".into());
        l.finish(t("2026-01-01T10:00:00Z"));
        assert_eq!(l.status, Status::NotAvailable);
        assert!(!l.healed);
        assert!(!RunReport::compute_ok(std::slice::from_ref(&l)));
        let mut ok = LayerReport::new(1, t("2026-01-01T10:00:00Z"));
        ok.status = Status::Healed;
        assert!(RunReport::compute_ok(&[ok.clone(), l]));
        let mut failed = LayerReport::new(2, t("2026-01-01T10:00:00Z"));
        failed.status = Status::Failed;
        assert!(!RunReport::compute_ok(&[ok, failed]));
    }

    #[test]
    fn the_table_has_a_row_per_layer_with_times_and_failures() {
        let mut l = LayerReport::new(1, t("2026-01-01T10:00:00Z"));
        l.mark(t("2026-01-01T10:00:00Z"), MarkKind::Fault, "x", "r");
        l.mark(t("2026-01-01T10:00:12.5Z"), MarkKind::Detected, "x", "r");
        l.mark(t("2026-01-01T10:00:20Z"), MarkKind::Healed, "x", "r");
        l.load = Some(summarize(&[], 1.0));
        l.finish(t("2026-01-01T10:00:30Z"));
        let mut n = LayerReport::new(7, t("2026-01-01T10:00:30Z"));
        n.status = Status::NotAvailable;
        n.reason = Some("canary scripts missing".into());
        n.finish(t("2026-01-01T10:00:30Z"));
        let text = table(&[l, n]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("layer"), "{text}");
        assert!(lines[2].contains("1 liveness restart"), "{text}");
        assert!(
            lines[2].contains("12.5 s") && lines[2].contains("20.0 s"),
            "{text}"
        );
        assert!(
            lines[2].contains("0/0") && lines[2].contains("healed"),
            "{text}"
        );
        assert!(lines[3].contains("not available yet"), "{text}");
        assert!(text.contains("layer 7: canary scripts missing"), "{text}");
    }
}
