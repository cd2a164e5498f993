//! Links the `strata` command as a fixed-address (non-PIE) executable.
//!
//! Every command is a new process, and a position-independent one spends its start in the
//! dynamic loader applying about 25,000 relative relocations, each page of pointers it
//! touches copied on write, and its exit unmapping them again: 1.5 to 2 ms of every
//! `strata run`. At a fixed address the linker has applied them. The shim, which lives as
//! long as its container and stands between it and the host, stays position-independent
//! (address-space randomisation of its code).
fn main() {
    println!("cargo:rustc-link-arg-bin=strata=-no-pie");
}
