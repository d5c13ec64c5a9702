//! The kubelet: pod sandboxes (netns, veth, bridge, cgroup), the process runtime, probes and pod status.

pub mod env;
pub mod images;
pub mod logs;
pub mod registration;
pub mod sandbox;
pub mod status;
pub mod streaming;
