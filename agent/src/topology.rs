//! What this node is: a declared topology from the configuration (test clusters where
//! one machine plays several nodes, or hardware the agent cannot see), else what
//! discovery finds.

use gantry_api as api;

use crate::config::DeclaredTopology;

/// The declared topology as the controller expects it.
pub fn declared(t: &DeclaredTopology) -> api::NodeTopology {
    let n = t.gpu_numa.len();
    let mut nvlink = vec![0u32; n * n];
    if let Some(links) = t.nvlink_all_to_all {
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    nvlink[i * n + j] = links;
                }
            }
        }
    }
    for &[a, b, links] in &t.nvlink_pairs {
        let (a, b) = (a as usize, b as usize);
        nvlink[a * n + b] = links;
        nvlink[b * n + a] = links;
    }
    api::NodeTopology {
        sockets: t.sockets,
        numa_per_socket: t.numa_per_socket,
        cores_per_numa: t.cores_per_numa,
        memory_mb: t.memory_mb,
        gpu_numa: t.gpu_numa.clone(),
        nvlink,
        gpu_model: t.gpu_model.clone(),
        sources: vec!["declared".into()],
    }
}

/// A node's topology and, for each of the kernel's core indices (NUMA domain by NUMA
/// domain), the operating system's CPU to bind.
pub struct Found {
    pub topology: api::NodeTopology,
    pub core_cpus: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("hwloc could not read this machine's topology: {0}")]
    Hwloc(String),
    #[error("this machine's topology does not fit Gantry's model: {0}; declare it in the agent's [topology]")]
    Irregular(String),
}

/// Discovers the machine: sockets, NUMA domains, cores and memory with hwloc; GPUs,
/// their NUMA affinity and NVLink links with NVML. No NVIDIA driver means no GPUs.
pub fn discover() -> Result<Found, DiscoveryError> {
    use hwlocality::object::types::ObjectType;
    use hwlocality::Topology;

    let topo = Topology::new().map_err(|e| DiscoveryError::Hwloc(e.to_string()))?;
    let sockets = topo.objects_with_type(ObjectType::Package).count().max(1) as u32;
    let numa: Vec<_> = topo.objects_with_type(ObjectType::NUMANode).collect();
    let numa_count = numa.len().max(1) as u32;
    if numa_count % sockets != 0 {
        return Err(DiscoveryError::Irregular(format!(
            "{numa_count} NUMA domains over {sockets} sockets"
        )));
    }
    // Cores grouped by NUMA domain, in hwloc's logical order within each.
    let cores: Vec<_> = topo.objects_with_type(ObjectType::Core).collect();
    let mut by_domain: Vec<Vec<u32>> = vec![Vec::new(); numa_count as usize];
    for core in &cores {
        let Some(set) = core.cpuset() else { continue };
        let Some(first) = set.first_set() else {
            continue;
        };
        let domain = numa
            .iter()
            .position(|n| n.cpuset().is_some_and(|c| c.is_set(first)))
            .unwrap_or(0);
        by_domain[domain].push(usize::from(first) as u32);
    }
    let per_domain = by_domain.iter().map(Vec::len).min().unwrap_or(0);
    if per_domain == 0 || by_domain.iter().any(|d| d.len() != per_domain) {
        return Err(DiscoveryError::Irregular(format!(
            "NUMA domains hold {:?} cores",
            by_domain.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    let memory_mb = node_memory_mb(
        numa.iter().map(|n| n.total_memory()).sum::<u64>() >> 20,
        topo.root_object().total_memory() >> 20,
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(meminfo_total_mb),
    );
    let cpu_domain = |cpu: usize| -> Option<u32> {
        numa.iter()
            .position(|n| n.cpuset().is_some_and(|c| c.is_set(cpu)))
            .map(|d| d as u32)
    };
    let gpus = nvml_gpus(cpu_domain);
    let mut sources = vec!["hwloc".to_string()];
    if gpus.is_some() {
        sources.push("nvml".into());
    }
    let (gpu_numa, nvlink, gpu_model) = gpus.unwrap_or_default();
    Ok(Found {
        topology: api::NodeTopology {
            sockets,
            numa_per_socket: numa_count / sockets,
            cores_per_numa: per_domain as u32,
            memory_mb,
            gpu_numa,
            nvlink,
            gpu_model,
            sources,
        },
        core_cpus: by_domain.into_iter().flatten().collect(),
    })
}

/// The node's memory: what hwloc's NUMA domains hold, or its machine total when they
/// report none — but never less than the kernel's `MemTotal`. Some virtual machines
/// (memory added after boot, e.g. by a balloon or virtio-mem) report a small fraction
/// of their memory in the NUMA nodes' totals, and a node reporting less than it has
/// would be drained as "less hardware than described".
fn node_memory_mb(numa_mb: u64, machine_mb: u64, meminfo_mb: Option<u64>) -> u64 {
    let hwloc = if numa_mb > 0 { numa_mb } else { machine_mb };
    match meminfo_mb {
        Some(total) if total > hwloc => {
            tracing::info!(
                hwloc_mb = hwloc,
                meminfo_mb = total,
                "hwloc reports less memory than /proc/meminfo; using MemTotal"
            );
            total
        }
        _ => hwloc,
    }
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
fn meminfo_total_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kb: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kb >> 10)
}

/// GPUs through NVML: the NUMA domain of each (from its CPU affinity), NVLink link
/// counts between them (links to an NVSwitch count towards every GPU on the switch),
/// and the model. `None` when there is no driver or no GPU.
fn nvml_gpus(cpu_domain: impl Fn(usize) -> Option<u32>) -> Option<(Vec<u32>, Vec<u32>, String)> {
    use nvml_wrapper::Nvml;
    let nvml = match Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            tracing::info!(reason = %e, "no NVIDIA driver: no GPUs");
            return None;
        }
    };
    let count = nvml.device_count().ok()?;
    if count == 0 {
        return None;
    }
    let mut bus_ids = Vec::new();
    let mut numa = Vec::new();
    let mut model = String::new();
    let word = 8 * std::mem::size_of::<std::os::raw::c_ulong>();
    for i in 0..count {
        let d = nvml.device_by_index(i).ok()?;
        if model.is_empty() {
            model = d.name().unwrap_or_default();
        }
        bus_ids.push(
            d.pci_info()
                .map(|p| p.bus_id.to_ascii_lowercase())
                .unwrap_or_default(),
        );
        let cpus = d.cpu_affinity(64).unwrap_or_default();
        let first = cpus
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i * word + w.trailing_zeros() as usize);
        numa.push(first.and_then(&cpu_domain).unwrap_or(0));
    }
    let n = count as usize;
    let mut links = vec![0u32; n * n];
    let mut to_switch = vec![0u32; n];
    for i in 0..n {
        let Ok(d) = nvml.device_by_index(i as u32) else {
            continue;
        };
        // NVML_NVLINK_MAX_LINKS: no GPU has more.
        for l in 0..18 {
            let link = d.link_wrapper_for(l);
            if !link.is_active().unwrap_or(false) {
                continue;
            }
            let remote = link
                .remote_pci_info()
                .map(|p| p.bus_id.to_ascii_lowercase())
                .unwrap_or_default();
            match bus_ids.iter().position(|b| *b == remote) {
                Some(j) if j != i => links[i * n + j] += 1,
                _ => to_switch[i] += 1,
            }
        }
    }
    for i in 0..n {
        for j in 0..n {
            if i != j && links[i * n + j] == 0 && to_switch[i] > 0 && to_switch[j] > 0 {
                links[i * n + j] = to_switch[i].min(to_switch[j]);
            }
        }
    }
    tracing::info!(gpus = n, %model, numa = ?numa, "GPUs found with NVML");
    Some((numa, links, model))
}

