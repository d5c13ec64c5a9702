//! The ingress controller and its TLS-terminating L7 proxy: host/path routing and per-request balancing.
