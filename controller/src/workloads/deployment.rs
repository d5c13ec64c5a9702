//! The Deployment controller: one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`), rolled by RollingUpdate or Recreate, revisions and history kept in annotations, scaling proportional, status and Progressing/Available conditions as upstream writes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use super::hash::{self, POD_TEMPLATE_HASH};
use super::pods::{controller_of, controller_ref, now_time};
use super::replicaset::status_patch;
use super::rollout::{
    self, DESIRED_REPLICAS, MAX_REPLICAS, REVISION, REVISION_HISTORY, replicas, rs_replicas,
};
use super::{Action, Ctx, Error, selector};
use crate::events::EventType;

const PROGRESSING: &str = "Progressing";
const AVAILABLE: &str = "Available";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";

/// One Deployment's pass: the Deployment as this pass updates it and its ReplicaSets.
struct Pass<'a> {
    ctx: &'a Ctx,
    d: Deployment,
    ns: String,
    name: String,
    sets: Vec<ReplicaSet>,
}

/// One idempotent pass over `deployment`.
pub async fn reconcile(deployment: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if deployment.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = deployment.spec.clone().unwrap_or_default();
    if selector::is_empty(&spec.selector) {
        ctx.deployment_events
            .publish(
                deployment.as_ref(),
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            .await;
        return Ok(Action::await_change());
    }
    let mut pass = Pass {
        ctx: &ctx,
        d: (*deployment).clone(),
        ns: deployment.metadata.namespace.clone().unwrap_or_default(),
        name: deployment.metadata.name.clone().unwrap_or_default(),
        sets: Vec::new(),
    };
    pass.sets = pass.claim_replica_sets().await?;
    if spec.paused == Some(true) || pass.is_scaling_event() {
        return pass.sync().await;
    }
    if rollout::is_recreate(&pass.d) {
        pass.rollout_recreate().await
    } else {
        pass.rollout_rolling().await
    }
}

fn set_condition(conditions: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(i) = conditions.iter().position(|x| x.type_ == c.type_) {
        let current = &conditions[i];
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
        conditions.remove(i);
    }
    conditions.push(c);
}

fn condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now_time()),
        last_transition_time: Some(now_time()),
    }
}

fn get_condition<'c>(status: &'c DeploymentStatus, type_: &str) -> Option<&'c DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

