//! The kubelet's HTTPS server: container logs, exec, attach and port-forward streams for the API server.
