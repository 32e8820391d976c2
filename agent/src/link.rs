//! The agent's side of the `AgentLink` service: register, then heartbeat, follow the
//! command stream, and report job ends — reconnecting with backoff whenever the
//! controller is away. Jobs keep running while it is; their ends are reported when it
//! returns.

use std::time::Duration;

use gantry_api as api;
use gantry_api::agent_link_client::AgentLinkClient;
use gantry_api::client::{connect, WithToken};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::jobs::{Ended, Jobs};

type Client = AgentLinkClient<InterceptedService<Channel, WithToken>>;

pub struct Link {
    pub controller: String,
    pub node: String,
    pub token: String,
    pub topology: api::NodeTopology,
    pub jobs: Jobs,
}

fn report(node: &str, e: &Ended) -> api::JobReport {
    api::JobReport {
        node: node.to_string(),
        job_id: e.job_id,
        state: e.state.to_string(),
        exit_code: e.exit_code,
        message: e.message.clone(),
        user_cpu_s: e.user_cpu_s,
        system_cpu_s: e.system_cpu_s,
        max_rss_mb: e.max_rss_mb,
        time: 0,
    }
}

impl Link {
    async fn client(&self) -> anyhow::Result<Client> {
        let channel = connect(&self.controller).await?;
        Ok(AgentLinkClient::with_interceptor(
            channel,
            WithToken::new(Some(&self.token))?,
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
        let reply = client
            .register(api::RegisterRequest {
                node: self.node.clone(),
                topology: Some(self.topology.clone()),
                agent_version: env!("CARGO_PKG_VERSION").into(),
            })
            .await?
            .into_inner();
        let every = Duration::from_secs(reply.heartbeat_s.max(1) as u64);
        tracing::info!(node = %self.node, heartbeat = ?every, "registered");
        self.heartbeat(&mut client).await?;
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
                    Some(Ok(cmd)) => self.handle(cmd),
                    Some(Err(e)) => anyhow::bail!("command stream failed: {e}"),
                    None => anyhow::bail!("the controller closed the command stream"),
                },
                Some(e) = ended.recv() => {
                    client.report_job(report(&self.node, &e)).await?;
                    self.jobs.settled(&[e.job_id]);
                }
                _ = beat.tick() => self.heartbeat(&mut client).await?,
                _ = limits.tick() => self.jobs.enforce_limits(),
            }
        }
    }

    async fn heartbeat(&self, client: &mut Client) -> anyhow::Result<()> {
        let jobs = self.jobs.snapshot();
        let dead: Vec<u64> = jobs.iter().filter(|j| !j.alive).map(|j| j.job_id).collect();
        client
            .heartbeat(api::HeartbeatRequest {
                node: self.node.clone(),
                jobs,
            })
            .await?;
        // The controller settled those ends while answering.
        self.jobs.settled(&dead);
        Ok(())
    }

    fn handle(&self, cmd: api::AgentCommand) {
        use api::agent_command::What;
        match cmd.what {
            Some(What::Launch(l)) => self.jobs.launch(l),
            Some(What::Cancel(id)) => self.jobs.end(id, "CANCELLED"),
            Some(What::Signal(s)) => self.jobs.signal(s.job_id, s.signal),
            Some(What::Suspend(id)) => self.jobs.suspend(id),
            Some(What::Resume(id)) => self.jobs.resume(id),
            None => {}
        }
    }
}
