//! vswitchd starts DPDK's EAL, so it links DPDK's drivers; vswitchctl and vswitch-cni do not
//! (see dpdk-sys/build.rs).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_DPDK_DRIVER_LINK_ARGS");
    let args = std::env::var("DEP_DPDK_DRIVER_LINK_ARGS").expect("dpdk-sys exports the drivers' link arguments");
    for arg in args.split_whitespace() {
        println!("cargo:rustc-link-arg-bin=vswitchd={arg}");
    }
}
