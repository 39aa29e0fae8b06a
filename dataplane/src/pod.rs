//! Running as a Kubernetes pod: the pod's environment completes the config from the
//! ConfigMap.
//!
//! - VFs: the SR-IOV network device plugin sets `PCIDEVICE_<RESOURCE>` (the resource name
//!   upper-cased, `.` and `/` as `_`) to the PCI addresses it allocated, comma-separated;
//!   each becomes a port. An entry that is not a PCI address is taken as a DPDK vdev name
//!   (`net_null0`), so the start-up can be tried without VFs.
//! - Cores: the cgroup cpuset the kubelet's CPU manager gave the container. The first CPU
//!   runs the control plane, each other one a worker. The CPUs must be the container's own:
//!   an integer CPU limit equal to the cpuset's size (Guaranteed QoS, static CPU manager
//!   policy). A shared pool would run a poll-mode worker on a fraction of a core.
//! - Memory: the cgroup's hugetlb limit bounds what the switch may ask for; no hugepages in
//!   the pod is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, PortConfig, WorkerConfig};
use crate::memory::MemoryPlan;

/// The `[pod]` section of the config: how the pod's devices become ports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PodConfig {
    /// SR-IOV device plugin resources whose devices become ports, in this order (e.g.
    /// "intel.com/intel_sriov_dpdk"). Empty: every `PCIDEVICE_*` variable, by name.
    pub sriov_resources: Vec<String>,
    /// Ports are named PREFIX0, PREFIX1, ... and numbered from `first_port_number`.
    pub port_prefix: String,
    pub first_port_number: u32,
    pub rx_queues: u16,
    pub mtu: u16,
}

impl Default for PodConfig {
    fn default() -> Self {
        PodConfig {
            sriov_resources: Vec::new(),
            port_prefix: "vf".into(),
            first_port_number: 1,
            rx_queues: 1,
            mtu: 1500,
        }
    }
}

/// What the pod gives the container: its environment and its cgroup (v2 or v1).
pub struct PodEnv {
    pub env: BTreeMap<String, String>,
    /// The container's cgroup directory: `/sys/fs/cgroup` inside a container.
    pub cgroup_dir: PathBuf,
}

impl PodEnv {
    pub fn from_process(cgroup_dir: PathBuf) -> PodEnv {
        PodEnv { env: std::env::vars().collect(), cgroup_dir }
    }
}

/// The environment variable the SR-IOV device plugin sets for `resource`.
pub fn pcidevice_var(resource: &str) -> String {
    let mut v = String::from("PCIDEVICE_");
    v.extend(resource.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }));
    v
}

/// Parses a cpuset list such as "0-3,8,10-11".
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("'{s}' is not a CPU list");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The first of `names` (relative to `dir`) that can be read.
fn read_first(dir: &Path, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| read_trimmed(&dir.join(n)).map(|v| (n.to_string(), v)))
}

/// The CPU limit in CPUs (None: no limit), from cgroup v2 `cpu.max` or v1 CFS files.
fn cpu_limit(dir: &Path) -> Result<Option<f64>, String> {
    if let Some(v) = read_trimmed(&dir.join("cpu.max")) {
        let mut it = v.split_whitespace();
        let (quota, period) = (it.next().unwrap_or("max"), it.next().unwrap_or("100000"));
        if quota == "max" {
            return Ok(None);
        }
        let q: f64 = quota.parse().map_err(|_| format!("cpu.max '{v}' does not parse"))?;
        let p: f64 = period.parse().map_err(|_| format!("cpu.max '{v}' does not parse"))?;
        return Ok(Some(q / p));
    }
    let quota = read_trimmed(&dir.join("cpu/cpu.cfs_quota_us"));
    let period = read_trimmed(&dir.join("cpu/cpu.cfs_period_us"));
    match (quota, period) {
        (Some(q), Some(p)) => {
            let q: i64 = q.parse().map_err(|_| format!("cpu.cfs_quota_us '{q}' does not parse"))?;
            let p: f64 = p.parse().map_err(|_| format!("cpu.cfs_period_us '{p}' does not parse"))?;
            Ok((q > 0).then(|| q as f64 / p))
        }
        _ => Ok(None),
    }
}

