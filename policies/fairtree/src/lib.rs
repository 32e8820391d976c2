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
use alloc::vec::Vec;

use gantry_sdk::{Fairshare, Policy, PolicyInfo, ShareTree, Time, ASSOCIATION_IDS};
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
    /// Decay state per tree node, in the order of the last tree seen (the kernel keeps
    /// the order between cycles, so a node is found by position, not searched for).
    decayed: Decayed,
    /// Buffers reused from call to call: this runs every scheduling cycle.
    scratch: Scratch,
}

/// Every node's usage as last seen and after decay, column by column (the decay pass
/// reads and writes two of them).
///
/// Invariant: the four columns have one entry per node of the last tree seen. Every
/// call updates every association, so all of them were last decayed at the same time,
/// `at`: one time for the tree, not one per node.
#[derive(Debug, Default, Clone)]
struct Decayed {
    id: Vec<u32>,
    /// Each node's parent as last seen: while no node's id or parent changes, the tree
    /// keeps its shape and `Scratch` keeps its children lists.
    parent: Vec<u32>,
    /// Raw (undecayed) usage reported last time.
    raw: Vec<f64>,
    /// Decayed usage at `at`.
    usage: Vec<f64>,
    /// When the last call decayed the usage; `None` before the first.
    at: Option<Time>,
}

impl Decayed {
    /// Whether `tree` has the shape of the last tree seen: the same nodes, in the same
    /// order, under the same parents. A loop of its own: in Wasm, slice equality would
    /// be `memcmp`, which the runtime library compares byte by byte.
    fn same_shape(&self, tree: &ShareTree) -> bool {
        let n = tree.len();
        if self.id.len() != n {
            return false;
        }
        let (ids, parents) = (&tree.id()[..n], &tree.parent()[..n]);
        let (known_ids, known_parents) = (&self.id[..n], &self.parent[..n]);
        let mut differ = 0;
        for i in 0..n {
            differ |= (ids[i] ^ known_ids[i]) | (parents[i] ^ known_parents[i]);
        }
        differ == 0
    }

