//! skiff-controller's reconcilers against an in-process API server (real storage, real HTTPS).

mod services;
mod workloads;
