//! A real `gantryd` on loopback TCP and concurrent gRPC clients submitting to it: each
//! acknowledged job is committed to the state database (group commit). No agents run,
//! so every job stays pending.
//!
//! Needs the daemon built with the same profile (`cargo build --release -p
//! gantry-daemon`); `GANTRYD=path` measures another build.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry_api::auth::{mint, Claims, Role};
use gantry_api::client::{connect, WithToken};
use gantry_api::controller_client::ControllerClient;
use gantry_api::{JobSubmission, SubmitRequest};

pub const CLIENTS: usize = 32;

pub struct Daemon {
    pub child: Child,
    addr: String,
    token: String,
    admin_token: String,
}

impl Drop for Daemon {
    /// A clean stop (SIGTERM), so that over PostgreSQL the lease is given up and the next
    /// start need not wait for it to run out; SIGKILL if that takes over 10 s.
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon built beside this bench, or the one `GANTRYD` names (to compare two builds
/// with the same clients).
pub fn gantryd_path() -> PathBuf {
    std::env::var_os("GANTRYD").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gantry")).with_file_name("gantryd"),
        PathBuf::from,
    )
}

/// [`gantryd_path`], which must exist.
pub fn gantryd() -> PathBuf {
    let path = gantryd_path();
    assert!(
        path.is_file(),
        "{} is missing: cargo build --release -p gantry-daemon",
        path.display()
    );
    path
}

/// A `gantryd` with the kernel's native policies on a loopback port with its state in
/// `dir`, listening when this returns.
pub fn start(dir: &Path) -> Daemon {
    start_with(&gantryd(), dir, "native_policies = true\n")
}

/// The `gantryd` at `daemon`, started as [`start`] does, with `policies`
/// (configuration lines) saying which policies it runs.
pub fn start_with(daemon: &Path, dir: &Path, policies: &str) -> Daemon {
    start_on(daemon, dir, "state = \"state.db\"", policies)
}

/// [`start_with`] with the state where `state` (a configuration line) says: serving
/// (its state restored, or over PostgreSQL the lease taken) when this returns.
pub fn start_on(daemon: &Path, dir: &Path, state: &str, policies: &str) -> Daemon {
    let d = configure(dir, state, policies, |dir| spawn(daemon, dir));
    d.wait_serving(Instant::now() + Duration::from_secs(600));
    d
}

/// Starts the `gantryd` at `daemon` on the configuration [`configure`] wrote in `dir`.
pub fn spawn(daemon: &Path, dir: &Path) -> Child {
    Command::new(daemon)
        .args(["--config", "gantryd.toml"])
        .current_dir(dir)
        .env("GANTRY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Writes a `gantryd` configuration in `dir` (a free loopback port, `state` and
/// `policies` as configuration lines), starts it with `spawn`, and waits until it
/// listens (not until it serves: see [`Daemon::wait_serving`]).
pub fn configure(
    dir: &Path,
    state: &str,
    policies: &str,
    spawn: impl FnOnce(&Path) -> Child,
) -> Daemon {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = [7u8; 32];
    std::fs::write(dir.join("key"), key).unwrap();
    std::fs::write(
        dir.join("cluster.toml"),
        "[[node_type]]\nname='g'\nsockets=2\nnuma_per_socket=1\ncores_per_numa=64\nmemory='1T'\n\
         [[nodes]]\nnames='n[1-64]'\ntype='g'\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("gantryd.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\n{state}\nkey_file = \"key\"\n\
             cluster_file = \"cluster.toml\"\n{policies}"
        ),
    )
    .unwrap();
    let child = spawn(dir);
    let addr = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(600);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gantryd did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let token_as = |role| {
        mint(
            &key,
            &Claims {
                user: "bench".into(),
                // SAFETY: getuid has no preconditions.
                uid: unsafe { libc::getuid() },
                role,
                expires: i64::MAX / 2,
            },
        )
        .unwrap()
    };
    Daemon {
        child,
        addr,
        token: token_as(Role::User),
        admin_token: token_as(Role::Admin),
    }
}

impl Daemon {
    /// Waits until it answers calls (it listens from its start, before its state is
    /// restored).
    pub fn wait_serving(&self, deadline: Instant) {
        // On a thread of its own, with a runtime of its own: callers may be inside one.
        let (addr, token) = (self.addr.clone(), self.token.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                loop {
                    if let Ok(ch) = connect(&addr, &Default::default()).await {
                        let mut c = ControllerClient::with_interceptor(
                            ch,
                            WithToken::new(Some(&token)).unwrap(),
                        );
                        if c.leadership(gantry_api::LeadershipRequest {}).await.is_ok() {
                            return;
                        }
                    }
                    assert!(Instant::now() < deadline, "gantryd did not start serving");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .join()
        .expect("gantryd starts serving");
    }

    /// Where it listens (`http://127.0.0.1:PORT`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The bench user's token.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// One client connected as the bench user.
pub async fn user_client(d: &Daemon) -> Client {
    let ch = connect(&d.addr, &Default::default()).await.unwrap();
    ControllerClient::with_interceptor(ch, WithToken::new(Some(&d.token)).unwrap())
}

/// One client connected as an admin (for `policy load`).
pub async fn admin_client(d: &Daemon) -> Client {
    let ch = connect(&d.addr, &Default::default()).await.unwrap();
    ControllerClient::with_interceptor(ch, WithToken::new(Some(&d.admin_token)).unwrap())
}

/// A job as `sbatch` sends one: a short script and a modest exported environment.
pub fn job(i: usize) -> JobSubmission {
    let env = (0..20)
        .map(|k| (format!("VAR_{k}"), format!("/opt/site/software/pkg{k}/bin")))
        .collect();
    JobSubmission {
        name: format!("train-{i}"),
        script: "#!/bin/bash\n#SBATCH --gpus-per-node=1\nsrun python train.py --epochs 10\n".into(),
        workdir: "/home/bench".into(),
        env,
        tasks: 1,
        cpus_per_task: 4,
        time_limit_s: 3600,
        ..Default::default()
    }
}

pub type Client = ControllerClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, WithToken>,
>;

pub async fn clients(d: &Daemon) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..CLIENTS {
        let ch = connect(&d.addr, &Default::default()).await.unwrap();
        out.push(ControllerClient::with_interceptor(
            ch,
            WithToken::new(Some(&d.token)).unwrap(),
        ));
    }
    out
}

/// Submits `n` jobs spread over the clients, all at once; returns the elapsed time.
pub async fn submit_all(clients: &[Client], n: u64) -> Duration {
    let per = n.div_ceil(clients.len() as u64);
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let count = per.min(n.saturating_sub(per * c as u64));
        tasks.spawn(async move {
            for i in 0..count {
                client
                    .submit(SubmitRequest {
                        job: Some(job(i as usize)),
                    })
                    .await
                    .expect("submission acknowledged");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    t.elapsed()
}

/// Resident memory of process `pid`, in KiB.
pub fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_s(pid: &str) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}
