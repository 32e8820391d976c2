//! Fair Tree fairshare (after Slurm's): usage decays with a half-life; at every level of
//! the account tree, siblings are ordered by their Level Fairshare `LF = S / U` (share of
//! the siblings' shares over share of the siblings' decayed usage); a depth-first walk in
//! that order ranks every user association; the factor of the k-th of n associations is
//! `(n - k) / n`, so the most under-served user gets 1.
//!
//! Decay keeps state per tree node (keyed by its stable id) between cycles.
//! Exponentials use `libm`, the same code natively and in Wasm, so both builds agree bit
//! for bit.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use gantry_sdk::{Fairshare, Policy, PolicyInfo, ShareNode, Time, ASSOCIATION_IDS};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Usage loses half its weight every `half_life_s` seconds; 0 disables decay.
    pub half_life_s: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            half_life_s: 7 * 86_400,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct FairTree {
    pub config: Config,
    /// Per node id: (raw usage seen last, decayed usage, time of last update).
    decayed: BTreeMap<u32, (f64, f64, Time)>,
}

impl Policy for FairTree {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: "fair-tree".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
    fn init(&mut self, config: &str) -> Result<(), String> {
        let c: Config = toml::from_str(config).map_err(|e| format!("fair-tree config: {e}"))?;
        if c.half_life_s < 0 {
            return Err("fair-tree config: half_life_s must not be negative".to_string());
        }
        self.config = c;
        self.decayed.clear();
        Ok(())
    }
}

impl FairTree {
    /// Decayed usage of every node; only associations accrue, accounts are sums.
    fn decay(&mut self, now: Time, tree: &[ShareNode]) -> Vec<f64> {
        let mut out = vec![0f64; tree.len()];
        for (i, n) in tree.iter().enumerate() {
            if n.id < ASSOCIATION_IDS {
                continue;
            }
            let entry = self.decayed.entry(n.id).or_insert((0.0, 0.0, now));
            let (raw, dec, at) = *entry;
            let factor = if self.config.half_life_s > 0 && now > at {
                libm::exp2(-((now - at) as f64) / self.config.half_life_s as f64)
            } else {
                1.0
            };
            // Raw usage only grows; a drop means the controller restarted: start over.
            let delta = if n.usage >= raw {
                n.usage - raw
            } else {
                n.usage
            };
            let d = dec * factor + delta;
            *entry = (n.usage, d, now);
            out[i] = d;
        }
        for i in (0..tree.len()).rev() {
            if let Some(p) = tree[i].parent {
                if (p as usize) < i {
                    out[p as usize] += out[i];
                }
            }
        }
        out
    }
}

impl Fairshare for FairTree {
    fn factors(&mut self, now: Time, tree: &[ShareNode]) -> Vec<f64> {
        let usage = self.decay(now, tree);
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); tree.len()];
        let mut roots = Vec::new();
        for (i, n) in tree.iter().enumerate() {
            match n.parent {
                Some(p) if (p as usize) < i => children[p as usize].push(i),
                _ => roots.push(i),
            }
        }
        // Level Fairshare of each child among its siblings.
        let mut level = vec![0f64; tree.len()];
        for kids in children.iter().chain(core::iter::once(&roots)) {
            let shares: f64 = kids.iter().map(|&k| tree[k].shares as f64).sum();
            let used: f64 = kids.iter().map(|&k| usage[k]).sum();
            for &k in kids {
                let s = if shares > 0.0 {
                    tree[k].shares as f64 / shares
                } else {
                    0.0
                };
                let u = if used > 0.0 { usage[k] / used } else { 0.0 };
                level[k] = if u > 0.0 {
                    s / u
                } else if s > 0.0 {
                    f64::INFINITY
                } else {
                    0.0
                };
            }
        }
        for kids in children.iter_mut().chain(core::iter::once(&mut roots)) {
            kids.sort_by(|&a, &b| {
                level[b]
                    .total_cmp(&level[a])
                    .then(tree[a].id.cmp(&tree[b].id))
            });
        }
        // Depth-first, best sibling first: the order users are served in.
        let mut ranked = Vec::new();
        let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
        while let Some(n) = stack.pop() {
            if tree[n].id >= ASSOCIATION_IDS {
                ranked.push(n);
            }
            stack.extend(children[n].iter().rev().copied());
        }
        let total = ranked.len().max(1) as f64;
        let mut factors = vec![0f64; tree.len()];
        for (k, &n) in ranked.iter().enumerate() {
            factors[n] = (total - k as f64) / total;
        }
        // An account reports its best user's factor.
        for i in (0..tree.len()).rev() {
            if let Some(p) = tree[i].parent {
                if (p as usize) < i && factors[i] > factors[p as usize] {
                    factors[p as usize] = factors[i];
                }
            }
        }
        factors
    }
}

gantry_sdk::export_fairshare!(FairTree);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::check_factors;

    /// root(0) → a(1, 60 shares), b(2, 40 shares); users: a/u1, a/u2, b/u3.
    fn tree(usage: [f64; 3]) -> Vec<ShareNode> {
        let acct = |id, parent, shares| ShareNode {
            id,
            parent,
            shares,
            usage: 0.0,
        };
        let user = |k, parent, usage| ShareNode {
            id: ASSOCIATION_IDS | k,
            parent: Some(parent),
            shares: 1,
            usage,
        };
        vec![
            acct(0, None, 1),
            acct(1, Some(0), 60),
            acct(2, Some(0), 40),
            user(0, 1, usage[0]),
            user(1, 1, usage[1]),
            user(2, 2, usage[2]),
        ]
    }

    #[test]
    fn under_served_account_ranks_first() {
        let mut p = FairTree::default();
        p.init("half_life_s = 0").unwrap();
        // Account a used everything: b's user is served first.
        let f = check_factors(&mut p, 0, &tree([100.0, 50.0, 0.0])).unwrap();
        assert_eq!(f[5], 1.0);
        assert!(f[4] > f[3], "inside a, the lighter user comes first");
        assert!(f[3] > 0.0);
    }

    #[test]
    fn usage_decays_by_half_life() {
        let mut p = FairTree::default();
        p.init("half_life_s = 100").unwrap();
        p.factors(0, &tree([100.0, 0.0, 0.0]));
        // 100 s later with no new usage, user 0's decayed usage is halved.
        let d = p.decay(100, &tree([100.0, 0.0, 0.0]));
        assert!((d[3] - 50.0).abs() < 1e-9, "{}", d[3]);
        // b's user now uses 60: more than a's decayed 50, and b has fewer shares.
        let f = p.factors(100, &tree([100.0, 0.0, 60.0]));
        assert!(f[4] > f[5] && f[3] > f[5], "{f:?}");
    }

    #[test]
    fn config_is_checked() {
        let mut p = FairTree::default();
        assert!(p.init("half_life_s = -5").is_err());
        assert!(p
            .init("halflife = 5")
            .unwrap_err()
            .contains("unknown field"));
    }
}