    /// Carries each known node's state to its position in `tree`; new nodes start with
    /// no usage.
    fn reshape(&mut self, tree: &ShareTree) {
        let known: BTreeMap<u32, (f64, f64)> = self
            .id
            .iter()
            .zip(self.raw.iter().zip(&self.usage))
            .map(|(&id, (&raw, &usage))| (id, (raw, usage)))
            .collect();
        self.id.clear();
        self.id.extend_from_slice(tree.id());
        self.parent.clear();
        self.parent.extend_from_slice(tree.parent());
        self.raw.clear();
        self.usage.clear();
        for id in tree.id() {
            let (raw, usage) = known.get(id).copied().unwrap_or((0.0, 0.0));
            self.raw.push(raw);
            self.usage.push(usage);
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Scratch {
    /// Children of node `p` are `children[first[p]..first[p + 1]]`; the roots are last.
    /// Each group stays sorted by the last ranking; usage moves little from one cycle to
    /// the next (decay scales every node alike), so re-sorting is nearly linear.
    first: Vec<usize>,
    children: Vec<usize>,
    /// Next free slot per group while `children` is filled.
    fill: Vec<usize>,
    /// Decayed usage per node, rolled up to the accounts.
    usage: Vec<f64>,
    /// The last answer, returned again while the ranking has not changed.
    answer: Vec<f64>,
    level: Vec<f64>,
    stack: Vec<usize>,
    ranked: Vec<usize>,
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
        self.decayed = Decayed::default();
        self.scratch = Scratch::default();
        Ok(())
    }
}

impl FairTree {
    /// Decayed usage of every node, into `scratch.usage`; only associations accrue,
    /// accounts are sums. Returns whether the tree has the shape it had last time (the
    /// same nodes, in the same order, under the same parents).
    #[inline(never)]
    fn decay(&mut self, now: Time, tree: &ShareTree) -> bool {
        let same_shape = self.decayed.same_shape(tree);
        if !same_shape {
            self.decayed.reshape(tree);
        }
        let d = &mut self.decayed;
        // One elapsed time for every node (see `Decayed`), so one exp2.
        let factor = match d.at {
            Some(at) if self.config.half_life_s > 0 && now > at => {
                libm::exp2(-((now - at) as f64) / self.config.half_life_s as f64)
            }
            _ => 1.0,
        };
        d.at = Some(now);
        let n = tree.len();
        let out = &mut self.scratch.usage;
        out.clear();
        out.resize(n, 0.0);
        let (ids, raw_usage) = (&tree.id()[..n], &tree.usage()[..n]);
        let (known_raw, usage, out) = (&mut d.raw[..n], &mut d.usage[..n], &mut out[..n]);
        for i in 0..n {
            if ids[i] < ASSOCIATION_IDS {
                continue;
            }
            let raw = raw_usage[i];
            // Raw usage only grows; a drop means the controller restarted: start over.
            let delta = if raw >= known_raw[i] {
                raw - known_raw[i]
            } else {
                raw
            };
            let u = usage[i] * factor + delta;
            usage[i] = u;
            known_raw[i] = raw;
            out[i] = u;
        }
        tree.roll_up(out);
        same_shape
    }
}

impl Fairshare for FairTree {
    fn factors(&mut self, now: Time, tree: &ShareTree) -> Vec<f64> {
        let same_shape = self.decay(now, tree);
        let n = tree.len();
        let Scratch {
            first,
            children,
            fill,
            usage,
            answer,
            level,
            stack,
            ranked,
        } = &mut self.scratch;
        if !same_shape {
            link_children(tree, first, children, fill);
        }
        // Siblings are ordered by Level Fairshare, (S_k / ΣS) / (U_k / ΣU). The sums are
        // the same for every sibling, so S_k / U_k gives the same order for one division.
        level.clear();
        level.extend(tree.shares().iter().zip(usage.iter()).map(|(&s, &u)| {
            let s = s as f64;
            if u > 0.0 {
                s / u
            } else if s > 0.0 {
                f64::INFINITY
            } else {
                0.0
            }
        }));
        let reordered = sort_siblings(first, children, level, tree.id()) || !same_shape;
        // The factors follow from the shape and the order of siblings alone: when
        // neither changed, the last answer stands.
        if reordered || answer.len() != n {
            rank_depth_first(tree, first, children, stack, ranked, answer);
        }
        answer.clone()
    }
}

// The stages of `factors` are functions of their own, kept out of line: inlined into one
// large function, the compiled Wasm kept even the linear memory's base in a stack slot
// and reloaded it at every access (docs/PERFORMANCE.md, "Hot loops"). Split, each loop has
// few values live across it.

/// Children lists, flat: counts, then offsets, then fill in index order. Slot `n`
/// (`tree.len()`) holds the roots.
#[inline(never)]
fn link_children(
    tree: &ShareTree,
    first: &mut Vec<usize>,
    children: &mut Vec<usize>,
    fill: &mut Vec<usize>,
) {
    let n = tree.len();
    let group = |i: usize| tree.parent_of(i).unwrap_or(n);
    first.clear();
    first.resize(n + 2, 0);
    for i in 0..n {
        first[group(i) + 1] += 1;
    }
    for g in 0..=n {
        first[g + 1] += first[g];
    }
    children.clear();
    children.resize(n, 0);
    fill.clear();
    fill.extend_from_slice(first);
    for i in 0..n {
        let g = group(i);
        children[fill[g]] = i;
        fill[g] += 1;
    }
}

/// Sorts every group of siblings by Level Fairshare, highest first (ids break ties, so
/// the order is total and any sort gives the one answer). Returns whether any moved.
#[inline(never)]
fn sort_siblings(first: &[usize], children: &mut [usize], level: &[f64], ids: &[u32]) -> bool {
    let before = |a: usize, b: usize| level[b].total_cmp(&level[a]).then(ids[a].cmp(&ids[b]));
    let mut reordered = false;
    for group in first.windows(2) {
        // Most groups are a user's (no children) or an account's with one user: nothing
        // to sort. Skipping them here took a tenth off a call in both builds.
        if group[1] - group[0] > 1 {
            reordered |= sort_nearly_sorted(&mut children[group[0]..group[1]], before);
        }
    }
    reordered
}

/// Depth-first, best sibling first: the order users are served in. A user's factor is
/// its place in that order, from 1 (first) down; an account reports its best user's.
#[inline(never)]
fn rank_depth_first(
    tree: &ShareTree,
    first: &[usize],
    children: &[usize],
    stack: &mut Vec<usize>,
    ranked: &mut Vec<usize>,
    answer: &mut Vec<f64>,
) {
    let (n, ids) = (tree.len(), tree.id());
    ranked.clear();
    stack.clear();
    stack.extend(children[first[n]..first[n + 1]].iter().rev());
    while let Some(k) = stack.pop() {
        if ids[k] >= ASSOCIATION_IDS {
            ranked.push(k);
        }
        stack.extend(children[first[k]..first[k + 1]].iter().rev());
    }
    let total = ranked.len().max(1) as f64;
    answer.clear();
    answer.resize(n, 0.0);
    for (k, &i) in ranked.iter().enumerate() {
        answer[i] = (total - k as f64) / total;
    }
    for i in (0..n).rev() {
        if let Some(p) = tree.parent_of(i) {
            if answer[i] > answer[p] {
                answer[p] = answer[i];
            }
        }
    }
}

/// Sorts `v` by `cmp`: insertion sort, linear when `v` is already nearly in order, with
/// a general sort taking over once it has shifted more than a few times `v.len()`
/// elements (so a reshuffled group costs O(n log n), not O(n²)). Returns whether any
/// element moved.
fn sort_nearly_sorted(v: &mut [usize], cmp: impl Fn(usize, usize) -> core::cmp::Ordering) -> bool {
    let mut budget = 4 * v.len();
    let mut moved = false;
    for i in 1..v.len() {
        let x = v[i];
        let mut j = i;
        while j > 0 && cmp(x, v[j - 1]).is_lt() {
            v[j] = v[j - 1];
            j -= 1;
        }
        v[j] = x;
        moved |= j != i;
        budget = budget.saturating_sub(i - j);
        if budget == 0 {
            v.sort_unstable_by(|&a, &b| cmp(a, b));
            return true;
        }
    }
    moved
}

gantry_sdk::export_fairshare!(FairTree);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::check_factors;
    use gantry_sdk::ShareNode;

    /// root(0) → a(1, 60 shares), b(2, 40 shares); users: a/u1, a/u2, b/u3.
    fn tree(usage: [f64; 3]) -> ShareTree {
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
        [
            acct(0, None, 1),
            acct(1, Some(0), 60),
            acct(2, Some(0), 40),
            user(0, 1, usage[0]),
            user(1, 1, usage[1]),
            user(2, 2, usage[2]),
        ]
        .into_iter()
        .collect()
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
        p.decay(100, &tree([100.0, 0.0, 0.0]));
        let d = &p.scratch.usage;
        assert!((d[3] - 50.0).abs() < 1e-9, "{}", d[3]);
        // b's user now uses 60: more than a's decayed 50, and b has fewer shares.
        let f = p.factors(100, &tree([100.0, 0.0, 60.0]));
        assert!(f[4] > f[5] && f[3] > f[5], "{f:?}");
    }

    #[test]
    fn a_node_keeps_its_usage_when_the_tree_changes_shape() {
        let mut p = FairTree::default();
        p.init("half_life_s = 100").unwrap();
        p.factors(0, &tree([100.0, 40.0, 0.0]));
        // A new user of account a comes before the others: every user moves one place.
        let mut nodes: Vec<ShareNode> = tree([100.0, 40.0, 0.0]).nodes().collect();
        nodes.insert(
            3,
            ShareNode {
                id: ASSOCIATION_IDS | 9,
                parent: Some(1),
                shares: 1,
                usage: 30.0,
            },
        );
        p.decay(100, &nodes.into_iter().collect());
        let d = &p.scratch.usage;
        // Half of each known user's usage is left; the new one has what it reported.
        assert_eq!(d[3], 30.0);
        assert!(
            (d[4] - 50.0).abs() < 1e-9 && (d[5] - 20.0).abs() < 1e-9,
            "{d:?}"
        );
        assert_eq!(d[6], 0.0);
        // Accounts are the sums of their users; the root, of everything.
        assert!(
            (d[1] - 100.0).abs() < 1e-9 && (d[0] - 100.0).abs() < 1e-9,
            "{d:?}"
        );
    }

    #[test]
    fn nearly_sorted_sort_agrees_with_a_general_sort() {
        // A small deterministic generator: shuffles of every degree, from one swap to
        // a full reversal, so both the insertion path and the fallback run.
        let mut x = 0x9e37_79b9_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in [0usize, 1, 2, 7, 64, 300] {
            for swaps in [0usize, 1, 3, len, 10 * len] {
                let mut v: Vec<usize> = (0..len).collect();
                for _ in 0..swaps {
                    let (a, b) = (next() as usize % len.max(1), next() as usize % len.max(1));
                    if len > 0 {
                        v.swap(a, b);
                    }
                }
                let key = |i: usize| (i * 7919) % 101;
                let cmp = |a: usize, b: usize| key(a).cmp(&key(b)).then(a.cmp(&b));
                let mut expected = v.clone();
                expected.sort_unstable_by(|&a, &b| cmp(a, b));
                sort_nearly_sorted(&mut v, cmp);
                assert_eq!(v, expected, "len {len}, swaps {swaps}");
            }
        }
    }

    #[test]
    fn kept_children_lists_give_the_answers_of_a_fresh_policy() {
        // Without decay the factors depend on the tree alone, so a policy that keeps its
        // children lists from call to call must answer as a new one does, also when the
        // tree changes shape.
        let mut kept = FairTree::default();
        kept.init("half_life_s = 0").unwrap();
        // Raw usage only grows (the kernel reports totals), by varying steps so that the
        // order of users changes.
        let mut trees: Vec<ShareTree> = Vec::new();
        let mut used = [0f64; 4];
        for step in 0..40u32 {
            for (k, u) in used.iter_mut().enumerate() {
                *u += ((step * 37 + k as u32 * 11) % 23) as f64 * 10.0;
            }
            let f = |k: usize| used[k];
            let mut t = tree([f(0), f(1), f(2)]);
            if step % 10 >= 5 {
                // A fourth user joins account b for a while.
                t.push(ShareNode {
                    id: ASSOCIATION_IDS | 3,
                    parent: Some(2),
                    shares: 1,
                    usage: f(3),
                });
            }
            trees.push(t);
        }
        for (now, t) in trees.iter().enumerate() {
            let mut fresh = FairTree::default();
            fresh.init("half_life_s = 0").unwrap();
            assert_eq!(
                kept.factors(now as Time, t),
                fresh.factors(now as Time, t),
                "step {now}"
            );
        }
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
