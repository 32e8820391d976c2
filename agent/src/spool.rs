//! The agent's spool: the one directory the agent writes as root. It holds each run's
//! batch script (readable by the job's user and root only) and a record of each run's
//! process group, so a restarted agent can end what the previous one started.
//!
//! Every path here is the agent's own (`job<ID>.<RUN>.sh`, `job<ID>.<RUN>.pgid`, and
//! `step<ID>.<STEP>.<TASK>.pgid` for a step's task, in a directory only root may
//! write); nothing a user named is ever opened here.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One run of a job: the job id and its requeue count at launch.
pub type RunKey = (u64, u32);

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot create the spool {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the spool {path} is not safe: {why}. It must be a directory owned by the agent's \
         user that no one else may write, in directories no one else may write"
    )]
    Unsafe { path: String, why: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The spool directory, checked once at start.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// A run's process group as recorded at launch: its leader's pid and the leader's start
/// time (clock ticks after boot, `/proc/PID/stat` field 22), which tells a recycled pid
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRecord {
    pub pgid: i32,
    pub start_ticks: u64,
}

fn unsafe_dir(path: &Path, why: impl Into<String>) -> SpoolError {
    SpoolError::Unsafe {
        path: path.display().to_string(),
        why: why.into(),
    }
}

impl Spool {
    /// Creates the directory if needed and checks that no one but this user can change
    /// what is in it: it is ours, not a symlink, written by no group or other user, and
    /// each directory above it is owned by us or root and writable by no one else
    /// (sticky directories such as /tmp excepted). Sets it to 0711: users may reach
    /// their own scripts by name but not list the others.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|source| SpoolError::Create {
            path: dir.display().to_string(),
            source,
        })?;
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let meta = std::fs::symlink_metadata(&dir).map_err(|source| SpoolError::Create {
            path: dir.display().to_string(),
            source,
        })?;
        if meta.file_type().is_symlink() || !meta.is_dir() {
            return Err(unsafe_dir(&dir, "it is not a plain directory"));
        }
        if meta.uid() != me {
            return Err(unsafe_dir(
                &dir,
                format!("it belongs to uid {}, not {me}", meta.uid()),
            ));
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(
            |source| SpoolError::Create {
                path: dir.display().to_string(),
                source,
            },
        )?;
        let mut above = dir.parent();
        while let Some(p) = above {
            let m = std::fs::metadata(p).map_err(|source| SpoolError::Create {
                path: p.display().to_string(),
                source,
            })?;
            let sticky = m.mode() & 0o1000 != 0;
            if (m.uid() != me && m.uid() != 0) || (m.mode() & 0o022 != 0 && !sticky) {
                return Err(unsafe_dir(
                    &dir,
                    format!(
                        "{} (uid {}, mode {:o}) may be changed by another user",
                        p.display(),
                        m.uid(),
                        m.mode() & 0o7777
                    ),
                ));
            }
            above = p.parent();
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn script_path(&self, (job, run): RunKey) -> PathBuf {
        self.dir.join(format!("job{job}.{run}.sh"))
    }

    fn group_path(&self, (job, run): RunKey) -> PathBuf {
        self.dir.join(format!("job{job}.{run}.pgid"))
    }

    /// Writes a run's batch script, mode 0600, owned by `owner` (uid, gid) when given:
    /// created fresh (never through a link left in its place), and handed over through
    /// the open file, not by name.
    pub fn write_script(
        &self,
        run: RunKey,
        script: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<PathBuf, SpoolError> {
        let path = self.script_path(run);
        let err = |source| SpoolError::Write {
            path: path.display().to_string(),
            source,
        };
        // A file left by an earlier agent for the same run.
        let _ = std::fs::remove_file(&path);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(err)?;
        f.write_all(script.as_bytes()).map_err(err)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(err)?;
        }
        Ok(path)
    }

    /// Records a run's process group (see [`GroupRecord`]).
    pub fn record_group(&self, run: RunKey, pgid: i32) -> Result<(), SpoolError> {
        let path = self.group_path(run);
        let start = start_ticks(pgid).unwrap_or(0);
        std::fs::write(&path, format!("{pgid} {start}\n")).map_err(|source| SpoolError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// Removes what the spool holds for a run.
    pub fn forget(&self, run: RunKey) {
        let _ = std::fs::remove_file(self.group_path(run));
        let _ = std::fs::remove_file(self.script_path(run));
    }

    fn task_path(&self, (job, step, task): TaskKey) -> PathBuf {
        self.dir.join(format!("step{job}.{step}.{task}.pgid"))
    }

    /// Records a step task's process group (see [`GroupRecord`]).
    pub fn record_task(&self, task: TaskKey, pgid: i32) -> Result<(), SpoolError> {
        let path = self.task_path(task);
        let start = start_ticks(pgid).unwrap_or(0);
        std::fs::write(&path, format!("{pgid} {start}\n")).map_err(|source| SpoolError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn forget_task(&self, task: TaskKey) {
        let _ = std::fs::remove_file(self.task_path(task));
    }

    /// Step tasks recorded by an earlier agent, with their process groups where the
    /// record is readable; the records are removed.
    pub fn recorded_tasks(&self) -> Vec<(TaskKey, Option<GroupRecord>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(task) = parse_task_name(&name) {
                let record = std::fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|t| parse_record(&t));
                let _ = std::fs::remove_file(entry.path());
                out.push((task, record));
            }
        }
        out.sort_by_key(|(t, _)| *t);
        out
    }

    /// Runs recorded by an earlier agent, with their process groups where the record is
    /// readable. Scripts without a record are removed.
    pub fn recorded(&self) -> Vec<(RunKey, Option<GroupRecord>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(run) = parse_name(&name, ".pgid") {
                let record = std::fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|t| parse_record(&t));
                out.push((run, record));
            } else if parse_name(&name, ".sh").is_some() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        out.sort_by_key(|(r, _)| *r);
        out
    }
}

/// One task of a job's step: job id, step id, task id.
pub type TaskKey = (u64, u32, u32);

/// `step<ID>.<STEP>.<TASK>.pgid` → (ID, STEP, TASK).
fn parse_task_name(name: &str) -> Option<TaskKey> {
    let mut f = name.strip_prefix("step")?.strip_suffix(".pgid")?.split('.');
    let key = (
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    );
    f.next().is_none().then_some(key)
}

/// `job<ID>.<RUN><suffix>` → (ID, RUN).
fn parse_name(name: &str, suffix: &str) -> Option<RunKey> {
    let (job, run) = name
        .strip_prefix("job")?
        .strip_suffix(suffix)?
        .split_once('.')?;
    Some((job.parse().ok()?, run.parse().ok()?))
}

fn parse_record(text: &str) -> Option<GroupRecord> {
    let mut f = text.split_whitespace();
    let pgid = f.next()?.parse().ok().filter(|&p: &i32| p > 1)?;
    let start_ticks = f.next()?.parse().ok()?;
    Some(GroupRecord { pgid, start_ticks })
}

/// Field 22 of `/proc/PID/stat` (start time in clock ticks after boot), and field 6
/// (the session id).
fn stat_fields(pid: i32) -> Option<(u64, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let session = fields.get(6 - 3)?.parse().ok()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((start, session))
}

fn start_ticks(pid: i32) -> Option<u64> {
    stat_fields(pid).map(|(s, _)| s)
}

impl GroupRecord {
    /// Whether the recorded group is still the one the agent started: its leader is
    /// alive with the same start time and still leads its own session. A record that
    /// names anything else (a recycled pid, another job's group, a forged file) is not.
    pub fn still_ours(&self) -> bool {
        stat_fields(self.pgid)
            .is_some_and(|(start, session)| start == self.start_ticks && session == self.pgid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_records_parse_only_in_their_own_form() {
        assert_eq!(parse_name("job12.3.pgid", ".pgid"), Some((12, 3)));
        assert_eq!(parse_name("job12.pgid", ".pgid"), None);
        assert_eq!(parse_name("job12.3.sh", ".pgid"), None);
        assert_eq!(parse_task_name("step12.0.7.pgid"), Some((12, 0, 7)));
        assert_eq!(parse_task_name("step12.0.pgid"), None);
        assert_eq!(parse_task_name("step12.0.7.1.pgid"), None);
        assert_eq!(parse_name("step12.0.pgid", ".pgid"), None);
        assert_eq!(
            parse_record("4242 99\n"),
            Some(GroupRecord {
                pgid: 4242,
                start_ticks: 99
            })
        );
        assert_eq!(parse_record("1 99"), None, "never init");
        assert_eq!(parse_record("-5 99"), None);
        assert_eq!(parse_record("4242"), None);
    }

    #[test]
    fn a_record_holds_only_for_the_process_it_was_taken_of() {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let (start, _) = stat_fields(me).expect("our own stat");
        // The test process does not lead its own session: not a job's group.
        let record = GroupRecord {
            pgid: me,
            start_ticks: start,
        };
        let leads = stat_fields(me).is_some_and(|(_, s)| s == me);
        assert_eq!(record.still_ours(), leads);
        let wrong = GroupRecord {
            pgid: me,
            start_ticks: start + 1,
        };
        assert!(!wrong.still_ours());
    }

    #[test]
    fn a_spool_others_may_write_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Spool::open(&open.join("spool")).unwrap_err().to_string();
        assert!(err.contains("may be changed by another user"), "{err}");
        let ok = Spool::open(&root.path().join("spool")).unwrap();
        let mode = std::fs::metadata(ok.dir()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o711);
        let script = ok.write_script((1, 0), "#!/bin/sh\n", None).unwrap();
        let mode = std::fs::metadata(&script).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A link planted where the script goes is replaced, never followed.
        let target = root.path().join("target");
        std::fs::write(&target, "untouched").unwrap();
        std::fs::remove_file(&script).unwrap();
        std::os::unix::fs::symlink(&target, &script).unwrap();
        ok.write_script((1, 0), "#!/bin/sh\necho\n", None).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    }
}
