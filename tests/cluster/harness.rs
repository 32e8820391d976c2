//! A throwaway cluster for one test: a temporary directory with a cluster key, the
//! controller's and agents' configurations, the state database and the jobs' working
//! directory; `gantryd` on a free loopback port and its Unix socket; one agent per node.
//! Everything is killed when the value drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The Slurm command names the `gantry` binary answers to (links made on first use).
const SLURM_COMMANDS: [&str; 13] = [
    "sbatch", "squeue", "scancel", "sinfo", "sacct", "srun", "salloc", "scontrol", "sshare",
    "sdiag", "sreport", "sstat", "sprio",
];

/// How long any wait may take before the test fails (CI machines are slow and shared).
const PATIENCE: Duration = Duration::from_secs(60);

fn bin(name: &str) -> PathBuf {
    let gantry = PathBuf::from(env!("CARGO_BIN_EXE_gantry"));
    let path = gantry.with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A built policy component (`scripts/build-policies.sh`).
pub fn policy_component(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/policies")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-policies.sh",
        p.display()
    );
    p
}

#[derive(Clone, Default)]
pub struct Options {
    /// Run the Wasm built-ins (slower to start) instead of the native safe defaults.
    pub wasm_policies: bool,
    /// Appended to gantryd.toml.
    pub extra_config: String,
    /// Appended to the cluster description (accounts, QOS).
    pub extra_cluster: String,
    /// Eight 64-core 8-GPU NVLink nodes (`gpu[01-08]`, partition `gpu`) instead of the
    /// one 32-core `gpu01`: the shape of a multi-node training job.
    pub eight_gpu_nodes: bool,
    /// A state database to start from (copied in as the controller's `state.db`).
    pub state_from: Option<PathBuf>,
    /// The state in this PostgreSQL database instead of `state.db`.
    pub postgres: Option<String>,
    /// A second controller on the same PostgreSQL state, standing by (started once the
    /// first is active); agents and the CLI are given both.
    pub standby: bool,
    /// Runs with no other cluster of this test binary: for a test whose load (thousands
    /// of jobs) would starve other clusters' agents past their 3 s node timeout.
    pub alone: bool,
}

/// Every cluster holds this shared while it lives; an [`Options::alone`] one exclusively.
static RUNNING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A cluster's hold on [`RUNNING`].
enum Turn {
    Shared(#[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] std::sync::RwLockWriteGuard<'static, ()>),
}

/// One PostgreSQL server for the whole test binary, started on first use.
pub fn postgres() -> &'static gantry_test_postgres::Server {
    static SERVER: std::sync::OnceLock<gantry_test_postgres::Server> = std::sync::OnceLock::new();
    SERVER
        .get_or_init(|| gantry_test_postgres::Server::start().expect("a PostgreSQL server starts"))
}

/// A new database on [`postgres`].
pub fn postgres_database(name: &str) -> String {
    postgres().database(name).expect("a database is created")
}

const CLUSTER: &str = r#"
[[node_type]]
name = "cpu"
sockets = 1
numa_per_socket = 1
cores_per_numa = 4
memory = "8G"

# GPUs 0-3 (NUMA 0-1) and 4-7 (NUMA 2-3) are two NVLink islands.
[[node_type]]
name = "gpu8"
sockets = 2
numa_per_socket = 2
cores_per_numa = 8
memory = "64G"
gpus = { model = "H100", numa = [0, 0, 1, 1, 2, 2, 3, 3], nvlink = { pairs = [[0, 1, 6], [0, 2, 6], [0, 3, 6], [1, 2, 6], [1, 3, 6], [2, 3, 6], [4, 5, 6], [4, 6, 6], [4, 7, 6], [5, 6, 6], [5, 7, 6], [6, 7, 6]] } }

[[nodes]]
names = "cpu[01-02]"
type = "cpu"

[[nodes]]
names = "gpu01"
type = "gpu8"

[[partition]]
name = "cpu"
nodes = ["cpu[01-02]"]
max_time = "1:00:00"
default = true

[[partition]]
name = "gpu"
nodes = ["gpu01"]
max_time = "1:00:00"
"#;

const NODES: [&str; 3] = ["cpu01", "cpu02", "gpu01"];

/// [`Options::eight_gpu_nodes`]: the GPU nodes have 16 cores per NUMA domain.
fn wide_cluster() -> String {
    CLUSTER
        .replacen("cores_per_numa = 8", "cores_per_numa = 16", 1)
        .replace("memory = \"64G\"", "memory = \"256G\"")
        .replace(
            "names = \"gpu01\"",
            "names = \"gpu[01-08]\"\naddrs = \"127.0.0.1\"",
        )
        .replace("nodes = [\"gpu01\"]", "nodes = [\"gpu[01-08]\"]")
}

