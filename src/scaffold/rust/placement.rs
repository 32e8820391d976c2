//! A placement policy: pack jobs onto the nodes that will have the fewest cores left,
//! keeping whole nodes free for wide jobs. Gantry asks it once per cycle for the jobs
//! about to start, each with the nodes that could hold it; the answer ranks each job's
//! candidates, best first (a ranking may stop early: the rest follow in Gantry's order).
//!
//! Edit `rank`, test with `cargo test`, build the component with
//! `cargo build --release --target wasm32-unknown-unknown`.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use gantry_sdk::{Placement, PlacementBatch, PlacementRanking, Policy, PolicyInfo};

/// What the policy keeps between calls. It lives as long as one loaded instance: it
/// starts afresh (`Default`, then `init`) on every load, re-instantiation and restart.
#[derive(Default)]
pub struct SitePlacement {
    /// Prefer nodes whose GPUs are linked (NVLink) for jobs with several GPUs per node.
    prefer_gpu_links: bool,
}

impl Policy for SitePlacement {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// `key = value` lines, `#` comments: `prefer_gpu_links = true|false`.
    fn init(&mut self, config: &str) -> Result<(), String> {
        *self = Self::default();
        for line in gantry_sdk::config_lines(config) {
            match line? {
                (n, "prefer_gpu_links", value) => {
                    self.prefer_gpu_links = value
                        .parse()
                        .map_err(|_| format!("line {n}: prefer_gpu_links must be true or false"))?
                }
                (n, other, _) => return Err(format!("line {n}: unknown key '{other}'")),
            }
        }
        Ok(())
    }
}

impl Placement for SitePlacement {
    fn rank(&mut self, batch: &PlacementBatch) -> PlacementRanking {
        let mut ranking = PlacementRanking::new();
        for q in 0..batch.len() {
            let range = batch.candidates(q);
            let first = range.start;
            let mut order: Vec<u32> = (0..range.len() as u32).collect();
            order.sort_by_key(|&i| {
                let c = batch.candidate(first + i as usize);
                let links = if self.prefer_gpu_links {
                    u32::MAX - c.gpu_links
                } else {
                    0
                };
                (links, c.free_cores_after, i)
            });
            ranking.push(order);
        }
        ranking
    }
}

gantry_sdk::export_placement!(SitePlacement);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::check_rank;
    use gantry_sdk::Candidate;

    fn node(node: u32, free_cores_after: u32) -> Candidate {
        Candidate {
            node,
            units: 1,
            gpu_links: 0,
            numa_domains: 1,
            free_cores_after,
            free_gpus_after: 0,
        }
    }

    #[test]
    fn the_fullest_node_is_tried_first() {
        let mut p = SitePlacement::default();
        p.init("").unwrap();
        let mut batch = PlacementBatch::default();
        batch.push(1, 1, 0, [node(0, 30), node(1, 2), node(2, 12)]);
        let r = check_rank(&mut p, &batch).unwrap();
        assert_eq!(r.get(0), [1, 2, 0]);
    }
}
