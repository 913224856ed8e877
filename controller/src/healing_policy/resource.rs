//! The `HealingPolicy` custom resource (`selfheal.io/v1alpha1`, namespaced, short name `hp`).
//!
//! The Rust types are the source of truth: `selfheal-controller crdgen` prints the CRD
//! (`deploy/crd/selfheal.io_healingpolicies.yaml`), and a unit test fails when that file is stale.
//! Bad policies are refused by the API server itself through CEL rules
//! (`x-kubernetes-validations`), so no admission webhook or certificate is needed.
//!
//! [`HealingPolicySpec::to_policy`] turns a policy into the same [`Policy`] the controller's
//! flags produce, so one pure decision function serves both.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::{DURATION_PATTERN, SpecError, parse_duration};
use super::triggers::{MemoryTrendTrigger, PoolExhaustionTrigger, Triggers};
use crate::policy::{Action, Policy};

/// Field manager of the controller's server-side-apply status patches.
pub const FIELD_MANAGER: &str = "selfheal-controller";

/// Declarative healing rules for the pods a selector picks in the policy's namespace.
///
/// The first policy (by name) whose selector matches a pod decides for it; pods no policy matches
/// are handled by the controller's flags (the default policy).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
// NB: every printcolumn repeats `type_ = "string"`; that is six columns, not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "selfheal.io",
    version = "v1alpha1",
    kind = "HealingPolicy",
    plural = "healingpolicies",
    singular = "healingpolicy",
    shortname = "hp",
    category = "selfheal",
    namespaced,
    status = "HealingPolicyStatus",
    doc = "Declarative healing rules: which pods, what counts as unhealthy, what to do, and how carefully",
    printcolumn(
        name = "Selector",
        type_ = "string",
        json_path = ".status.selector",
        description = "pods this policy selects"
    ),
    printcolumn(
        name = "Action",
        type_ = "string",
        json_path = ".spec.action.type",
        description = "what the controller does to an unhealthy pod"
    ),
    printcolumn(
        name = "Dry-Run",
        type_ = "boolean",
        json_path = ".spec.dryRun",
        description = "decide and report, change nothing"
    ),
    printcolumn(
        name = "Matched",
        type_ = "integer",
        json_path = ".status.matchedPods",
        description = "pods this policy currently governs"
    ),
    printcolumn(
        name = "Last-Action",
        type_ = "string",
        json_path = ".status.lastAction.summary",
        description = "the last action taken (or that would have been, in dry-run)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0) || (has(self.selector.matchExpressions) && size(self.selector.matchExpressions) > 0)")
        .message("selector must not be empty: set matchLabels or matchExpressions (an empty selector would select every pod in the namespace)")
        .field_path(".selector"),
    validation = Rule::new("!has(self.cooldown) || duration(self.cooldown) >= duration('10s')")
        .message("cooldown must be at least 10s")
        .field_path(".cooldown"),
    validation = Rule::new("!has(self.maxRetries) || (self.maxRetries >= 1 && self.maxRetries <= 10)")
        .message("maxRetries must be between 1 and 10")
        .field_path(".maxRetries"),
    validation = Rule::new("!has(self.retryWindow) || !has(self.cooldown) || duration(self.retryWindow) >= duration(self.cooldown)")
        .message("retryWindow must not be shorter than cooldown")
        .field_path(".retryWindow"),
    validation = Rule::new("self.action.type != 'scaleTo' || has(self.action.replicas)")
        .message("action scaleTo requires action.replicas")
        .field_path(".action"),
    validation = Rule::new("!has(self.action.replicas) || self.action.type == 'scaleTo'")
        .message("action.replicas is only allowed with action scaleTo")
        .field_path(".action.replicas"),
    validation = Rule::new("self.action.type != 'scaleTo' || !has(self.action.replicas) || self.action.replicas > 0 || (has(self.action.allowScaleToZero) && self.action.allowScaleToZero)")
        .message("scaleTo 0 stops the workload: set action.allowScaleToZero: true if that is what you mean")
        .field_path(".action.replicas"),
    validation = Rule::new("!has(self.confidenceThreshold) || [has(self.triggers.restartCount), has(self.triggers.crashLoopBackOff) && self.triggers.crashLoopBackOff, has(self.triggers.imagePullFailure), has(self.triggers.oomKilled) && self.triggers.oomKilled, has(self.triggers.notReadyFor), has(self.triggers.memoryTrend), has(self.triggers.errorRate), has(self.triggers.poolExhaustion)].filter(t, t).size() >= 2")
        .message("confidenceThreshold needs at least two triggers (it is the share of triggers that must fire)")
        .field_path(".confidenceThreshold")
)]
pub struct HealingPolicySpec {
    /// Pods of the policy's namespace this policy governs. Must not be empty.
    pub selector: LabelSelector,

