//! The kubelet: pod sandboxes (netns, veth, bridge, cgroup), the process runtime, probes and pod status.
