//! Which workload a pod belongs to: the pod's controller owner, followed from a ReplicaSet to its
//! Deployment (read-only `get` on replicasets, cached by UID).
//!
//! The reconciler must not wait for that `get` before it acts ([`OwnerResolver::resolve_fast`]):
//! a pod of a Deployment names it already (its ReplicaSet is `<deployment>-<pod-template-hash>`),
//! which is enough for the recycle history's key. The exact reference (with the Deployment's UID,
//! for the Event on it) is looked up afterwards, by [`crate::explain`].

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use crate::history::WorkloadKey;
use crate::{Error, Result};

/// Label the Deployment controller puts on a ReplicaSet's pods; the ReplicaSet is named
/// `<deployment>-<hash>`.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Bound of the ReplicaSet → workload cache; cleared when reached (ReplicaSets churn with rollouts).
const CACHE_MAX: usize = 4096;

/// The workload a pod belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Key of the recycle history.
    pub key: WorkloadKey,
    /// Reference used for Events on the owner.
    pub reference: ObjectReference,
}

impl Workload {
    /// True when the workload was named from the pod alone ([`OwnerResolver::resolve_fast`]):
    /// its key is right, its reference has no UID yet.
    pub fn is_derived(&self) -> bool {
        self.reference.uid.is_none()
    }
}

/// The Deployment of a pod owned by ReplicaSet `owner`, read off names alone: the pod's
/// `pod-template-hash` label is the suffix of the ReplicaSet's name. `None` when the names do not
/// follow that convention (a ReplicaSet not made by a Deployment). The reference has no UID.
pub fn deployment_by_name(pod: &Pod, owner: &OwnerReference) -> Option<Workload> {
    if owner.kind != "ReplicaSet" || owner.api_version != "apps/v1" {
        return None;
    }
    let ns = pod.metadata.namespace.as_deref()?;
    let hash = pod.labels().get(POD_TEMPLATE_HASH)?;
    let name = owner.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    if name.is_empty() {
        return None;
    }
    Some(Workload {
        key: WorkloadKey {
            kind: "Deployment".into(),
            namespace: ns.into(),
            name: name.into(),
        },
        reference: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectReference::default()
        },
    })
}

/// The HorizontalPodAutoscaler (its name) that scales Deployment `deployment`, if any. Whatever
/// scales a Deployment an HPA owns fights the HPA: the breaker and `scaleTo` ask this first.
pub async fn autoscaler_of(
    client: &Client,
    ns: &str,
    deployment: &str,
) -> Result<Option<String>, kube::Error> {
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let list = hpas.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .find(|h| {
            let t = &h.spec.scale_target_ref;
            t.kind == "Deployment" && t.name == deployment
        })
        .map(|h| h.name_any()))
}

/// The owner reference with `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// The workload named by an owner reference in `namespace`.
pub fn workload_of(namespace: &str, owner: &OwnerReference) -> Workload {
    Workload {
        key: WorkloadKey {
            kind: owner.kind.clone(),
            namespace: namespace.into(),
            name: owner.name.clone(),
        },
        reference: ObjectReference {
            api_version: Some(owner.api_version.clone()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: Some(namespace.into()),
            uid: Some(owner.uid.clone()),
            ..ObjectReference::default()
        },
    }
}

/// Resolves and caches pod owners.
pub struct OwnerResolver {
    client: Client,
    replicasets: Mutex<HashMap<String, Workload>>,
}

impl OwnerResolver {
    /// Resolver using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            replicasets: Mutex::new(HashMap::new()),
        }
    }

    /// The pod's workload; `None` for a bare pod.
    pub async fn resolve(&self, pod: &Pod) -> Result<Option<Workload>> {
        let Some(owner) = controller_ref(&pod.metadata) else {
            return Ok(None);
        };
        let ns = pod
            .metadata
            .namespace
            .as_deref()
            .ok_or(Error::MissingField("namespace"))?;
        let direct = workload_of(ns, owner);
        if owner.kind != "ReplicaSet" || owner.api_version != "apps/v1" {
            return Ok(Some(direct));
        }
        if let Some(w) = self.cached(&owner.uid) {
            return Ok(Some(w));
        }
        let rs = Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
            .get_opt(&owner.name)
            .await
            .map_err(Error::OwnerLookupFailed)?;
        // NB: a ReplicaSet without a controller (or already gone) is the workload itself.
        let workload = rs
            .as_ref()
            .and_then(|rs| controller_ref(&rs.metadata))
            .map_or(direct, |up| workload_of(ns, up));
        if let Ok(mut cache) = self.replicasets.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(owner.uid.clone(), workload.clone());
        }
        Ok(Some(workload))
    }

    /// The pod's workload, without an API call when the cache or the names tell it: a cached
    /// ReplicaSet, else the Deployment its name gives ([`deployment_by_name`], derived: no UID),
    /// else a lookup as [`Self::resolve`]. For the reconciler, which must not wait before acting.
    pub async fn resolve_fast(&self, pod: &Pod) -> Result<Option<Workload>> {
        let Some(owner) = controller_ref(&pod.metadata) else {
            return Ok(None);
        };
        if let Some(w) = self.cached(&owner.uid) {
            return Ok(Some(w));
        }
        match deployment_by_name(pod, owner) {
            Some(w) => Ok(Some(w)),
            None => self.resolve(pod).await,
        }
    }

    fn cached(&self, uid: &str) -> Option<Workload> {
        self.replicasets.lock().ok()?.get(uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;

    #[test]
    fn controller_ref_ignores_non_controller_owners() {
        let p = pod()
            .owned_by_non_controller("cm")
            .owned_by_rs("web-7d9")
            .build();
        assert_eq!(
            controller_ref(&p.metadata).map(|o| o.name.as_str()),
            Some("web-7d9")
        );
        let bare = pod().owned_by_non_controller("cm").build();
        assert!(controller_ref(&bare.metadata).is_none());
    }

    #[test]
    fn a_deployment_pod_names_its_deployment_without_a_lookup() {
        let p = pod()
            .owned_by_rs("web-7d9")
            .labelled(POD_TEMPLATE_HASH, "7d9")
            .build();
        let w =
            deployment_by_name(&p, controller_ref(&p.metadata).expect("owner")).expect("derived");
        assert_eq!(w.key.to_string(), "Deployment/shop/web");
        assert!(w.is_derived());
        // A ReplicaSet whose name does not end in the pod's hash was not made by a Deployment.
        let odd = pod()
            .owned_by_rs("web-7d9")
            .labelled(POD_TEMPLATE_HASH, "abc")
            .build();
        assert!(deployment_by_name(&odd, controller_ref(&odd.metadata).expect("owner")).is_none());
        let unlabelled = pod().owned_by_rs("web-7d9").build();
        assert!(
            deployment_by_name(
                &unlabelled,
                controller_ref(&unlabelled.metadata).expect("owner")
            )
            .is_none()
        );
    }

    #[test]
    fn workload_reference_points_at_the_owner() {
        let p = pod().owned_by("apps/v1", "StatefulSet", "db", true).build();
        let w = workload_of("shop", controller_ref(&p.metadata).expect("owner"));
        assert_eq!(w.key.to_string(), "StatefulSet/shop/db");
        assert_eq!(w.reference.kind.as_deref(), Some("StatefulSet"));
        assert_eq!(w.reference.uid.as_deref(), Some("uid-db"));
    }
}
