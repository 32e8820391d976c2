//! `gantry`: the command line of the Gantry scheduler. It parses arguments, calls the
//! libraries and formats their answers; no scheduling logic lives here.

mod policies;
mod sim;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gantry", version, about = "Gantry cluster batch scheduler", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a workload trace (SWF) through the scheduling kernel with a virtual clock.
    Sim(sim::SimArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gantry: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
