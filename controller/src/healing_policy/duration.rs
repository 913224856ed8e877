//! Durations in HealingPolicy specs: Go-style strings (`90s`, `1h30m`) as `metav1.Duration`
//! writes them, checked by the schema and parsed into the decision's duration type.

use k8s_openapi::jiff::SignedDuration;
use kube::core::Duration;

/// Go-style duration as `metav1.Duration` writes it (`90s`, `5m`, `1h30m`, `500ms`).
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// A spec the API server accepted but the controller cannot turn into a policy (only possible
/// when validation was bypassed, e.g. an older CRD).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct SpecError {
    /// Field path.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Parse a Go duration (`90s`, `1h30m`) into the decision's duration type.
pub fn parse_duration(field: &'static str, s: &str) -> Result<SignedDuration, SpecError> {
    let d: Duration = s.parse().map_err(|e| SpecError {
        field,
        message: format!("{s:?}: {e}"),
    })?;
    if d.is_negative() {
        return Err(SpecError {
            field,
            message: format!("{s:?} is negative"),
        });
    }
    let std: std::time::Duration = d.into();
    SignedDuration::try_from(std).map_err(|e| SpecError {
        field,
        message: format!("{s:?}: {e}"),
    })
}
