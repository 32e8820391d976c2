//! Starting a job's process as its user. Between fork and exec the child, in this order:
//! becomes a session and process-group leader, binds itself to its CPUs, drops to the
//! job's uid, gid and groups (when the agent is root), takes the submitter's umask,
//! enters the working directory, and opens its output and error files — so every path a
//! user named is reached with that user's rights only, never the agent's. Output files
//! are opened with `O_NOFOLLOW` and are never chowned.
//!
//! A step that fails is told back through a pipe, so the job's failure says which.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Who the child becomes.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's, from the node's group database).
    pub groups: Vec<libc::gid_t>,
}

/// Everything the child does before exec, prepared before the fork (the child may only
/// call async-signal-safe functions, so no allocation happens there).
#[derive(Debug)]
pub struct ChildSetup {
    /// CPUs to bind to (empty: no binding).
    pub cpus: Vec<usize>,
    /// `None`: stay who the agent is (an agent not running as root).
    pub identity: Option<Identity>,
    pub umask: u32,
    pub workdir: String,
    pub output: Output,
    /// Make the child's standard input (a pseudo-terminal's slave) its controlling
    /// terminal, after it became a session leader.
    pub controlling_tty: bool,
}

/// Where the child's standard streams go.
#[derive(Debug, Clone)]
pub enum Output {
    /// Files the child opens as its user (a batch script's); stdin is `/dev/null`.
    Files {
        stdout: String,
        /// `None`: the same file as stdout.
        stderr: Option<String>,
        /// Append to them (`--open-mode=append`) instead of truncating.
        append: bool,
    },
    /// What the caller set on the command (a step task's pipes).
    AsSet,
}

/// The step between fork and exec that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    Session = 1,
    Binding = 2,
    Identity = 3,
    Workdir = 4,
    Stdout = 5,
    Stderr = 6,
    Terminal = 7,
}

impl Stage {
    fn from_byte(b: u8) -> Option<Self> {
        [
            Self::Session,
            Self::Binding,
            Self::Identity,
            Self::Workdir,
            Self::Stdout,
            Self::Stderr,
            Self::Terminal,
        ]
        .into_iter()
        .find(|s| *s as u8 == b)
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("the {what} '{}' holds a NUL byte", s.escape_debug()))
}

/// The user's supplementary groups by the node's group database, looked up by the name
/// that `uid` has on this node (never by the name a submission claims); just `gid` if the
/// node does not know the uid.
pub fn groups_of(uid: u32, gid: u32) -> Vec<libc::gid_t> {
    use nix::unistd::{getgrouplist, Gid, Uid, User};
    let only_primary = || vec![gid];
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return only_primary();
    };
    let Ok(name) = CString::new(user.name) else {
        return only_primary();
    };
    getgrouplist(&name, Gid::from_raw(gid))
        .map(|groups| groups.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|_| only_primary())
}

/// Writes `stage` to the report pipe and returns the error that made the step fail.
///
/// # Safety
/// Called in the child between fork and exec: only reads errno and calls write(2).
unsafe fn failed(report: libc::c_int, stage: Stage) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    let b = stage as u8;
    libc::write(report, (&b as *const u8).cast(), 1);
    e
}

/// Opens an output file as the process already is, and puts it on `target`.
///
/// # Safety
/// Called in the child between fork and exec: open(2), dup2(2), close(2) only.
unsafe fn open_onto(path: &CString, target: libc::c_int, append: bool) -> Result<(), ()> {
    let mode = if append {
        libc::O_APPEND
    } else {
        libc::O_TRUNC
    };
    let flags =
        libc::O_WRONLY | libc::O_CREAT | mode | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;
    let fd = libc::open(path.as_ptr(), flags, 0o666 as libc::c_uint);
    if fd < 0 {
        return Err(());
    }
    // dup2 leaves the new descriptor without O_CLOEXEC: it survives the exec.
    let rc = libc::dup2(fd, target);
    libc::close(fd);
    if rc < 0 {
        Err(())
    } else {
        Ok(())
    }
}

