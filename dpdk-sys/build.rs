//! Generates bindings to the system DPDK with bindgen and compiles C wrappers for DPDK's
//! `static inline` functions (the whole fast path: rx/tx burst, mbuf alloc/free, ...).
//!
//! DPDK is found with `pkg-config libdpdk`. Its `--cflags` are used verbatim: they carry
//! `-include rte_config.h -march=corei7`, which the `pkg-config` crate would drop and without
//! which `rte_memcpy.h` does not compile.
//!
//! DPDK is linked statically with a chosen set of drivers (see `link_static`);
//! `VSWITCH_DPDK_LINK=shared` links its shared libraries instead.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| panic!("cannot run pkg-config ({e}); install pkg-config and libdpdk-dev"));
    if !out.status.success() {
        panic!(
            "pkg-config {args:?} libdpdk failed: {}\nInstall DPDK 22.11: apt-get install dpdk-dev libdpdk-dev",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).expect("pkg-config output is UTF-8").split_whitespace().map(str::to_owned).collect()
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    for f in ["wrapper.h", "shim.h", "shim.c", "build.rs"] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=VSWITCH_DPDK_LINK");

    let version = pkg_config(&["--modversion"]).join("");
    if !version.starts_with("22.11") {
        println!("cargo:warning=built against DPDK {version}; the project is tested with 22.11");
    }
    let cflags = pkg_config(&["--cflags"]);

    let wrappers = out.join("static_fns");
    let bindings = bindgen::Builder::default()
        .header(manifest.join("wrapper.h").to_string_lossy())
        .clang_args(&cflags)
        .clang_arg(format!("-I{}", manifest.display()))
        .clang_arg("-DALLOW_EXPERIMENTAL_API")
        .allowlist_function("rte_.*|vs_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*|rte_.*")
        // The derive of Debug for this one item trips a bindgen bug.
        .no_debug("rte_flow_item_gtp_psc")
        // DPDK's comments turn into doctests that do not compile.
        .generate_comments(false)
        .derive_default(true)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on the DPDK headers");
    bindings.write_to_file(out.join("bindings.rs")).expect("cannot write bindings.rs");

    let mut build = cc::Build::new();
    build
        .file(wrappers.with_extension("c"))
        .file(manifest.join("shim.c"))
        .include(&manifest)
        .define("ALLOW_EXPERIMENTAL_API", None)
        .opt_level(3)
        .warnings(false);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("dpdk_static_fns");

    if env::var("VSWITCH_DPDK_LINK").is_ok_and(|v| v == "shared") {
        link_shared();
    } else {
        link_static();
    }
}

/// The drivers linked in: the PCI functions Kubernetes' SR-IOV device plugin hands out
/// (Intel iavf/i40e/ice/ixgbe, Mellanox mlx5), the paravirtual NICs (virtio) and every vdev
/// the switch's port kinds use. `VSWITCH_DPDK_DRIVERS` (comma-separated, DPDK's names such
/// as `net_bnxt`) adds more.
const DRIVERS: &[&str] = &[
    "bus_pci",
    "bus_vdev",
    "bus_auxiliary",
    "common_iavf",
    "common_mlx5",
    "mempool_ring",
    "mempool_stack",
    "net_af_packet",
    "net_af_xdp",
    "net_i40e",
    "net_iavf",
    "net_ice",
    "net_ixgbe",
    "net_memif",
    "net_mlx5",
    "net_null",
    "net_pcap",
    "net_ring",
    "net_tap",
    "net_vhost",
    "net_virtio",
];

/// Driver archives (drivers/ in DPDK's tree) as opposed to libraries (lib/).
const DRIVER_CLASSES: &[&str] = &[
    "baseband_",
    "bus_",
    "common_",
    "compress_",
    "crypto_",
    "dma_",
    "event_",
    "mempool_",
    "net_",
    "raw_",
    "regex_",
    "vdpa_",
];

