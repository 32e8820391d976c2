//! A hostile user and a compromised node against a live cluster. The agents run as
//! root (as on a real cluster); the attacker is a throwaway unprivileged local user who
//! reaches the controller through its Unix socket, where the kernel says who they are.
//! Each test attacks through the CLI or the wire, then checks that nothing it aimed at
//! changed. They need root (to be the agents and to create the users); elsewhere they
//! say so and pass nothing off as checked.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gantry_api as api;
use gantry_api::auth::{mint, node_key, Claims, Role};
use serde_json::Value;

use crate::harness::{Cluster, Options};

/// A local account of this machine, made for these tests.
#[derive(Clone, Debug)]
struct LocalUser {
    name: &'static str,
    uid: u32,
    gid: u32,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The user `name`, created (without a home, without a login shell) if missing.
fn local_user(name: &'static str) -> LocalUser {
    let lookup = || {
        let out = Command::new("getent")
            .args(["passwd", name])
            .output()
            .ok()?;
        let line = String::from_utf8(out.stdout).ok()?;
        let f: Vec<&str> = line.trim().split(':').collect();
        Some(LocalUser {
            name,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
        })
    };
    if let Some(u) = lookup() {
        return u;
    }
    let made = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ])
        .status()
        .expect("useradd runs");
    // Another test binary may have made it meanwhile.
    lookup().unwrap_or_else(|| panic!("cannot create the local user {name}: {made}"))
}

/// The attacker and a victim, made once per test binary.
fn users() -> &'static (LocalUser, LocalUser) {
    static USERS: OnceLock<(LocalUser, LocalUser)> = OnceLock::new();
    USERS.get_or_init(|| (local_user("gantry-mallory"), local_user("gantry-victim")))
}

/// Skips (saying so) where the agents cannot be root.
macro_rules! needs_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (agents as root, throwaway local users)");
            return;
        }
    };
}

impl LocalUser {
    /// The user's own directory inside the cluster's, mode 0700.
    fn home(&self, c: &Cluster) -> PathBuf {
        let home = c.root().join(format!("home-{}", self.name));
        if !home.exists() {
            std::fs::create_dir(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(self.uid), Some(self.gid)).unwrap();
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        home
    }

    /// Runs the CLI as this user, in their directory, with `umask`.
    fn cli_umask(&self, c: &Cluster, umask: u32, args: &[&str]) -> (i32, String, String) {
        let (program, rest) = users_program(c, args);
        let mut cmd = Command::new(program);
        cmd.args(rest)
            .current_dir(self.home(c))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("GANTRY_CONTROLLER", c.socket())
            .stdin(Stdio::null())
            .uid(self.uid)
            .gid(self.gid);
        // SAFETY: umask(2) is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask as libc::mode_t);
                Ok(())
            });
        }
        let out = cmd.output().expect("the CLI runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn cli(&self, c: &Cluster, args: &[&str]) -> (i32, String, String) {
        self.cli_umask(c, 0o022, args)
    }

    fn submit(&self, c: &Cluster, args: &[&str]) -> u64 {
        let mut all = vec!["sbatch", "--parsable"];
        all.extend_from_slice(args);
        let (code, out, err) = self.cli(c, &all);
        assert_eq!(code, 0, "sbatch {args:?} as {}: {err}", self.name);
        out.trim().parse().expect("a job id")
    }
}

/// The CLI for other local users: a copy of the `gantry` binary (and its Slurm names)
/// in the cluster's directory, which they can reach wherever the build directory is.
fn users_program<'a>(c: &Cluster, args: &'a [&'a str]) -> (PathBuf, &'a [&'a str]) {
    let dir = c.root().join("users-bin");
    let gantry = dir.join("gantry");
    if !gantry.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let partial = dir.join(".gantry");
        std::fs::copy(env!("CARGO_BIN_EXE_gantry"), &partial).expect("copy the CLI");
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&partial, &gantry).unwrap();
    }
    let (linked, rest) = c.program(args);
    let name = linked.file_name().unwrap();
    if name == "gantry" || linked == Path::new(env!("CARGO_BIN_EXE_gantry")) {
        return (gantry, rest);
    }
    let link = dir.join(name);
    if !link.exists() {
        let _ = std::os::unix::fs::symlink("gantry", &link);
    }
    (link, rest)
}

/// A root-owned file in a root-owned directory, with its content and mode.
fn root_file(c: &Cluster, name: &str) -> PathBuf {
    let dir = c.root().join("root-only");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(name);
    std::fs::write(&f, "root's own\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    f
}

fn untouched(f: &Path) {
    let m = std::fs::symlink_metadata(f).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "{} changed owner", f.display());
    assert_eq!(
        std::fs::read_to_string(f).unwrap(),
        "root's own\n",
        "{} was written",
        f.display()
    );
}