/// The topology as JSON for people and scripts (`gantry-agent --discover`).
pub fn describe(t: &api::NodeTopology, core_cpus: &[u32]) -> String {
    let n = t.gpu_numa.len();
    let nvlink: Vec<Vec<u32>> = (0..n)
        .map(|i| t.nvlink[i * n..(i + 1) * n].to_vec())
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "sources": t.sources,
        "sockets": t.sockets,
        "numa_per_socket": t.numa_per_socket,
        "cores_per_numa": t.cores_per_numa,
        "memory_mb": t.memory_mb,
        "core_to_cpu": core_cpus,
        "gpus": t.gpu_numa.len(),
        "gpu_model": t.gpu_model,
        "gpu_numa": t.gpu_numa,
        "nvlink": nvlink,
    }))
    .unwrap_or_default()
}

/// This node as cluster-description TOML (the kernel's format).
pub fn node_toml(node: &str, t: &api::NodeTopology) -> String {
    let mut out = format!(
        "[[node_type]]\nname = \"{node}\"\nsockets = {}\nnuma_per_socket = {}\ncores_per_numa = {}\nmemory = \"{}M\"\n",
        t.sockets, t.numa_per_socket, t.cores_per_numa, t.memory_mb
    );
    let n = t.gpu_numa.len();
    if n > 0 {
        let pairs: Vec<String> = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .filter(|&(i, j)| t.nvlink[i * n + j] > 0)
            .map(|(i, j)| format!("[{i}, {j}, {}]", t.nvlink[i * n + j]))
            .collect();
        out.push_str(&format!(
            "gpus = {{ model = \"{}\", numa = {:?}, nvlink = {{ pairs = [{}] }} }}\n",
            t.gpu_model.replace('"', ""),
            t.gpu_numa,
            pairs.join(", ")
        ));
    }
    out.push_str(&format!(
        "\n[[nodes]]\nnames = \"{node}\"\ntype = \"{node}\"\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::{meminfo_total_mb, node_memory_mb};

    #[test]
    fn mem_total_is_read_in_mib() {
        let meminfo = "MemTotal:       131890752 kB\nMemFree:        120000000 kB\n";
        assert_eq!(meminfo_total_mb(meminfo), Some(128_799));
        assert_eq!(meminfo_total_mb("MemFree: 5 kB\n"), None);
        assert_eq!(meminfo_total_mb("MemTotal: lots\n"), None);
        assert_eq!(meminfo_total_mb("MemTotal: 1024 pages\n"), None);
    }

    #[test]
    fn memory_is_never_below_mem_total() {
        // A machine whose NUMA totals match: hwloc's figure stands.
        assert_eq!(node_memory_mb(257_000, 257_000, Some(256_500)), 257_000);
        // A VM whose NUMA node reports a fraction of its memory: MemTotal wins.
        assert_eq!(node_memory_mb(4_443, 4_443, Some(128_799)), 128_799);
        // No NUMA totals: the machine total, then MemTotal if larger.
        assert_eq!(node_memory_mb(0, 64_000, None), 64_000);
        assert_eq!(node_memory_mb(0, 0, Some(2_048)), 2_048);
    }
}
