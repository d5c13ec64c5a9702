//! Cluster DNS: the Kubernetes DNS-Based Service Discovery specification, forwarding and cache.
