//! The API server: durable storage behind one `Store` trait (SQLite, etcd) and the Kubernetes REST API (`server`).

pub mod allocation;
pub mod apply;
pub mod discovery;
pub mod generation;
pub mod lifecycle;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod selectors;
pub mod server;
pub mod storage;
pub mod tables;
