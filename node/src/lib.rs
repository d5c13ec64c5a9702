//! The kubelet: pod sandboxes (netns, veth, bridge, cgroup), the process runtime, probes and pod status.

pub mod config;
pub mod env;
pub mod images;
pub mod kubelet;
pub mod logs;
mod mountinfo;
pub mod pods;
pub mod probes;
pub mod registration;
pub mod sandbox;
pub mod status;
pub mod streaming;
pub mod volumes;
