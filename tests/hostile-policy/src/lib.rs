//! A priority policy that misbehaves in one of four ways, chosen by a cargo feature, so
//! the sandbox tests load real hostile components: it loops forever, allocates without
//! bound, panics (a trap), or answers a list of the wrong length.
//! Without a feature it is a well-behaved FIFO policy by submission time; with `job-ids`,
//! FIFO by job id, reading no column but the ids.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use gantry_sdk::{Policy, PolicyInfo, Priority, PriorityBatch, PriorityFields, Time};

#[derive(Default)]
pub struct Hostile {
    hoard: Vec<Vec<u8>>,
}

impl Policy for Hostile {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: "hostile".to_string(),
            version: "0".to_string(),
        }
    }
    fn init(&mut self, _config: &str) -> Result<(), String> {
        Ok(())
    }
}

impl Priority for Hostile {
    fn fields(&self) -> PriorityFields {
        if cfg!(feature = "job-ids") {
            PriorityFields::JOB
        } else {
            PriorityFields::SUBMIT_TIME
        }
    }

    #[allow(unreachable_code, unused_variables, clippy::empty_loop)]
    fn prioritize(&mut self, now: Time, jobs: &PriorityBatch) -> Vec<i64> {
        #[cfg(feature = "infinite-loop")]
        {
            let mut x = now as u64;
            loop {
                x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        #[cfg(feature = "memory-bomb")]
        loop {
            let mut chunk = Vec::with_capacity(1 << 20);
            chunk.resize(1 << 20, now as u8);
            self.hoard.push(chunk);
        }
        #[cfg(feature = "panic")]
        panic!("hostile policy panics");
        #[cfg(feature = "wrong-length")]
        return jobs.submit_time().iter().skip(1).map(|t| -t).collect();
        #[cfg(feature = "job-ids")]
        return jobs.job().iter().map(|&id| -(id as i64)).collect();
        let _ = (now, &self.hoard);
        jobs.submit_time().iter().map(|t| -t).collect()
    }
}

gantry_sdk::export_priority!(Hostile);