fn agent_topology(node: &str, wide: bool) -> String {
    if node.starts_with("gpu") {
        let (cores, memory) = if wide { (16, 262_144) } else { (8, 65_536) };
        format!("[topology]\nsockets = 2\nnuma_per_socket = 2\ncores_per_numa = {cores}\nmemory_mb = {memory}\ngpu_numa = [0, 0, 1, 1, 2, 2, 3, 3]\ngpu_model = \"H100\"\nnvlink_pairs = [[0, 1, 6], [0, 2, 6], [0, 3, 6], [1, 2, 6], [1, 3, 6], [2, 3, 6], [4, 5, 6], [4, 6, 6], [4, 7, 6], [5, 6, 6], [5, 7, 6], [6, 7, 6]]\n")
    } else {
        "[topology]\nsockets = 1\nnuma_per_socket = 1\ncores_per_numa = 4\nmemory_mb = 8192\n"
            .into()
    }
}

pub struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    controller: Option<Child>,
    /// The second controller's port and process ([`Options::standby`]).
    standby_port: Option<u16>,
    standby: Option<Child>,
    agents: Vec<(String, Child)>,
    /// Released last, once every process is gone (fields drop after `Drop::drop`).
    _turn: Turn,
}

/// What a thread needs to run the CLI against this cluster.
#[derive(Clone)]
pub struct CliLine {
    socket: String,
    work: PathBuf,
}

/// One `sbatch --parsable`; `None` if it was not acknowledged.
pub fn try_submit(cli: &CliLine, script: &str) -> Option<u64> {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["submit", "--parsable", script])
        .env("GANTRY_CONTROLLER", &cli.socket)
        .current_dir(&cli.work)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A new certificate authority that signs nothing real.
pub fn throwaway_authority() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap()
}

