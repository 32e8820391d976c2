//! `gantry-agent`: reads its configuration, works out its node's topology, and serves
//! the controller until stopped.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use gantry_agent::config::AgentConfig;
use gantry_agent::jobs::Jobs;
use gantry_agent::link::{Link, NodeCredential};
use gantry_agent::spool::Spool;

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
    /// Configuration file (TOML) [default: /etc/gantry/agent.toml]. --discover and
    /// --describe-node need none: without one they look at the hardware.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The node name (overrides the configuration; default: the host name).
    #[arg(long)]
    node: Option<String>,
    /// Print the topology found (or declared in the configuration) as JSON and exit.
    #[arg(long)]
    discover: bool,
    /// Print this node as a cluster description (a `[[node_type]]` and its `[[nodes]]`)
    /// and exit: a start for gantryd's cluster file.
    #[arg(long)]
    describe_node: bool,
}

const DEFAULT_CONFIG: &str = "/etc/gantry/agent.toml";

/// The node's topology and the CPU of each core: declared in the configuration, else
/// discovered.
fn topology(cfg: Option<&AgentConfig>) -> Result<(gantry_api::NodeTopology, Vec<u32>)> {
    Ok(match cfg.and_then(|c| c.topology.as_ref()) {
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
    })
}

/// --discover and --describe-node: the configuration is read when one is given or the
/// default file exists, for a declared topology and the node name; nothing else is
/// needed (no key, no controller).
fn inspect(args: &Args) -> Result<()> {
    let cfg = match &args.config {
        Some(path) => Some(AgentConfig::load(path)?),
        None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
            Some(AgentConfig::load(DEFAULT_CONFIG.as_ref())?)
        }
        None => None,
    };
    let (topology, core_cpus) = topology(cfg.as_ref())?;
    if args.describe_node {
        let node = args
            .node
            .clone()
            .or_else(|| cfg.as_ref().and_then(|c| c.node.clone()))
            .or_else(hostname)
            .context("no node name: pass --node")?;
        println!("{}", gantry_agent::topology::node_toml(&node, &topology));
    } else {
        println!(
            "{}",
            gantry_agent::topology::describe(&topology, &core_cpus)
        );
    }
    Ok(())
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
    if args.discover || args.describe_node {
        return inspect(&args);
    }
    let cfg = AgentConfig::load(args.config.as_deref().unwrap_or(DEFAULT_CONFIG.as_ref()))?;
    let node = args
        .node
        .clone()
        .or(cfg.node.clone())
        .or_else(hostname)
        .context("no node name: set `node` in the configuration or pass --node")?;
    let credential_file = &cfg.credential_file;
    let key = std::fs::read(credential_file).with_context(|| {
        format!(
            "cannot read this node's credential {}",
            credential_file.display()
        )
    })?;
    if key.len() < gantry_api::auth::MIN_KEY_BYTES {
        anyhow::bail!(
            "the credential {} is shorter than {} bytes; make it with `gantry credential {node}`",
            credential_file.display(),
            gantry_api::auth::MIN_KEY_BYTES
        );
    }
    let (topology, core_cpus) = topology(Some(&cfg))?;
    let spool = Spool::open(&cfg.spool)?;
    let (jobs, ended) = Jobs::new(node.clone(), spool.clone(), core_cpus);
    jobs.recover();
    let steps = gantry_agent::steps::Steps::new(node.clone(), jobs.clone(), spool);
    steps.recover();
    tracing::info!(%node, controller = %cfg.controller_list(), sources = ?topology.sources, "agent starting");
    let link = Link {
        controller: cfg.controller_list(),
        trust: gantry_api::client::Trust::ca_file(cfg.ca_file.as_deref()),
        credential: NodeCredential::new(node.clone(), key),
        steps,
        node,
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
