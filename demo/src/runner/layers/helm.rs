//! Layer 4, Helm auto-rollback: `self-healing/auto-rollback.sh` deploys a release that never gets
//! Ready; verification fails and the script rolls back to the good revision.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

use crate::extract::{self, Revision};
use crate::report::{LayerReport, MarkKind, Status};
use crate::runner::steps::run_script;
use crate::runner::{Runner, progress};

impl Runner {
    pub(in crate::runner) async fn layer_helm(
        &self,
        r: &mut LayerReport,
    ) -> std::result::Result<(), String> {
        let script = self.cfg.repo_root.join("self-healing/auto-rollback.sh");
        if !script.exists() {
            r.status = Status::NotAvailable;
            return Err(format!("{} is not in this tree", script.display()));
        }
        let timeout = self.cfg.helm_timeout_secs;
        r.theoretical_min = Some(self.settings.helm(timeout as f64));
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.cfg.namespace);
        let lp = ListParams::default().labels(&format!("owner=helm,name={}", self.cfg.release));
        let before = secrets
            .list(&lp)
            .await
            .map_err(|e| format!("listing Helm Secrets: {e}"))?;
        let revs = extract::helm_revisions(&before.items, &self.cfg.release);
        let good = extract::deployed_revision(&revs)
            .ok_or("the release has no deployed revision")?
            .version;
        r.evidence("good_revision", good);
        let values = self.path(&self.cfg.values);
        progress(format!(
            "    deploying a bad release (faultProfile=unready) with self-healing/auto-rollback.sh, helm timeout {timeout} s"
        ));
        let started = Timestamp::now();
        let timeout_arg = format!("{timeout}s");
        let values_arg = values.to_string_lossy().into_owned();
        let (code, summary) = run_script(
            &script,
            &[
                "--namespace",
                &self.cfg.namespace,
                "--release",
                &self.cfg.release,
                "--values",
                &values_arg,
            ],
            &[
                "--image-repository",
                &self.cfg.image_repository,
                "--image-tag",
                &self.cfg.image_tag,
                "--set",
                "app.faultProfile=unready",
                "--timeout",
                &timeout_arg,
                "--smoke-requests",
                "5",
                "--output",
                "json",
            ],
        )
        .await?;
        r.evidence("auto_rollback_exit_code", code);
        r.evidence(
            "auto_rollback_result",
            summary.get("result").cloned().unwrap_or_default(),
        );
        let after = secrets
            .list(&lp)
            .await
            .map_err(|e| format!("listing Helm Secrets: {e}"))?;
        let revs = extract::helm_revisions(&after.items, &self.cfg.release);
        r.evidence("revisions", &revs);
        let bad = revs
            .iter()
            .find(|v| v.version == good + 1)
            .ok_or("no bad revision was recorded")?;
        r.mark(
            bad.created.unwrap_or(started),
            MarkKind::Fault,
            format!("revision {} (faultProfile=unready) deployed", bad.version),
            "Helm release Secret creationTimestamp",
        );
        if bad.status != "failed" && bad.status != "superseded" {
            return Err(format!(
                "bad revision {} is {}, not failed",
                bad.version, bad.status
            ));
        }
        let serving =
            extract::deployed_revision(&revs).ok_or("no deployed revision after the rollback")?;
        r.evidence("serving_revision", serving.version);
        let rolled_back_to_good = rolled_back(code, bad, serving);
        r.evidence("rolled_back_to_good", rolled_back_to_good);
        if !rolled_back_to_good {
            return Err(format!(
                "auto-rollback.sh exited {code} (expected 3: rolled back and healthy); deployed revision {}",
                serving.version
            ));
        }
        // NB: Helm copies the previous revision's modifiedAt label into a failed one, so the
        // failure is timed by the rollback revision's creation: the moment verification gave up.
        r.mark(
            serving.created.unwrap_or_else(Timestamp::now),
            MarkKind::Detected,
            format!(
                "revision {} {} (verification failed): rollback revision {} created",
                bad.version, bad.status, serving.version
            ),
            "Helm release Secret creationTimestamp (rollback revision)",
        );
        r.mark(
            serving.modified.unwrap_or_else(Timestamp::now),
            MarkKind::Healed,
            format!(
                "revision {} (rollback to {good}) deployed and verified",
                serving.version
            ),
            "Helm release Secret modifiedAt label",
        );
        Ok(())
    }
}

/// auto-rollback.sh's verdict holds: exit code 3 (rolled back and healthy) and a revision newer
/// than the bad one deployed.
fn rolled_back(code: i32, bad: &Revision, serving: &Revision) -> bool {
    code == 3 && serving.version > bad.version
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(version: u32, status: &str) -> Revision {
        Revision {
            version,
            status: status.to_owned(),
            created: None,
            modified: None,
        }
    }

    #[test]
    fn rolled_back_needs_exit_code_3_and_a_newer_deployed_revision() {
        let bad = rev(5, "failed");
        assert!(rolled_back(3, &bad, &rev(6, "deployed")));
        // The script said so, but the bad revision is what serves.
        assert!(!rolled_back(3, &bad, &bad));
        assert!(!rolled_back(3, &bad, &rev(4, "deployed")));
        // A newer revision, but the script did not report a healthy rollback.
        assert!(!rolled_back(0, &bad, &rev(6, "deployed")));
        assert!(!rolled_back(1, &bad, &rev(6, "deployed")));
    }
}
