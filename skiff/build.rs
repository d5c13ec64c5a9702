//! Links the `skiff` executable as non-PIE (Go's default for executables on linux/amd64).
//!
//! Every container of a built-in image (`skiff.dev/pause`, `echo`, `grpc-echo`) is an exec of
//! this binary. As a PIE it carries ~57,000 relative relocations that the dynamic loader
//! applies at every exec, copying ~240 pages of `.data.rel.ro` on write: measured, `skiff
//! pause` costs 5.5 ms of CPU and 500 page faults to start as a PIE and 2.9 ms and 245 faults
//! without. The cost of the choice is address-space randomisation of the executable's own
//! image (libraries, stack and heap stay randomised).

fn main() {
    // Only the executables: test harnesses and libraries are unaffected.
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
