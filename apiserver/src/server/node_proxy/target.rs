//! Where a pod subresource goes: the kubelet endpoint of the pod's node, the container, and
//! the upstream kubelet path with its query (pure: no I/O).

use std::fmt;

use serde_json::Value;

use crate::server::status::ApiError;

/// The kubelet port when a Node does not publish one (upstream's default).
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// The pod annotation naming the container kubectl (and skiff) default to.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// A kubelet's HTTPS endpoint: a node address (IP or host name) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletEndpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for KubeletEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The endpoint of a Node object: its `InternalIP` address, else its `Hostname`, and
/// `status.daemonEndpoints.kubeletEndpoint.Port` (default 10250). `None` when the node
/// publishes no usable address.
pub fn kubelet_endpoint(node: &Value) -> Option<KubeletEndpoint> {
    let addresses = node["status"]["addresses"].as_array()?;
    let find = |kind: &str| {
        addresses
            .iter()
            .filter(|a| a["type"] == kind)
            .filter_map(|a| a["address"].as_str())
            .find(|a| !a.is_empty())
    };
    let host = find("InternalIP").or_else(|| find("Hostname"))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some(KubeletEndpoint {
        host: host.to_owned(),
        port,
    })
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request addresses: the one asked for (which must exist), else the only
/// container, else the `kubectl.kubernetes.io/default-container` annotation's, else a 400
/// listing the containers (upstream's wording).
pub fn container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    if let Some(wanted) = requested.filter(|c| !c.is_empty()) {
        if [&containers, &init, &ephemeral]
            .iter()
            .any(|list| list.iter().any(|c| c == wanted))
        {
            return Ok(wanted.to_owned());
        }
        return Err(ApiError::bad_request(format!(
            "container {wanted} is not valid for pod {pod_name}"
        )));
    }
    if let [only] = containers.as_slice() {
        return Ok(only.clone());
    }
    let annotated = pod["metadata"]["annotations"][DEFAULT_CONTAINER_ANNOTATION].as_str();
    if let Some(default) = annotated.filter(|a| containers.iter().any(|c| c == a)) {
        return Ok(default.to_owned());
    }
    if containers.is_empty() {
        return Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}"
        )));
    }
    let mut message = format!(
        "a container name must be specified for pod {pod_name}, choose one of: [{}]",
        containers.join(" ")
    );
    if !init.is_empty() {
        message.push_str(&format!(
            " or one of the init containers: [{}]",
            init.join(" ")
        ));
    }
    if !ephemeral.is_empty() {
        message.push_str(&format!(
            " or one of the ephemeral containers: [{}]",
            ephemeral.join(" ")
        ));
    }
    Err(ApiError::bad_request(message))
}

/// A pod subresource the API server forwards to the kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streaming {
    Log,
    Exec,
    Attach,
    PortForward,
}

impl Streaming {
    pub fn from_subresource(sub: &str) -> Option<Self> {
        match sub {
            "log" => Some(Self::Log),
            "exec" => Some(Self::Exec),
            "attach" => Some(Self::Attach),
            "portforward" => Some(Self::PortForward),
            _ => None,
        }
    }

