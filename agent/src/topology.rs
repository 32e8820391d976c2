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
