//! `gantryd`: reads its configuration, restores its state from the log, serves the API on
//! TCP and/or a Unix socket, and runs a scheduling cycle whenever something changes (and
//! at least every `cycle_interval_ms`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::Parser;
use gantry_api::agent_link_server::AgentLinkServer;
use gantry_api::controller_server::ControllerServer;
use gantry_daemon::auth::Authenticator;
use gantry_daemon::config::DaemonConfig;
use gantry_daemon::controller::{Controller, Limits, Settings};
use gantry_daemon::leadership::{hold, stand_by, Candidate, Known, StepDown, Switch};
use gantry_daemon::service::{unix_now, Service, Shared};
use gantry_daemon::store::postgres::Lease;
use gantry_daemon::store::{History, Location, Store};
use gantry_kernel::policy::PolicySet;
use gantry_kernel::{Scheduler, SchedulerConfig};
use gantry_wasm_host::{
    policy_set, ComponentSource, HostLimits, PolicyComponents, PolicyHost, PolicyKind, WasmSlots,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::StreamExt;
use tonic::transport::Server;

/// Gantry's controller daemon.
#[derive(Parser)]
#[command(
    version,
    about,
    long_about = "Gantry's controller. Keeps the queue and the \
cluster's state in a durable log (every acknowledged submission is committed) in an SQLite \
file, or in a PostgreSQL database shared by several gantryd of which one is active and the \
others stand by to take over; serves the gRPC API to the `gantry` CLI and to one \
`gantry-agent` per node, and runs the scheduling kernel with the policy components."
)]
struct Args {
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "/etc/gantry/gantryd.toml")]
    config: PathBuf,
    #[command(subcommand)]
    admin: Option<Admin>,
}

/// Work on a state instead of running the controller.
#[derive(clap::Subcommand)]
enum Admin {
    /// Copy a whole state — the log, the environments and the policy components — into
    /// another, empty one: an SQLite file into PostgreSQL when a site moves to an active
    /// and a standby controller, or back. Stop every gantryd of both first; jobs keep
    /// running on their nodes meanwhile, and the agents return to the controller started
    /// on the new state.
    CopyState {
        /// The state to read: a file path or postgres://USER@HOST:PORT/DB.
        from: String,
        /// The empty state to write.
        to: String,
    },
}