impl Pass<'_> {
    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.ctx.client.clone(), &self.ns)
    }

    fn d_api(&self) -> Api<Deployment> {
        Api::namespaced(self.ctx.client.clone(), &self.ns)
    }

    fn uid(&self) -> String {
        self.d.metadata.uid.clone().unwrap_or_default()
    }

    fn template(&self) -> k8s_openapi::api::core::v1::PodTemplateSpec {
        self.d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default()
    }

    /// Upstream `ClaimReplicaSets`: adopt orphans the selector matches, release what it no
    /// longer matches.
    async fn claim_replica_sets(&self) -> Result<Vec<ReplicaSet>, Error> {
        let uid = self.uid();
        let sel = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let mut owned = Vec::new();
        for rs in self.ctx.replica_sets.state() {
            if rs.metadata.namespace.as_deref() != Some(self.ns.as_str()) {
                continue;
            }
            let rs_name = rs.metadata.name.clone().unwrap_or_default();
            let labels = rs.metadata.labels.as_ref();
            let matches = selector::matches(&sel, labels);
            let refs = rs.metadata.owner_references.clone().unwrap_or_default();
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches || rs.metadata.deletion_timestamp.is_some() {
                        owned.push((*rs).clone());
                    } else {
                        let rest: Vec<_> = refs.iter().filter(|r| r.uid != uid).collect();
                        self.patch_refs(
                            &rs_name,
                            json!({"metadata": {"ownerReferences": rest, "uid": rs.metadata.uid}}),
                        )
                        .await?;
                    }
                }
                Some(_) => {}
                None if matches && rs.metadata.deletion_timestamp.is_none() => {
                    let mut refs = refs;
                    refs.push(controller_ref(&self.d));
                    let patch =
                        json!({"metadata": {"ownerReferences": refs, "uid": rs.metadata.uid}});
                    if let Some(adopted) = self.patch_refs(&rs_name, patch).await? {
                        owned.push(adopted);
                    }
                }
                None => {}
            }
        }
        Ok(owned)
    }

    async fn patch_refs(
        &self,
        name: &str,
        patch: serde_json::Value,
    ) -> Result<Option<ReplicaSet>, Error> {
        match self
            .rs_api()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(rs) => Ok(Some(rs)),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The ReplicaSet whose template is the Deployment's (the oldest if several).
    fn new_index(&self) -> Option<usize> {
        let template = self.template();
        self.sets
            .iter()
            .enumerate()
            .filter(|(_, rs)| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| hash::equal_ignoring_hash(t, &template))
            })
            .min_by_key(|(_, rs)| rs.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .map(|(i, _)| i)
    }

    fn old_indices(&self, new: Option<usize>) -> Vec<usize> {
        (0..self.sets.len()).filter(|i| Some(*i) != new).collect()
    }

    fn is_scaling_event(&self) -> bool {
        let want = replicas(&self.d).to_string();
        self.sets.iter().filter(|rs| rs_replicas(rs) > 0).any(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DESIRED_REPLICAS))
                .is_some_and(|v| *v != want)
        })
    }

    /// Upstream `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet (created if asked), its
    /// revision one above every old one, and the Deployment's revision annotation to match.
    async fn sync_revision(&mut self, create: bool) -> Result<Option<usize>, Error> {
        let new = self.new_index();
        let max_old = self
            .old_indices(new)
            .iter()
            .map(|i| rollout::revision(&self.sets[*i].metadata))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        let index = match new {
            Some(i) => {
                self.update_new_rs_annotations(i, new_revision).await?;
                Some(i)
            }
            None if create => self.create_new_rs(new_revision).await?,
            None => None,
        };
        if let Some(i) = index {
            let rev = rollout::revision(&self.sets[i].metadata).to_string();
            let current = self
                .d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION));
            if current != Some(&rev) {
                let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
                // Keep the conditions this pass set but has not written yet.
                let status = self.d.status.take();
                self.d = self
                    .d_api()
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
                self.d.status = status;
            }
        }
        Ok(index)
    }

    async fn update_new_rs_annotations(
        &mut self,
        i: usize,
        new_revision: i64,
    ) -> Result<(), Error> {
        let rs = &self.sets[i];
        let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
        for (k, v) in rollout::copied_annotations(&self.d) {
            annotations.insert(k.clone(), v.clone());
        }
        let old_revision = rollout::revision(&rs.metadata);
        if old_revision < new_revision {
            if old_revision > 0 {
                let history = match annotations.get(REVISION_HISTORY) {
                    Some(h) if !h.is_empty() => format!("{h},{old_revision}"),
                    _ => old_revision.to_string(),
                };
                annotations.insert(REVISION_HISTORY.into(), history);
            }
            annotations.insert(REVISION.into(), new_revision.to_string());
        }
        let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if Some(&annotations) == rs.metadata.annotations.as_ref()
            && min_ready.unwrap_or(0) == rs_min_ready.unwrap_or(0)
        {
            return Ok(());
        }
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = json!({
            "metadata": {"annotations": annotations, "resourceVersion": rs.metadata.resource_version},
            "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
        });
        self.sets[i] = self
            .rs_api()
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        if self
            .d
            .status
            .as_ref()
            .and_then(|s| get_condition(s, PROGRESSING))
            .is_none()
        {
            let c = condition(
                PROGRESSING,
                "True",
                "FoundNewReplicaSet",
                format!("Found new replica set {name:?}"),
            );
            self.set_status_condition(c);
        }
        Ok(())
    }

    fn set_status_condition(&mut self, c: DeploymentCondition) {
        let status = self.d.status.get_or_insert_with(DeploymentStatus::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        set_condition(conditions, c);
    }

    async fn create_new_rs(&mut self, revision: i64) -> Result<Option<usize>, Error> {
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = self.template();
        let hash = hash::compute(&template, collisions);
        let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        meta.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let spec = self.d.spec.clone().unwrap_or_default();
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut annotations: BTreeMap<String, String> = rollout::copied_annotations(&self.d)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        annotations.insert(REVISION.into(), revision.to_string());
        annotations.insert(DESIRED_REPLICAS.into(), replicas(&self.d).to_string());
        annotations.insert(
            MAX_REPLICAS.into(),
            (replicas(&self.d) + rollout::max_surge(&self.d)).to_string(),
        );
        let rs_name = format!("{}-{hash}", self.name);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: Some(self.ns.clone()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref(&self.d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let size = {
            let all: Vec<&ReplicaSet> = self.sets.iter().chain(std::iter::once(&rs)).collect();
            rollout::new_rs_replicas(&self.d, &all, &rs)
        };
        if let Some(s) = rs.spec.as_mut() {
            s.replicas = Some(size);
        }
        let created = match self.rs_api().create(&PostParams::default(), &rs).await {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = self.rs_api().get(&rs_name).await?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == self.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| hash::equal_ignoring_hash(t, &self.template()));
                if ours && same {
                    // The store had not shown it yet: a previous pass made it.
                    self.sets.push(existing);
                    return Ok(Some(self.sets.len() - 1));
                }
                // A hash collision: the next pass hashes with a higher collisionCount.
                let count = collisions.unwrap_or(0) + 1;
                self.d_api()
                    .patch_status(
                        &self.name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"collisionCount": count}})),
                    )
                    .await?;
                return Err(Error::Invalid(format!(
                    "pod-template-hash collision on {rs_name}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if size > 0 {
            self.scaled_event("up", &rs_name, 0, size).await;
        }
        let c = condition(
            PROGRESSING,
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set {rs_name:?}"),
        );
        self.set_status_condition(c);
        self.sets.push(created);
        Ok(Some(self.sets.len() - 1))
    }

    async fn scaled_event(&self, direction: &str, rs: &str, from: i32, to: i32) {
        self.ctx
            .deployment_events
            .publish(
                &self.d,
                EventType::Normal,
                "ScalingReplicaSet",
                &format!("Scaled {direction} replica set {rs} from {from} to {to}"),
            )
            .await;
    }

    /// Sets a ReplicaSet's size and its desired/max-replicas annotations. Whether the size changed.
    async fn scale(&mut self, i: usize, size: i32) -> Result<bool, Error> {
        let rs = &self.sets[i];
        let from = rs_replicas(rs);
        let desired = replicas(&self.d).to_string();
        let max = (replicas(&self.d) + rollout::max_surge(&self.d)).to_string();
        let annotations = rs.metadata.annotations.clone().unwrap_or_default();
        let current = annotations.get(DESIRED_REPLICAS) == Some(&desired)
            && annotations.get(MAX_REPLICAS) == Some(&max);
        if from == size && current {
            return Ok(false);
        }
        let name = rs.metadata.name.clone().unwrap_or_default();
        let patch = json!({
            "metadata": {
                "annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max},
                "resourceVersion": rs.metadata.resource_version,
            },
            "spec": {"replicas": size},
        });
        self.sets[i] = self
            .rs_api()
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        if from != size {
            let direction = if size > from { "up" } else { "down" };
            self.scaled_event(direction, &name, from, size).await;
        }
        Ok(from != size)
    }

    /// Upstream `rolloutRolling`.
    async fn rollout_rolling(&mut self) -> Result<Action, Error> {
        let Some(new) = self.sync_revision(true).await? else {
            return self.sync_rollout_status(None).await;
        };
        // reconcileNewReplicaSet
        let want = replicas(&self.d);
        let new_size = rs_replicas(&self.sets[new]);
        let target = if new_size > want {
            want
        } else {
            let all: Vec<&ReplicaSet> = self.sets.iter().collect();
            rollout::new_rs_replicas(&self.d, &all, &self.sets[new])
        };
        if target != new_size && self.scale(new, target).await? {
            return self.sync_rollout_status(Some(new)).await;
        }
        if self.reconcile_old(new).await? {
            return self.sync_rollout_status(Some(new)).await;
        }
        let status = self.calculate_status(Some(new));
        if rollout::complete(&self.d, &status) {
            self.cleanup(Some(new)).await?;
        }
        self.sync_rollout_status(Some(new)).await
    }

    /// Upstream `reconcileOldReplicaSets`: unhealthy old replicas go first, then as many
    /// healthy ones as maxUnavailable allows.
    async fn reconcile_old(&mut self, new: usize) -> Result<bool, Error> {
        let mut old = self.old_indices(Some(new));
        old.retain(|i| rs_replicas(&self.sets[*i]) > 0);
        if old.is_empty() {
            return Ok(false);
        }
        old.sort_by_key(|i| {
            self.sets[*i]
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
        });
        let all: Vec<&ReplicaSet> = self.sets.iter().collect();
        let budget = rollout::old_scale_down_budget(&self.d, &all, Some(&self.sets[new]));
        if budget <= 0 {
            return Ok(false);
        }
        let mut scaled = 0;
        for &i in &old {
            if scaled >= budget {
                break;
            }
            let rs = &self.sets[i];
            let unhealthy = rs_replicas(rs) - rollout::rs_available(rs);
            if unhealthy <= 0 {
                continue;
            }
            let down = unhealthy.min(budget - scaled);
            let size = rs_replicas(rs) - down;
            self.scale(i, size).await?;
            scaled += down;
        }
        // scaleDownOldReplicaSetsForRollingUpdate
        let min_available = replicas(&self.d) - rollout::max_unavailable(&self.d);
        let available: i32 = self.sets.iter().map(rollout::rs_available).sum();
        let mut total = (available - min_available).max(0);
        let mut healthy_scaled = 0;
        for &i in &old {
            if healthy_scaled >= total {
                break;
            }
            let size = rs_replicas(&self.sets[i]);
            if size == 0 {
                continue;
            }
            let down = size.min(total - healthy_scaled);
            self.scale(i, size - down).await?;
            healthy_scaled += down;
        }
        total = scaled + healthy_scaled;
        Ok(total > 0)
    }

    /// Upstream `rolloutRecreate`: every old pod gone before the new ReplicaSet scales up.
    async fn rollout_recreate(&mut self) -> Result<Action, Error> {
        let new = self.sync_revision(false).await?;
        let mut scaled_down = false;
        for i in self.old_indices(new) {
            if rs_replicas(&self.sets[i]) > 0 {
                scaled_down |= self.scale(i, 0).await?;
            }
        }
        if scaled_down || self.old_pods_running(new) {
            return self.sync_rollout_status(new).await;
        }
        let new = match new {
            Some(i) => i,
            None => match self.sync_revision(true).await? {
                Some(i) => i,
                None => return self.sync_rollout_status(None).await,
            },
        };
        let want = replicas(&self.d);
        if rs_replicas(&self.sets[new]) != want {
            self.scale(new, want).await?;
            return self.sync_rollout_status(Some(new)).await;
        }
        let status = self.calculate_status(Some(new));
        if rollout::complete(&self.d, &status) {
            self.cleanup(Some(new)).await?;
        }
        self.sync_rollout_status(Some(new)).await
    }

    fn old_pods_running(&self, new: Option<usize>) -> bool {
        let old = self.old_indices(new);
        let counted: i32 = old
            .iter()
            .map(|i| self.sets[*i].status.as_ref().map_or(0, |s| s.replicas))
            .sum();
        if counted > 0 {
            return true;
        }
        let uids: Vec<&str> = old
            .iter()
            .filter_map(|i| self.sets[*i].metadata.uid.as_deref())
            .collect();
        self.ctx.pods.state().iter().any(|p| {
            p.metadata.namespace.as_deref() == Some(self.ns.as_str())
                && controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str()))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
    }

    /// Upstream `sync`: scaling (paused or a replica change) without rolling anything.
    async fn sync(&mut self) -> Result<Action, Error> {
        let new = self.sync_revision(false).await?;
        self.proportional_scale(new).await?;
        if self.d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            self.cleanup(new).await?;
        }
        let status = self.status_with_conditions(new, false);
        self.write_status(status).await
    }

    /// Upstream `scale`: one active ReplicaSet takes the whole change; several share it in
    /// proportion to their size (a scale during a rollout).
    async fn proportional_scale(&mut self, new: Option<usize>) -> Result<(), Error> {
        let want = replicas(&self.d);
        let active: Vec<usize> = (0..self.sets.len())
            .filter(|i| rs_replicas(&self.sets[*i]) > 0)
            .collect();
        let single = match active.as_slice() {
            [one] => Some(*one),
            [] => new.or_else(|| {
                (0..self.sets.len()).max_by_key(|i| {
                    self.sets[*i]
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0)
                })
            }),
            _ => None,
        };
        if let Some(i) = single {
            self.scale(i, want).await?;
            return Ok(());
        }
        if rollout::is_recreate(&self.d) {
            return Ok(());
        }
        let max = want + rollout::max_surge(&self.d);
        let allowed = if want > 0 { max } else { 0 };
        let total: i32 = active.iter().map(|i| rs_replicas(&self.sets[*i])).sum();
        let to_add = allowed - total;
        let mut order = active.clone();
        // Largest first; newer first when scaling up, older first when scaling down.
        order.sort_by_key(|i| {
            let created = self.sets[*i]
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0);
            (
                std::cmp::Reverse(rs_replicas(&self.sets[*i])),
                if to_add > 0 {
                    std::cmp::Reverse(created)
                } else {
                    std::cmp::Reverse(None)
                },
                created,
            )
        });
        let mut sizes: Vec<(usize, i32)> = Vec::new();
        let mut added = 0;
        for &i in &order {
            let rs = &self.sets[i];
            let size = rs_replicas(rs);
            let annotated: i32 = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MAX_REPLICAS))
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .unwrap_or(total.max(1));
            let fraction =
                ((f64::from(size) * f64::from(max)) / f64::from(annotated)).round() as i32 - size;
            let left = to_add - added;
            let part = if to_add > 0 {
                fraction.min(left)
            } else {
                fraction.max(left)
            };
            added += part;
            sizes.push((i, size + part));
        }
        if let Some(first) = sizes.first_mut() {
            first.1 += to_add - added;
        }
        for (i, size) in sizes {
            self.scale(i, size.max(0)).await?;
        }
        Ok(())
    }

    /// Upstream `cleanupDeployment`: old, empty ReplicaSets beyond `revisionHistoryLimit` go,
    /// oldest revision first.
    async fn cleanup(&mut self, new: Option<usize>) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut alive: Vec<&ReplicaSet> = self
            .old_indices(new)
            .into_iter()
            .map(|i| &self.sets[i])
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = alive
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        if excess == 0 {
            return Ok(());
        }
        alive.sort_by_key(|rs| {
            (
                rollout::revision(&rs.metadata),
                rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        });
        for rs in alive.into_iter().take(excess) {
            let status = rs.status.clone().unwrap_or_default();
            if status.replicas != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation > status.observed_generation
            {
                continue;
            }
            let name = rs.metadata.name.clone().unwrap_or_default();
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self.rs_api().delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Upstream `calculateStatus`.
    fn calculate_status(&self, new: Option<usize>) -> DeploymentStatus {
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| -> i32 { self.sets.iter().map(f).sum() };
        let available = sum(&rollout::rs_available);
        let total = sum(&rs_replicas);
        let actual = |rs: &ReplicaSet| rs.status.as_ref().map_or(0, |s| s.replicas);
        let ready = sum(&|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        });
        let previous = self.d.status.clone().unwrap_or_default();
        let mut conditions = previous.conditions.clone().unwrap_or_default();
        let want = replicas(&self.d);
        let c = if available >= want - rollout::max_unavailable(&self.d) {
            condition(
                AVAILABLE,
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            condition(
                AVAILABLE,
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        set_condition(&mut conditions, c);
        DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(sum(&actual)),
            updated_replicas: Some(new.map_or(0, |i| actual(&self.sets[i]))),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((total - available).max(0)),
            collision_count: previous.collision_count,
            conditions: Some(conditions),
            ..DeploymentStatus::default()
        }
    }

    /// The status with the paused/resumed and (for a rollout) progress conditions.
    fn status_with_conditions(&self, new: Option<usize>, rolling: bool) -> DeploymentStatus {
        let mut status = self.calculate_status(new);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let paused = self.d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let deadline = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .filter(|s| *s != i32::MAX);
        let current = conditions.iter().find(|c| c.type_ == PROGRESSING).cloned();
        let reason = current.as_ref().and_then(|c| c.reason.clone());
        if deadline.is_some() && paused && reason.as_deref() != Some("DeploymentPaused") {
            set_condition(
                conditions,
                condition(
                    PROGRESSING,
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                ),
            );
        } else if deadline.is_some() && !paused && reason.as_deref() == Some("DeploymentPaused") {
            set_condition(
                conditions,
                condition(
                    PROGRESSING,
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                ),
            );
        }
        if !rolling {
            return status;
        }
        let Some(deadline) = deadline else {
            conditions.retain(|c| c.type_ != PROGRESSING);
            return status;
        };
        let current = conditions.iter().find(|c| c.type_ == PROGRESSING).cloned();
        let complete_already = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
        if complete_already {
            return status;
        }
        let rs_name = new.and_then(|i| self.sets[i].metadata.name.clone());
        let snapshot = status.clone();
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        if rollout::complete(&self.d, &snapshot) {
            let msg = match &rs_name {
                Some(n) => format!("ReplicaSet {n:?} has successfully progressed."),
                None => "Deployment has successfully progressed.".into(),
            };
            set_condition(
                conditions,
                condition(PROGRESSING, "True", NEW_RS_AVAILABLE, msg),
            );
        } else if rollout::progressing(&self.d, &snapshot) {
            let msg = match &rs_name {
                Some(n) => format!("ReplicaSet {n:?} is progressing."),
                None => format!("Deployment {:?} is progressing.", self.name),
            };
            let mut c = condition(PROGRESSING, "True", "ReplicaSetUpdated", msg);
            if let Some(cur) = current.as_ref().filter(|c| c.status == "True") {
                c.last_transition_time = cur.last_transition_time.clone();
            }
            conditions.retain(|c| c.type_ != PROGRESSING);
            conditions.push(c);
        } else if let Some(n) = &rs_name
            && timed_out(current.as_ref(), deadline)
        {
            let msg = format!("ReplicaSet {n:?} has timed out progressing.");
            set_condition(conditions, condition(PROGRESSING, "False", TIMED_OUT, msg));
        }
        status
    }

    async fn sync_rollout_status(&mut self, new: Option<usize>) -> Result<Action, Error> {
        let status = self.status_with_conditions(new, true);
        self.write_status(status).await
    }

    /// Writes `status` when it changed; asks for another look when the progress deadline
    /// would pass without any other change.
    async fn write_status(&mut self, status: DeploymentStatus) -> Result<Action, Error> {
        if self.d.status.as_ref() != Some(&status) {
            let patch = json!({"status": status_patch(&status)});
            self.d = self
                .d_api()
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        let deadline = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .filter(|s| *s != i32::MAX);
        let progressing = get_condition(&status, PROGRESSING)
            .filter(|c| c.status == "True" && c.reason.as_deref() != Some(NEW_RS_AVAILABLE));
        Ok(
            match (
                deadline,
                progressing.and_then(|c| c.last_update_time.as_ref()),
            ) {
                (Some(secs), Some(from)) => {
                    let at = from.0 + jiff::SignedDuration::from_secs(i64::from(secs));
                    let left = jiff::Timestamp::now().duration_until(at);
                    let left = if left.is_positive() {
                        left.unsigned_abs()
                    } else {
                        Duration::ZERO
                    };
                    Action::requeue(left + Duration::from_secs(1))
                }
                _ => Action::await_change(),
            },
        )
    }
}

/// Upstream `DeploymentTimedOut`, from the stored Progressing condition.
fn timed_out(current: Option<&DeploymentCondition>, deadline: i32) -> bool {
    let Some(c) = current else {
        return false;
    };
    match c.reason.as_deref() {
        Some(TIMED_OUT) => return true,
        Some(NEW_RS_AVAILABLE) => return false,
        _ => {}
    }
    let Some(from) = c.last_update_time.as_ref() else {
        return false;
    };
    from.0 + jiff::SignedDuration::from_secs(i64::from(deadline)) < jiff::Timestamp::now()
}
