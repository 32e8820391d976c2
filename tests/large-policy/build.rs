//! Generates the policy's scoring functions: each a different chain of arithmetic, all
//! reachable through one table, so the compiler keeps every one and the component's code
//! grows with their number.

use std::fmt::Write;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    // Bodies repeat after lcm(997, 4) = 3,988 functions (the linker folds copies), so
    // stay below that: 3,800 make a component of about 4.0 MB.
    let count: usize = if std::env::var_os("CARGO_FEATURE_LARGE").is_some() {
        3800
    } else {
        8
    };
    let mut src = String::new();
    for f in 0..count {
        let _ = writeln!(
            src,
            "#[inline(never)]\nfn score_{f}(age: f64, size: f64) -> f64 {{"
        );
        let _ = writeln!(src, "    let mut v = age;");
        for step in 0..40 {
            let c = (f * 131 + step * 17) % 997;
            let op = match (f + step) % 4 {
                0 => format!("v = v * 1.{c:03} + size;"),
                1 => format!("v = (v - {c}.5) * 0.5 + size * 0.25;"),
                2 => format!("v = v.max(size + {c}.0) - 0.{c:03};"),
                _ => format!("v = v.min(age * {c}.25 + 1.0e9) + 0.5;"),
            };
            let _ = writeln!(src, "    {op}");
        }
        let _ = writeln!(src, "    v\n}}");
    }
    let _ = writeln!(src, "static SCORES: [fn(f64, f64) -> f64; {count}] = [");
    for f in 0..count {
        let _ = writeln!(src, "    score_{f},");
    }
    let _ = writeln!(src, "];");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("scores.rs"), src).expect("OUT_DIR is writable");
}
