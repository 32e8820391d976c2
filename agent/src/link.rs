//! The agent's side of the `AgentLink` service: register, then heartbeat, follow the
//! command stream, and report job ends — reconnecting with backoff whenever the
//! controller is away. Jobs keep running while it is; their ends are reported when it
//! returns.

use std::time::Duration;

use gantry_api as api;
use gantry_api::agent_link_client::AgentLinkClient;
use gantry_api::auth::{mint, Claims, Role, AGENT_TOKEN_TTL};
use gantry_api::client::connect;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::jobs::{Ended, Jobs};
use crate::steps::{Client, Steps};

/// This node's key; signs a fresh, short-lived agent token for every call, so no token
/// the agent sends outlives [`AGENT_TOKEN_TTL`].
#[derive(Clone)]
pub struct NodeCredential {
    node: String,
    key: std::sync::Arc<Vec<u8>>,
}

impl NodeCredential {
    pub fn new(node: String, key: Vec<u8>) -> Self {
        Self {
            node,
            key: std::sync::Arc::new(key),
        }
    }

    fn token(&self) -> Result<String, Status> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        mint(
            &self.key,
            &Claims {
                user: self.node.clone(),
                uid: 0,
                role: Role::Agent,
                expires: now + AGENT_TOKEN_TTL,
            },
        )
        .map_err(|e| Status::unauthenticated(format!("cannot sign the agent token: {e}")))
    }
}

impl Interceptor for NodeCredential {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let value: MetadataValue<_> = format!("Bearer {}", self.token()?)
            .parse()
            .map_err(|_| Status::unauthenticated("the agent token is not valid header text"))?;
        req.metadata_mut().insert(gantry_api::AUTHORIZATION, value);
        Ok(req)
    }
}

/// The latest reading of what this node's jobs and steps use.
type UsageCache = std::sync::Arc<std::sync::Mutex<Vec<api::NodeUsage>>>;

/// How often the agent reads what its jobs and steps use (for `sstat`).
const USAGE_EVERY: Duration = Duration::from_secs(2);

/// Ends a task when dropped (the usage sampler ends with the link it serves).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What each running batch script and step uses here now, from `/proc`.
fn sample_usage(jobs: &Jobs, steps: &Steps) -> Vec<api::NodeUsage> {
    let jobs = jobs.groups();
    let steps = steps.groups();
    let all: Vec<i32> = jobs
        .iter()
        .map(|&(_, g)| g)
        .chain(steps.iter().flat_map(|(_, gs)| gs.iter().copied()))
        .collect();
    let seen = crate::usage::sample(&all);
    let sum = |groups: &[i32]| {
        groups
            .iter()
            .filter_map(|g| seen.get(g))
            .fold((0.0, 0u64, 0u32), |(c, r, t), u| {
                (c + u.cpu_s, r + u.rss_mb, t + 1)
            })
    };
    let mut out: Vec<api::NodeUsage> = jobs
        .iter()
        .map(|&(job, g)| {
            let (cpu_s, rss_mb, tasks) = sum(&[g]);
            api::NodeUsage {
                job_id: job,
                step_id: None,
                cpu_s,
                rss_mb,
                tasks,
            }
        })
        .collect();
    out.extend(steps.iter().map(|((job, step), groups)| {
        let (cpu_s, rss_mb, tasks) = sum(groups);
        api::NodeUsage {
            job_id: *job,
            step_id: Some(*step),
            cpu_s,
            rss_mb,
            tasks,
        }
    }));
    out
}

pub struct Link {
    pub controller: String,
    /// Which authority vouches for an `https://` controller.
    pub trust: gantry_api::client::Trust,
    pub node: String,
    pub credential: NodeCredential,
    pub topology: api::NodeTopology,
    pub jobs: Jobs,
    pub steps: Steps,
}

fn report(node: &str, e: &Ended) -> api::JobReport {
    api::JobReport {
        node: node.to_string(),
        job_id: e.job_id,
        run: e.run,
        state: e.state.to_string(),
        exit_code: e.exit_code,
        message: e.message.clone(),
        user_cpu_s: e.user_cpu_s,
        system_cpu_s: e.system_cpu_s,
        max_rss_mb: e.max_rss_mb,
        time: 0,
    }
}

/// How long the controller has to answer a call: a controller that stops answering (paused,
/// or its machine gone without a reset) is left for the next in the list.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

async fn answered<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => Ok(r?),
        Err(_) => anyhow::bail!("the controller did not answer in {CALL_TIMEOUT:?}"),
    }
}

