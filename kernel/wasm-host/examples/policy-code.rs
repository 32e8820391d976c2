//! Writes the machine code the policy host runs for a component, as an ELF object to
//! read with `objdump -d --no-show-raw-insn OUT` (symbols name each function when the
//! component keeps its name section; see docs/PERFORMANCE.md, "Hot loops"):
//!
//!     cargo run --release -p gantry-wasm-host --example policy-code -- IN.wasm OUT.o

use std::process::ExitCode;

use gantry_wasm_host::{HostLimits, PolicyHost};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: policy-code COMPONENT.wasm OUT.o");
        return ExitCode::from(2);
    };
    let run = || -> Result<(), String> {
        let bytes = std::fs::read(input).map_err(|e| format!("cannot read {input}: {e}"))?;
        let host = PolicyHost::new(HostLimits::default()).map_err(|e| e.to_string())?;
        let code = host
            .compiled_object(&bytes)
            .map_err(|e| format!("{input}: {e}"))?;
        std::fs::write(output, code).map_err(|e| format!("cannot write {output}: {e}"))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("policy-code: {e}");
            ExitCode::FAILURE
        }
    }
}
