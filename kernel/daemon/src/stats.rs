//! What an operator reads with `sdiag`: scheduling cycles and their cost, what the last
//! cycle decided, and calls per RPC. Counters are atomics; the per-method map takes a
//! short lock of its own, never the controller's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use gantry_api as api;

#[derive(Default)]
pub struct Stats {
    since: i64,
    cycles: AtomicU64,
    cycle_us_total: AtomicU64,
    cycle_us_max: AtomicU64,
    cycle_us_last: AtomicU64,
    rpcs: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn new(now: i64) -> Self {
        Self {
            since: now,
            ..Self::default()
        }
    }

    /// One scheduling cycle took `took`.
    pub fn cycle(&self, took: Duration) {
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        self.cycles.fetch_add(1, Relaxed);
        self.cycle_us_total.fetch_add(us, Relaxed);
        self.cycle_us_max.fetch_max(us, Relaxed);
        self.cycle_us_last.store(us, Relaxed);
    }

    /// One call of `method` (the gRPC method's name).
    pub fn rpc(&self, method: &str) {
        let mut m = self.rpcs.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(method) {
            Some(n) => *n += 1,
            None => {
                m.insert(method.to_string(), 1);
            }
        }
    }

    /// The counters as the `Diagnostics` reply carries them.
    pub fn fill(&self, reply: &mut api::DiagnosticsReply) {
        let cycles = self.cycles.load(Relaxed);
        reply.since = self.since;
        reply.cycles = cycles;
        reply.cycle_us_last = self.cycle_us_last.load(Relaxed);
        reply.cycle_us_max = self.cycle_us_max.load(Relaxed);
        reply.cycle_us_mean = self
            .cycle_us_total
            .load(Relaxed)
            .checked_div(cycles)
            .unwrap_or(0);
        let m = self.rpcs.lock().unwrap_or_else(|p| p.into_inner());
        reply.rpcs = m
            .iter()
            .map(|(k, &v)| api::RpcCount {
                method: k.clone(),
                count: v,
            })
            .collect();
    }
}
