//! `scontrol`'s verbs that change jobs: `hold`, `release`, `requeue`, `requeuehold`,
//! `suspend`, `resume`, `update` (`gantry control`); and reservations: `create
//! reservation`, `update ReservationName=`, `delete ReservationName=` (in
//! `reservations.rs`).
//! `scontrol show` is `gantry show` (in `client.rs`).

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use gantry_api as api;
use gantry_kernel::units::parse_duration;

use crate::client::{client, refused, Conn};

#[derive(Args, Debug)]
pub struct ControlArgs {
    #[command(subcommand)]
    pub action: ControlAction,
}

#[derive(Subcommand, Debug)]
pub enum ControlAction {
    /// Keep pending jobs from starting (ids separated by commas or spaces; an array's id
    /// holds all its pending tasks). An admin's hold only an admin may release.
    Hold {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Let held jobs start again.
    Release {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Put running jobs back in the queue: their processes end and they run again
    /// later.
    Requeue {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Requeue, then hold (until `scontrol release`).
    Requeuehold {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Stop running jobs: their cores and GPUs go to others, their memory stays (admin).
    Suspend {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Let suspended jobs run again, once their own cores are free (admin).
    Resume {
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Change a job: `update JobId=12 TimeLimit=30:00 Nice=50 Dependency=afterok:11
    /// Partition=gpu NumNodes=2 Comment="..."`. The owner may lower a pending or running
    /// job's time limit, raise a pending job's nice, change its dependencies, partition
    /// and node count, and any comment; the rest (QOS, raising a limit) is for admins.
    Update {
        /// KEY=VALUE pairs (keys in any case): JobId (required), TimeLimit, Nice, QOS,
        /// Dependency, Partition, NumNodes, Comment; or ReservationName and the
        /// reservation's fields.
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// Create an advance reservation (admin): `create reservation StartTime=now+1hour
    /// Duration=2:00:00 Nodes=cpu[01-02] Users=root Flags=MAINT`. Jobs outside it do not
    /// start where they would run into it; jobs with `--reservation=NAME` run inside it.
    Create {
        /// `reservation` (or `res`).
        #[arg(value_parser = ["reservation", "res"])]
        what: String,
        /// KEY=VALUE pairs: ReservationName, StartTime (Slurm's time forms), EndTime or
        /// Duration, Nodes (a host list or ALL) or NodeCnt, PartitionName, Users,
        /// Accounts, Flags (MAINT, IGNORE_JOBS, OVERLAP).
        #[arg(required = true)]
        fields: Vec<String>,
    },
    /// Delete an advance reservation (admin): `delete ReservationName=NAME`.
    Delete {
        #[arg(required = true)]
        what: Vec<String>,
    },
}

/// Job ids from `12,13 14` (array ids stand for their tasks).
fn job_ids(words: &[String]) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for part in words.iter().flat_map(|w| w.split(',')) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let id = part
            .strip_prefix("jobid=")
            .or_else(|| part.strip_prefix("JobId="))
            .unwrap_or(part);
        ids.push(
            id.parse()
                .map_err(|_| anyhow!("Invalid job id specified: {part}"))?,
        );
    }
    if ids.is_empty() {
        bail!("give the job ids");
    }
    Ok(ids)
}

pub async fn control(conn: &Conn, a: ControlArgs) -> Result<()> {
    use api::update_job_request::Change;
    let (ids, change) = match a.action {
        ControlAction::Hold { jobs } => (job_ids(&jobs)?, Change::Hold(true)),
        ControlAction::Release { jobs } => (job_ids(&jobs)?, Change::Release(true)),
        ControlAction::Requeue { jobs } => (job_ids(&jobs)?, Change::Requeue(false)),
        ControlAction::Requeuehold { jobs } => (job_ids(&jobs)?, Change::Requeue(true)),
        ControlAction::Suspend { jobs } => (job_ids(&jobs)?, Change::Suspend(true)),
        ControlAction::Resume { jobs } => (job_ids(&jobs)?, Change::Resume(true)),
        ControlAction::Update { fields } => {
            let names_reservation = fields.iter().any(|w| {
                w.split_once('=').is_some_and(|(k, _)| {
                    k.eq_ignore_ascii_case("reservationname")
                        || k.eq_ignore_ascii_case("reservation")
                })
            });
            if names_reservation {
                return crate::reservations::update(conn, &fields).await;
            }
            let (ids, f) = update_fields(&fields)?;
            (ids, Change::Fields(f))
        }
        ControlAction::Create { what: _, fields } => {
            return crate::reservations::create(conn, &fields).await
        }
        ControlAction::Delete { what } => return crate::reservations::delete(conn, &what).await,
    };
    let mut c = client(conn).await?;
    c.update_job(api::UpdateJobRequest {
        job_ids: ids,
        change: Some(change),
    })
    .await
    .map_err(refused)?;
    Ok(())
}

/// `JobId=12 TimeLimit=1:00:00 Comment=text` → the ids and the fields to set.
fn update_fields(words: &[String]) -> Result<(Vec<u64>, api::JobFields)> {
    let mut ids = Vec::new();
    let mut f = api::JobFields::default();
    for w in words {
        let (key, value) = w
            .split_once('=')
            .ok_or_else(|| anyhow!("'{w}' is not KEY=VALUE (e.g. TimeLimit=30:00)"))?;
        match key.to_ascii_lowercase().as_str() {
            "jobid" | "job" => ids.extend(job_ids(&[value.to_string()])?),
            "timelimit" => {
                f.time_limit_s = Some(
                    match parse_duration(value).map_err(|e| anyhow!("TimeLimit: {e}"))? {
                        Some(0) => bail!("TimeLimit: a time limit of 0 is not allowed"),
                        Some(s) => s,
                        None => api::TIME_UNLIMITED,
                    },
                )
            }
            "comment" => f.comment = Some(value.to_string()),
            "nice" => {
                f.nice = Some(
                    value
                        .parse()
                        .map_err(|_| anyhow!("Nice: '{value}' is not a number"))?,
                )
            }
            "qos" => f.qos = Some(value.to_string()),
            "dependency" => f.dependency = Some(value.to_string()),
            "partition" => f.partition = Some(value.to_string()),
            "numnodes" => {
                // Slurm's MIN[-MAX]: Gantry allocates exactly MIN.
                let min = value.split('-').next().unwrap_or(value);
                f.num_nodes = Some(
                    min.parse()
                        .map_err(|_| anyhow!("NumNodes: '{value}' is not a node count"))?,
                )
            }
            other => bail!(
                "Update of this parameter is not supported: {other} (Gantry updates TimeLimit, Nice, QOS, Dependency, Partition, NumNodes and Comment)"
            ),
        }
    }
    if ids.is_empty() {
        bail!("name the job: JobId=ID");
    }
    if f == api::JobFields::default() {
        bail!("nothing to change: give TimeLimit=, Nice=, QOS=, Dependency=, Partition=, NumNodes= or Comment=");
    }
    Ok((ids, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_takes_slurm_key_value_pairs() {
        let w = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (ids, f) = update_fields(&w(&["JobId=12", "TimeLimit=30:00", "comment=a b"])).unwrap();
        assert_eq!(ids, vec![12]);
        assert_eq!(f.time_limit_s, Some(1800));
        assert_eq!(f.comment.as_deref(), Some("a b"));
        let (_, f) = update_fields(&w(&["jobid=3", "TimeLimit=UNLIMITED"])).unwrap();
        assert_eq!(f.time_limit_s, Some(api::TIME_UNLIMITED));
        assert!(update_fields(&w(&["JobId=3"])).is_err());
        assert!(update_fields(&w(&["TimeLimit=5"])).is_err());
        let (_, f) = update_fields(&w(&["JobId=3", "NumNodes=2-4", "Partition=gpu"])).unwrap();
        assert_eq!(
            (f.num_nodes, f.partition.as_deref()),
            (Some(2), Some("gpu"))
        );
        assert!(update_fields(&w(&["JobId=3", "NumNodes=many"])).is_err());
        assert!(update_fields(&w(&["JobId=3", "Features=x"])).is_err());
        assert_eq!(job_ids(&w(&["12,13", "14"])).unwrap(), vec![12, 13, 14]);
    }
}