    /// What counts as unhealthy. Any enabled trigger firing is enough, unless
    /// `confidenceThreshold` asks for a share of them.
    pub triggers: Triggers,

    /// What to do with an unhealthy pod.
    pub action: HealingAction,

    /// Minimum time between two actions on the same workload (Go duration, at least 10s).
    #[serde(default = "default_cooldown")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    pub cooldown: String,

    /// Actions on one workload within `retryWindow` before the controller gives up on it and
    /// reports `GivingUp` (1 to 10).
    #[serde(default = "default_max_retries")]
    #[schemars(extend("format" = "int32"))] // NB: the API server knows no uint32
    pub max_retries: u32,

    /// Window in which actions count towards `maxRetries` (Go duration).
    #[serde(default = "default_retry_window")]
    #[schemars(pattern(DURATION_PATTERN), length(max = 32))]
    pub retry_window: String,

    /// Act only while at least this many *other* pods of the same owner are Ready (0 = no check).
    #[serde(default)]
    #[schemars(extend("format" = "int32"))] // NB: the API server knows no uint32
    pub min_healthy_replicas: u32,

    /// Decide, record Events and status, but change nothing.
    #[serde(default)]
    pub dry_run: bool,

    /// Share of the enabled triggers (0 to 1) that must fire together before acting; needs at
    /// least two triggers. Unset = any one trigger is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence_threshold: Option<f64>,
}

fn default_cooldown() -> String {
    "5m".into()
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_window() -> String {
    "1h".into()
}

/// What the controller does to an unhealthy pod.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealingAction {
    /// `evict` the pod (Eviction API, PDBs honoured), `rolloutRestart` its Deployment, `scaleTo`
    /// set its Deployment's replicas, or `none` to observe only.
    #[serde(rename = "type")]
    pub type_: ActionType,
    /// Replicas for `scaleTo` (required there, refused elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// `scaleTo` with `replicas: 0` stops the workload; it is refused unless this says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_scale_to_zero: bool,
}

impl HealingAction {
    /// The replicas of a `scaleTo`, checked again here: a spec that skipped the CRD's CEL rules
    /// (an older CRD) must not stop a workload by accident either.
    fn scale_to(&self) -> Result<i32, SpecError> {
        let field = "spec.action.replicas";
        match self.replicas {
            None => Err(SpecError {
                field,
                message: "required with scaleTo".into(),
            }),
            Some(0) if !self.allow_scale_to_zero => Err(SpecError {
                field,
                message: "scaleTo 0 needs action.allowScaleToZero: true".into(),
            }),
            Some(n) => Ok(n),
        }
    }
}

/// The action kinds.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ActionType {
    /// Evict the pod so its owner replaces it.
    Evict,
    /// Restart the owning Deployment's rollout (pod-template annotation, like `kubectl rollout restart`).
    RolloutRestart,
    /// Set the owning Deployment's replicas.
    ScaleTo,
    /// Observe only: Events and status, no change.
    None,
}

/// What the controller saw and did, written by its leader with server-side apply (field manager
/// `selfheal-controller`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealingPolicyStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the controller applies this policy) and `Degraded` (it cannot do all it says).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The selector in `kubectl` form (`app=web,tier in (a,b)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Pods this policy governs now (matched, not claimed by an earlier policy, not terminating).
    #[serde(default)]
    #[schemars(extend("format" = "int32"))] // NB: the API server knows no uint32
    pub matched_pods: u32,
    /// The most recent action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<LastAction>,
    /// Actions within the last `retryWindow`.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))] // NB: the API server knows no uint32
    pub actions_in_window: u32,
    /// Times the controller gave up on a workload of this policy (since the leader started).
    #[serde(default)]
    #[schemars(extend("format" = "int32"))] // NB: the API server knows no uint32
    pub give_ups: u32,
}

/// One action, as reported in the status.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastAction {
    /// `evict`, `rolloutRestart`, `scaleTo` or `none`.
    pub action: String,
    /// Pod that triggered it.
    pub pod: String,
    /// Workload acted on (`Deployment/ns/name`).
    pub workload: String,
    /// Trigger that fired (`crash_loop_back_off`, `restart_threshold`, ...).
    pub reason: String,
    /// True when nothing was changed (dry-run or action `none`).
    pub dry_run: bool,
    /// When.
    pub time: Time,
    /// One line for `kubectl get`: `evict web-7d9-abc (crash_loop_back_off)`.
    pub summary: String,
}

