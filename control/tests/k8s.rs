//! Running in Kubernetes, checked without a cluster: vswitchd started as a pod would start
//! it (SR-IOV device plugin variables, a cgroup with the container's cpuset and limits, a
//! ConfigMap), with vdevs standing in for VFs; and every manifest and the Helm chart's
//! output validated against the Kubernetes schemas.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{serial, unique, Vswitchd, VSWITCHD, WORKER_CORE};
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A fake container cgroup (v2 files).
fn cgroup(dir: &Path, cpus: &str, cpu_max: &str, hugetlb_2mb: &str) -> PathBuf {
    let cg = dir.join("cgroup");
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::write(cg.join("cpuset.cpus.effective"), format!("{cpus}\n")).unwrap();
    std::fs::write(cg.join("cpu.max"), format!("{cpu_max}\n")).unwrap();
    std::fs::write(cg.join("hugetlb.2MB.max"), format!("{hugetlb_2mb}\n")).unwrap();
    cg
}

/// The `vswitchd.toml` of a ConfigMap manifest (the block scalar under data).
fn configmap_toml(yaml: &str) -> String {
    let start = yaml.find("vswitchd.toml: |").expect("vswitchd.toml in the ConfigMap");
    let body = &yaml[start..].lines().skip(1).collect::<Vec<_>>();
    let indent = body.iter().find(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).unwrap();
    body.iter()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The repository's ConfigMap, made local: the test's socket, file prefix and no TCP.
fn pod_config(dir: &Path, socket: &Path, prefix: &str) -> PathBuf {
    let yaml = std::fs::read_to_string(Path::new(ROOT).join("docker/k8s/configmap.yaml")).unwrap();
    let mut toml = configmap_toml(&yaml);
    toml = toml.replace("file_prefix = \"vswitch\"", &format!("file_prefix = \"{prefix}\""));
    toml = toml.replace("socket = \"/run/vswitch/vswitchd.sock\"", &format!("socket = \"{}\"", socket.display()));
    toml = toml.replace("listen = \"0.0.0.0:50051\"\n", "");
    toml = toml.replace("metrics = \"0.0.0.0:9464\"", "metrics = \"off\"");
    // vdevs have a 1500-byte MTU limit of their own; 9000 is for the real VFs.
    toml = toml.replace("mtu = 9000", "mtu = 1500");
    let path = dir.join("vswitchd.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn pod_command(config: &Path, cgroup: &Path, vfs: &str) -> Command {
    let mut c = Command::new(VSWITCHD);
    c.args(["--pod", "--config"])
        .arg(config)
        .arg("--cgroup-dir")
        .arg(cgroup)
        .env("PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK", vfs);
    c
}

#[test]
fn vswitchd_starts_from_a_pod_environment() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("vspod");
    let socket = dir.path().join("vswitchd.sock");
    let config = pod_config(dir.path(), &socket, &prefix);
    let cpus = format!("0,{WORKER_CORE}");
    let cg = cgroup(dir.path(), &cpus, "200000 100000", &(1u64 << 30).to_string());
    let sw = Vswitchd::start_with_command(dir, &mut pod_command(&config, &cg, "net_null0, net_null1"), socket, prefix);
    let log = sw.log_text();
    assert!(log.contains("pod: CPUs [0, 1] (control 0, workers [1])"), "{log}");
    let ports: Value = serde_json::from_slice(&sw.ctl(&["--json", "list-ports"]).stdout).unwrap();
    let ports: Vec<(String, u64, String)> = ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["name"].as_str().unwrap().into(), p["number"].as_u64().unwrap(), p["driver"].as_str().unwrap().into())
        })
        .collect();
    assert_eq!(ports, vec![("vf0".into(), 1, "net_null".into()), ("vf1".into(), 2, "net_null".into())]);
    let workers: Value = serde_json::from_slice(&sw.ctl(&["--json", "list-workers"]).stdout).unwrap();
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1);
    assert_eq!(workers["workers"][0]["core"], WORKER_CORE as u64);
    // The VF stand-ins forward: net_null receives endlessly, and the frames go out.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let show = String::from_utf8_lossy(&sw.ctl(&["list-ports"]).stdout).into_owned();
    let ports: Value = serde_json::from_slice(&sw.ctl(&["--json", "list-ports"]).stdout).unwrap();
    assert!(ports["ports"][0]["counters"]["rx_packets"].as_u64().unwrap_or(0) > 0, "{show}");
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn vswitchd_refuses_a_pod_without_exclusive_cpus_or_hugepages() {
    let _g = serial();
    let cases = [
        ("0-1", "max 100000", "1073741824", "the container has no CPU limit"),
        ("0-1", "150000 100000", "1073741824", "CPU limit is 1.5 CPUs"),
        ("0", "100000 100000", "1073741824", "needs at least 2"),
        ("0-1", "200000 100000", "0", "has no hugepages-2Mi"),
        ("0-1", "200000 100000", "8388608", "may use 8 MiB"),
    ];
    for (cpus, cpu_max, huge, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = pod_config(dir.path(), &dir.path().join("s.sock"), &unique("vspod"));
        let cg = cgroup(dir.path(), cpus, cpu_max, huge);
        let out = pod_command(&config, &cg, "net_null0").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cpus} {cpu_max} {huge}: {err}");
        assert!(err.contains(expected), "{cpus} {cpu_max} {huge}: expected '{expected}' in: {err}");
        // Refused before DPDK started: nothing left behind.
        assert!(!dir.path().join("s.sock").exists());
    }
    // No SR-IOV variable: the pod did not get its VFs.
    let dir = tempfile::tempdir().unwrap();
    let config = pod_config(dir.path(), &dir.path().join("s.sock"), &unique("vspod"));
    let cg = cgroup(dir.path(), "0-1", "200000 100000", "1073741824");
    let out = pod_command(&config, &cg, "").env_remove("PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK is not set"), "{err}");
}

