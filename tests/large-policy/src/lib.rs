//! A priority policy whose only purpose is to be large: thousands of generated scoring
//! functions (build.rs), one picked per job by its id. Built with the `large` feature it
//! is a component of about 4 MB, what `benches/policy_load_stall.rs` loads into a live
//! controller while measuring submissions. Its answers are well-formed priorities.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use gantry_sdk::{Policy, PolicyInfo, Priority, PriorityBatch, PriorityFields, Time};

include!(concat!(env!("OUT_DIR"), "/scores.rs"));

#[derive(Default)]
pub struct Large;

impl Policy for Large {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: "large".to_string(),
            version: "0".to_string(),
        }
    }
    fn init(&mut self, _config: &str) -> Result<(), String> {
        Ok(())
    }
}

impl Priority for Large {
    fn fields(&self) -> PriorityFields {
        PriorityFields::JOB | PriorityFields::SUBMIT_TIME
    }

    fn prioritize(&mut self, now: Time, jobs: &PriorityBatch) -> Vec<i64> {
        jobs.job()
            .iter()
            .zip(jobs.submit_time())
            .map(|(&id, &t)| {
                let f = SCORES[id as usize % SCORES.len()];
                f((now - t) as f64, id as f64) as i64
            })
            .collect()
    }
}

gantry_sdk::export_priority!(Large);
