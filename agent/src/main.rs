//! `gantry-agent`: reads its configuration, works out its node's topology, and serves
//! the controller until stopped.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use gantry_agent::config::AgentConfig;
use gantry_agent::jobs::Jobs;
use gantry_agent::link::Link;
use gantry_api::auth::{mint, Claims, Role};

/// Gantry's node agent.
#[derive(Parser)]
#[command(
    version,
    about,
    long_about = "Gantry's node agent: registers this node with \
gantryd, heartbeats, and launches, watches, suspends and ends the jobs the controller \
places here."
)]
struct Args {
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "/etc/gantry/agent.toml")]
    config: PathBuf,
    /// The node name (overrides the configuration; default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// Print the topology found (or declared) as JSON and exit.
    #[arg(long)]
    discover: bool,
    /// Print this node as a cluster description (a `[[node_type]]` and its `[[nodes]]`)
    /// and exit: a start for gantryd's cluster file.
    #[arg(long)]
    describe_node: bool,
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = AgentConfig::load(&args.config)?;
    let node = args
        .node
        .or(cfg.node.clone())
        .or_else(hostname)
        .context("no node name: set `node` in the configuration or pass --node")?;
    let key = std::fs::read(&cfg.key_file)
        .with_context(|| format!("cannot read the cluster key {}", cfg.key_file.display()))?;
    let token = mint(
        &key,
        &Claims {
            user: node.clone(),
            uid: 0,
            role: Role::Agent,
            expires: 0,
        },
    )
    .context("cannot sign the agent token")?;
    let (topology, core_cpus) = match &cfg.topology {
        Some(t) => {
            let t = gantry_agent::topology::declared(t);
            // Declared cores are the machine's CPUs by number (those it has).
            let cores = t.sockets * t.numa_per_socket * t.cores_per_numa;
            (t, (0..cores).collect())
        }
        None => {
            let found = gantry_agent::topology::discover()?;
            (found.topology, found.core_cpus)
        }
    };
    if args.describe_node {
        println!("{}", gantry_agent::topology::node_toml(&node, &topology));
        return Ok(());
    }
    if args.discover {
        println!(
            "{}",
            gantry_agent::topology::describe(&topology, &core_cpus)
        );
        return Ok(());
    }
    std::fs::create_dir_all(&cfg.spool)
        .with_context(|| format!("cannot create the spool {}", cfg.spool.display()))?;
    let (jobs, ended) = Jobs::new(node.clone(), cfg.spool.clone(), core_cpus);
    jobs.recover();
    tracing::info!(%node, controller = %cfg.controller, sources = ?topology.sources, "agent starting");
    let link = Link {
        controller: cfg.controller.clone(),
        node,
        token,
        topology,
        jobs,
    };
    tokio::select! {
        _ = link.run(ended) => Ok(()),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; jobs keep running");
            Ok(())
        }
    }
}