fn check_manifests(extra: &[&Path]) -> std::process::Output {
    let mut c = Command::new("python3");
    c.arg(Path::new(ROOT).join("docker/tests/check_manifests.py"));
    for e in extra {
        c.arg("--extra").arg(e);
    }
    c.output().expect("run check_manifests.py")
}

#[test]
fn manifests_and_the_chart_validate_against_the_kubernetes_schemas() {
    let out = check_manifests(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for object in [
        "docker/k8s/daemonset.yaml:DaemonSet",
        "docker/k8s/configmap.yaml:ConfigMap",
        "docker/k8s/network-attachment.yaml:NetworkAttachmentDefinition",
        "docker/k8s/sriov-device-plugin-config.yaml:ConfigMap",
        "chart/daemonset.yaml:DaemonSet",
        "chart/configmap.yaml:ConfigMap",
        "chart/network-attachment.yaml:NetworkAttachmentDefinition",
    ] {
        assert!(stdout.contains(&format!("checked {object}")), "{object} not checked:\n{stdout}");
    }
    assert!(stdout.contains("valid for Kubernetes 1."), "{stdout}");

    // The checks can fail: a schema error and a shared-CPU pod are both caught.
    let dir = tempfile::tempdir().unwrap();
    let ds = std::fs::read_to_string(Path::new(ROOT).join("docker/k8s/daemonset.yaml")).unwrap();
    let bad_schema = dir.path().join("bad-schema.yaml");
    std::fs::write(&bad_schema, ds.replace("containerPort: 50051", "containerPort: \"grpc\"")).unwrap();
    let bad_cpu = dir.path().join("bad-cpu.yaml");
    std::fs::write(&bad_cpu, ds.replace("cpu: \"2\"", "cpu: 1500m")).unwrap();
    let out = check_manifests(&[&bad_schema, &bad_cpu]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad-schema.yaml: DaemonSet vswitch: spec.template.spec.containers.0.ports.0.containerPort"),
        "{err}"
    );
    assert!(err.contains("bad-cpu.yaml: DaemonSet: cpu must be a whole number of CPUs"), "{err}");

    // The ConfigMaps (file and chart) hold configs this vswitchd accepts.
    let rendered = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("docker/tests/check_manifests.py"))
        .arg("--render-to")
        .arg(rendered.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    for path in [Path::new(ROOT).join("docker/k8s/configmap.yaml"), rendered.path().join("configmap.yaml")] {
        let toml = configmap_toml(&std::fs::read_to_string(&path).unwrap());
        let config = dataplane::Config::from_toml(&toml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(config.pod.sriov_resources, vec!["intel.com/intel_sriov_dpdk".to_string()], "{}", path.display());
        assert!(config.switch.spare_ports > 0);
        assert_eq!(config.switch.idle_cpu_resume_latency_us, None, "{}: node tuning is opt-in", path.display());
        assert!(config.switch.idle_backoff, "{}: workers back off by default", path.display());
    }
    let daemonset = std::fs::read_to_string(rendered.path().join("daemonset.yaml")).unwrap();
    assert!(!daemonset.contains("shmem_enabled"), "node tuning is opt-in:\n{daemonset}");
}

/// The chart's opt-in node tuning, switched on: an init container sets shared-memory THP,
/// the switch's config limits its cores' wake-up latency (and, asked, busy-polls); both
/// still validate, and the config is one vswitchd accepts. A value the chart does not have is refused.
#[test]
fn the_chart_renders_its_opt_in_node_tuning() {
    let rendered = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("docker/tests/check_manifests.py"))
        .args(["--set", "node.shmemThp=within_size", "--set", "workerCpuResumeLatencyUs=0"])
        .args(["--set", "idleBackoff=false", "--render-to"])
        .arg(rendered.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("checked chart/daemonset.yaml:DaemonSet"), "{stdout}");
    let daemonset = std::fs::read_to_string(rendered.path().join("daemonset.yaml")).unwrap();
    assert!(daemonset.contains("echo within_size > /sys/kernel/mm/transparent_hugepage/shmem_enabled"), "{daemonset}");
    let toml = configmap_toml(&std::fs::read_to_string(rendered.path().join("configmap.yaml")).unwrap());
    let config = dataplane::Config::from_toml(&toml).unwrap();
    assert_eq!(config.switch.idle_cpu_resume_latency_us, Some(0), "{toml}");
    assert!(!config.switch.idle_backoff, "{toml}");

    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("docker/tests/check_manifests.py"))
        .args(["--set", "node.shmemThpp=within_size"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the chart has no value node.shmemThpp"));
}

/// The shared libraries `binary` names (DT_NEEDED).
fn needed_libraries(binary: &str) -> Vec<String> {
    let readelf = Command::new("readelf").args(["-d", binary]).output().unwrap();
    assert!(readelf.status.success(), "readelf -d {binary}");
    String::from_utf8_lossy(&readelf.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect()
}

/// The CNI plugin runs on the node, which has no DPDK: it links none of DPDK, nor the
/// libraries DPDK's drivers need (only vswitchd starts the EAL). vswitchctl's release build
/// links none either, but this debug one keeps a little of the EAL (its constructors hold
/// what unused code named, which link-time optimisation removes in a release build).
#[test]
fn the_cni_plugin_links_no_dpdk() {
    let binary = env!("CARGO_BIN_EXE_vswitch-cni");
    let needed = needed_libraries(binary);
    for lib in &needed {
        let base = ["libc.so", "libm.so", "libgcc_s.so", "ld-linux"].iter().any(|b| lib.starts_with(b));
        assert!(base, "{binary} needs {lib}: {needed:?}");
    }
    let symbols = Command::new("nm").args(["--defined-only", binary]).output().unwrap();
    assert!(symbols.status.success(), "nm {binary}");
    assert!(!String::from_utf8_lossy(&symbols.stdout).contains("rte_eal_init"), "{binary} holds DPDK's EAL");
    assert!(needed_libraries(VSWITCHD).iter().any(|l| l.starts_with("libnuma")), "vswitchd does link DPDK");
}

/// DPDK and its drivers are linked in statically; the shared libraries vswitchd needs
/// directly must come from packages the runtime stage installs (apt brings their own
/// dependencies), except glibc's and libgcc's, which every Debian image has.
#[test]
fn the_image_installs_every_library_vswitchd_links() {
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("docker/Dockerfile")).unwrap();
    let runtime = &dockerfile[dockerfile.rfind("FROM debian:bookworm-slim").expect("a Debian 12 slim stage")..];
    let needed = needed_libraries(VSWITCHD);
    assert!(!needed.iter().any(|l| l.starts_with("librte")), "DPDK is linked shared: {needed:?}");
    assert!(needed.iter().any(|l| l.starts_with("libnuma")), "{needed:?}");
    for lib in needed {
        let owner = Command::new("dpkg").args(["-S", &format!("*/{lib}")]).output().unwrap();
        let package = String::from_utf8_lossy(&owner.stdout).split(':').next().unwrap_or("").trim().to_string();
        assert!(!package.is_empty(), "no package owns {lib}");
        if package != "libc6" && package != "libgcc-s1" {
            assert!(runtime.contains(&format!(" {package} ")), "the runtime stage lacks {package} (for {lib})");
        }
    }
    for binary in ["vswitchd", "vswitchctl", "vswitch-cni"] {
        assert!(runtime.contains(&format!("/src/target/release/{binary}")), "{binary} not in the image");
    }
    assert!(runtime.contains("HEALTHCHECK") && runtime.contains("LABEL org.opencontainers.image.title"));
}
