//! Pod sandboxes: a network namespace per pod on the node bridge, IPAM, the pod cgroup and its DNS files.
