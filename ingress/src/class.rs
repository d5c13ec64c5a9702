//! Which Ingresses are ours: IngressClass selection per the Ingress specification.

use std::collections::BTreeMap;

use crate::model::{ClassInfo, IngressInfo};

/// The `spec.controller` of IngressClasses this controller serves.
pub const CONTROLLER_NAME: &str = "skiff.dev/ingress-controller";
/// The IngressClass created at start (and marked default).
pub const DEFAULT_CLASS_NAME: &str = "skiff";

/// Class selection settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassSelector {
    /// `--ingress-class`: also serve Ingresses of this class name, whatever its controller
    /// (or if no such IngressClass exists).
    pub extra_class: Option<String>,
}

impl ClassSelector {
    fn class_is_ours(&self, name: &str, classes: &BTreeMap<String, ClassInfo>) -> bool {
        self.extra_class.as_deref() == Some(name)
            || classes
                .get(name)
                .is_some_and(|c| c.controller == CONTROLLER_NAME)
    }

    /// Ours: its class is ours, or it has no class and a default IngressClass is ours.
    /// Everything else is ignored entirely (no routes, no status).
    pub fn is_ours(&self, ing: &IngressInfo, classes: &BTreeMap<String, ClassInfo>) -> bool {
        match ing.class.as_deref() {
            Some(name) => self.class_is_ours(name, classes),
            None => classes
                .values()
                .any(|c| c.is_default && self.class_is_ours(&c.name, classes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Key;

    fn classes(list: &[(&str, &str, bool)]) -> BTreeMap<String, ClassInfo> {
        list.iter()
            .map(|(n, c, d)| {
                (
                    n.to_string(),
                    ClassInfo {
                        name: n.to_string(),
                        controller: c.to_string(),
                        is_default: *d,
                    },
                )
            })
            .collect()
    }

    fn ing(class: Option<&str>) -> IngressInfo {
        IngressInfo {
            key: Key::new("default", "i"),
            uid: None,
            created: None,
            class: class.map(str::to_owned),
            default_backend: None,
            rules: vec![],
            tls: vec![],
            ssl_redirect: true,
            backend_protocol: Default::default(),
            max_body: None,
            canary_weight: None,
            problems: vec![],
            status: vec![],
        }
    }

    #[test]
    fn selection() {
        let ours_default = classes(&[
            ("skiff", CONTROLLER_NAME, true),
            ("nginx", "k8s.io/ingress-nginx", false),
        ]);
        let foreign_default = classes(&[
            ("skiff", CONTROLLER_NAME, false),
            ("nginx", "k8s.io/ingress-nginx", true),
        ]);
        let plain = ClassSelector::default();
        let extra = ClassSelector {
            extra_class: Some("nginx".into()),
        };
        let cases = [
            (&plain, &ours_default, Some("skiff"), true),
            (&plain, &ours_default, Some("nginx"), false),
            (&plain, &ours_default, None, true),
            (&plain, &ours_default, Some("missing"), false),
            (&plain, &foreign_default, None, false),
            (&plain, &foreign_default, Some("skiff"), true),
            (&extra, &foreign_default, Some("nginx"), true),
            (&extra, &foreign_default, None, true),
            (&extra, &classes(&[]), Some("nginx"), true),
            (&plain, &classes(&[]), None, false),
        ];
        for (i, (sel, cl, class, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                sel.is_ours(&ing(class), cl),
                want,
                "case {i}: class {class:?}"
            );
        }
    }
}