impl Link {
    async fn client(&self) -> anyhow::Result<Client> {
        let channel = connect(&self.controller, &self.trust).await?;
        Ok(AgentLinkClient::with_interceptor(
            channel,
            self.credential.clone(),
        ))
    }

    /// Runs until the process ends.
    pub async fn run(self, mut ended: mpsc::UnboundedReceiver<Ended>) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.session(&mut ended).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "controller unreachable");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One connection: register, then serve commands, heartbeats and reports until the
    /// controller goes away.
    async fn session(&self, ended: &mut mpsc::UnboundedReceiver<Ended>) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let reply = answered(client.register(api::RegisterRequest {
            node: self.node.clone(),
            topology: Some(self.topology.clone()),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        }))
        .await?
        .into_inner();
        let every = Duration::from_secs(reply.heartbeat_s.max(1) as u64);
        tracing::info!(node = %self.node, heartbeat = ?every, "registered");
        // What jobs and steps use is read from /proc on a thread of its own, every few
        // seconds; a heartbeat carries the latest reading and never waits for one.
        let usage: UsageCache = Default::default();
        let sampler = {
            let (jobs, steps, usage) = (self.jobs.clone(), self.steps.clone(), usage.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(USAGE_EVERY);
                loop {
                    every.tick().await;
                    let (j, s) = (jobs.clone(), steps.clone());
                    if let Ok(now) = tokio::task::spawn_blocking(move || sample_usage(&j, &s)).await
                    {
                        *usage.lock().unwrap_or_else(|p| p.into_inner()) = now;
                    }
                }
            })
        };
        let _stop_sampler = AbortOnDrop(sampler);
        self.heartbeat(&mut client, &usage).await?;
        let mut commands = client
            .commands(api::CommandsRequest {
                node: self.node.clone(),
            })
            .await?
            .into_inner();
        let mut beat = tokio::time::interval(every);
        let mut limits = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                cmd = commands.next() => match cmd {
                    Some(Ok(cmd)) => self.handle(cmd, &client),
                    Some(Err(e)) => anyhow::bail!("command stream failed: {e}"),
                    None => anyhow::bail!("the controller closed the command stream"),
                },
                Some(e) = ended.recv() => {
                    answered(client.report_job(report(&self.node, &e))).await?;
                    // A notice settles nothing: the run's end is still to come.
                    if e.state != crate::jobs::ENDING_AT_TIME_LIMIT {
                        self.jobs.settled(&[(e.job_id, e.run)]);
                    }
                }
                _ = beat.tick() => self.heartbeat(&mut client, &usage).await?,
                _ = limits.tick() => self.jobs.enforce_limits(),
            }
        }
    }

    async fn heartbeat(&self, client: &mut Client, usage: &UsageCache) -> anyhow::Result<()> {
        let jobs = self.jobs.snapshot();
        let dead: Vec<_> = jobs
            .iter()
            .filter(|j| !j.alive)
            .map(|j| (j.job_id, j.run))
            .collect();
        let usage = usage.lock().unwrap_or_else(|p| p.into_inner()).clone();
        answered(client.heartbeat(api::HeartbeatRequest {
            node: self.node.clone(),
            jobs,
            usage,
        }))
        .await?;
        // The controller settled those ends while answering.
        self.jobs.settled(&dead);
        Ok(())
    }

    fn handle(&self, cmd: api::AgentCommand, client: &Client) {
        use api::agent_command::What;
        match cmd.what {
            Some(What::LaunchStep(l)) => self.steps.launch(l, client.clone()),
            Some(What::CancelStep(s)) => self.steps.end((s.job_id, s.step_id)),
            Some(What::SignalStep(s)) => self.steps.signal((s.job_id, s.step_id), s.signal),
            Some(What::StepInput(i)) => self.steps.input((i.job_id, i.step_id), i.data),
            Some(What::Launch(l)) => self.jobs.launch(l),
            Some(What::Cancel(r)) => self.jobs.end((r.job_id, r.run), "CANCELLED"),
            Some(What::Signal(s)) => self.jobs.signal((s.job_id, s.run), s.signal, s.shell_only),
            Some(What::Suspend(r)) => self.jobs.suspend((r.job_id, r.run)),
            Some(What::Resume(r)) => self.jobs.resume((r.job_id, r.run)),
            Some(What::TimeLimit(t)) => self
                .jobs
                .set_time_limit((t.job_id, t.run), t.remaining_s.map(|s| s.max(0) as u64)),
            None => {}
        }
    }
}
