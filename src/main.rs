//! `gantry`: the command line of the Gantry scheduler. It parses arguments, calls the
//! libraries or the controller, and formats the answers; no scheduling logic lives here.
//!
//! Invoked by a Slurm command's name (`sbatch`, `squeue`, ..., `sprio`: the links
//! `gantry install-links` makes), it behaves as that Slurm command.

// serde_json's json! macro recurses once per field; a job's record has many.
#![recursion_limit = "256"]

mod admin;
mod batch;
mod client;
mod control;
mod diag;
mod format;
mod live_policy;
mod policies;
mod policy_new;
mod policy_test;
mod report;
mod reservations;
mod sim;
mod sinfo;
mod slurm_doc;
mod sprio;
mod steps;
mod swf_export;
mod whatif;
mod when;

use clap::{Parser, Subcommand};

/// The Slurm command names this binary answers to.
pub const SLURM_NAMES: [&str; 13] = [
    "sbatch", "squeue", "scancel", "sinfo", "sacct", "srun", "salloc", "scontrol", "sshare",
    "sdiag", "sreport", "sstat", "sprio",
];

#[derive(Parser)]
#[command(name = "gantry", version, about = "Gantry cluster batch scheduler", long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    conn: client::Conn,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit a batch script (as sbatch; #SBATCH directives are read).
    #[command(args_override_self = true)]
    Submit(client::SubmitArgs),
    /// Run a command's tasks as a job step and stream their output until they end (as
    /// srun): inside an allocation ($SLURM_JOB_ID or --jobid) a step of that job, else
    /// in an allocation made for it.
    #[command(args_override_self = true)]
    Run(steps::SrunArgs),
    /// Make an allocation and run a command here with it, then release it (as salloc).
    #[command(args_override_self = true)]
    Alloc(steps::SallocArgs),
    /// Jobs not yet finished (as squeue).
    #[command(disable_help_flag = true)]
    Queue(client::QueueArgs),
    /// Cancel or signal jobs (as scancel).
    Cancel(client::CancelArgs),
    /// One job or node in full (as scontrol show).
    Show(client::ShowArgs),
    /// Hold, release or update jobs (as scontrol hold|release|update).
    Control(control::ControlArgs),
    /// Nodes and their state (as sinfo).
    #[command(disable_help_flag = true)]
    Nodes(sinfo::NodesArgs),
    /// Drain or resume a node (admin).
    #[command(subcommand)]
    Node(client::NodeAction),
    /// Accounting records of jobs (as sacct).
    Acct(client::AcctArgs),
    /// The share tree: shares, usage and fairshare factors (as sshare).
    Shares(diag::SharesArgs),
    /// Waiting jobs' priorities and the factors the priority policy weighs (as sprio).
    Prio(sprio::SprioArgs),
    /// Scheduler statistics: cycles, what the last one decided, calls per RPC (as sdiag).
    Diag(diag::DiagArgs),
    /// Usage over a period: cluster utilization, top users and accounts (as sreport).
    Report(report::ReportArgs),
    /// CPU and memory a running job's batch script and steps use now (as sstat).
    Stat(diag::StatArgs),
    /// Job and node events as they happen.
    Watch(client::WatchArgs),
    /// Policy components of the running controller: list, load, shadow, rollback.
    #[command(subcommand)]
    Policy(live_policy::PolicyAction),
    /// The controllers themselves: which one is active, over a PostgreSQL state shared by
    /// an active controller and its standbys.
    #[command(subcommand)]
    Admin(admin::AdminAction),
    /// Mint an identity token with the cluster key (for admins).
    Token(client::TokenArgs),
    /// Write a node's agent credential, derived from the cluster key (for admins): it
    /// proves that node only, so the agent never needs the cluster key.
    Credential(client::CredentialArgs),
    /// Make sbatch, squeue, scancel, sinfo, sacct, srun, salloc, scontrol, sshare, sprio,
    /// sdiag, sreport and sstat links to this binary.
    InstallLinks {
        /// Directory for the links (e.g. /usr/local/bin).
        dir: std::path::PathBuf,
    },
    /// Replay a workload trace (SWF) through the scheduling kernel with a virtual clock.
    Sim(sim::SimArgs),
    /// Print docs/SLURM.md: each Slurm option and what Gantry does with it.
    #[command(hide = true)]
    SlurmOptions,
}

