//! The storage battery: one suite of `Store` tests run against every backend.

mod battery;
mod etcd;
mod sqlite;
