//! Raw FFI bindings to DPDK 22.11, generated at build time (see `build.rs`).
//!
//! Everything here is `unsafe` to call. The only consumer is the safe wrapper module
//! `dataplane::dpdk`; no other code in the project touches these symbols.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all, clippy::pedantic)]
#![allow(unsafe_op_in_unsafe_fn, improper_ctypes, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
