//! The ServiceAccount's rights from `controller/deploy/`, checked by the real API server's
//! authorizer (SubjectAccessReview = `kubectl auth can-i --as=system:serviceaccount:...`):
//! everything the code calls is allowed, pod deletion and secrets are not.
//!
//! The ClusterRole and Role are installed under test names and bound to a ServiceAccount in the
//! test namespace, so an installed controller in `selfheal-system` is not touched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

const SA: &str = "selfheal-controller";

fn docs(file: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn of_kind<T: serde::de::DeserializeOwned>(file: &str, kind: &str) -> T {
    let doc = docs(file)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {file}"));
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{kind} in {file}: {e}"))
}

async fn can(
    client: &Client,
    ns: &str,
    verb: &str,
    group: &str,
    resource: &str,
    sub: Option<&str>,
    in_ns: &str,
) -> bool {
    let review = SubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{SA}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource: sub.map(Into::into),
                namespace: (!in_ns.is_empty()).then(|| in_ns.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        status: None,
    };
    let res = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    res.status.is_some_and(|s| s.allowed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_may_do_what_the_code_does_and_nothing_dangerous() {
    in_namespace("sh-rbac", |client, ns| async move {
        let cluster_name = format!("selfheal-controller-test-{ns}");
        let subject = Subject {
            kind: "ServiceAccount".into(),
            name: SA.into(),
            namespace: Some(ns.clone()),
            api_group: None,
        };
        let pp = PostParams::default();
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(
                &pp,
                &ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some(SA.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .expect("ServiceAccount");

        let mut cr: ClusterRole = of_kind("clusterrole.yaml", "ClusterRole");
        cr.metadata.name = Some(cluster_name.clone());
        let crb = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(cluster_name.clone()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: cluster_name.clone(),
            },
            subjects: Some(vec![subject.clone()]),
        };
        let crs: Api<ClusterRole> = Api::all(client.clone());
        let crbs: Api<ClusterRoleBinding> = Api::all(client.clone());
        crs.create(&pp, &cr).await.expect("ClusterRole");
        crbs.create(&pp, &crb).await.expect("ClusterRoleBinding");

        let role: Role = of_kind("role.yaml", "Role");
        let mut rb: RoleBinding = of_kind("role.yaml", "RoleBinding");
        rb.subjects = Some(vec![subject]);
        Api::<Role>::namespaced(client.clone(), &ns)
            .create(&pp, &role)
            .await
            .expect("Role");
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .create(&pp, &rb)
            .await
            .expect("RoleBinding");

        let other = "default";
        let allowed = [
            ("list", "", "pods", None, ""),
            ("watch", "", "pods", None, ""),
            ("get", "", "pods", Some("log"), other),
            ("create", "", "pods", Some("eviction"), other),
            ("create", "events.k8s.io", "events", None, other),
            ("patch", "events.k8s.io", "events", None, other),
            ("get", "apps", "replicasets", None, other),
            ("get", "coordination.k8s.io", "leases", None, ns.as_str()),
            ("create", "coordination.k8s.io", "leases", None, ns.as_str()),
            ("update", "coordination.k8s.io", "leases", None, ns.as_str()),
            // The recycle history ConfigMap (get and patch are limited to its name).
            ("create", "", "configmaps", None, ns.as_str()),
            ("list", "selfheal.io", "healingpolicies", None, ""),
            ("watch", "selfheal.io", "healingpolicies", None, ""),
            (
                "patch",
                "selfheal.io",
                "healingpolicies",
                Some("status"),
                other,
            ),
            ("patch", "apps", "deployments", None, other),
            ("patch", "apps", "deployments", Some("scale"), other),
            ("list", "metrics.k8s.io", "pods", None, other),
            // The zombie reaper: force delete of a Terminating pod, and its node's state.
            ("delete", "", "pods", None, other),
            ("get", "", "nodes", None, ""),
            ("get", "", "persistentvolumeclaims", None, other),
            // The circuit breakers: their objects, their target's replicas, HPAs that would fight.
            ("get", "selfheal.io", "circuitbreakers", None, other),
            ("list", "selfheal.io", "circuitbreakers", None, ""),
            ("watch", "selfheal.io", "circuitbreakers", None, ""),
            (
                "patch",
                "selfheal.io",
                "circuitbreakers",
                Some("status"),
                other,
            ),
            ("get", "apps", "deployments", None, other),
            (
                "list",
                "autoscaling",
                "horizontalpodautoscalers",
                None,
                other,
            ),
        ];
        let denied = [
            ("deletecollection", "", "pods", None, other),
            ("list", "", "nodes", None, ""),
            ("list", "", "persistentvolumeclaims", None, ""),
            ("update", "", "persistentvolumeclaims", None, other),
            ("update", "", "nodes", None, ""),
            ("delete", "", "nodes", None, ""),
            ("update", "", "pods", None, other),
            ("patch", "", "pods", None, other),
            ("create", "", "pods", None, other),
            ("get", "", "secrets", None, other),
            ("list", "", "secrets", None, ""),
            ("get", "", "secrets", None, ns.as_str()),
            ("update", "apps", "deployments", None, other),
            ("delete", "apps", "replicasets", None, other),
            ("list", "apps", "replicasets", None, ""),
            ("create", "coordination.k8s.io", "leases", None, other),
            ("update", "coordination.k8s.io", "leases", None, other),
            ("delete", "coordination.k8s.io", "leases", None, ns.as_str()),
            ("create", "", "configmaps", None, other),
            ("get", "", "configmaps", None, other),
            ("list", "", "configmaps", None, ns.as_str()),
            ("delete", "", "configmaps", None, ns.as_str()),
            ("delete", "events.k8s.io", "events", None, other),
            ("patch", "selfheal.io", "healingpolicies", None, other),
            ("update", "selfheal.io", "healingpolicies", None, other),
            ("create", "selfheal.io", "healingpolicies", None, other),
            ("delete", "selfheal.io", "healingpolicies", None, other),
            (
                "update",
                "selfheal.io",
                "healingpolicies",
                Some("status"),
                other,
            ),
            ("delete", "apps", "deployments", None, other),
            ("create", "apps", "deployments", None, other),
            ("update", "apps", "deployments", Some("scale"), other),
            ("patch", "selfheal.io", "circuitbreakers", None, other),
            ("create", "selfheal.io", "circuitbreakers", None, other),
            (
                "patch",
                "autoscaling",
                "horizontalpodautoscalers",
                None,
                other,
            ),
            ("patch", "apps", "statefulsets", None, other),
            ("get", "metrics.k8s.io", "nodes", None, ""),
        ];
        let mut wrong = Vec::new();
        for (verb, group, res, sub, in_ns) in allowed {
            if !can(&client, &ns, verb, group, res, sub, in_ns).await {
                wrong.push(format!(
                    "DENIED but needed: {verb} {group}/{res}{} in {in_ns:?}",
                    sub.map(|s| format!("/{s}")).unwrap_or_default()
                ));
            }
        }
        for (verb, group, res, sub, in_ns) in denied {
            if can(&client, &ns, verb, group, res, sub, in_ns).await {
                wrong.push(format!(
                    "ALLOWED but must not be: {verb} {group}/{res}{} in {in_ns:?}",
                    sub.map(|s| format!("/{s}")).unwrap_or_default()
                ));
            }
        }

        let dp = DeleteParams::default();
        let _ = crbs.delete(&cluster_name, &dp).await;
        let _ = crs.delete(&cluster_name, &dp).await;
        assert!(wrong.is_empty(), "RBAC mismatch:\n{}", wrong.join("\n"));
    })
    .await;
}