#[test]
fn a_user_cannot_make_the_agent_write_or_enter_what_is_not_theirs() {
    needs_root!();
    let (mallory, _) = users();
    let c = Cluster::start(Options::default());
    let target = root_file(&c, "passwd");
    let t = target.to_str().unwrap();
    // Straight at a root-owned file, as -o and as -e.
    let o = mallory.submit(&c, &["-o", t, "--wrap=true"]);
    let e = mallory.submit(&c, &["-o", "/dev/null", "-e", t, "--wrap=true"]);
    // Through a symlink the user planted in their own directory.
    let link = mallory.home(&c).join("innocent.out");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let l = mallory.submit(&c, &["-o", link.to_str().unwrap(), "--wrap=true"]);
    // A relative path that climbs out of the working directory.
    let depth = mallory.home(&c).components().count();
    let climb = format!("{}{}", "../".repeat(depth), t.trim_start_matches('/'));
    let r = mallory.submit(&c, &["-o", &climb, "--wrap=true"]);
    // A working directory the user may not enter, with a relative output path.
    let closed = c.root().join("root-only/closed");
    std::fs::create_dir_all(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let d = mallory.submit(
        &c,
        &[
            "--chdir",
            closed.to_str().unwrap(),
            "-o",
            "out",
            "--wrap=true",
        ],
    );
    for (id, why) in [
        (o, "cannot open the output file"),
        (e, "cannot open the error file"),
        (l, "cannot open the output file"),
        (r, "cannot open the output file"),
        (d, "cannot enter the working directory"),
    ] {
        let j = c.wait_done(id);
        assert_eq!(j["state"], "FAILED", "job {id}: {j}");
        let reason = j["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "job {id}: the reason says why: {j}");
        // sacct shows it too, to the user.
        let (_, out, _) = mallory.cli(&c, &["sacct", "-j", &id.to_string(), "--json"]);
        assert!(out.contains(why), "sacct of {id}: {out}");
    }
    untouched(&target);
    assert!(!closed.join("out").exists());
    // Nothing of the attempts ran as root: the file the relative path named is still
    // root's, and no file appeared in the closed directory.
}

#[test]
fn a_users_script_and_output_are_theirs_alone() {
    needs_root!();
    let (mallory, victim) = users();
    let c = Cluster::start(Options::default());
    let home = victim.home(&c);
    // Readable by the victim's group and others only if the victim's umask says so.
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = victim.cli_umask(
        &c,
        0o077,
        &[
            "sbatch",
            "--parsable",
            "-o",
            "secret-%j.out",
            "--wrap=echo the secret; sleep 300",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let id: u64 = out.trim().parse().unwrap();
    let j = c.wait_state(id, "RUNNING");
    let output = PathBuf::from(j["stdout"].as_str().unwrap());
    let since = Instant::now();
    while std::fs::read_to_string(&output).map_or(true, |t| t.is_empty()) {
        assert!(since.elapsed() < Duration::from_secs(60), "no output");
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = std::fs::metadata(&output).unwrap();
    assert_eq!(
        m.uid(),
        victim.uid,
        "created by the victim, not chowned by root"
    );
    assert_eq!(
        m.mode() & 0o777,
        0o600,
        "created under the submitter's umask"
    );
    // Another user can read neither the output nor the spooled script.
    let node = j["node_list"].as_str().unwrap();
    let spool = c.root().join("spool").join(node);
    let script = spool.join(format!("job{id}.0.sh"));
    assert!(
        script.exists(),
        "{} is the spooled script",
        script.display()
    );
    assert_eq!(std::fs::metadata(&script).unwrap().mode() & 0o777, 0o600);
    for path in [&output, &script] {
        let read = Command::new("cat")
            .arg(path)
            .uid(mallory.uid)
            .gid(mallory.gid)
            .output()
            .unwrap();
        assert!(
            !read.status.success(),
            "{} readable by another user",
            path.display()
        );
    }
    // Nor list the spool, nor plant anything in it.
    let list = Command::new("ls")
        .arg(&spool)
        .uid(mallory.uid)
        .gid(mallory.gid)
        .output()
        .unwrap();
    assert!(!list.status.success(), "the spool can be listed");
    let plant = Command::new("sh")
        .args([
            "-c",
            &format!("echo 1 0 > {}/job{id}.5.pgid", spool.display()),
        ])
        .uid(mallory.uid)
        .gid(mallory.gid)
        .output()
        .unwrap();
    assert!(
        !plant.status.success(),
        "a file could be planted in the spool"
    );
    // squeue shows another user's job without its paths or allocation, as scontrol.
    let (code, out, err) = mallory.cli(&c, &["squeue", "--json", "-j", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let seen = &v["jobs"][0];
    assert_eq!(seen["job_id"], id, "{out}");
    for field in ["workdir", "stdout", "stderr", "dependency"] {
        assert_eq!(seen[field], "", "{field} of another user's job: {out}");
    }
    assert_eq!(seen["allocation"], serde_json::json!([]), "{out}");
    let (code, _, err) = mallory.cli(&c, &["scontrol", "show", "job", &id.to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("permission denied"), "{err}");
    c.cli_ok(&["scancel", &id.to_string()]);
}

/// Calls the agent link as a node would, with `token`.
fn agent_register(c: &Cluster, node: &str, token: &str) -> Result<(), tonic::Status> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = gantry_api::client::connect(&c.tcp(), &c.trust())
            .await
            .unwrap();
        let with = gantry_api::client::WithToken::new(Some(token)).unwrap();
        let mut client = api::agent_link_client::AgentLinkClient::with_interceptor(channel, with);
        client
            .register(api::RegisterRequest {
                node: node.into(),
                topology: None,
                agent_version: "attacker".into(),
            })
            .await
            .map(|_| ())
    })
}

fn agent_token(key: &[u8], node: &str, expires: i64) -> String {
    mint(
        key,
        &Claims {
            user: node.into(),
            uid: 0,
            role: Role::Agent,
            expires,
        },
    )
    .unwrap()
}

#[test]
fn a_nodes_credential_speaks_for_that_node_alone() {
    // Runs without root too: no job or local user is involved.
    let c = Cluster::start(Options::default());
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 300;
    let cpu01 = std::fs::read(c.root().join("credential-cpu01")).unwrap();
    let cluster_key = std::fs::read(c.root().join("key")).unwrap();
    assert_ne!(
        cpu01, cluster_key,
        "the agent does not hold the cluster key"
    );
    // Its own node: accepted.
    agent_register(&c, "cpu01", &agent_token(&cpu01, "cpu01", later)).expect("own node");
    // Another node, with this node's key: refused.
    let err = agent_register(&c, "cpu02", &agent_token(&cpu01, "cpu02", later)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // A wildcard node, signed with this node's key or even the cluster key: refused.
    for key in [&cpu01, &cluster_key] {
        let err = agent_register(&c, "*", &agent_token(key, "*", later)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    }
    // A forged key, and a token that never expires: refused.
    let forged = vec![7u8; 32];
    let err = agent_register(&c, "cpu01", &agent_token(&forged, "cpu01", later)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let err = agent_register(&c, "cpu01", &agent_token(&cpu01, "cpu01", 0)).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // Root on cpu01 mints an admin token with what the node holds: it opens nothing.
    let admin = mint(
        &cpu01,
        &Claims {
            user: "root".into(),
            uid: 0,
            role: Role::Admin,
            expires: later,
        },
    )
    .unwrap();
    let (code, _, err) = c.cli_as(&admin, &["squeue"]);
    assert_ne!(code, 0);
    assert!(err.contains("not authenticated"), "{err}");
    let component = crate::harness::policy_component("xfactor-priority");
    let (code, _, err) = c.cli_as(
        &admin,
        &["policy", "load", "priority", component.to_str().unwrap()],
    );
    assert_ne!(code, 0, "{err}");
    // The node's key is not a key the controller signs user tokens with.
    assert_ne!(node_key(&cluster_key, "cpu01").unwrap(), cluster_key);
}

/// Forwards one loopback port to `to` and keeps every byte that crosses it, both ways:
/// what someone watching the network would see.
fn eavesdropper(to: u16) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        kept.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (port, seen)
}

#[test]
fn the_tcp_listener_speaks_tls_and_clients_check_whom_they_talk_to() {
    // Runs without root too: no job or local user is involved.
    let c = Cluster::start(Options::default());
    let token = c.token("alice", false);
    let port = c.tcp().rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let run = |controller: &str, ca: Option<&Path>| {
        let (program, args) = c.program(&["squeue", "--json"]);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("GANTRY_CONTROLLER", controller)
            .env("GANTRY_TOKEN", &token)
            .env_remove("GANTRY_CA_FILE")
            .stdin(Stdio::null());
        if let Some(ca) = ca {
            cmd.env("GANTRY_CA_FILE", ca);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            format!("{} ({})", String::from_utf8_lossy(&out.stderr), out.status),
        )
    };
    // Through a listener on the wire: the call works and nothing readable crosses.
    let (relay, seen) = eavesdropper(port);
    let (ok, out, err) = run(&format!("https://127.0.0.1:{relay}"), Some(&c.ca_file()));
    assert!(ok, "{err}");
    assert!(out.contains("\"jobs\""), "{out}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() > 500,
        "the call crossed the relay ({} bytes)",
        seen.len()
    );
    assert_eq!(seen[0], 0x16, "a TLS handshake record opens the connection");
    let find = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    assert!(!find(token.as_bytes()), "the token crossed in clear");
    assert!(!find(b"authorization"), "headers crossed in clear");
    assert!(!find(b"gantry.v1"), "the method name crossed in clear");
    // Plain HTTP/2 to the TLS port: no answer.
    let (ok, _, err) = run(&format!("http://127.0.0.1:{port}"), None);
    assert!(!ok, "plain HTTP was answered");
    assert!(err.contains("error"), "{err}");
    assert!(
        !err.contains("signal"),
        "the CLI died instead of saying why: {err}"
    );
    // A client that does not trust the controller's authority refuses it: the system's
    // authorities, or another throwaway authority.
    let (ok, _, err) = run(&c.tcp(), None);
    assert!(!ok, "an unknown certificate was trusted: {err}");
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("ca.pem"),
        crate::harness::throwaway_authority().pem(),
    )
    .unwrap();
    let (ok, _, err) = run(&c.tcp(), Some(&other.path().join("ca.pem")));
    assert!(
        !ok,
        "a certificate from another authority was trusted: {err}"
    );
}

/// The pid a job wrote to `pid-<job>-<node>` in the work directory (written whole under
/// another name and renamed, so a name that matches is never half-written).
fn job_pid(c: &Cluster, id: u64) -> (String, i32) {
    let since = Instant::now();
    loop {
        let found = std::fs::read_dir(c.work())
            .unwrap()
            .flatten()
            .find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let node = name.strip_prefix(&format!("pid-{id}-"))?.to_string();
                let pid = std::fs::read_to_string(e.path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some((node, pid))
            });
        if let Some(f) = found {
            return f;
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "job {id} never wrote its pid"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn a_returning_nodes_stale_run_never_ends_the_requeued_one() {
    let mut c = Cluster::start(Options::default());
    let s = c.write(
        "sit.sh",
        "#!/bin/bash\n#SBATCH -N 1 -c 4 -o /dev/null --requeue\necho $$ > partial-$SLURM_JOB_ID-$SLURMD_NODENAME\nmv partial-$SLURM_JOB_ID-$SLURMD_NODENAME pid-$SLURM_JOB_ID-$SLURMD_NODENAME\nsleep 300\n",
    );
    let id: u64 = c.sbatch(&[s.to_str().unwrap()]);
    c.wait_state(id, "RUNNING");
    let (first, old_pid) = job_pid(&c, id);
    // The node goes silent (its agent dies; the job's processes live on) and is
    // declared DOWN: the job is requeued and runs again on the other CPU node.
    c.kill_agent(&first);
    c.wait_until(id, |j| j["requeue_count"] == 1 && j["state"] == "RUNNING");
    let (second, new_pid) = {
        let since = Instant::now();
        loop {
            let (node, pid) = job_pid(&c, id);
            if node != first {
                break (node, pid);
            }
            let _ = std::fs::remove_file(c.work().join(format!("pid-{id}-{first}")));
            assert!(since.elapsed() < Duration::from_secs(60), "never ran again");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_ne!(first, second);
    // The old node comes back: its agent reports the old run lost, and it is told to
    // end what it still has. The new run goes on untouched.
    c.start_agent(&first);
    c.wait_node_state(&first, "IDLE");
    std::thread::sleep(Duration::from_secs(3));
    let j = c.job(id);
    assert_eq!(j["state"], "RUNNING", "{j}\n{}", c.controller_log());
    assert_eq!(j["node_list"], second.as_str(), "{j}");
    assert!(
        alive(new_pid),
        "the requeued run's process (pid {new_pid}) was killed"
    );
    assert!(
        !alive(old_pid),
        "the stale run (pid {old_pid}) still runs beside it"
    );
    assert!(
        c.controller_log().contains("not the job's current run"),
        "the stale report was noticed"
    );
    c.cli_ok(&["scancel", &id.to_string()]);
}

#[test]
fn requests_too_large_to_build_are_refused_at_once_and_the_controller_goes_on() {
    let c = Cluster::start(Options::default());
    let started = Instant::now();
    let (code, _, err) = c.cli(&["sbatch", "--array=0-4294967295", "--wrap=true"]);
    let took = started.elapsed();
    assert_ne!(code, 0);
    assert!(err.contains("more than 100000 tasks"), "{err}");
    eprintln!("4-billion-task array refused in {took:?}");
    let deps: Vec<String> = (1..=10_000).map(|i| i.to_string()).collect();
    let dep = format!("--dependency=afterok:{}", deps.join(":"));
    let (code, _, err) = c.cli(&["sbatch", &dep, "--wrap=true"]);
    assert_ne!(code, 0);
    assert!(err.contains("max_dependencies"), "{err}");
    let big = "x".repeat(5 << 20);
    let script = c.write("big.sh", &format!("#!/bin/bash\n# {big}\ntrue\n"));
    let (code, _, err) = c.cli(&["sbatch", script.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("max_script_bytes"), "{err}");
    // Still answering.
    c.cli_ok(&["squeue"]);
}

#[test]
fn a_hundred_thousand_jobs_list_and_cancel_and_one_array_task_is_one_task() {
    let c = Cluster::start(Options::default());
    let blocker: u64 = c.sbatch(&["-o", "/dev/null", "--wrap=sleep 300"]);
    // 100,000 tasks that wait for the blocker: more than fits one message.
    let array: u64 = c.sbatch(&[
        "--array=0-99999",
        &format!("--dependency=afterok:{blocker}"),
        "-o",
        "/dev/null",
        "--wrap=true",
    ]);
    let listed = c.cli_ok(&["squeue", "-h", "-r", "-o", "%i"]);
    assert_eq!(listed.lines().count(), 100_001, "every job, in pages");
    // Without -r the waiting tasks are one line, as Slurm shows them.
    let together = c.cli_ok(&["squeue", "-h", "-o", "%i"]);
    assert_eq!(together, format!("{blocker}\n{array}_[0-99999]\n"));
    // scancel ARRAY_TASK cancels that task only, a range that range.
    c.cli_ok(&["scancel", &format!("{array}_3")]);
    c.cli_ok(&["scancel", &format!("{array}_[10-12]")]);
    let left = c.cli_ok(&["squeue", "-h", "-r", "-j", &array.to_string(), "-o", "%i"]);
    assert_eq!(left.lines().count(), 99_996, "four tasks cancelled");
    let t3 = c.cli_ok(&[
        "sacct",
        "-j",
        &format!("{array}_3"),
        "-P",
        "--noheader",
        "-o",
        "JobID,State",
    ]);
    assert_eq!(t3.trim(), format!("{array}_3|CANCELLED"), "{t3}");
    // A watcher that reads nothing while the whole array ends: it falls behind the
    // bounded event ring and is told so, instead of holding memory or missing events
    // in silence.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_keep, mut stalled) = rt.block_on(open_watches(&c, &c.token("root", true), 1));
    // The whole array, then sacct over all of it.
    c.cli_ok(&["scancel", &array.to_string()]);
    c.cli_ok(&["scancel", &blocker.to_string()]);
    // The running blocker shows COMPLETING until its processes are gone.
    c.wait_until(blocker, |j| j["state"] == "CANCELLED");
    let acct = c.cli_ok(&["sacct", "-X", "-P", "--noheader", "-o", "JobID,State"]);
    let cancelled = acct.lines().filter(|l| l.contains("|CANCELLED")).count();
    assert_eq!(cancelled, 100_001, "every finished job is listed");
    let ended = rt.block_on(async {
        let stream = stalled.pop().unwrap();
        let mut stream = std::pin::pin!(stream);
        let mut events = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Ok(Ok(Some(_))) => events += 1,
                Ok(Ok(None)) => break format!("ended quietly after {events} events"),
                Ok(Err(status)) => break format!("{:?}: {}", status.code(), status.message()),
                Err(_) => break format!("still open after {events} events"),
            }
        }
    });
    eprintln!("the stalled watch: {ended}");
    assert!(
        ended.starts_with("ResourceExhausted") && ended.contains("events behind"),
        "{ended}"
    );
}

/// `n` open `Watch` streams as the holder of `token`, over TCP: the channel and the
/// streams.
async fn open_watches(
    c: &Cluster,
    token: &str,
    n: usize,
) -> (tonic::transport::Channel, Vec<tonic::Streaming<api::Event>>) {
    let channel = gantry_api::client::connect(&c.tcp(), &c.trust())
        .await
        .unwrap();
    let with = gantry_api::client::WithToken::new(Some(token)).unwrap();
    let mut client =
        api::controller_client::ControllerClient::with_interceptor(channel.clone(), with);
    let mut streams = Vec::new();
    for _ in 0..n {
        streams.push(
            client
                .watch(api::WatchRequest::default())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    (channel, streams)
}

#[test]
fn one_user_cannot_hold_watches_without_bound() {
    // Runs without root too: no job or local user is involved.
    let c = Cluster::start(Options::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let token = c.token("alice", false);
        let (channel, mut open) = open_watches(&c, &token, 64).await;
        let with = gantry_api::client::WithToken::new(Some(&token)).unwrap();
        let mut client = api::controller_client::ControllerClient::with_interceptor(channel, with);
        let refused = client
            .watch(api::WatchRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::ResourceExhausted,
            "{refused:?}"
        );
        assert!(refused.message().contains("64 watches"), "{refused:?}");
        // Another user is not affected; one closed watch frees a place.
        let (_, bob) = open_watches(&c, &c.token("bob", false), 1).await;
        assert_eq!(bob.len(), 1);
        open.pop();
        let since = Instant::now();
        while client.watch(api::WatchRequest::default()).await.is_err() {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "the closed watch was never counted out"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn what_users_name_reaches_terminals_escaped_and_the_cli_never_panics() {
    let c = Cluster::start(Options::default());
    let id: u64 = c.sbatch(&[
        "-J",
        "x\u{1b}[2J\u{1b}]0;pwned\u{7}\ny",
        "-o",
        "/dev/null",
        "--wrap=sleep 300",
    ]);
    for args in [
        vec!["squeue", "-o", "%i %j"],
        vec!["sacct", "-o", "JobID,JobName"],
        vec!["scontrol", "show", "job"],
    ] {
        let mut args = args.clone();
        let id = id.to_string();
        if args[0] == "scontrol" {
            args.push(&id);
        }
        let out = c.cli_ok(&args);
        assert!(
            !out.contains('\u{1b}') && !out.contains('\u{7}'),
            "{args:?}: {out:?}"
        );
        assert!(out.contains("x\\x1b[2J"), "{args:?}: {out:?}");
    }
    // sprio's formats, sorts and job lists: a bad one is an error that says why.
    for (args, why) in [
        (vec!["sprio", "-o", "%i %"], "ends in '%'"),
        (vec!["sprio", "-o", "%i %Z"], "'%Z' is not a field"),
        (vec!["sprio", "-S", "-yy"], "not a sort field"),
        (vec!["sprio", "-j", "12;rm"], "is not a job id"),
    ] {
        let (code, _, err) = c.cli(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(why) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // A closed pipe ends the CLI quietly (SIGPIPE, as Slurm's tools), with no panic.
    let (program, rest) = c.program(&["sacct"]);
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "\"{}\" {} | head -c 1 > /dev/null; true",
            program.display(),
            rest.join(" ")
        ))
        .env("GANTRY_CONTROLLER", c.socket())
        .current_dir(c.work())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains("panicked"),
        "{piped:?}"
    );
    // Arguments that are not UTF-8: an error, not a panic.
    use std::os::unix::ffi::OsStrExt;
    let (program, _) = c.program(&["sbatch"]);
    let out = Command::new(program)
        .arg(std::ffi::OsStr::from_bytes(b"-J\xff\xfe"))
        .arg("--wrap=true")
        .env("GANTRY_CONTROLLER", c.socket())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not valid UTF-8") && !err.contains("panicked"),
        "{err}"
    );
    // Zero tasks, CPUs or nodes are refused, as Slurm does; UNLIMITED is the maximum.
    for flag in ["-n0", "-c0", "-N0"] {
        let (code, _, err) = c.cli(&["sbatch", flag, "--wrap=true"]);
        assert_ne!(code, 0, "{flag} accepted");
        assert!(err.contains("\"0\""), "{flag}: {err}");
    }
    let unlimited: u64 = c.sbatch(&["--time=UNLIMITED", "-o", "/dev/null", "--wrap=true"]);
    assert_eq!(
        c.job(unlimited)["time_limit_s"],
        3600,
        "the partition's max_time"
    );
    c.cli_ok(&["scancel", &id.to_string()]);
}

#[test]
fn steps_run_as_their_user_and_only_in_their_own_job() {
    needs_root!();
    let (mallory, victim) = users();
    let c = Cluster::start(Options::default());
    let id = victim.submit(
        &c,
        &[
            "-p",
            "cpu",
            "-N",
            "2",
            "-n",
            "2",
            "-o",
            "/dev/null",
            "--wrap=sleep 60",
        ],
    );
    c.wait_state(id, "RUNNING");
    let job = id.to_string();
    // Another user's srun cannot start a step in the victim's allocation.
    let (code, out, err) = mallory.cli(&c, &["srun", "--jobid", &job, "-l", "id", "-u"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("Access/permission denied"), "{err}");
    assert!(out.is_empty(), "{out}");
    // Nor cancel or signal the steps of it.
    let (code, _, err) = mallory.cli(&c, &["scancel", &format!("{id}.0")]);
    assert_ne!(code, 0);
    assert!(err.contains("Access/permission denied"), "{err}");
    // The owner's step tasks run as the owner on every node, never as root.
    let (code, out, err) = victim.cli(&c, &["srun", "--jobid", &job, "-l", "id", "-u"]);
    assert_eq!(code, 0, "{err}");
    let mut uids: Vec<&str> = out.lines().collect();
    uids.sort();
    let want = [format!("0: {}", victim.uid), format!("1: {}", victim.uid)];
    assert_eq!(
        uids,
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "{err}"
    );
    // Its -o file is written by srun, as the user who runs it: not at a path only root
    // may write.
    let (code, _, err) = victim.cli(
        &c,
        &[
            "srun",
            "--jobid",
            &job,
            "-o",
            "/etc/gantry-step-owned",
            "echo",
            "x",
        ],
    );
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("cannot create the output file"), "{err}");
    assert!(!Path::new("/etc/gantry-step-owned").exists());
    c.cli_ok(&["scancel", &job]);
}

#[test]
fn a_node_speaks_only_for_its_own_tasks_of_a_step() {
    // Runs without root too: the step's tasks are the test user's.
    let c = Cluster::start(Options::default());
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 300;
    // A two-node step whose tasks take a few seconds.
    let (srun, _) = c.program(&["srun"]);
    let running = Command::new(srun)
        .args(["-p", "cpu", "-N2", "-n2", "-l", "bash", "-c"])
        .arg("sleep 4; echo real $SLURM_PROCID")
        .current_dir(c.work())
        .env("GANTRY_CONTROLLER", c.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = {
        let since = Instant::now();
        loop {
            let out = c.cli_ok(&["squeue", "-s", "-h", "-o", "%i"]);
            if let Some(step) = out.lines().next() {
                break step.split('.').next().unwrap().parse::<u64>().unwrap();
            }
            assert!(since.elapsed() < Duration::from_secs(30), "no step ran");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let cpu02 = std::fs::read(c.root().join("credential-cpu02")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stream = |node: &str, token: String, messages: Vec<api::StepIoMessage>| {
        let header = api::StepIoMessage {
            what: Some(api::step_io_message::What::Header(api::StepIoHeader {
                node: node.into(),
                job_id: id,
                step_id: 0,
            })),
        };
        let (tcp, trust) = (c.tcp(), c.trust());
        rt.block_on(async move {
            let channel = gantry_api::client::connect(&tcp, &trust).await.unwrap();
            let with = gantry_api::client::WithToken::new(Some(&token)).unwrap();
            let mut client =
                api::agent_link_client::AgentLinkClient::with_interceptor(channel, with);
            let all: Vec<api::StepIoMessage> = std::iter::once(header).chain(messages).collect();
            client.step_io(tokio_stream::iter(all)).await.map(|_| ())
        })
    };
    let forged_output = |task: u32| api::StepIoMessage {
        what: Some(api::step_io_message::What::Output(api::TaskOutput {
            task,
            stderr: false,
            data: b"forged\n".to_vec(),
        })),
    };
    // cpu02's key cannot speak as cpu01.
    let err = stream("cpu01", agent_token(&cpu02, "cpu01", later), vec![]).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // As itself, it cannot put words in task 0's mouth (task 0 runs on cpu01), nor end
    // it; its stream for a step it has no part in is refused.
    let ended_task0 = api::StepIoMessage {
        what: Some(api::step_io_message::What::TaskEnded(api::TaskEnded {
            task: 0,
            exit_code: 99,
            ..Default::default()
        })),
    };
    let forged = std::thread::scope(|s| {
        // Held open while the real tasks run, so the step's end is the real nodes'.
        let h = s.spawn(|| {
            let slow = async_stream_of(vec![forged_output(0), ended_task0], Duration::from_secs(6));
            let header = api::StepIoMessage {
                what: Some(api::step_io_message::What::Header(api::StepIoHeader {
                    node: "cpu02".into(),
                    job_id: id,
                    step_id: 0,
                })),
            };
            let (tcp, trust) = (c.tcp(), c.trust());
            let token = agent_token(&cpu02, "cpu02", later);
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let channel = gantry_api::client::connect(&tcp, &trust).await.unwrap();
                let with = gantry_api::client::WithToken::new(Some(&token)).unwrap();
                let mut client =
                    api::agent_link_client::AgentLinkClient::with_interceptor(channel, with);
                client.step_io(slow(header)).await.map(|_| ())
            })
        });
        h.join().unwrap()
    });
    eprintln!("the forged stream: {forged:?}");
    let out = running.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("forged"), "{text}");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["0: real 0", "1: real 1"]);
    let err = stream("cpu02", agent_token(&cpu02, "cpu02", later), vec![]).unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::NotFound | tonic::Code::PermissionDenied
        ),
        "a stream for a step that is over: {err:?}"
    );
}

/// A stream that yields `header`, then `messages`, then stays open for `hold`.
fn async_stream_of(
    messages: Vec<api::StepIoMessage>,
    hold: Duration,
) -> impl FnOnce(
    api::StepIoMessage,
) -> std::pin::Pin<Box<dyn tokio_stream::Stream<Item = api::StepIoMessage> + Send>> {
    move |header| {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let _ = tx.send(header).await;
            for m in messages {
                let _ = tx.send(m).await;
            }
            tokio::time::sleep(hold).await;
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// What users may change after submission stays theirs: another user cannot hold,
/// release, update or signal a job, nor read its comment; a comment is bounded and shown
/// escaped; a user cannot release an admin's hold.
#[test]
fn job_changes_and_comments_are_the_owners_alone() {
    needs_root!();
    let (mallory, victim) = users();
    let c = Cluster::start(Options::default());
    let id = victim.submit(
        &c,
        &[
            "-H",
            "--comment=secret \u{1b}[2J plan",
            "-o",
            "/dev/null",
            "--wrap=sleep 300",
        ],
    );
    let ids = id.to_string();
    let job = format!("JobId={id}");
    for args in [
        vec!["scontrol", "release", ids.as_str()],
        vec!["scontrol", "hold", ids.as_str()],
        vec!["scontrol", "update", job.as_str(), "TimeLimit=1"],
        vec!["scontrol", "update", job.as_str(), "Comment=mine"],
        vec![
            "scontrol",
            "update",
            job.as_str(),
            "Partition=gpu",
            "NumNodes=1",
        ],
        vec!["scancel", "-s", "USR1", ids.as_str()],
    ] {
        let (code, _, err) = mallory.cli(&c, &args);
        assert_eq!(code, 1, "{args:?} by another user: {err}");
        assert!(err.contains("permission denied"), "{args:?}: {err}");
    }
    let j = c.job(id);
    assert_eq!(
        (j["state"].as_str(), j["reason"].as_str()),
        (Some("PENDING"), Some("JobHeldUser"))
    );
    // Another user's listing shows no comment; the owner's shows it escaped.
    let (_, out, _) = mallory.cli(&c, &["squeue", "--json", "-j", &ids]);
    assert!(!out.contains("secret"), "{out}");
    let (code, out, err) = victim.cli(&c, &["scontrol", "show", "job", &ids]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Comment=secret \\x1b[2J plan"), "{out}");
    // Bounded: a comment past the limit is refused before anything is stored.
    let long = format!("--comment={}", "c".repeat(2000));
    let (code, _, err) = victim.cli(&c, &["sbatch", &long, "--wrap=true"]);
    assert_eq!(code, 1);
    assert!(err.contains("comment"), "{err}");
    // An admin's hold is not the user's to release.
    c.cli_ok(&["scontrol", "hold", &ids]);
    let (code, _, err) = victim.cli(&c, &["scontrol", "release", &ids]);
    assert_eq!(code, 1);
    assert!(err.contains("an administrator holds it"), "{err}");
    c.cli_ok(&["scancel", &ids]);
}

/// A user may not extend a running job's time limit (its agent still ends it at the
/// old one), touch another's, manage reservations, or smuggle an oversized or
/// terminal-controlling reservation name into a submission or an error.
#[test]
fn running_limits_and_reservations_resist_users() {
    needs_root!();
    let (mallory, victim) = users();
    let c = Cluster::start(Options::default());
    let theirs = victim.submit(&c, &["-t", "10:00", "-o", "/dev/null", "--wrap=sleep 60"]);
    let mine = mallory.submit(&c, &["-t", "0:04", "-o", "/dev/null", "--wrap=sleep 30"]);
    c.wait_state(theirs, "RUNNING");
    c.wait_state(mine, "RUNNING");
    let (code, _, err) = mallory.cli(
        &c,
        &[
            "scontrol",
            "update",
            &format!("JobId={theirs}"),
            "TimeLimit=0:01",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("permission denied"), "{err}");
    let (code, _, err) = mallory.cli(
        &c,
        &[
            "scontrol",
            "update",
            &format!("JobId={mine}"),
            "TimeLimit=1:00:00",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("only an administrator may raise"), "{err}");
    let since = Instant::now();
    assert_eq!(c.wait_done(mine)["state"], "TIMEOUT");
    assert!(
        since.elapsed() < Duration::from_secs(20),
        "ended at its own limit"
    );
    assert_eq!(c.job(theirs)["state"], "RUNNING");

    let users = format!("Users={}", victim.name);
    c.cli_ok(&[
        "scontrol",
        "create",
        "reservation",
        "ReservationName=theirs",
        "StartTime=now+1hour",
        "Duration=10:00",
        "Nodes=gpu01",
        &users,
    ]);
    for args in [
        vec!["scontrol", "delete", "ReservationName=theirs"],
        vec![
            "scontrol",
            "update",
            "ReservationName=theirs",
            "Users=mallory",
        ],
        vec![
            "scontrol",
            "create",
            "reservation",
            "StartTime=now",
            "Duration=10",
            "Nodes=ALL",
            "Users=mallory",
            "Flags=MAINT,IGNORE_JOBS",
        ],
    ] {
        let (code, _, err) = mallory.cli(&c, &args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("only an administrator"), "{args:?}: {err}");
    }
    let show = c.cli_ok(&["scontrol", "show", "reservation"]);
    assert!(
        show.contains("ReservationName=theirs") && show.contains(&users),
        "unchanged: {show}"
    );
    assert_eq!(show.matches("ReservationName=").count(), 1, "{show}");
    let (code, _, err) = mallory.cli(&c, &["sbatch", "--reservation=theirs", "--wrap=true"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Access denied to requested reservation"),
        "{err}"
    );
    let long = format!("--reservation={}", "r".repeat(5000));
    let (code, _, err) = mallory.cli(&c, &["sbatch", &long, "--wrap=true"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not a reservation name") && err.len() < 500,
        "{err}"
    );
    let (code, _, err) = mallory.cli(&c, &["sbatch", "--reservation=x\u{1b}[2J", "--wrap=true"]);
    assert_eq!(code, 1);
    assert!(!err.contains('\u{1b}'), "{err:?}");
    c.cli_ok(&["scancel", &theirs.to_string()]);
}

/// What a node says jobs use (`sstat`) counts only for jobs running on that node: cpu02,
/// with its own credential, cannot make a job on cpu01 look busy or large.
#[test]
fn a_node_reports_usage_only_for_jobs_it_runs() {
    let c = Cluster::start(Options::default());
    let id: u64 = c.sbatch(&["-w", "cpu01", "-o", "/dev/null", "--wrap=sleep 60"]);
    c.wait_state(id, "RUNNING");
    let ids = id.to_string();
    let shown = |c: &Cluster| {
        c.cli_ok(&[
            "sstat",
            "-j",
            &ids,
            "-P",
            "-n",
            "-o",
            "JobID,MaxRSS,MaxRSSNode,NNodes",
        ])
    };
    let since = Instant::now();
    while shown(&c).trim().is_empty() {
        assert!(since.elapsed() < Duration::from_secs(30), "no usage seen");
        std::thread::sleep(Duration::from_millis(200));
    }
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 300;
    let cpu02 = std::fs::read(c.root().join("credential-cpu02")).unwrap();
    let token = agent_token(&cpu02, "cpu02", later);
    let (tcp, trust) = (c.tcp(), c.trust());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let channel = gantry_api::client::connect(&tcp, &trust).await.unwrap();
        let with = gantry_api::client::WithToken::new(Some(&token)).unwrap();
        let mut client = api::agent_link_client::AgentLinkClient::with_interceptor(channel, with);
        let forged = (0..10_000).map(|i| api::NodeUsage {
            job_id: id,
            step_id: (i > 0).then_some(i),
            cpu_s: 1e9,
            rss_mb: 999_999,
            tasks: 64,
        });
        client
            .heartbeat(api::HeartbeatRequest {
                node: "cpu02".into(),
                usage: forged.collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let out = shown(&c);
    assert_eq!(out.lines().count(), 1, "only the batch script: {out}");
    assert!(out.contains("|cpu01|1"), "cpu01's own reading alone: {out}");
    assert!(!out.contains("999999"), "{out}");
    c.cli_ok(&["scancel", &ids]);
}