/// A throwaway certificate authority (`ca.pem`) and the controller's certificate for
/// 127.0.0.1 and localhost signed by it (`tls.crt`, `tls.key`).
fn write_throwaway_tls(root: &Path) {
    use rcgen::{CertificateParams, KeyPair};
    let ca = throwaway_authority();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(root.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(root.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(root.join("tls.key"), key.serialize_pem()).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Cluster {
    pub fn start(opts: Options) -> Self {
        let turn = if opts.alone {
            Turn::Alone(RUNNING.write().unwrap_or_else(|p| p.into_inner()))
        } else {
            Turn::Shared(RUNNING.read().unwrap_or_else(|p| p.into_inner()))
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let root = dir.path();
        // Local users other than the test's reach the socket and their own directories
        // in here (nothing in it is theirs to write but those).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let key: Vec<u8> = (0..48u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        std::fs::write(root.join("key"), key).unwrap();
        write_throwaway_tls(root);
        let (cluster, nodes): (String, Vec<String>) = if opts.eight_gpu_nodes {
            let mut nodes = vec!["cpu01".to_string(), "cpu02".to_string()];
            nodes.extend((1..=8).map(|i| format!("gpu{i:02}")));
            (wide_cluster(), nodes)
        } else {
            (CLUSTER.into(), NODES.map(String::from).to_vec())
        };
        std::fs::write(
            root.join("cluster.toml"),
            format!("{cluster}\n{}", opts.extra_cluster),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("work")).unwrap();
        let port = free_port();
        let policies = if opts.wasm_policies {
            format!(
                "policy_dir = \"{}\"\n",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("target/policies")
                    .display()
            )
        } else {
            "native_policies = true\n".to_string()
        };
        let policies = format!("{policies}{}", opts.extra_config);
        let state = match &opts.postgres {
            Some(url) => format!("state = \"{url}\"\nlease_s = 2"),
            None => "state = \"state.db\"".to_string(),
        };
        let standby_port = opts.standby.then(free_port);
        for (file, port, socket) in [
            ("gantryd.toml", Some(port), "gantryd.sock"),
            ("gantryd-2.toml", standby_port, "gantryd-2.sock"),
        ] {
            let Some(port) = port else { continue };
            std::fs::write(
                root.join(file),
                format!(
                    "listen = \"127.0.0.1:{port}\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\nsocket = \"{socket}\"\n{state}\nkey_file = \"key\"\nheartbeat_s = 1\nnode_timeout_s = 3\nkill_grace_s = 1\ncycle_interval_ms = 200\ncluster_file = \"cluster.toml\"\n{policies}"
                ),
            )
            .unwrap();
        }
        let controllers = match standby_port {
            Some(p2) => {
                format!("controllers = [\"https://127.0.0.1:{port}\", \"https://127.0.0.1:{p2}\"]")
            }
            None => format!("controller = \"https://127.0.0.1:{port}\""),
        };
        for node in &nodes {
            let credential = root.join(format!("credential-{node}"));
            let made = Command::new(env!("CARGO_BIN_EXE_gantry"))
                .args(["credential", node, "--key"])
                .arg(root.join("key"))
                .arg("--output")
                .arg(&credential)
                .output()
                .expect("gantry credential runs");
            assert!(
                made.status.success(),
                "{}",
                String::from_utf8_lossy(&made.stderr)
            );
            std::fs::write(
                root.join(format!("agent-{node}.toml")),
                format!(
                    "{controllers}\nca_file = \"ca.pem\"\nnode = \"{node}\"\ncredential_file = \"credential-{node}\"\nspool = \"spool/{node}\"\n{}",
                    agent_topology(node, opts.eight_gpu_nodes)
                ),
            )
            .unwrap();
        }
        if let Some(state) = &opts.state_from {
            std::fs::copy(state, root.join("state.db")).expect("the state database copies");
        }
        let mut c = Self {
            dir,
            port,
            controller: None,
            standby_port,
            standby: None,
            agents: Vec::new(),
            _turn: turn,
        };
        c.restart_controller();
        if c.standby_port.is_some() {
            c.wait_log("gantryd.log", "active: serving");
            c.start_standby();
            // Until it has read the lease, a standby cannot say where the active one is.
            c.wait_log("gantryd-2.log", "standing by");
        }
        for node in &nodes {
            c.start_agent(node);
        }
        for node in &nodes {
            c.wait_node_state(node, "IDLE");
        }
        c
    }

    /// The directory of the Slurm-named links (`srun`, `scontrol`, ...), made here, for
    /// job scripts to put on their PATH.
    pub fn slurm_bin(&self) -> PathBuf {
        for name in SLURM_COMMANDS {
            let _ = self.program(&[name]);
        }
        self.dir.path().join("bin")
    }

    /// The cluster's directory (configurations, key, spools, logs).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The TCP address of the controller (TLS): with a standby, both, as a list.
    pub fn tcp(&self) -> String {
        match self.standby_port {
            Some(p2) => format!("https://127.0.0.1:{},https://127.0.0.1:{p2}", self.port),
            None => format!("https://127.0.0.1:{}", self.port),
        }
    }

    /// The authority that signed the controller's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn trust(&self) -> gantry_api::client::Trust {
        gantry_api::client::Trust::ca_file(Some(&self.ca_file()))
    }

    /// The controller's log so far.
    pub fn controller_log(&self) -> String {
        self.read_log("gantryd.log")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The controller's Unix socket: with a standby, both, as a list.
    pub fn socket(&self) -> String {
        let one = format!("unix:{}", self.dir.path().join("gantryd.sock").display());
        match self.standby_port {
            Some(_) => format!(
                "{one},unix:{}",
                self.dir.path().join("gantryd-2.sock").display()
            ),
            None => one,
        }
    }

    /// The second controller's socket alone.
    pub fn standby_socket(&self) -> String {
        format!("unix:{}", self.dir.path().join("gantryd-2.sock").display())
    }

    /// What the kernel says of a process and each of its threads (state, where it
    /// waits, what it runs): for a failure message when a controller goes silent.
    pub fn process_state(pid: u32) -> String {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let exe = std::fs::read_link(proc.join("exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("({e})"));
        let mut out = format!("process {pid}: exe {exe}\n");
        let Ok(tasks) = std::fs::read_dir(proc.join("task")) else {
            out.push_str("(gone)\n");
            return out;
        };
        for task in tasks.flatten() {
            let read = |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
            let stat = read("stat");
            // `pid (comm) state ...`: the name may hold spaces, the state follows it.
            let state = stat
                .rsplit_once(") ")
                .map_or("?", |(_, r)| &r[..1.min(r.len())]);
            out.push_str(&format!(
                "  thread {} {:?} state {state} waiting in {}\n",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan")
            ));
        }
        out
    }

    /// Waits until the log `name` holds `text`.
    pub fn wait_log(&self, name: &str, text: &str) {
        let since = Instant::now();
        while !self.read_log(name).contains(text) {
            assert!(
                since.elapsed() < PATIENCE,
                "{name} never said {text:?}:\n{}",
                self.read_log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the second controller ([`Options::standby`]), logging to `gantryd-2.log`.
    pub fn start_standby(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("gantryd-2.sock"));
        let child = Command::new(bin("gantryd"))
            .args(["--config", "gantryd-2.toml"])
            .current_dir(self.dir.path())
            .stdout(self.log("gantryd-2.log"))
            .stderr(self.log("gantryd-2.log"))
            .spawn()
            .expect("gantryd starts");
        self.standby = Some(child);
    }

    /// The process ids of the first and the second controller.
    pub fn controller_pids(&self) -> (Option<u32>, Option<u32>) {
        (
            self.controller.as_ref().map(Child::id),
            self.standby.as_ref().map(Child::id),
        )
    }

    pub fn cli_command_line(&self) -> CliLine {
        CliLine {
            socket: self.socket(),
            work: self.work(),
        }
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .unwrap()
    }

    pub fn restart_controller(&mut self) {
        let served = self
            .read_log("gantryd.log")
            .matches("active: serving")
            .count();
        let _ = std::fs::remove_file(self.dir.path().join("gantryd.sock"));
        let child = Command::new(bin("gantryd"))
            .args(["--config", "gantryd.toml"])
            .current_dir(self.dir.path())
            .stdout(self.log("gantryd.log"))
            .stderr(self.log("gantryd.log"))
            .spawn()
            .expect("gantryd starts");
        self.controller = Some(child);
        let sock = self.dir.path().join("gantryd.sock");
        let since = Instant::now();
        while !sock.exists() {
            assert!(
                since.elapsed() < PATIENCE,
                "gantryd never opened its socket:\n{}",
                self.read_log("gantryd.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // It listens from its start, and serves once its state is restored (over
        // PostgreSQL, once it holds the lease: a standby waits here until it does).
        if self.standby.is_none() {
            while self
                .read_log("gantryd.log")
                .matches("active: serving")
                .count()
                <= served
            {
                assert!(
                    since.elapsed() < PATIENCE,
                    "gantryd never served:\n{}",
                    self.read_log("gantryd.log")
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn start_agent(&mut self, node: &str) {
        let child = Command::new(bin("gantry-agent"))
            .args(["--config", &format!("agent-{node}.toml")])
            .current_dir(self.dir.path())
            .stdout(self.log(&format!("agent-{node}.log")))
            .stderr(self.log(&format!("agent-{node}.log")))
            .spawn()
            .expect("gantry-agent starts");
        self.agents.push((node.to_string(), child));
    }

    pub fn kill_agent(&mut self, node: &str) {
        if let Some(i) = self.agents.iter().position(|(n, _)| n == node) {
            let (_, mut child) = self.agents.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.work().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn read(&self, name: &str) -> String {
        let p = self.work().join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Runs the CLI (a Slurm name as the first word runs that entry point).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_env(args, None)
    }

    pub fn cli_as(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        self.cli_env(args, Some(token))
    }

    fn cli_env(&self, args: &[&str], token: Option<&str>) -> (i32, String, String) {
        let (program, rest) = self.program(args);
        let mut cmd = Command::new(program);
        cmd.args(rest)
            .current_dir(self.work())
            .stdin(Stdio::null())
            .env_remove("GANTRY_TOKEN");
        match token {
            // Over TCP, as a remote user would.
            Some(t) => cmd
                .env("GANTRY_CONTROLLER", self.tcp())
                .env("GANTRY_CA_FILE", self.ca_file())
                .env("GANTRY_TOKEN", t),
            None => cmd.env("GANTRY_CONTROLLER", self.socket()),
        };
        let out = cmd.output().expect("the CLI runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The program to run for `args`: the Slurm entry point's link when the first word
    /// names one (made on first use), else `gantry`; and the remaining arguments.
    pub fn program<'a>(&self, args: &'a [&'a str]) -> (PathBuf, &'a [&'a str]) {
        let gantry = PathBuf::from(env!("CARGO_BIN_EXE_gantry"));
        match args.first() {
            Some(&name) if SLURM_COMMANDS.contains(&name) => {
                let link = self.dir.path().join("bin").join(name);
                if !link.exists() {
                    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
                    let _ = std::os::unix::fs::symlink(&gantry, &link);
                }
                (link, &args[1..])
            }
            _ => (gantry, args),
        }
    }

    /// `sbatch --parsable ARGS` as the test's user; the job id.
    pub fn sbatch(&self, args: &[&str]) -> u64 {
        let mut all = vec!["sbatch", "--parsable"];
        all.extend_from_slice(args);
        let out = self.cli_ok(&all);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("sbatch {args:?} printed no job id: {out}"))
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.cli(args);
        assert_eq!(
            code,
            0,
            "gantry {args:?} failed: {err}\ncontroller log:\n{}",
            self.read_log("gantryd.log")
        );
        out
    }

    /// A user token for `user` (with this process's uid, so jobs run as us).
    pub fn token(&self, user: &str, admin: bool) -> String {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let key = self.dir.path().join("key");
        let mut args = vec!["token", "--user", user, "--key", key.to_str().unwrap()];
        let uid = uid.to_string();
        args.extend(["--uid", &uid]);
        if admin {
            args.push("--admin");
        }
        self.cli_ok(&args).trim().to_string()
    }

    /// A user token for another uid.
    pub fn token_for(&self, user: &str, uid: u32) -> String {
        let key = self.dir.path().join("key");
        let uid = uid.to_string();
        self.cli_ok(&[
            "token",
            "--user",
            user,
            "--uid",
            &uid,
            "--key",
            key.to_str().unwrap(),
        ])
        .trim()
        .to_string()
    }

    /// The CLI as a child process (over the Unix socket), stdout piped.
    pub fn spawn_cli(&self, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .current_dir(self.work())
            .env("GANTRY_CONTROLLER", self.socket())
            .env_remove("GANTRY_TOKEN")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the CLI starts")
    }

    pub fn job(&self, id: u64) -> Value {
        let out = self.cli_ok(&["show", "job", &id.to_string(), "--json"]);
        serde_json::from_str(&out).expect("show --json is JSON")
    }

    pub fn node(&self, name: &str) -> Value {
        let out = self.cli_ok(&["show", "node", name, "--json"]);
        let v: Value = serde_json::from_str(&out).expect("JSON");
        v[0].clone()
    }

    pub fn wait_until(&self, id: u64, done: impl Fn(&Value) -> bool) -> Value {
        let since = Instant::now();
        loop {
            let j = self.job(id);
            if done(&j) {
                return j;
            }
            assert!(
                since.elapsed() < PATIENCE,
                "job {id} never got there: {j}\ncontroller log:\n{}",
                self.read_log("gantryd.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_state(&self, id: u64, state: &str) -> Value {
        self.wait_until(id, |j| j["state"] == state)
    }

    fn finished(j: &Value) -> bool {
        !matches!(
            j["state"].as_str(),
            Some("PENDING" | "RUNNING" | "SUSPENDED" | "REQUEUED" | "COMPLETING")
        )
    }

    pub fn wait_done(&self, id: u64) -> Value {
        self.wait_until(id, Self::finished)
    }

    /// Every job of these ids (array ids stand for all their tasks), once all finished.
    pub fn wait_all_done(&self, ids: &[u64]) -> Vec<Value> {
        let since = Instant::now();
        loop {
            let out = self.cli_ok(&["acct", "--json"]);
            let v: Value = serde_json::from_str(&out).expect("acct --json is JSON");
            let jobs: Vec<Value> = v["jobs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|j| {
                    j["job_id"].as_u64().is_some_and(|i| ids.contains(&i))
                        || j["array_job_id"].as_u64().is_some_and(|a| ids.contains(&a))
                })
                .collect();
            let all_there = ids.iter().all(|&i| jobs.iter().any(|j| j["job_id"] == i));
            if all_there && jobs.iter().all(Self::finished) {
                return jobs;
            }
            assert!(
                since.elapsed() < PATIENCE * 2,
                "jobs never finished: {jobs:?}\ncontroller log:\n{}",
                self.read_log("gantryd.log")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_node_state(&self, node: &str, state: &str) {
        let since = Instant::now();
        loop {
            let (code, out, _) = self.cli(&["show", "node", node, "--json"]);
            if code == 0 {
                let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
                if v[0]["state"] == state {
                    return;
                }
            }
            assert!(
                since.elapsed() < PATIENCE,
                "node {node} never became {state}: {out}\ncontroller log:\n{}",
                self.read_log("gantryd.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, a) in &mut self.agents {
            let _ = a.kill();
            let _ = a.wait();
        }
        self.kill_controller();
        if let Some(mut c) = self.standby.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Jobs are their own process groups; end any the test left running.
        let _ = Command::new("pkill")
            .args([
                "-KILL",
                "-f",
                &self.dir.path().join("spool").display().to_string(),
            ])
            .status();
    }
}

/// A time as the CLI prints it: `YYYY-MM-DDTHH:MM:SS` in the local zone.
pub fn local_time(t: i64) -> String {
    jiff::Timestamp::from_second(t)
        .expect("a time in range")
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}