/// Spawns `cmd` with `setup` applied in the child. `cmd` must not set a working
/// directory, stdout or stderr of its own.
pub fn spawn(mut cmd: Command, setup: &ChildSetup) -> Result<std::process::Child, String> {
    let workdir = cstring("working directory", &setup.workdir)?;
    let (stdout, stderr, append) = match &setup.output {
        Output::Files {
            stdout,
            stderr,
            append,
        } => (
            Some(cstring("output file", stdout)?),
            stderr
                .as_deref()
                .map(|p| cstring("error file", p))
                .transpose()?,
            *append,
        ),
        Output::AsSet => (None, None, false),
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot make a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let report = write_end.as_raw_fd();
    let cpus = setup.cpus.clone();
    let identity = setup.identity.clone();
    let umask = setup.umask as libc::mode_t;
    let controlling_tty = setup.controlling_tty;
    if stdout.is_some() {
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    }
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (setsid, sched_setaffinity, setgroups, setgid,
    // setuid, umask, chdir, open, dup2, close, write, ioctl) on data prepared before the
    // fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(failed(report, Stage::Session));
            }
            if controlling_tty && libc::ioctl(libc::STDIN_FILENO, libc::TIOCSCTTY, 0) < 0 {
                return Err(failed(report, Stage::Terminal));
            }
            if !cpus.is_empty() {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                for &c in &cpus {
                    libc::CPU_SET(c, &mut set);
                }
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(failed(report, Stage::Binding));
                }
            }
            if let Some(id) = &identity {
                if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0
                    || libc::setgid(id.gid) != 0
                    || libc::setuid(id.uid) != 0
                {
                    return Err(failed(report, Stage::Identity));
                }
                // Never back: a job that could regain root would be root.
                if id.uid != 0 && libc::setuid(0) == 0 {
                    return Err(failed(report, Stage::Identity));
                }
            }
            libc::umask(umask);
            if libc::chdir(workdir.as_ptr()) != 0 {
                return Err(failed(report, Stage::Workdir));
            }
            let Some(stdout) = &stdout else {
                return Ok(());
            };
            if open_onto(stdout, libc::STDOUT_FILENO, append).is_err() {
                return Err(failed(report, Stage::Stdout));
            }
            let err = match &stderr {
                Some(path) => open_onto(path, libc::STDERR_FILENO, append),
                None if libc::dup2(libc::STDOUT_FILENO, libc::STDERR_FILENO) < 0 => Err(()),
                None => Ok(()),
            };
            if err.is_err() {
                return Err(failed(report, Stage::Stderr));
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let result = cmd.spawn();
    // The child's copy closed at exec or exit; close ours, so the read below ends.
    drop(write_end);
    let e = match result {
        Ok(child) => return Ok(child),
        Err(e) => e,
    };
    let mut b = 0u8;
    // SAFETY: reads at most one byte into `b` from our own pipe.
    let n = unsafe { libc::read(read_end.as_raw_fd(), (&mut b as *mut u8).cast(), 1) };
    let who = match &setup.identity {
        Some(id) => format!(" as uid {}", id.uid),
        None => String::new(),
    };
    let (out_path, err_path) = match &setup.output {
        Output::Files { stdout, stderr, .. } => {
            (stdout.as_str(), stderr.as_deref().unwrap_or(stdout))
        }
        Output::AsSet => ("", ""),
    };
    Err(match (n == 1).then(|| Stage::from_byte(b)).flatten() {
        Some(Stage::Workdir) => format!(
            "cannot enter the working directory {}{who}: {e}",
            setup.workdir
        ),
        Some(Stage::Stdout) => format!("cannot open the output file {out_path}{who}: {e}"),
        Some(Stage::Stderr) => format!("cannot open the error file {err_path}{who}: {e}"),
        Some(Stage::Identity) => format!("cannot switch to the job's user{who}: {e}"),
        Some(Stage::Binding) => format!("cannot bind the job to its CPUs: {e}"),
        Some(Stage::Session) => format!("cannot start the job's session: {e}"),
        Some(Stage::Terminal) => format!("cannot take the terminal: {e}"),
        None => format!("cannot start {}: {e}", program),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(dir: &std::path::Path, out: &str) -> ChildSetup {
        ChildSetup {
            cpus: Vec::new(),
            identity: None,
            umask: 0o077,
            workdir: dir.display().to_string(),
            output: Output::Files {
                stdout: dir.join(out).display().to_string(),
                stderr: None,
                append: false,
            },
            controlling_tty: false,
        }
    }

    #[test]
    fn groups_come_from_the_uid_on_this_node_and_always_hold_the_primary_group() {
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert!(groups_of(uid, gid).contains(&gid));
        // No such user here: the primary group alone, nothing borrowed from a name.
        assert_eq!(groups_of(4_000_000_000, 4242), vec![4242]);
    }

    #[test]
    fn output_goes_where_asked_with_the_umask_and_never_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "pwd; echo err >&2"]);
        let mut child = spawn(cmd, &setup(dir.path(), "out")).unwrap();
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(text, format!("{}\nerr\n", dir.path().display()));
        let mode = std::fs::metadata(dir.path().join("out"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "created under the submitter's umask");

        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        let err = spawn(Command::new("/bin/true"), &setup(dir.path(), "link")).unwrap_err();
        assert!(err.starts_with("cannot open the output file"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");

        let mut s = setup(dir.path(), "out");
        s.workdir = dir.path().join("nowhere").display().to_string();
        let err = spawn(Command::new("/bin/true"), &s).unwrap_err();
        assert!(
            err.starts_with("cannot enter the working directory"),
            "{err}"
        );
    }
}
