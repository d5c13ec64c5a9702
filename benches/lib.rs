//! Benchmarks: criterion micro-benchmarks (`cargo bench -p skiff-benches`) and end-to-end scripts.