/// DPDK linked statically, with only the drivers in `DRIVERS`. Linked dynamically, the EAL
/// dlopens every driver in Debian's plugin directory (128 of them, with their libraries) at
/// each start: 20 to 40 ms of a switch's start-up here, and the rest of it is not much more.
///
/// Two parts, as DPDK's own applications link:
/// - the libraries (lib/ in DPDK's tree) as plain archives, for every binary: the linker
///   takes the members a binary calls, so vswitchctl and vswitch-cni, which never start the
///   EAL, get none of DPDK (vswitch-cni runs on the node, which has no DPDK);
/// - the drivers, which nothing calls (their constructors register them), inside
///   --whole-archive, for the binaries and tests that start the EAL only: their build scripts
///   pass `DEP_DPDK_DRIVER_LINK_ARGS` to the linker. The libraries and system libraries
///   follow them again there, for linkers that read archives in one pass.
fn link_static() {
    println!("cargo:rerun-if-env-changed=VSWITCH_DPDK_DRIVERS");
    let extra = env::var("VSWITCH_DPDK_DRIVERS").unwrap_or_default();
    let wanted: Vec<&str> = DRIVERS.iter().copied().chain(extra.split(',').map(str::trim)).collect();
    let lib_dirs: Vec<PathBuf> = pkg_config(&["--variable=libdir"])
        .into_iter()
        .map(PathBuf::from)
        .chain(["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib", "/lib"].map(PathBuf::from))
        .collect();
    let mut drivers = Vec::new();
    let mut libraries = Vec::new();
    let mut system_libs: Vec<String> = Vec::new();
    for arg in pkg_config(&["--static", "--libs"]) {
        if let Some(dir) = arg.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(archive) = arg.strip_prefix("-l:lib").and_then(|a| a.strip_suffix(".a")) {
            let name = archive.strip_prefix("rte_").unwrap_or(archive);
            if !DRIVER_CLASSES.iter().any(|c| name.starts_with(c)) {
                libraries.push(archive.to_owned());
            } else if wanted.contains(&name) {
                drivers.push(archive.to_owned());
            }
        } else if let Some(name) = arg.strip_prefix("-l") {
            // The shared DPDK libraries come from the Requires line; private dependencies
            // of the system libraries (libpcap's libsystemd, say) are only needed to link
            // those statically, and often have no development symlink: leave both out.
            let linkable = lib_dirs.iter().any(|d| d.join(format!("lib{name}.so")).exists());
            if !name.starts_with("rte_") && linkable && !system_libs.iter().any(|l| l == name) {
                system_libs.push(name.to_owned());
            }
        }
    }
    for w in wanted.iter().filter(|w| !w.is_empty()) {
        if !drivers.iter().any(|d| d.strip_prefix("rte_") == Some(*w)) {
            panic!("DPDK driver {w} has no static archive (librte_{w}.a) in this DPDK");
        }
    }
    for archive in &libraries {
        println!("cargo:rustc-link-lib=static:-bundle={archive}");
    }
    for name in &system_libs {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
    let mut app = vec!["-Wl,--whole-archive".to_owned()];
    app.extend(drivers.iter().map(|d| format!("-l:lib{d}.a")));
    app.push("-Wl,--no-whole-archive".to_owned());
    app.extend(libraries.iter().map(|l| format!("-l:lib{l}.a")));
    app.extend(system_libs.iter().map(|l| format!("-l{l}")));
    println!("cargo:driver_link_args={}", app.join(" "));
}

/// DPDK's shared libraries (`VSWITCH_DPDK_LINK=shared`): every driver of the system's plugin
/// directory is loaded at start, at the cost described above.
fn link_shared() {
    for lib in pkg_config(&["--libs"]) {
        if let Some(name) = lib.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={name}");
        } else if let Some(dir) = lib.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
    }
    // rte_vdev_init and friends live in the vdev bus driver, which the .pc Libs line leaves out.
    println!("cargo:rustc-link-lib=dylib=rte_bus_vdev");
    // The EAL loads the drivers itself.
    println!("cargo:driver_link_args=");
}
