//! Wasm against native, call by call: each pair timed as a native call then a Wasm call,
//! in turn, so that both builds meet the same interference from other work.

use std::time::{Duration, Instant};

use super::Pairing;

/// The fastest and the median of a build's calls, in µs.
#[derive(Clone, Copy)]
pub struct Calls {
    pub fastest: f64,
    pub median: f64,
}

impl Calls {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        Self {
            fastest: micros(times[0]),
            median: micros(times[times.len() / 2]),
        }
    }
}

/// One pair's timings.
pub struct Pair {
    pub name: &'static str,
    pub calls: usize,
    pub native: Calls,
    pub wasm: Calls,
}

impl Pair {
    /// Times a native call then a Wasm call of `setup`, `rounds` times; one untimed call
    /// of each first.
    pub fn measure(name: &'static str, rounds: usize, setup: &mut impl Pairing) -> Self {
        setup.call_native();
        setup.call_wasm();
        let (mut native, mut wasm) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
        for _ in 0..rounds {
            let t = Instant::now();
            setup.call_native();
            native.push(t.elapsed());
            let t = Instant::now();
            setup.call_wasm();
            wasm.push(t.elapsed());
        }
        Self {
            name,
            calls: rounds,
            native: Calls::of(native),
            wasm: Calls::of(wasm),
        }
    }

    /// The steadiest figure on a shared machine: the calls least disturbed.
    pub fn ratio_of_fastest(&self) -> f64 {
        self.wasm.fastest / self.native.fastest
    }

    pub fn ratio_of_medians(&self) -> f64 {
        self.wasm.median / self.native.median
    }
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
