//! Matching pods to node properties: `nodeSelector`, node affinity terms (matchExpressions / matchFields) and taints against tolerations, as upstream's component-helpers do.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};

/// The node facts selectors look at.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// A `nodeSelector`: every pair must be a label of the node.
pub fn selector_matches(selector: &BTreeMap<String, String>, node: NodeFacts<'_>) -> bool {
    selector
        .iter()
        .all(|(k, v)| node.labels.get(k).is_some_and(|l| l == v))
}

/// `nodeSelectorTerms` are ORed; an empty list matches nothing.
pub fn terms_match(terms: &[NodeSelectorTerm], node: NodeFacts<'_>) -> bool {
    terms.iter().any(|t| term_matches(t, node))
}

/// One term: its expressions and fields are ANDed; a term with neither matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: NodeFacts<'_>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs
        .iter()
        .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            // `metadata.name` is the only field upstream supports.
            r.key == "metadata.name" && requirement_matches(r, Some(node.name))
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value.and_then(number), values) else {
                return false;
            };
            let Some(bound) = number(bound) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect.as_str()))
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn from<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expressions_and_fields() {
        let labels: BTreeMap<String, String> = [
            ("zone".to_owned(), "a".to_owned()),
            ("gen".to_owned(), "5".to_owned()),
        ]
        .into();
        let node = NodeFacts {
            name: "n1",
            labels: &labels,
        };
        let term = |v: Value| -> NodeSelectorTerm { from(v) };
        assert!(term_matches(
            &term(json!({"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
            {"key": "gen", "operator": "Gt", "values": ["4"]},
            {"key": "gpu", "operator": "DoesNotExist"}]})),
            node
        ));
        assert!(!term_matches(
            &term(json!({"matchExpressions": [
            {"key": "zone", "operator": "NotIn", "values": ["a"]}]})),
            node
        ));
        assert!(term_matches(
            &term(json!({"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n1"]}]})),
            node
        ));
        assert!(!term_matches(
            &term(json!({"matchFields": [
            {"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]})),
            node
        ));
        assert!(!term_matches(&term(json!({})), node));
        assert!(!terms_match(&[], node));
    }

    #[test]
    fn tolerations() {
        let taint: Taint = from(json!({"key": "k", "value": "v", "effect": "NoSchedule"}));
        let tol = |v: Value| -> Toleration { from(v) };
        assert!(tolerates(&tol(json!({"key": "k", "value": "v"})), &taint));
        assert!(tolerates(
            &tol(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})),
            &taint
        ));
        assert!(tolerates(&tol(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(&tol(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(
            &tol(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
        let prefer: Taint = from(json!({"key": "p", "effect": "PreferNoSchedule"}));
        let taints = [prefer, taint];
        assert_eq!(
            untolerated(&taints, &[], &["NoSchedule", "NoExecute"]).map(|t| t.key.as_str()),
            Some("k")
        );
    }
}
