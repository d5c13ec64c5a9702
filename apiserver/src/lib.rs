//! The API server: durable storage behind one `Store` trait (SQLite, etcd) and, later, the Kubernetes REST API.

pub mod storage;
