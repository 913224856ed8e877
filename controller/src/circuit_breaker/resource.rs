//! The `CircuitBreaker` custom resource (`selfheal.io/v1alpha1`, namespaced, short name `cb`).
//!
//! One breaker guards one Deployment: it asks a PromQL error-ratio query every
//! `--prometheus-interval-secs` and runs the state machine of
//! [`crate::circuit_breaker::machine`]. Its status is the machine's memory, so a restarted or newly elected controller continues where the last
//! one stopped. As for HealingPolicy, the Rust types are the source of truth
//! (`selfheal-controller crdgen circuit-breaker`) and CEL rules refuse bad specs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::circuit_breaker::machine::{self as breaker, Memory, State};
use crate::healing_policy::duration::{DURATION_PATTERN, SpecError, parse_duration};
use crate::healing_policy::resource::generated_crd_yaml;

/// Transitions kept in status.
pub const TRANSITIONS_KEPT: usize = 10;

/// Scale a failing Deployment to zero, probe it with one replica later, restore it when healthy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[allow(clippy::duplicated_attributes)] // NB: the printcolumns repeat `type_`
#[kube(
    group = "selfheal.io",
    version = "v1alpha1",
    kind = "CircuitBreaker",
    plural = "circuitbreakers",
    singular = "circuitbreaker",
    shortname = "cb",
    category = "selfheal",
    namespaced,
    status = "CircuitBreakerStatus",
    doc = "A circuit breaker for one Deployment: open (scale to zero) on a high error ratio, half-open (one probe replica) after a backoff, closed (replicas restored) when the probe is healthy",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.targetRef.name",
        description = "the Deployment this breaker guards"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Closed, Open or HalfOpen"
    ),
    printcolumn(
        name = "Ratio",
        type_ = "string",
        json_path = ".status.lastRatio",
        description = "the last answer of the error-ratio query"
    ),
    printcolumn(
        name = "Opens",
        type_ = "integer",
        json_path = ".status.opens",
        description = "opens in the current backoff streak"
    ),
    printcolumn(name = "Since", type_ = "date", json_path = ".status.since")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.openFor) >= duration('10s')")
        .message("openFor must be at least 10s")
        .field_path(".openFor"),
    validation = Rule::new("duration(self.maxOpenFor) >= duration(self.openFor)")
        .message("maxOpenFor must not be shorter than openFor")
        .field_path(".maxOpenFor"),
    validation = Rule::new("duration(self.probeFor) >= duration('10s')")
        .message("probeFor must be at least 10s")
        .field_path(".probeFor")
)]
pub struct CircuitBreakerSpec {
    /// The Deployment (in the breaker's namespace) to open and close. A Deployment an HPA scales
    /// is refused: the two would fight over its replicas.
    pub target_ref: TargetRef,
    /// PromQL answering the target's error ratio (0 to 1); the largest value of the vector
    /// counts. Keep its range shorter than `openFor`, or the half-open probe still sees the
    /// errors from before the open.
    #[schemars(length(min = 1, max = 1024))]
    pub query: String,
    /// An answer over this ratio is bad (0 to 1).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f64,
    /// Consecutive bad answers that open the circuit (1 to 10).
    #[serde(default = "default_trip_after")]
    #[schemars(range(min = 1, max = 10), extend("format" = "int32"))]
    pub trip_after: u32,
    /// Open time after a first open (Go duration, at least 10s); it doubles on every re-open.
    #[serde(default = "default_open_for")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    pub open_for: String,
    /// Cap of the doubling open time, and how long after a close a new open still counts as a
    /// re-open (Go duration).
    #[serde(default = "default_max_open_for")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    pub max_open_for: String,
    /// Replicas the half-open probe runs (at most the replicas before the open).
    #[serde(default = "default_probe_replicas")]
    #[schemars(range(min = 1, max = 100), extend("format" = "int32"))]
    pub probe_replicas: i32,
    /// How long the probe must answer under the threshold before the circuit closes (Go
    /// duration, at least 10s).
    #[serde(default = "default_probe_for")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    pub probe_for: String,
    /// Run the state machine and report it, but never scale.
    #[serde(default)]
    pub dry_run: bool,
}

