//! The traffic generator starts DPDK's EAL, so it links DPDK's drivers (see
//! dpdk-sys/build.rs).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_DPDK_DRIVER_LINK_ARGS");
    let args = std::env::var("DEP_DPDK_DRIVER_LINK_ARGS").expect("dpdk-sys exports the drivers' link arguments");
    for arg in args.split_whitespace() {
        println!("cargo:rustc-link-arg-bin=tgen={arg}");
    }
}