impl HealingPolicySpec {
    /// The decision thresholds of this policy. Scope (namespaces), minimum pod age and the
    /// restart-rate window come from `defaults` (the controller's flags).
    pub fn to_policy(&self, defaults: &Policy) -> Result<Policy, SpecError> {
        let t = &self.triggers;
        let giveup_window = parse_duration("spec.retryWindow", &self.retry_window)?;
        Ok(Policy {
            restart_threshold: t.restart_count.as_ref().map(|r| r.over),
            // NB: the restart-rate trigger is a flag of the default policy only.
            rate_restarts: 0,
            rate_window: defaults.rate_window,
            image_pull_grace: t
                .image_pull_failure
                .as_ref()
                .map(|i| parse_duration("spec.triggers.imagePullFailure.after", &i.after))
                .transpose()?,
            crash_loop: t.crash_loop_back_off.unwrap_or(false),
            oom_killed: t.oom_killed.unwrap_or(false),
            not_ready_for: t
                .not_ready_for
                .as_deref()
                .map(|d| parse_duration("spec.triggers.notReadyFor", d))
                .transpose()?,
            memory_trend: t
                .memory_trend
                .as_ref()
                .map(MemoryTrendTrigger::rule)
                .transpose()?,
            error_rate: t.error_rate.as_ref().map(|e| e.threshold),
            pool_exhaustion: t
                .pool_exhaustion
                .as_ref()
                .map(PoolExhaustionTrigger::rule)
                .transpose()?,
            confidence: self.confidence_threshold,
            min_pod_age: defaults.min_pod_age,
            cooldown: parse_duration("spec.cooldown", &self.cooldown)?,
            // The per-window cap is the give-up limit here: no separate knob.
            max_recycles_per_window: u32::MAX,
            recycle_window: giveup_window,
            max_retries: self.max_retries,
            giveup_window,
            namespaces: defaults.namespaces.clone(),
            excluded_namespaces: defaults.excluded_namespaces.clone(),
            action: match self.action.type_ {
                ActionType::Evict => Action::Evict,
                ActionType::RolloutRestart => Action::RolloutRestart,
                ActionType::ScaleTo => Action::ScaleTo(self.action.scale_to()?),
                ActionType::None => Action::Observe,
            },
            dry_run: self.dry_run,
            min_healthy: self.min_healthy_replicas,
        })
    }

    /// Triggers the spec names but this controller cannot evaluate: errorRate and
    /// poolExhaustion without `--prometheus-url` (`prometheus` false).
    pub fn unevaluated_triggers(&self, prometheus: bool) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.triggers.error_rate.is_some() && !prometheus {
            out.push("errorRate");
        }
        if self.triggers.pool_exhaustion.is_some() && !prometheus {
            out.push("poolExhaustion");
        }
        out
    }
}

