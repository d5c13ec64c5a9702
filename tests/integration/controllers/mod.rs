//! Reconcilers against an in-process API server (real storage, real HTTPS).

mod services;