/// The guarded workload.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(
    validation = Rule::new("self.kind == 'Deployment'").message("targetRef.kind must be Deployment")
)]
pub struct TargetRef {
    /// `Deployment` (the only kind for now).
    pub kind: String,
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

fn default_trip_after() -> u32 {
    2
}
fn default_open_for() -> String {
    "1m".into()
}
fn default_max_open_for() -> String {
    "10m".into()
}
fn default_probe_replicas() -> i32 {
    1
}
fn default_probe_for() -> String {
    "1m".into()
}

/// The breaker's memory and what it saw, written by the controller's leader with server-side
/// apply.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Closed`, `Open` or `HalfOpen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When the current state began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// When the current state ends on time alone (Open: half-open; HalfOpen: the probe may end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check: Option<Time>,
    /// Replicas before the circuit opened, restored when it closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_replicas: Option<i32>,
    /// Replicas this breaker decided to set and has not yet confirmed set: written before the
    /// scale, cleared after it. A controller that finds it finishes the scale first, so a crash
    /// or a failed write between the two never leaves the target scaled with its memory lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_scale: Option<i32>,
    /// Opens in the current backoff streak.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))] // NB: the API server knows no uint32
    pub opens: u32,
    /// When the circuit last closed after an open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_closed: Option<Time>,
    /// Consecutive answers over the threshold while closed.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub bad_answers: u32,
    /// Answers under the threshold while half-open.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub probe_good_answers: u32,
    /// The last answer of the query (`no answer` when it returned nothing or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ratio: Option<String>,
    /// The most recent transitions, oldest first (at most 10).
    #[serde(default)]
    pub transitions: Vec<TransitionRecord>,
    /// `Ready`: the breaker is evaluated (False names why not: no Prometheus, no target, an HPA).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One transition, as kept in status.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransitionRecord {
    /// State left.
    pub from: String,
    /// State entered.
    pub to: String,
    /// `Tripped`, `OpenTimeElapsed`, `ProbeFailed`, `ProbeSucceeded` or `ManualOverride`.
    pub reason: String,
    /// What was seen and done.
    pub message: String,
    /// When.
    pub time: Time,
    /// True when nothing was scaled (dry-run).
    #[serde(default)]
    pub dry_run: bool,
}

impl CircuitBreakerSpec {
    /// The pure rule of [`crate::circuit_breaker::machine`].
    pub fn rule(&self) -> Result<breaker::Rule, SpecError> {
        Ok(breaker::Rule {
            threshold: self.threshold,
            trip_after: self.trip_after.max(1),
            open_for: parse_duration("spec.openFor", &self.open_for)?,
            max_open_for: parse_duration("spec.maxOpenFor", &self.max_open_for)?,
            probe_replicas: self.probe_replicas.max(1),
            probe_for: parse_duration("spec.probeFor", &self.probe_for)?,
        })
    }
}

impl CircuitBreakerStatus {
    /// The state machine's memory.
    pub fn memory(&self) -> Memory {
        Memory {
            state: self.state.as_deref().map_or(State::Closed, State::parse),
            since: self.since.as_ref().map(|t| t.0),
            previous_replicas: self.previous_replicas,
            opens: self.opens,
            last_closed: self.last_closed.as_ref().map(|t| t.0),
            bad_answers: self.bad_answers,
            probe_good: self.probe_good_answers,
        }
    }

    /// Take over `mem` (the transitions and conditions are left to the caller).
    pub fn remember(&mut self, mem: &Memory, rule: &breaker::Rule) {
        self.state = Some(mem.state.name().to_owned());
        self.since = mem.since.map(Time);
        self.next_check = breaker::deadline(mem, rule).map(Time);
        self.previous_replicas = mem.previous_replicas;
        self.opens = mem.opens;
        self.last_closed = mem.last_closed.map(Time);
        self.bad_answers = mem.bad_answers;
        self.probe_good_answers = mem.probe_good;
    }

