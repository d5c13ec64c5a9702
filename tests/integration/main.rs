//! Integration and end-to-end tests: one binary, one module per area.

mod apiserver;
mod controllers;
mod durability;
mod sandbox;
mod storage;