    pub fn needs_container(self) -> bool {
        self != Self::PortForward
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn non_negative(query: &[(String, String)], key: &str, min: i64) -> Result<(), ApiError> {
    for (k, v) in query.iter().filter(|(k, _)| k == key) {
        let n: i64 = v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid {k} {v:?}: not an integer")))?;
        if n < min {
            return Err(ApiError::new(
                422,
                "Invalid",
                format!(
                    "PodLogOptions \"\" is invalid: {k}: Invalid value: {n}: must be greater \
                     than {}",
                    if min == 0 {
                        "or equal to 0".to_owned()
                    } else {
                        format!("{}", min - 1)
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// The kubelet's path and query for `what` on `namespace/pod` (`container` when it needs
/// one), from the client's query: `/containerLogs/{ns}/{pod}/{container}`,
/// `/exec|attach/{ns}/{pod}/{container}`, `/portForward/{ns}/{pod}`.
pub fn kubelet_path(
    what: Streaming,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Result<String, ApiError> {
    let keep: &[&str] = match what {
        Streaming::Log => &[
            "follow",
            "previous",
            "timestamps",
            "sinceSeconds",
            "sinceTime",
            "tailLines",
            "limitBytes",
        ],
        Streaming::Exec => &["command", "stdin", "stdout", "stderr", "tty"],
        Streaming::Attach => &["stdin", "stdout", "stderr", "tty"],
        Streaming::PortForward => &["port", "ports"],
    };
    if what == Streaming::Log {
        non_negative(query, "tailLines", 0)?;
        non_negative(query, "sinceSeconds", 1)?;
        non_negative(query, "limitBytes", 1)?;
    }
    if what == Streaming::Exec && !query.iter().any(|(k, v)| k == "command" && !v.is_empty()) {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    if matches!(what, Streaming::Exec | Streaming::Attach)
        && !query.iter().any(|(k, v)| {
            matches!(k.as_str(), "stdin" | "stdout" | "stderr")
                && matches!(v.as_str(), "true" | "1")
        })
    {
        return Err(ApiError::bad_request(
            "you must specify at least one of stdin, stdout, stderr",
        ));
    }
    let base = match what {
        Streaming::Log => format!(
            "/containerLogs/{}/{}/{}",
            encode(namespace),
            encode(pod),
            encode(container)
        ),
        Streaming::Exec => format!(
            "/exec/{}/{}/{}",
            encode(namespace),
            encode(pod),
            encode(container)
        ),
        Streaming::Attach => format!(
            "/attach/{}/{}/{}",
            encode(namespace),
            encode(pod),
            encode(container)
        ),
        Streaming::PortForward => format!("/portForward/{}/{}", encode(namespace), encode(pod)),
    };
    let params: Vec<String> = query
        .iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    if params.is_empty() {
        Ok(base)
    } else {
        Ok(format!("{base}?{}", params.join("&")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn node_address_choice() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "node-1"},
                          {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10255}}}});
        assert_eq!(
            kubelet_endpoint(&node),
            Some(KubeletEndpoint {
                host: "10.0.0.5".into(),
                port: 10255
            })
        );
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "node-1"},
                                                   {"type": "ExternalIP", "address": "1.2.3.4"}]}});
        assert_eq!(
            kubelet_endpoint(&node),
            Some(KubeletEndpoint {
                host: "node-1".into(),
                port: 10250
            })
        );
        assert_eq!(kubelet_endpoint(&json!({"status": {}})), None);
        let v6 = KubeletEndpoint {
            host: "::1".into(),
            port: 1,
        };
        assert_eq!(v6.to_string(), "[::1]:1");
    }

    #[test]
    fn container_defaulting() {
        let one = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container(&one, None).ok().as_deref(), Some("a"));
        assert_eq!(container(&one, Some("a")).ok().as_deref(), Some("a"));
        let err = container(&one, Some("b")).err().map(|e| e.message);
        assert_eq!(err.as_deref(), Some("container b is not valid for pod p"));
        let two = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        let err = container(&two, None).err().map(|e| (e.code, e.message));
        assert_eq!(
            err,
            Some((
                400,
                "a container name must be specified for pod p, choose one \
            of: [a b] or one of the init containers: [i]"
                    .to_owned()
            ))
        );
        assert_eq!(container(&two, Some("i")).ok().as_deref(), Some("i"));
        let mut annotated = two.clone();
        annotated["metadata"]["annotations"] = json!({DEFAULT_CONTAINER_ANNOTATION: "b"});
        assert_eq!(container(&annotated, None).ok().as_deref(), Some("b"));
    }

    #[test]
    fn kubelet_paths() -> Result<(), ApiError> {
        let path = kubelet_path(
            Streaming::Log,
            "default",
            "web",
            "app",
            &q(&[
                ("container", "app"),
                ("follow", "true"),
                ("tailLines", "10"),
                ("pretty", "1"),
            ]),
        )?;
        assert_eq!(
            path,
            "/containerLogs/default/web/app?follow=true&tailLines=10"
        );
        let path = kubelet_path(
            Streaming::Exec,
            "default",
            "web",
            "app",
            &q(&[
                ("command", "sh"),
                ("command", "-c"),
                ("command", "echo a b"),
                ("stdout", "true"),
            ]),
        )?;
        assert_eq!(
            path,
            "/exec/default/web/app?command=sh&command=-c&command=echo%20a%20b&stdout=true"
        );
        assert_eq!(
            kubelet_path(
                Streaming::PortForward,
                "ns",
                "p",
                "",
                &q(&[("ports", "80")])
            )?,
            "/portForward/ns/p?ports=80"
        );
        let err = kubelet_path(Streaming::Log, "n", "p", "c", &q(&[("tailLines", "-1")])).err();
        assert_eq!(err.map(|e| e.code), Some(422));
        let err = kubelet_path(Streaming::Exec, "n", "p", "c", &q(&[("stdout", "true")])).err();
        assert_eq!(err.map(|e| e.code), Some(400));
        let err = kubelet_path(Streaming::Attach, "n", "p", "c", &q(&[])).err();
        assert_eq!(err.map(|e| e.code), Some(400));
        Ok(())
    }
}
