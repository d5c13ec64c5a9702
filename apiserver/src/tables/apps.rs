//! `apps/v1` printers: deployments, replicasets, statefulsets.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    Column, Row, age, age_col, at, col, containers_and_images, format_label_selector, int, name,
    name_col, wide,
};
use crate::selectors::LabelSelector;

const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";

pub const DEPLOYMENT_COLUMNS: &[Column] = &[
    name_col(),
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    age_col(),
    wide("Containers", "string", CONTAINERS_DESC),
    wide("Images", "string", IMAGES_DESC),
    wide(
        "Selector",
        "string",
        "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
    ),
];

pub const REPLICASET_COLUMNS: &[Column] = &[
    name_col(),
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replica set.",
    ),
    age_col(),
    wide("Containers", "string", CONTAINERS_DESC),
    wide("Images", "string", IMAGES_DESC),
    wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the replica count.",
    ),
];

pub const STATEFULSET_COLUMNS: &[Column] = &[
    name_col(),
    col("Ready", "string", "Number of the pod with ready state"),
    age_col(),
    wide("Containers", "string", CONTAINERS_DESC),
    wide("Images", "string", IMAGES_DESC),
];

/// `spec.replicas`, defaulting to 1 like the API server does.
fn desired(obj: &Value) -> i64 {
    at(obj, "spec.replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn template_spec(obj: &Value) -> Option<&Value> {
    at(obj, "spec.template.spec")
}

pub fn deployment_row(d: &Value, now: Timestamp) -> Row {
    let (containers, images) = containers_and_images(template_spec(d));
    // Upstream prints `selector.String()` here (not FormatLabelSelector): empty stays empty.
    let selector = match at(d, "spec.selector").filter(|v| !v.is_null()) {
        None => String::new(),
        Some(sel) => match LabelSelector::from_json(sel) {
            Ok(sel) => sel.to_string(),
            Err(_) => "<invalid>".to_string(),
        },
    };
    Row::new(vec![
        name(d),
        json!(format!("{}/{}", int(d, "status.readyReplicas"), desired(d))),
        json!(int(d, "status.updatedReplicas")),
        json!(int(d, "status.availableReplicas")),
        age(d, now),
        containers,
        images,
        json!(selector),
    ])
}

pub fn replicaset_row(rs: &Value, now: Timestamp) -> Row {
    let (containers, images) = containers_and_images(template_spec(rs));
    Row::new(vec![
        name(rs),
        json!(desired(rs)),
        json!(int(rs, "status.replicas")),
        json!(int(rs, "status.readyReplicas")),
        age(rs, now),
        containers,
        images,
        json!(format_label_selector(at(rs, "spec.selector"))),
    ])
}

pub fn statefulset_row(sts: &Value, now: Timestamp) -> Row {
    let (containers, images) = containers_and_images(template_spec(sts));
    Row::new(vec![
        name(sts),
        json!(format!(
            "{}/{}",
            int(sts, "status.readyReplicas"),
            desired(sts)
        )),
        age(sts, now),
        containers,
        images,
    ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::tests::{ago, names, now};
    use super::*;
    use skiff_api::Kind;

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "creationTimestamp": ago(5 * 86400)},
            "spec": {"replicas": 3,
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [
                         {"name": "web", "image": "nginx:1.27"},
                         {"name": "log", "image": "busybox"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        })
    }

    #[test]
    fn deployment_cells() {
        assert_eq!(
            names(Kind::Deployment),
            vec![
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ]
        );
        assert_eq!(
            deployment_row(&deployment(), now()).cells,
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("5d"),
                json!("web,log"),
                json!("nginx:1.27,busybox"),
                json!("app=web")
            ]
        );
        let empty = json!({"metadata": {"name": "x"}});
        let c = deployment_row(&empty, now()).cells;
        assert_eq!(c[1], "0/1");
        assert_eq!(c[5], "");
        assert_eq!(c[7], "");
        let zero = json!({"metadata": {"name": "x"}, "spec": {"replicas": 0}});
        assert_eq!(deployment_row(&zero, now()).cells[1], "0/0");
    }

    #[test]
    fn replicaset_cells() {
        assert_eq!(
            names(Kind::ReplicaSet),
            vec![
                ("Name", 0),
                ("Desired", 0),
                ("Current", 0),
                ("Ready", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ]
        );
        let mut rs = deployment();
        rs["metadata"]["name"] = json!("web-abc");
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"] = json!("abc");
        assert_eq!(
            replicaset_row(&rs, now()).cells,
            vec![
                json!("web-abc"),
                json!(3),
                json!(3),
                json!(2),
                json!("5d"),
                json!("web,log"),
                json!("nginx:1.27,busybox"),
                json!("app=web,pod-template-hash=abc")
            ]
        );
        assert_eq!(replicaset_row(&json!({}), now()).cells[7], json!("<none>"));
    }

    #[test]
    fn statefulset_cells() {
        assert_eq!(
            names(Kind::StatefulSet),
            vec![
                ("Name", 0),
                ("Ready", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1)
            ]
        );
        let mut sts = deployment();
        sts["metadata"]["name"] = json!("db");
        assert_eq!(
            statefulset_row(&sts, now()).cells,
            vec![
                json!("db"),
                json!("2/3"),
                json!("5d"),
                json!("web,log"),
                json!("nginx:1.27,busybox")
            ]
        );
    }
}