/// The hugetlb limit in bytes for pages of `page_size` (None: not limited).
fn hugepage_limit(dir: &Path, page_size: u64) -> Result<Option<u64>, String> {
    let size = if page_size >= 1 << 30 { format!("{}GB", page_size >> 30) } else { format!("{}MB", page_size >> 20) };
    let names = [format!("hugetlb.{size}.max"), format!("hugetlb/hugetlb.{size}.limit_in_bytes")];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    match read_first(dir, &names) {
        None => Ok(None),
        Some((_, v)) if v == "max" => Ok(None),
        Some((name, v)) => {
            let bytes: u64 = v.parse().map_err(|_| format!("{name} '{v}' does not parse"))?;
            // cgroup v1 writes "no limit" as the largest page-aligned value.
            Ok((bytes < 1 << 62).then_some(bytes))
        }
    }
}

/// What [`apply`] derived, for the start-up printout.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    pub ports: Vec<(String, String)>,
    pub cpus: Vec<usize>,
    pub hugepage_limit: Option<u64>,
}

/// Completes `config` from the pod: ports from the SR-IOV variables, main core and workers
/// from the cpuset. Fails, saying what the pod spec lacks, when the CPUs are not exclusive
/// or the hugepages are missing or too few for the memory plan.
pub fn apply(config: &mut Config, pod: &PodEnv, hugepage_size: u64) -> Result<PodPlan, String> {
    let pc = config.pod.clone();
    // Devices.
    let vars: Vec<(String, String)> = if pc.sriov_resources.is_empty() {
        pod.env.iter().filter(|(k, _)| k.starts_with("PCIDEVICE_")).map(|(k, v)| (k.clone(), v.clone())).collect()
    } else {
        pc.sriov_resources
            .iter()
            .map(|r| {
                let var = pcidevice_var(r);
                pod.env.get(&var).map(|v| (var.clone(), v.clone())).ok_or_else(|| {
                    format!("{var} is not set: the container must request the SR-IOV resource {r} (e.g. {r}: 1)")
                })
            })
            .collect::<Result<_, _>>()?
    };
    let mut ports = Vec::new();
    for (var, value) in &vars {
        for dev in value.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let i = ports.len();
            let port = PortConfig {
                name: format!("{}{i}", pc.port_prefix),
                number: pc.first_port_number + i as u32,
                devargs: dev.to_string(),
                rx_queues: pc.rx_queues,
                rx_descriptors: 1024,
                tx_descriptors: 1024,
                mtu: pc.mtu,
                ip: None,
                gateway: None,
            };
            if let Some((_, msg)) = port.problems().into_iter().next() {
                return Err(format!("{var}: {msg}"));
            }
            ports.push(port);
        }
    }

    // CPUs.
    let (file, list) =
        read_first(&pod.cgroup_dir, &["cpuset.cpus.effective", "cpuset/cpuset.effective_cpus", "cpuset/cpuset.cpus"])
            .ok_or_else(|| {
            format!("no cpuset in {}: is this a container with cgroups mounted?", pod.cgroup_dir.display())
        })?;
    let cpus = parse_cpu_list(&list).map_err(|e| format!("{file}: {e}"))?;
    let advice = "give the container integer CPU requests equal to its limits (Guaranteed QoS) on a node whose \
                  kubelet runs --cpu-manager-policy=static";
    match cpu_limit(&pod.cgroup_dir)? {
        None => {
            return Err(format!(
                "the container has no CPU limit, so its CPUs ({list}) are shared: a poll-mode worker needs a CPU of its own; {advice}"
            ))
        }
        Some(limit) if limit.fract().abs() > 1e-9 => {
            return Err(format!(
                "the container's CPU limit is {limit} CPUs: a poll-mode worker would run on a fraction of a core; {advice}"
            ))
        }
        Some(limit) if limit as usize != cpus.len() => {
            return Err(format!(
                "the container may run on CPUs {list} ({} of them) but its limit is {limit}: those CPUs are shared, not exclusive; {advice}",
                cpus.len()
            ))
        }
        Some(_) => {}
    }
    if cpus.len() < 2 {
        return Err(format!(
            "the container has {} exclusive CPU ({list}); the switch needs at least 2: one for the control plane and one per worker",
            cpus.len()
        ));
    }
    if !config.workers.is_empty() {
        return Err("[[worker]] in the config: in a pod the workers come from the container's cpuset".into());
    }
    config.ports.extend(ports.iter().cloned());
    config.eal.main_core = cpus[0];
    config.workers =
        cpus[1..].iter().map(|&core| WorkerConfig { core, rx_queues: Vec::new(), idle_backoff: None }).collect();

    // Hugepages.
    let limit = hugepage_limit(&pod.cgroup_dir, hugepage_size)?;
    let page = if hugepage_size >= 1 << 30 { "hugepages-1Gi" } else { "hugepages-2Mi" };
    if limit == Some(0) {
        return Err(format!(
            "the container has no {page}: request {page} (requests = limits) and mount an emptyDir with medium HugePages at /dev/hugepages"
        ));
    }
    if let Some(limit) = limit {
        let plan = MemoryPlan::for_config(config, hugepage_size);
        let need = plan.hugepages * hugepage_size;
        if need > limit {
            return Err(format!(
                "the switch needs {} MiB of hugepages ({} pages) and the container may use {} MiB: raise its {page} to at least {}Mi, or lower switch.spare_ports, descriptors or mbufs",
                need >> 20,
                plan.hugepages,
                limit >> 20,
                need >> 20
            ));
        }
    }
    Ok(PodPlan { ports: ports.into_iter().map(|p| (p.name, p.devargs)).collect(), cpus, hugepage_limit: limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, value).unwrap();
        }
        dir
    }

    fn pod(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> PodEnv {
        PodEnv {
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cgroup_dir: dir.path().to_path_buf(),
        }
    }

    fn base() -> Config {
        Config::from_toml("[pod]\nsriov_resources = [\"intel.com/intel_sriov_dpdk\"]\n").unwrap()
    }

    const VFS: (&str, &str) = ("PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK", "0000:3b:02.0,0000:3b:02.1");

    #[test]
    fn resource_names_become_the_device_plugins_variables() {
        assert_eq!(pcidevice_var("intel.com/intel_sriov_dpdk"), "PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK");
        assert_eq!(parse_cpu_list("0-2,8,5").unwrap(), vec![0, 1, 2, 5, 8]);
        assert!(parse_cpu_list("3-1").is_err());
    }

    #[test]
    fn vfs_cores_and_hugepages_from_a_guaranteed_pod() {
        let dir = cgroup(&[
            ("cpuset.cpus.effective", "4-6\n"),
            ("cpu.max", "300000 100000\n"),
            ("hugetlb.2MB.max", "1073741824\n"),
        ]);
        let mut c = base();
        let plan = apply(&mut c, &pod(&dir, &[VFS]), 2 << 20).unwrap();
        assert_eq!(plan.cpus, vec![4, 5, 6]);
        assert_eq!(c.eal.main_core, 4);
        assert_eq!(c.workers.iter().map(|w| w.core).collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(c.ports.len(), 2);
        assert_eq!((c.ports[1].name.as_str(), c.ports[1].number), ("vf1", 2));
        assert_eq!(c.ports[1].devargs, "0000:3b:02.1");
        assert_eq!(plan.hugepage_limit, Some(1 << 30));
    }

    #[test]
    fn cgroup_v1_files_are_read_too() {
        let dir = cgroup(&[
            ("cpuset/cpuset.effective_cpus", "2-3"),
            ("cpu/cpu.cfs_quota_us", "200000"),
            ("cpu/cpu.cfs_period_us", "100000"),
            ("hugetlb/hugetlb.2MB.limit_in_bytes", "536870912"),
        ]);
        let mut c = base();
        let plan = apply(&mut c, &pod(&dir, &[VFS]), 2 << 20).unwrap();
        assert_eq!(plan.cpus, vec![2, 3]);
        assert_eq!(plan.hugepage_limit, Some(512 << 20));
    }

    #[test]
    fn shared_or_fractional_cpus_and_missing_resources_are_refused() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("cpuset.cpus.effective", "0-63"), ("cpu.max", "max 100000")], "no CPU limit"),
            (&[("cpuset.cpus.effective", "0-63"), ("cpu.max", "150000 100000")], "1.5 CPUs"),
            (&[("cpuset.cpus.effective", "0-63"), ("cpu.max", "200000 100000")], "shared, not exclusive"),
            (&[("cpuset.cpus.effective", "3"), ("cpu.max", "100000 100000")], "needs at least 2"),
            (
                &[("cpuset.cpus.effective", "2-3"), ("cpu.max", "200000 100000"), ("hugetlb.2MB.max", "0")],
                "no hugepages-2Mi",
            ),
            (
                &[("cpuset.cpus.effective", "2-3"), ("cpu.max", "200000 100000"), ("hugetlb.2MB.max", "4194304")],
                "may use 4 MiB",
            ),
        ];
        for (files, expected) in cases {
            let dir = cgroup(files);
            let err = apply(&mut base(), &pod(&dir, &[VFS]), 2 << 20).unwrap_err();
            assert!(err.contains(expected), "{files:?}: {err}");
        }
        let dir = cgroup(&[("cpuset.cpus.effective", "2-3"), ("cpu.max", "200000 100000")]);
        let err = apply(&mut base(), &pod(&dir, &[]), 2 << 20).unwrap_err();
        assert!(err.contains("PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK is not set"), "{err}");
    }
}
