//! The scheduler (`default-scheduler`): binds pending pods to nodes.

pub mod decide;
pub mod node_match;
pub mod quantity;
pub mod requests;
pub mod snapshot;
