//! Topology-aware placement. Ranks each job's candidate nodes: first by the quality of the
//! in-node allocation the kernel computed (most NVLink links among the GPUs, then fewest
//! NUMA domains spanned), then by the strategy — `pack` (least left free afterwards, to
//! keep whole nodes free for big jobs) or `spread` (most left free, to spread heat and
//! memory bandwidth) — then by node id.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use gantry_sdk::{Placement, PlacementBatch, PlacementRanking, Policy, PolicyInfo};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Pack,
    Spread,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub strategy: Strategy,
    /// Rank by NVLink/NUMA quality before the strategy (otherwise only as a tie-break).
    pub topology_first: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            strategy: Strategy::Pack,
            topology_first: true,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct TopologyPlacement {
    pub config: Config,
    /// One job's candidates with their sort keys, kept between jobs and calls so that
    /// ranking allocates nothing once it has seen the largest candidate list.
    keyed: Vec<(Key, u32)>,
}

/// What a candidate is ranked by, smallest first. Node ids make every key unique.
type Key = (i64, i64, i64, u32);

impl Policy for TopologyPlacement {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: "topology-placement".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
    fn init(&mut self, config: &str) -> Result<(), String> {
        self.config =
            toml::from_str(config).map_err(|e| format!("topology-placement config: {e}"))?;
        Ok(())
    }
}

impl Placement for TopologyPlacement {
    /// Reads the candidate columns in place. Each candidate's key is computed once and
    /// the keys are sorted, rather than recomputed at every comparison: a key is five
    /// loads and some arithmetic, a comparison is a few integer compares. Node ids make
    /// the order total, so an unstable sort gives the one answer.
    fn rank(&mut self, batch: &PlacementBatch) -> PlacementRanking {
        let c = &self.config;
        let (node, links, numa) = (batch.node(), batch.gpu_links(), batch.numa_domains());
        let (cores_after, gpus_after) = (batch.free_cores_after(), batch.free_gpus_after());
        let key = |n: usize| -> Key {
            // Free capacity left, in "cores plus GPUs as 64 cores each".
            let left = cores_after[n] as i64 + 64 * gpus_after[n] as i64;
            let fit = match c.strategy {
                Strategy::Pack => left,
                Strategy::Spread => -left,
            };
            let (links, numa) = (-(links[n] as i64), numa[n] as i64);
            if c.topology_first {
                (links, numa, fit, node[n])
            } else {
                (fit, links, 0, node[n])
            }
        };
        let mut answer = PlacementRanking::with_capacity(batch.len(), node.len());
        for q in 0..batch.len() {
            let first = batch.candidates(q);
            self.keyed.clear();
            self.keyed
                .extend(first.clone().zip(0..).map(|(n, i)| (key(n), i)));
            self.keyed.sort_unstable();
            answer.push(self.keyed.iter().map(|&(_, i)| i));
        }
        answer
    }
}

gantry_sdk::export_placement!(TopologyPlacement);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::check_rank;
    use gantry_sdk::{Candidate, PlacementQuery};

    fn cand(node: u32, links: u32, numa: u32, cores_after: u32) -> Candidate {
        Candidate {
            node,
            units: 1,
            gpu_links: links,
            numa_domains: numa,
            free_cores_after: cores_after,
            free_gpus_after: 0,
        }
    }

    #[test]
    fn nvlink_quality_then_pack_or_spread() {
        let q = PlacementQuery {
            job: 1,
            units_needed: 1,
            gpus_per_node: 2,
            candidates: vec![
                cand(0, 0, 1, 10),
                cand(1, 4, 1, 50),
                cand(2, 4, 1, 20),
                cand(3, 4, 2, 0),
            ],
        };
        let mut p = TopologyPlacement::default();
        p.init("").unwrap();
        let batch: PlacementBatch = [q].into_iter().collect();
        assert_eq!(check_rank(&mut p, &batch).unwrap().get(0), [2, 1, 3, 0]);
        p.init("strategy = \"spread\"").unwrap();
        assert_eq!(check_rank(&mut p, &batch).unwrap().get(0), [1, 2, 3, 0]);
        p.init("topology_first = false").unwrap();
        assert_eq!(check_rank(&mut p, &batch).unwrap().get(0)[0], 3);
    }
}
