//! The kernel ABI: BPF programs in C, their loader and typed maps. Knows nothing of Services.