/// The policy directory: configured, else where the built-ins are found.
fn policy_dir(cfg: &DaemonConfig) -> Result<PathBuf> {
    if let Some(d) = &cfg.policy_dir {
        return Ok(d.clone());
    }
    gantry_wasm_host::builtin_dir().map_err(|looked| {
        anyhow::anyhow!(
            "the built-in policy components were not found (looked in {}); build them with scripts/build-policies.sh, set policy_dir, or set native_policies = true",
            looked.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

/// The policies gantryd starts with, and the components it read for them by sha256
/// (what `ReplayBasis` hands out for versions loaded at start).
type StartPolicies = (PolicySet, Option<WasmSlots>, Vec<(String, Arc<Vec<u8>>)>);

fn policies(cfg: &DaemonConfig) -> Result<StartPolicies> {
    if cfg.native_policies {
        tracing::warn!("running the native safe-default policies (native_policies = true)");
        return Ok((PolicySet::default(), None, Vec::new()));
    }
    let dir = policy_dir(cfg)?;
    let source = |k: PolicyKind| -> Result<ComponentSource> {
        let files = cfg.policies.get(k.name());
        let wasm = files
            .and_then(|f| f.component.clone())
            .unwrap_or_else(|| dir.join(format!("{}.wasm", k.builtin())));
        let bytes = std::fs::read(&wasm)
            .with_context(|| format!("cannot read the {} policy {}", k.name(), wasm.display()))?;
        let config = match files.and_then(|f| f.config.as_ref()) {
            Some(p) => std::fs::read_to_string(p).with_context(|| {
                format!(
                    "cannot read the {} policy configuration {}",
                    k.name(),
                    p.display()
                )
            })?,
            // A replaced component starts from its own defaults.
            None if files.is_some_and(|f| f.component.is_some()) => String::new(),
            None => std::fs::read_to_string(dir.join(format!("{}.toml", k.builtin())))
                .unwrap_or_default(),
        };
        let limits = files
            .map(|f| f.limits())
            .transpose()
            .map_err(|e| anyhow::anyhow!("[policies.{}]: {e}", k.name()))?
            .flatten();
        Ok(ComponentSource {
            bytes,
            config,
            limits,
        })
    };
    let cache = cfg
        .policy_code_cache
        .clone()
        .unwrap_or_else(|| PathBuf::from("policy-code"));
    let host = PolicyHost::with_code_cache(HostLimits::default(), cache)?;
    let components = PolicyComponents {
        priority: source(PolicyKind::Priority)?,
        fairshare: source(PolicyKind::Fairshare)?,
        preemption: source(PolicyKind::Preemption)?,
        placement: source(PolicyKind::Placement)?,
    };
    let read: Vec<(String, Arc<Vec<u8>>)> = [
        &components.priority,
        &components.fairshare,
        &components.preemption,
        &components.placement,
    ]
    .into_iter()
    .map(|c| {
        (
            gantry_daemon::service::sha256_hex(&c.bytes),
            Arc::new(c.bytes.clone()),
        )
    })
    .collect();
    let (set, slots) = policy_set(&host, &components, "gantryd", unix_now())
        .context("a policy component could not be loaded")?;
    // Shadow runs replay the last batch each slot decided.
    slots.record_batches(true);
    tracing::info!(dir = %dir.display(), "built-in policy components loaded");
    Ok((set, Some(slots), read))
}

/// The settings `scontrol show config` shows, by Slurm's names where they mean the
/// same.
fn config_view(cfg: &DaemonConfig) -> Vec<(String, String)> {
    let policies = if cfg.native_policies {
        "native defaults".to_string()
    } else {
        "Wasm components (gantry policy list)".to_string()
    };
    vec![
        ("ClusterName".into(), cfg.cluster_name.clone()),
        (
            "SLURM_VERSION".into(),
            format!("22.05 (Gantry {})", env!("CARGO_PKG_VERSION")),
        ),
        (
            "SlurmdTimeout".into(),
            format!("{} sec", cfg.node_timeout_s),
        ),
        (
            "HeartbeatInterval".into(),
            format!("{} sec", cfg.heartbeat_s),
        ),
        ("KillWait".into(), format!("{} sec", cfg.kill_grace_s)),
        (
            "MinJobAge".into(),
            format!("{} sec", cfg.finished_retention_s),
        ),
        (
            "SnapshotInterval".into(),
            format!("{} sec", cfg.snapshot_interval_s),
        ),
        (
            "SchedulerTimeSlice".into(),
            format!("{} msec", cfg.cycle_interval_ms),
        ),
        (
            "PriorityCalcPeriod".into(),
            format!("{} sec", cfg.fairshare_interval_s),
        ),
        ("MaxScriptSize".into(), cfg.max_script_bytes.to_string()),
        ("MaxDependencies".into(), cfg.max_dependencies.to_string()),
        (
            "DefaultAccount".into(),
            cfg.default_account
                .clone()
                .unwrap_or_else(|| "(null)".into()),
        ),
        ("Policies".into(), policies),
    ]
}

/// How a run of the controller ended.
enum Ended {
    /// Interrupted or terminated: a clean stop.
    Stopped,
    /// Another controller is active now, or this one lost its lease: it starts again as
    /// a standby.
    SteppedDown(String),
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
    if let Some(Admin::CopyState { from, to }) = &args.admin {
        return tokio::task::block_in_place(|| copy_state(from, to));
    }
    match run(&args).await? {
        Ended::Stopped => Ok(()),
        Ended::SteppedDown(why) => {
            tracing::warn!(reason = %why, "stepping down: starting again as a standby");
            // A fresh process: nothing of the active run's memory survives, so nothing
            // it decided but did not commit can leak into the next.
            use std::os::unix::process::CommandExt;
            let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
            let err = std::process::Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .exec();
            // Not through the runtime's shutdown, which waits for blocking calls: a
            // controller that cannot start again must be seen to stop.
            tracing::error!(error = %err, exe = %exe.display(), "cannot start again as a standby; stopping");
            std::process::exit(1)
        }
    }
}

/// `gantryd copy-state FROM TO`.
fn copy_state(from: &str, to: &str) -> Result<()> {
    let (from, to) = (Location::parse(from), Location::parse(to));
    if let Location::Sqlite(p) = &from {
        if !p.is_file() {
            bail!("{} is not a state database file", p.display());
        }
    }
    // A controller writing either side would make the copy a stale one.
    let idle = |what: &str, l: &Location| -> Result<Option<(Lease, i64)>> {
        let Location::Postgres(url) = l else {
            return Ok(None);
        };
        let lease = Lease::connect(url)?;
        match lease.try_acquire(
            "gantryd copy-state",
            "",
            std::time::Duration::from_secs(600),
        )? {
            Some(epoch) => Ok(Some((lease, epoch))),
            None => {
                let h = lease.holder()?;
                bail!(
                    "a controller is active on the {what} ({} at {}, epoch {}): stop every gantryd using it first",
                    h.holder,
                    h.address,
                    h.epoch
                )
            }
        }
    };
    let source_lease = idle("source", &from)?;
    let target_lease = idle("target", &to)?;
    let mut source = Store::open_location(&from)?;
    let mut target = match (&to, &target_lease) {
        (Location::Postgres(url), Some((_, epoch))) => Store::open_fenced(url, *epoch)?,
        _ => Store::open_location(&to)?,
    };
    let total = source.last_seq()?;
    let copied = source.copy_to(&mut target, |n| {
        eprintln!("gantryd: copied {n} of {total} log entries");
    });
    for (lease, epoch) in source_lease.iter().chain(&target_lease) {
        let _ = lease.release(*epoch);
    }
    let copied = copied?;
    println!(
        "copied {copied} log entries with their environments and policy components from {} to {}",
        from.display(),
        to.display()
    );
    Ok(())
}

/// The listeners, bound once for the process's life.
struct Listeners {
    tcp: Option<(
        tokio::net::TcpListener,
        Option<tonic::transport::ServerTlsConfig>,
    )>,
    unix: Option<UnixListener>,
}

impl Listeners {
    async fn bind(cfg: &DaemonConfig) -> Result<Self> {
        let mut tcp = None;
        if let Some(addr) = &cfg.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let tls = match (&cfg.tls_cert, &cfg.tls_key) {
                (Some(cert), Some(key)) => {
                    use std::os::unix::fs::MetadataExt;
                    if std::fs::metadata(key).is_ok_and(|m| m.mode() & 0o077 != 0) {
                        tracing::warn!(key = %key.display(), "the TLS private key is readable by other users: chmod 600 it");
                    }
                    let read = |p: &std::path::PathBuf| {
                        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
                    };
                    Some(tonic::transport::ServerTlsConfig::new().identity(
                        tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
                    ))
                }
                _ => None,
            };
            if tls.is_some() {
                tracing::info!(addr = %listener.local_addr()?, "listening (TCP with TLS, tokens)");
            } else {
                tracing::warn!(addr = %listener.local_addr()?, "listening (plain TCP, tokens): anyone who can watch this network reads them");
            }
            tcp = Some((listener, tls));
        }
        let mut unix = None;
        if let Some(path) = &cfg.socket {
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot replace the old socket {}", path.display()))?;
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let listener = UnixListener::bind(path)
                .with_context(|| format!("cannot bind {}", path.display()))?;
            // Anyone local may connect; the kernel tells us who they are.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
            tracing::info!(socket = %path.display(), "listening (Unix socket, peer credentials)");
            unix = Some(listener);
        }
        Ok(Self { tcp, unix })
    }

    /// Serves the controller's two gRPC services on every listener.
    fn serve(
        self,
        api: Switch<ApiServer, false>,
        agents: Switch<AgentServer, true>,
    ) -> Result<tokio::task::JoinSet<Result<(), tonic::transport::Error>>> {
        let mut servers = tokio::task::JoinSet::new();
        if let Some((listener, tls)) = self.tcp {
            let mut builder = Server::builder();
            if let Some(tls) = tls {
                builder = builder
                    .tls_config(tls)
                    .context("the TLS certificate or key is not usable")?;
            }
            let (api, agents) = (api.clone(), agents.clone());
            // No Nagle: a reply's last small frame must not wait for the caller's
            // delayed acknowledgement (40 ms on Linux).
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                if let Ok(c) = &conn {
                    let _ = c.set_nodelay(true);
                }
                conn
            });
            servers.spawn(async move {
                builder
                    .add_service(api)
                    .add_service(agents)
                    .serve_with_incoming(incoming)
                    .await
            });
        }
        if let Some(listener) = self.unix {
            servers.spawn(async move {
                Server::builder()
                    .add_service(api)
                    .add_service(agents)
                    .serve_with_incoming(UnixListenerStream::new(listener))
                    .await
            });
        }
        Ok(servers)
    }
}

type ApiServer = ControllerServer<Service>;
type AgentServer = AgentLinkServer<Service>;

/// `host:pid`: how the lease names this controller.
fn controller_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

async fn run(args: &Args) -> Result<Ended> {
    let (cfg, description) = DaemonConfig::load(&args.config)?;
    let cluster = description.build().context("invalid cluster description")?;
    let key = std::fs::read(&cfg.key_file)
        .with_context(|| format!("cannot read the cluster key {}", cfg.key_file.display()))?;
    if key.len() < gantry_api::auth::MIN_KEY_BYTES {
        bail!(
            "the cluster key {} is shorter than {} bytes",
            cfg.key_file.display(),
            gantry_api::auth::MIN_KEY_BYTES
        );
    }
    let (set, slots, start_components) = policies(&cfg)?;
    let config = SchedulerConfig {
        fairshare_interval: cfg.fairshare_interval_s.into(),
        // Live jobs have processes: what a stopped run held waits for them to go.
        hold_until_processes_end: true,
        ..SchedulerConfig::default()
    };
    let sched = Scheduler::new(cluster, config, set);
    let max_request = cfg.max_request_bytes();

    // Listening from the start: a standby tells callers where the active one is.
    let known = Known::default();
    let api = Switch::<ApiServer, false>::standby(known.clone());
    let agents = Switch::<AgentServer, true>::standby(known.clone());
    let mut servers = Listeners::bind(&cfg)
        .await?
        .serve(api.clone(), agents.clone())?;

    let mut leadership = gantry_api::LeadershipReply {
        backend: "sqlite".into(),
        name: controller_name(),
        address: cfg.advertised(),
        ..Default::default()
    };
    let mut holding = None;
    let (store, history, lease) = match &cfg.state {
        Location::Sqlite(path) => {
            known.restoring();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            (Store::open(path)?, History::default(), None)
        }
        Location::Postgres(url) => {
            let me = Candidate {
                url: url.clone(),
                name: controller_name(),
                address: cfg.advertised(),
                lease: cfg.lease(),
            };
            let (lease, epoch, history) = tokio::select! {
                got = stand_by(&me, &known) => got,
                _ = stop_signal() => return Ok(Ended::Stopped),
            };
            // Renewed from now on: a restore of a long log takes longer than a lease.
            holding = Some(tokio::spawn(hold(lease.clone(), epoch, cfg.lease())));
            let store = tokio::task::block_in_place(|| Store::open_fenced(url, epoch))?;
            leadership.backend = "postgresql".into();
            leadership.epoch = epoch;
            leadership.lease_s = cfg.lease_s;
            (store, history, Some((lease, epoch)))
        }
    };
    let settings = Settings {
        admins: cfg.admins.clone(),
        cluster_name: cfg.cluster_name.clone(),
        default_account: cfg.default_account.clone(),
        heartbeat_s: cfg.heartbeat_s,
        node_timeout_s: cfg.node_timeout_s,
        kill_grace_s: cfg.kill_grace_s,
        finished_retention_s: cfg.finished_retention_s,
        limits: Limits {
            max_script_bytes: cfg.max_script_bytes,
            max_dependencies: cfg.max_dependencies,
        },
    };
    let restoring = std::time::Instant::now();
    let controller = tokio::task::block_in_place(|| {
        Controller::restore(sched, store, history, settings, slots, unix_now())
    })?;
    tracing::info!(
        took_ms = restoring.elapsed().as_millis() as u64,
        "state restored"
    );
    let shared = Arc::new(Shared {
        controller: Mutex::new(controller),
        auth: Authenticator::new(key, cfg.admins.clone()),
        wake: tokio::sync::Notify::new(),
        fatal: tokio::sync::Notify::new(),
        max_component_bytes: cfg.max_component_bytes,
        watches: Default::default(),
        stats: gantry_daemon::stats::Stats::new(unix_now()),
        config_view: config_view(&cfg),
        leadership,
        cluster_text: cfg.cluster_text.clone(),
        start_components: start_components.into_iter().collect(),
    });
    let service = Service(shared.clone());
    api.activate(ControllerServer::new(service.clone()).max_decoding_message_size(max_request));
    agents.activate(AgentLinkServer::new(service).max_decoding_message_size(max_request));
    tracing::info!("active: serving");

    // The scheduling loop.
    let interval = cfg.cycle_interval();
    let looper = shared.clone();
    let loop_cfg = cfg.clone();
    let cycles = tokio::spawn(async move {
        loop {
            let _ = tokio::time::timeout(interval, looper.wake.notified()).await;
            let started = std::time::Instant::now();
            let result = looper.lock().cycle(unix_now());
            let took = started.elapsed();
            looper.stats.cycle(took);
            tracing::debug!(took_us = took.as_micros() as u64, "scheduling cycle");
            // Under a stream of wake-ups (a submission storm), leave the lock free
            // `cycle_pause_factor` times as long as the cycle held it: acknowledgements
            // keep flowing while the queue grows, and the next cycle sees everything
            // that arrived meanwhile. A cycle over a short queue takes microseconds, so
            // the pause is only felt when the queue is long, and never exceeds the
            // interval.
            tokio::time::sleep(loop_cfg.pause_after_cycle(took)).await;
            if let Err(e) = result {
                tracing::error!(error = %e, "scheduling cycle failed to record its decisions; stopping");
                looper.fatal.notify_one();
                return;
            }
        }
    });

    // Snapshots: finished jobs past their retention leave memory for the accounting
    // table, and the log is compacted behind them.
    let snapshots = (cfg.snapshot_interval_s > 0).then(|| {
        let every = std::time::Duration::from_secs(cfg.snapshot_interval_s.into());
        let (taker, retention) = (shared.clone(), cfg.finished_retention_s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is at once
            loop {
                tick.tick().await;
                // A refusal (one being written on an admin's request) waits for the next.
                let _ = gantry_daemon::service::snapshot(&taker, retention).await;
            }
        })
    });
    let cycles = AbortOnDrop(
        vec![Some(cycles), snapshots]
            .into_iter()
            .flatten()
            .collect(),
    );

    let lease_lost = async move {
        match holding {
            Some(h) => h.await.unwrap_or(StepDown::Lapsed),
            None => std::future::pending().await,
        }
    };
    let journal = shared.lock().journal();
    tokio::select! {
        _ = shared.fatal.notified() => {
            cycles.abort_all();
            match (&lease, journal.failure()) {
                (Some(_), Some(f)) => Ok(Ended::SteppedDown(f.message)),
                _ => bail!("stopping: the state database cannot be written"),
            }
        }
        why = lease_lost => {
            cycles.abort_all();
            Ok(Ended::SteppedDown(match why {
                StepDown::TakenOver => "another controller took the lease".into(),
                StepDown::Lapsed => "the lease could not be renewed in time".into(),
            }))
        }
        r = servers.join_next() => {
            cycles.abort_all();
            match r {
                Some(Ok(Err(e))) => bail!("the API server failed: {e}"),
                _ => bail!("the API server stopped"),
            }
        }
        _ = stop_signal() => {
            tracing::info!("stopping (the log holds everything)");
            if let Some((l, epoch)) = &lease {
                // A standby need not wait for the lease to run out.
                if let Err(e) = tokio::task::block_in_place(|| l.release(*epoch)) {
                    tracing::warn!(error = %e, "cannot release the lease; a standby takes over when it runs out");
                }
            }
            Ok(Ended::Stopped)
        }
    }
}

/// The daemon's background tasks, stopped together.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl AbortOnDrop {
    fn abort_all(&self) {
        self.0.iter().for_each(|t| t.abort());
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// SIGINT or SIGTERM.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