/// Rewrites a Slurm-named invocation into the matching `gantry` command line.
fn slurm_argv(mut args: Vec<String>) -> Vec<String> {
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sub = match name.as_str() {
        "sbatch" => "submit",
        "squeue" => "queue",
        "scancel" => "cancel",
        "sinfo" => "nodes",
        "sacct" => "acct",
        "srun" => "run",
        "salloc" => "alloc",
        "scontrol" => "show",
        "sshare" => "shares",
        "sprio" => "prio",
        "sdiag" => "diag",
        "sreport" => "report",
        "sstat" => "stat",
        _ => return args,
    };
    let mut rest = args.split_off(1);
    // `sbatch --version`, `squeue -V`: as Slurm's tools, the version and nothing else.
    if rest.first().is_some_and(|a| a == "--version" || a == "-V") {
        println!(
            "{name} (Gantry {}, Slurm 22.05 compatible)",
            env!("CARGO_PKG_VERSION")
        );
        std::process::exit(0);
    }
    let mut sub = sub;
    if sub == "show" {
        // scontrol show job 12 → gantry show job 12; scontrol hold 12 → gantry control hold 12
        match rest.first().map(String::as_str) {
            Some("show") => {
                rest.remove(0);
            }
            Some(
                "hold" | "release" | "update" | "requeue" | "requeuehold" | "suspend" | "resume"
                | "create" | "delete",
            ) => sub = "control",
            Some("--help" | "-h" | "help") => sub = "control",
            _ => {
                eprintln!(
                    "scontrol: error: Gantry's scontrol takes show (job, step, node, partition, reservation, config, hostnames, hostlist), hold, release, requeue, requeuehold, suspend, resume, update, create reservation and delete"
                );
                std::process::exit(1);
            }
        }
    }
    let mut out = vec!["gantry".to_string(), sub.to_string()];
    out.extend(rest);
    out
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
                // A policy's own log lines while it loads (init) or is tried or
                // shadowed are for the person loading it; those of each cycle are not.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,gantry_policy::load=info")
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    // As Slurm's tools (C programs): a closed pipe (`sacct | head -1`) ends the process
    // quietly by SIGPIPE. Only for standard output: SIGPIPE stays ignored, so a
    // controller that closes the connection mid-write is an error the CLI reports, not a
    // silent death; printing to a closed stdout panics in std, and that panic raises it.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            // SAFETY: restores the default disposition of SIGPIPE and raises it, ending
            // the process as a C tool's write to a closed pipe would.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
        default_hook(info);
    }));
    // Errors are prefixed with the name the command was called by (`sbatch: error:`).
    let speaker = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| SLURM_NAMES.contains(&n.as_str()))
        .unwrap_or_else(|| "gantry".into());
    let args: Result<Vec<String>, _> = std::env::args_os().map(|a| a.into_string()).collect();
    let argv = match args {
        Ok(args) => slurm_argv(args),
        Err(bad) => {
            eprintln!(
                "{speaker}: error: the argument {} is not valid UTF-8; Gantry takes job names, paths and options as UTF-8 text",
                bad.to_string_lossy().escape_debug()
            );
            return std::process::ExitCode::from(1);
        }
    };
    let cli = Cli::parse_from(argv);
    let conn = cli.conn;
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let result: anyhow::Result<u8> = (|| {
        let rt = runtime()?;
        Ok(match cli.command {
            Command::Sim(args) => sim::run(args).map(|()| 0)?,
            Command::SlurmOptions => {
                use clap::CommandFactory;
                print!("{}", slurm_doc::render(&Cli::command()));
                0
            }
            Command::Token(a) => client::token(a).map(|()| 0)?,
            Command::Credential(a) => client::credential(a).map(|()| 0)?,
            Command::InstallLinks { dir } => client::install_links(&dir).map(|()| 0)?,
            Command::Submit(a) => rt.block_on(client::submit(&conn, a))?,
            Command::Run(a) => rt.block_on(steps::srun(&conn, a))?,
            Command::Alloc(a) => rt.block_on(steps::salloc(&conn, a))?,
            Command::Queue(a) => rt.block_on(client::queue(&conn, a)).map(|()| 0)?,
            Command::Cancel(a) => rt.block_on(client::cancel(&conn, a)).map(|()| 0)?,
            Command::Show(a) => rt.block_on(client::show(&conn, a)).map(|()| 0)?,
            Command::Control(a) => rt.block_on(control::control(&conn, a)).map(|()| 0)?,
            Command::Nodes(a) => rt.block_on(sinfo::nodes(&conn, a)).map(|()| 0)?,
            Command::Node(a) => rt.block_on(client::node(&conn, a)).map(|()| 0)?,
            Command::Acct(a) => rt.block_on(client::acct(&conn, a)).map(|()| 0)?,
            Command::Shares(a) => rt.block_on(diag::shares(&conn, a)).map(|()| 0)?,
            Command::Prio(a) => rt.block_on(sprio::sprio(&conn, a)).map(|()| 0)?,
            Command::Diag(a) => rt.block_on(diag::diag(&conn, a)).map(|()| 0)?,
            Command::Report(a) => rt.block_on(report::report(&conn, a)).map(|()| 0)?,
            Command::Stat(a) => rt.block_on(diag::stat(&conn, a)).map(|()| 0)?,
            Command::Policy(a) => rt.block_on(live_policy::policy(&conn, a))?,
            Command::Admin(a) => rt.block_on(admin::admin(&conn, a))?,
            Command::Watch(a) => rt.block_on(client::watch(&conn, a)).map(|()| 0)?,
        })
    })();
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            let code = match e.downcast_ref::<client::Refused>() {
                Some(r) => r.code,
                None if e.is::<sim::StrictFailure>() => 3,
                None => 1,
            };
            eprintln!("{speaker}: error: {e:#}");
            std::process::ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn slurm_names_map_to_gantry_commands() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            slurm_argv(v(&["/usr/bin/sbatch", "--parsable", "x.sh"])),
            v(&["gantry", "submit", "--parsable", "x.sh"])
        );
        assert_eq!(
            slurm_argv(v(&["squeue", "-h"])),
            v(&["gantry", "queue", "-h"])
        );
        assert_eq!(
            slurm_argv(v(&["scontrol", "show", "job", "5"])),
            v(&["gantry", "show", "job", "5"])
        );
        assert_eq!(slurm_argv(v(&["gantry", "queue"])), v(&["gantry", "queue"]));
    }
}
