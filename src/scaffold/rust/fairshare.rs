//! A fairshare policy: an account or user that used less than its share of the cluster
//! gets a factor near 1, one that used more a factor near 0. Gantry asks it for one
//! factor in [0, 1] per node of the share tree (accounts, then user associations) every
//! fairshare interval; priority policies read a job's factor as `fairshare`.
//!
//! Edit `factors`, test with `cargo test`, build the component with
//! `cargo build --release --target wasm32-unknown-unknown`.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use gantry_sdk::{Fairshare, Policy, PolicyInfo, ShareTree, Time};

/// What the policy keeps between calls. It lives as long as one loaded instance: it
/// starts afresh (`Default`, then `init`) on every load, re-instantiation and restart.
pub struct SiteFairshare {
    /// How steeply the factor falls as usage passes the share: factor = 1 / (1 + k·u/s).
    steepness: f64,
}

impl Default for SiteFairshare {
    fn default() -> Self {
        Self { steepness: 1.0 }
    }
}

impl Policy for SiteFairshare {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// `key = value` lines, `#` comments: `steepness` (a number > 0).
    fn init(&mut self, config: &str) -> Result<(), String> {
        *self = Self::default();
        for line in gantry_sdk::config_lines(config) {
            match line? {
                (n, "steepness", value) => {
                    self.steepness = value
                        .parse()
                        .ok()
                        .filter(|k: &f64| k.is_finite() && *k > 0.0)
                        .ok_or_else(|| format!("line {n}: steepness must be > 0"))?
                }
                (n, other, _) => return Err(format!("line {n}: unknown key '{other}'")),
            }
        }
        Ok(())
    }
}

impl Fairshare for SiteFairshare {
    /// `tree.usage()` is undecayed core-seconds of each node and everything below it;
    /// a node's parent comes before it, and a root is its own parent.
    fn factors(&mut self, _now: Time, tree: &ShareTree) -> Vec<f64> {
        let (shares, usage) = (tree.shares(), tree.usage());
        // Each node's share of its siblings' shares, then of the whole cluster.
        let mut sibling_shares = vec![0u64; tree.len()];
        let mut total_roots = 0u64;
        for i in 0..tree.len() {
            match tree.parent_of(i) {
                Some(p) => sibling_shares[p] += u64::from(shares[i]),
                None => total_roots += u64::from(shares[i]),
            }
        }
        let mut share = vec![0.0f64; tree.len()];
        let total_usage: f64 = (0..tree.len())
            .filter(|&i| tree.parent_of(i).is_none())
            .map(|i| usage[i])
            .sum();
        for i in 0..tree.len() {
            let (of, above) = match tree.parent_of(i) {
                Some(p) => (sibling_shares[p], share[p]),
                None => (total_roots, 1.0),
            };
            share[i] = if of == 0 {
                0.0
            } else {
                above * f64::from(shares[i]) / of as f64
            };
        }
        (0..tree.len())
            .map(|i| {
                let used = if total_usage > 0.0 {
                    usage[i] / total_usage
                } else {
                    0.0
                };
                if share[i] <= 0.0 {
                    return if used > 0.0 { 0.0 } else { 0.5 };
                }
                1.0 / (1.0 + self.steepness * used / share[i])
            })
            .collect()
    }
}

gantry_sdk::export_fairshare!(SiteFairshare);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::check_factors;
    use gantry_sdk::ShareNode;

    #[test]
    fn the_account_that_used_less_than_its_share_comes_first() {
        let mut p = SiteFairshare::default();
        p.init("").unwrap();
        let mut tree = ShareTree::new();
        for (id, shares, usage) in [(0, 1, 900.0), (1, 1, 100.0)] {
            tree.push(ShareNode {
                id,
                parent: None,
                shares,
                usage,
            });
        }
        let f = check_factors(&mut p, 0, &tree).unwrap();
        assert!(f[1] > f[0], "{f:?}");
    }

    #[test]
    fn bad_configuration_is_refused_with_its_line() {
        let mut p = SiteFairshare::default();
        assert!(p.init("steepness = 0").unwrap_err().contains("line 1"));
    }
}
