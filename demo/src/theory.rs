//! The fastest recovery the settings allow, per layer: probe periods and thresholds, the drain
//! the chart configures, the controller's thresholds, Helm's timeout. The benchmark divides the
//! measured time by this; a ratio far above 1 points at a delay worth explaining.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Probe;

use crate::report::Theory;

/// The settings the lower bounds are computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Liveness probe (period, failureThreshold).
    pub liveness: (f64, f64),
    /// Readiness probe (period, failureThreshold, successThreshold).
    pub readiness: (f64, f64, f64),
    /// Startup probe period (0 without one).
    pub startup_period: f64,
    /// preStop sleep seconds.
    pub pre_stop: f64,
    /// `APP_SHUTDOWN_DELAY_SECS` (unready but serving after SIGTERM).
    pub shutdown_delay: f64,
}

fn probe(p: Option<&Probe>, default_period: f64) -> (f64, f64, f64) {
    p.map_or((default_period, 3.0, 1.0), |p| {
        (
            f64::from(p.period_seconds.unwrap_or(10)),
            f64::from(p.failure_threshold.unwrap_or(3)),
            f64::from(p.success_threshold.unwrap_or(1)),
        )
    })
}

impl Settings {
    /// Read them from the app's Deployment (first container); Kubernetes defaults where unset.
    pub fn from_deployment(d: &Deployment) -> Self {
        let c = d
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.containers.first());
        let env = |name: &str| {
            c.and_then(|c| c.env.as_ref())
                .and_then(|env| env.iter().find(|e| e.name == name))
                .and_then(|e| e.value.as_deref())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let (lp, lf, _) = probe(c.and_then(|c| c.liveness_probe.as_ref()), 10.0);
        let readiness = probe(c.and_then(|c| c.readiness_probe.as_ref()), 10.0);
        let startup_period = c
            .and_then(|c| c.startup_probe.as_ref())
            .map_or(0.0, |p| f64::from(p.period_seconds.unwrap_or(10)));
        let pre_stop = c
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map_or(0.0, |s| s.seconds as f64);
        Settings {
            liveness: (lp, lf),
            readiness,
            startup_period,
            pre_stop,
            // The app's default when the chart does not set it.
            shutdown_delay: env("APP_SHUTDOWN_DELAY_SECS").unwrap_or(5.0),
        }
    }

    /// Layer 1: liveness fails `failureThreshold` times, one period apart (the first failure can
    /// come right after the fault, hence `failureThreshold - 1` periods); the kubelet then stops
    /// the container gracefully (preStop + the app's drain delay) and starts it again, which is
    /// Ready after the startup probe passes.
    pub fn liveness(&self) -> Theory {
        let (p, f) = self.liveness;
        Theory {
            heal_secs: p * (f - 1.0).max(0.0)
                + self.pre_stop
                + self.shutdown_delay
                + self.startup_period,
            basis: format!(
                "liveness period {p} s × (failureThreshold {f} - 1) + preStop {} s + drain delay {} s + startup period {} s",
                self.pre_stop, self.shutdown_delay, self.startup_period
            ),
        }
    }

    /// Layer 2: the pod is unready for `unready_secs` by design, and back in the Service after
    /// `successThreshold` passing probes (the first can come right as the fault ends).
    pub fn readiness(&self, unready_secs: f64) -> Theory {
        let (p, _, s) = self.readiness;
        Theory {
            heal_secs: unready_secs + p * (s - 1.0).max(0.0),
            basis: format!(
                "fault lasts {unready_secs} s + readiness period {p} s × (successThreshold {s} - 1)"
            ),
        }
    }

    /// Layer 3: `restarts` crashes need `restarts - 1` crash-loop back-offs (10 s doubling) and
    /// the pod must be `min_age_secs` old; then the replacement starts.
    pub fn recycle(&self, restarts: u32, min_age_secs: f64, pod_age_secs: f64) -> Theory {
        let backoffs: f64 = (0..restarts.saturating_sub(1))
            .map(|i| 10.0 * 2f64.powi(i as i32))
            .sum();
        let wait = backoffs.max(min_age_secs - pod_age_secs);
        Theory {
            heal_secs: wait + self.startup_period,
            basis: format!(
                "max({restarts} crashes with back-offs {backoffs} s, min pod age {min_age_secs} s - pod age {pod_age_secs:.0} s) + startup period {} s",
                self.startup_period
            ),
        }
    }