/// The CRD of `K` as YAML under a do-not-edit header naming the command and the source file.
pub fn generated_crd_yaml<K: CustomResourceExt>(
    command: &str,
    source: &str,
) -> Result<String, serde_saphyr::ser::Error> {
    let body = serde_saphyr::to_string(&K::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p selfheal-controller -- {command}` from {source}; do not edit.\n{body}"
    ))
}

/// The CRD as YAML, exactly what `selfheal-controller crdgen` prints and `deploy/crd/` holds.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    generated_crd_yaml::<HealingPolicy>("crdgen", "controller/src/healing_policy/resource.rs")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{policy, secs};
    use crate::healers::memory_trend::rule::LeakRule;

    const COMMITTED: &str = include_str!("../../deploy/crd/selfheal.io_healingpolicies.yaml");

    #[test]
    fn committed_crd_yaml_is_what_crdgen_generates() {
        let generated = crd_yaml().expect("crd serialises");
        assert!(
            generated == COMMITTED,
            "controller/deploy/crd/selfheal.io_healingpolicies.yaml is stale; regenerate it with\n  \
             cargo run -p selfheal-controller -- crdgen > controller/deploy/crd/selfheal.io_healingpolicies.yaml"
        );
    }

    fn spec(yaml: &str) -> HealingPolicySpec {
        serde_saphyr::from_str(yaml).expect("spec parses")
    }

    #[test]
    fn crd_has_status_printer_columns_short_name_and_cel_rules() {
        let crd = HealingPolicy::crd();
        assert_eq!(crd.spec.group, "selfheal.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["hp".to_owned()][..])
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "Selector",
                "Action",
                "Dry-Run",
                "Matched",
                "Last-Action",
                "Age"
            ]
        );
        let json = serde_json::to_string(&crd).expect("json");
        for msg in [
            "selector must not be empty",
            "cooldown must be at least 10s",
            "maxRetries must be between 1 and 10",
            "action scaleTo requires action.replicas",
            "action.replicas is only allowed with action scaleTo",
            "scaleTo 0 stops the workload",
            "at least one trigger is required",
            "confidenceThreshold needs at least two triggers",
            "notReadyFor must be at least 10s",
            "retryWindow must not be shorter than cooldown",
        ] {
            assert!(json.contains(msg), "missing CEL message {msg:?}");
        }
    }

    #[test]
    fn defaults_fill_cooldown_retries_and_window() {
        let s = spec(
            "selector: {matchLabels: {app: web}}\ntriggers: {crashLoopBackOff: true}\naction: {type: evict}\n",
        );
        assert_eq!(s.cooldown, "5m");
        assert_eq!(s.max_retries, 3);
        assert_eq!(s.retry_window, "1h");
        assert!(!s.dry_run);
        let p = s.to_policy(&policy()).expect("valid");
        assert_eq!(p.cooldown, secs(300));
        assert_eq!(p.giveup_window, secs(3600));
        assert_eq!(p.restart_threshold, None);
        assert!(p.crash_loop);
        assert_eq!(p.action, Action::Evict);
        assert_eq!(p.min_pod_age, policy().min_pod_age);
    }

    #[test]
    fn every_field_maps_to_the_policy() {
        let s = spec(
            "selector: {matchLabels: {app: web}}\n\
             triggers: {restartCount: {over: 4}, oomKilled: true, imagePullFailure: {after: 90s}, notReadyFor: 2m30s}\n\
             action: {type: scaleTo, replicas: 0, allowScaleToZero: true}\n\
             cooldown: 30s\nmaxRetries: 7\nretryWindow: 2h\nminHealthyReplicas: 2\ndryRun: true\nconfidenceThreshold: 0.5\n",
        );
        let p = s.to_policy(&policy()).expect("valid");
        assert_eq!(p.restart_threshold, Some(4));
        assert_eq!(p.rate_restarts, 0);
        assert!(p.oom_killed && !p.crash_loop);
        assert_eq!(p.image_pull_grace, Some(secs(90)));
        assert_eq!(p.not_ready_for, Some(secs(150)));
        assert_eq!(p.action, Action::ScaleTo(0));
        assert_eq!(p.cooldown, secs(30));
        assert_eq!(p.max_retries, 7);
        assert_eq!(p.giveup_window, secs(7200));
        assert_eq!(p.min_healthy, 2);
        assert!(p.dry_run);
        assert_eq!(p.confidence, Some(0.5));
    }

    #[test]
    fn rollout_restart_and_none_map_to_their_actions() {
        let mut s = spec(
            "selector: {matchLabels: {a: b}}\ntriggers: {oomKilled: true}\naction: {type: rolloutRestart}\n",
        );
        assert_eq!(
            s.to_policy(&policy()).map(|p| p.action),
            Ok(Action::RolloutRestart)
        );
        s.action.type_ = ActionType::None;
        assert_eq!(
            s.to_policy(&policy()).map(|p| p.action),
            Ok(Action::Observe)
        );
    }

    #[test]
    fn a_bad_duration_is_an_error_naming_the_field() {
        let mut s = spec(
            "selector: {matchLabels: {a: b}}\ntriggers: {oomKilled: true}\naction: {type: evict}\n",
        );
        s.cooldown = "soon".into();
        let err = s.to_policy(&policy()).expect_err("bad duration");
        assert_eq!(err.field, "spec.cooldown");
        assert_eq!(parse_duration("x", "1h30m"), Ok(secs(5400)));
        assert!(parse_duration("x", "-5s").is_err());
    }

    #[test]
    fn memory_trend_defaults_are_the_documented_rule() {
        let s = spec(
            "selector: {matchLabels: {a: b}}\ntriggers: {memoryTrend: {}}\naction: {type: evict}\n",
        );
        let p = s.to_policy(&policy()).expect("valid");
        assert_eq!(p.memory_trend, Some(LeakRule::default()));
        let s = spec(
            "selector: {matchLabels: {a: b}}\ntriggers: {memoryTrend: {window: 3m, minSamples: 6, risingPercent: 90, limitPercent: 70}}\naction: {type: evict}\n",
        );
        let rule = s
            .to_policy(&policy())
            .expect("valid")
            .memory_trend
            .expect("set");
        assert_eq!((rule.window, rule.min_samples), (secs(180), 6));
        assert!((rule.rising_share - 0.9).abs() < 1e-9 && (rule.limit_share - 0.7).abs() < 1e-9);
    }

    #[test]
    fn typed_only_triggers_are_named() {
        let s = spec(
            "selector: {matchLabels: {a: b}}\ntriggers: {memoryTrend: {window: 30m}, errorRate: {query: 'x', threshold: 0.1}}\naction: {type: none}\n",
        );
        assert_eq!(s.unevaluated_triggers(false), ["errorRate"]);
        assert!(s.unevaluated_triggers(true).is_empty());
    }
}