    /// Append a transition, keeping the last [`TRANSITIONS_KEPT`].
    pub fn push(&mut self, record: TransitionRecord) {
        self.transitions.push(record);
        let extra = self.transitions.len().saturating_sub(TRANSITIONS_KEPT);
        self.transitions.drain(..extra);
    }
}

/// The CRD as YAML, exactly what `selfheal-controller crdgen circuit-breaker` prints.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    generated_crd_yaml::<CircuitBreaker>(
        "crdgen circuit-breaker",
        "controller/src/circuit_breaker/resource.rs",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use kube::CustomResourceExt;

    const COMMITTED: &str = include_str!("../../deploy/crd/selfheal.io_circuitbreakers.yaml");

    #[test]
    fn committed_crd_yaml_is_what_crdgen_generates() {
        let generated = crd_yaml().expect("crd serialises");
        assert!(
            generated == COMMITTED,
            "controller/deploy/crd/selfheal.io_circuitbreakers.yaml is stale; regenerate it with\n  \
             cargo run -p selfheal-controller -- crdgen circuit-breaker > controller/deploy/crd/selfheal.io_circuitbreakers.yaml"
        );
    }

    #[test]
    fn defaults_fill_a_minimal_spec_and_make_a_rule() {
        let spec: CircuitBreakerSpec = serde_saphyr::from_str(
            "targetRef: {kind: Deployment, name: web}\nquery: 'vector(0)'\nthreshold: 0.5\n",
        )
        .expect("parses");
        let rule = spec.rule().expect("rule");
        assert_eq!(rule.trip_after, 2);
        assert_eq!(rule.open_for, SignedDuration::from_mins(1));
        assert_eq!(rule.max_open_for, SignedDuration::from_mins(10));
        assert_eq!(rule.probe_replicas, 1);
        assert_eq!(rule.probe_for, SignedDuration::from_mins(1));
        assert!(!spec.dry_run);
        let bad = CircuitBreakerSpec {
            open_for: "soon".into(),
            ..spec
        };
        assert_eq!(bad.rule().map_err(|e| e.field), Err("spec.openFor"));
    }

    #[test]
    fn status_round_trips_the_memory_and_keeps_ten_transitions() {
        let spec: CircuitBreakerSpec = serde_saphyr::from_str(
            "targetRef: {kind: Deployment, name: web}\nquery: q\nthreshold: 0.5\nopenFor: 30s\n",
        )
        .expect("parses");
        let rule = spec.rule().expect("rule");
        let at = Timestamp::from_second(1_700_000_000).expect("valid");
        let mem = Memory {
            state: State::Open,
            since: Some(at),
            previous_replicas: Some(3),
            opens: 2,
            last_closed: None,
            bad_answers: 0,
            probe_good: 0,
        };
        let mut st = CircuitBreakerStatus::default();
        st.remember(&mem, &rule);
        assert_eq!(st.memory(), mem);
        assert_eq!(
            st.next_check,
            Some(Time(at + SignedDuration::from_secs(60))),
            "30 s doubled"
        );
        for i in 0..12 {
            st.push(TransitionRecord {
                from: "Closed".into(),
                to: "Open".into(),
                reason: "Tripped".into(),
                message: format!("#{i}"),
                time: Time(at),
                dry_run: false,
            });
        }
        assert_eq!(st.transitions.len(), TRANSITIONS_KEPT);
        assert_eq!(st.transitions[0].message, "#2");
    }

    #[test]
    fn crd_names_and_columns() {
        let crd = CircuitBreaker::crd();
        assert_eq!(crd.spec.names.kind, "CircuitBreaker");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["cb".to_owned()][..])
        );
        let json = serde_json::to_string(&crd).expect("json");
        assert!(json.contains("targetRef.kind must be Deployment"), "{json}");
        assert!(json.contains("maxOpenFor must not be shorter than openFor"));
    }

    #[test]
    fn state_names_in_status_round_trip_and_unknown_reads_closed() {
        for s in [State::Closed, State::Open, State::HalfOpen] {
            assert_eq!(State::parse(s.name()), s);
        }
        assert_eq!(State::parse("Bogus"), State::Closed);
    }
}