    /// Layer 4: Helm waits its whole timeout for the bad release, then the rollback's pods start.
    pub fn helm(&self, timeout_secs: f64) -> Theory {
        Theory {
            heal_secs: timeout_secs + self.startup_period,
            basis: format!(
                "helm --timeout {timeout_secs} s + startup period {} s",
                self.startup_period
            ),
        }
    }

    /// Layer 5: the burn has to show up in a metrics-server sample and the HPA has to run a
    /// sync; both tick every 15 s independently of the fault, so on average half a period each
    /// passes (the strict bound is close to 0: a tick right after the fault). Then new pods start.
    pub fn hpa(&self) -> Theory {
        Theory {
            heal_secs: 7.5 + 7.5 + self.startup_period,
            basis: format!(
                "on average ½ metrics resolution 15 s + ½ HPA sync 15 s + startup period {} s",
                self.startup_period
            ),
        }
    }

    /// Layer 6: `pods` evictions, `allowed` at a time; each round waits for its replacements to
    /// pass the startup probe (the first readiness probe runs as soon as it has).
    pub fn drain(&self, pods: u32, allowed: u32) -> Theory {
        let rounds = f64::from(pods.div_ceil(allowed.max(1)));
        Theory {
            heal_secs: rounds * self.startup_period,
            basis: format!(
                "{rounds} rounds ({pods} pods, {} at a time) × startup period {} s",
                allowed.max(1),
                self.startup_period
            ),
        }
    }

    /// Layer 7: the analysis needs one full measurement window at the first step before it can
    /// roll back; removing the canary is one Helm upgrade.
    pub fn canary(&self, window_secs: f64) -> Theory {
        Theory {
            heal_secs: window_secs,
            basis: format!("one analysis window {window_secs} s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chart_deployment() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "selfheal-app"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{
                "name": "app",
                "env": [{"name": "APP_SHUTDOWN_DELAY_SECS", "value": "3"}],
                "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
                "startupProbe": {"periodSeconds": 1, "failureThreshold": 30},
                "livenessProbe": {"periodSeconds": 5, "failureThreshold": 3},
                "readinessProbe": {"periodSeconds": 3, "failureThreshold": 2, "successThreshold": 1}
            }]}}}
        }))
        .expect("deployment literal")
    }

    #[test]
    fn settings_come_from_the_chart_deployment() {
        let s = Settings::from_deployment(&chart_deployment());
        assert_eq!(s.liveness, (5.0, 3.0));
        assert_eq!(s.readiness, (3.0, 2.0, 1.0));
        assert_eq!(
            (s.startup_period, s.pre_stop, s.shutdown_delay),
            (1.0, 2.0, 3.0)
        );
    }

    #[test]
    fn kubernetes_defaults_apply_without_probes() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app"}]}}}
        }))
        .expect("deployment literal");
        let s = Settings::from_deployment(&d);
        assert_eq!(s.liveness, (10.0, 3.0));
        assert_eq!(
            (s.startup_period, s.pre_stop, s.shutdown_delay),
            (0.0, 0.0, 5.0)
        );
    }

    #[test]
    fn layer_minimums_follow_the_formulas() {
        let s = Settings::from_deployment(&chart_deployment());
        assert_eq!(s.liveness().heal_secs, 5.0 * 2.0 + 2.0 + 3.0 + 1.0);
        assert!(s.liveness().basis.contains("failureThreshold 3 - 1"));
        assert_eq!(s.readiness(15.0).heal_secs, 15.0);
        // 3 crashes: back-offs 10 + 20; a 5 s old pod still has 55 s to go.
        assert_eq!(s.recycle(3, 60.0, 5.0).heal_secs, 55.0 + 1.0);
        assert_eq!(s.recycle(3, 60.0, 120.0).heal_secs, 30.0 + 1.0);
        assert_eq!(s.helm(60.0).heal_secs, 61.0);
        assert_eq!(s.hpa().heal_secs, 16.0);
        assert_eq!(s.drain(2, 1).heal_secs, 2.0);
        assert_eq!(s.drain(4, 3).heal_secs, 2.0);
        assert_eq!(s.drain(5, 0).heal_secs, 5.0);
        assert_eq!(s.canary(20.0).heal_secs, 20.0);
    }
}
