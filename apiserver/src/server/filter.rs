//! List and watch filtering by `labelSelector` / `fieldSelector`: the one place selectors apply.
//!
//! The selector language is [`crate::selectors`] (upstream `labels.Parse` and the per-kind
//! field labels); a selector it refuses becomes a 400 Status. A watch on an object path adds
//! the object's name.
//!
//! Limit: upstream turns a MODIFIED event whose object stops (or starts) matching into DELETED
//! (or ADDED); the store's events carry only the new state, so such events are dropped (or
//! sent as MODIFIED) here.

use serde_json::Value;
use skiff_api::Kind;

use super::status::ApiError;
use crate::selectors::{FieldSelector, LabelSelector};

/// The selectors of one list or watch request, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The object's name, for watches on an object path.
    pub name: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// Parses the `labelSelector` and `fieldSelector` query parameters for `kind`.
    pub fn from_query(
        kind: Kind,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(label_selector.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
        let fields = FieldSelector::parse(field_selector.unwrap_or(""), kind)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Self {
            name: None,
            labels,
            fields,
        })
    }

    /// Whether every object passes (no name, label or field condition).
    pub fn selects_everything(&self) -> bool {
        self.name.is_none() && self.labels.is_empty() && self.fields.is_empty()
    }
}

/// Whether `object` passes the request's selectors.
pub fn matches_selectors(filter: &Filter, object: &Value) -> bool {
    filter
        .name
        .as_deref()
        .is_none_or(|n| object["metadata"]["name"].as_str() == Some(n))
        && filter.labels.matches_object(object)
        && filter.fields.matches(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_field_and_name_filters_combine() -> Result<(), ApiError> {
        let pod = json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web"}},
                         "spec": {"nodeName": "n1"}});
        let f = Filter::from_query(
            Kind::Pod,
            Some("app in (web,api)"),
            Some("metadata.name=a,spec.nodeName=n1"),
        )?;
        assert!(matches_selectors(&f, &pod));
        let f = Filter::from_query(Kind::Pod, Some("app!=web"), None)?;
        assert!(!matches_selectors(&f, &pod));
        let mut f = Filter::from_query(Kind::Pod, None, None)?;
        assert!(matches_selectors(&f, &pod));
        f.name = Some("b".into());
        assert!(!matches_selectors(&f, &pod));
        Ok(())
    }

    #[test]
    fn bad_selectors_are_400s() {
        for (labels, fields) in [
            (Some("app in (web"), None),
            (None, Some("spec.nodeName=n")), // not a ConfigMap field
        ] {
            match Filter::from_query(Kind::ConfigMap, labels, fields) {
                Err(err) => assert_eq!(err.code, 400, "{labels:?} {fields:?}"),
                Ok(f) => panic!("{labels:?} {fields:?} accepted: {f:?}"),
            }
        }
    }
}
