//! Advance reservations as admins manage them (`scontrol create|update|delete
//! reservation`) and everyone reads them. The kernel checks a request and picks its
//! nodes; this logs the resolved record (nodes by name) before applying it, and deletes
//! reservations whose end has passed, as Slurm does.

use gantry_api as api;
use gantry_kernel::reservation::{
    AdvanceReservation, NodeSelection, ReservationError, ReservationFlags, ReservationRequest,
    ResvId, MAX_LISTED, MAX_NAME_BYTES,
};
use gantry_kernel::units::expand_hostlist_at_most;
use gantry_kernel::Time;

use super::{invalid, quoted, Caller, Controller, Refusal};
use crate::store::{Entry, ReservationRecord};

/// The longest user or account name a reservation may list.
const MAX_LISTED_NAME_BYTES: usize = 64;

impl Controller {
    /// A logged record as the kernel's reservation (nodes by id).
    pub(super) fn reservation_from_record(
        &self,
        r: &ReservationRecord,
    ) -> Result<AdvanceReservation, Refusal> {
        let cluster = self.sched.cluster();
        let nodes = r
            .nodes
            .iter()
            .map(|n| self.node_id(n))
            .collect::<Result<Vec<_>, _>>()?;
        let partition = match &r.partition {
            Some(p) => Some(
                cluster
                    .partition_by_name(p)
                    .ok_or_else(|| invalid(format!("unknown partition '{p}'")))?,
            ),
            None => None,
        };
        Ok(AdvanceReservation {
            name: r.name.clone(),
            start: r.start,
            end: r.end,
            nodes,
            partition,
            users: r.users.clone(),
            accounts: r.accounts.clone(),
            flags: r.flags.into(),
        })
    }

    fn record_of(&self, r: &AdvanceReservation) -> ReservationRecord {
        let cluster = self.sched.cluster();
        ReservationRecord {
            name: r.name.clone(),
            start: r.start,
            end: r.end,
            nodes: r
                .nodes
                .iter()
                .map(|&n| cluster.node(n).name.clone())
                .collect(),
            partition: r.partition.map(|p| cluster.partition(p).name.clone()),
            users: r.users.clone(),
            accounts: r.accounts.clone(),
            flags: r.flags.into(),
        }
    }

    /// Creates, updates or deletes a reservation (admins only); answers with the
    /// reservation as it now is (none after a delete).
    pub fn change_reservation(
        &mut self,
        who: &Caller,
        change: api::reservation_change::Change,
        now: Time,
    ) -> Result<Vec<api::ReservationInfo>, Refusal> {
        use api::reservation_change::Change;
        if !who.admin {
            tracing::warn!(caller = %who.user, "refused: reservation change by a non-admin");
            return Err(Refusal::Denied(
                "Access/permission denied: only an administrator may create, update or delete reservations"
                    .into(),
            ));
        }
        let (fields, replacing) = match change {
            Change::Delete(name) => {
                let Some(id) = self.sched.reservation_by_name(&name) else {
                    return Err(Refusal::NotFound(
                        ReservationError::NotFound(quoted(&name)).to_string(),
                    ));
                };
                self.log(now, &[Entry::ReservationDeleted { name: name.clone() }])?;
                self.sched.delete_reservation(&name).map_err(invalid)?;
                // Its running jobs run on, to their own limits.
                for j in self.running_in(id) {
                    self.send_time_limit(j, now);
                }
                tracing::info!(reservation = %name, by = %who.user, "reservation deleted");
                return Ok(Vec::new());
            }
            Change::Create(f) => (f, None),
            Change::Update(f) => {
                let id = self.sched.reservation_by_name(&f.name).ok_or_else(|| {
                    Refusal::NotFound(ReservationError::NotFound(quoted(&f.name)).to_string())
                })?;
                (f, Some(id))
            }
        };
        let req = self.reservation_request(&fields, replacing, who)?;
        let planned = self
            .sched
            .plan_reservation(&req, now, replacing)
            .map_err(|e| match e {
                ReservationError::NotFound(_) => Refusal::NotFound(e.to_string()),
                ReservationError::Busy(_) | ReservationError::NameTaken(_) => {
                    Refusal::Conflict(e.to_string())
                }
                ReservationError::Invalid(_) => Refusal::Invalid(e.to_string()),
            })?;
        let record = self.record_of(&planned);
        self.log(now, &[Entry::ReservationSet(Box::new(record))])?;
        let id = self.sched.set_reservation(planned);
        // Its running jobs end when it now ends.
        for j in self.running_in(id) {
            self.send_time_limit(j, now);
        }
        tracing::info!(reservation = %req.name, by = %who.user, "reservation set");
        Ok(self
            .sched
            .reservation(id)
            .map(|r| self.reservation_info(r, now))
            .into_iter()
            .collect())
    }

    /// The request `f` makes: for an update, the reservation as it is with `f`'s fields
    /// over it (a new start keeps its duration unless an end or duration is given).
    fn reservation_request(
        &self,
        f: &api::ReservationFields,
        replacing: Option<ResvId>,
        who: &Caller,
    ) -> Result<ReservationRequest, Refusal> {
        let cluster = self.sched.cluster();
        let old = replacing.and_then(|id| self.sched.reservation(id));
        let name = match (&old, f.name.is_empty()) {
            (Some(o), _) => o.name.clone(),
            (None, false) => f.name.clone(),
            // Slurm names an unnamed reservation after its creator.
            (None, true) => (1..)
                .map(|i| format!("{}_{i}", who.user))
                .find(|n| self.sched.reservation_by_name(n).is_none())
                .expect("some suffix is free"),
        };
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!(
                "Reservation request invalid: a name is at most {MAX_NAME_BYTES} bytes"
            )));
        }
        let start =
            match (f.start_time, &old) {
                (Some(t), _) => t,
                (None, Some(o)) => o.start,
                (None, None) => return Err(invalid(
                    "Reservation request invalid: StartTime must be given (StartTime=now for now)",
                )),
            };
        let end = match (f.end_time, f.duration_s, &old) {
            (Some(_), Some(_), _) => {
                return Err(invalid(
                    "Reservation request invalid: give EndTime or Duration, not both",
                ))
            }
            (Some(e), None, _) => e,
            (None, Some(d), _) if d > 0 => start.saturating_add(d),
            (None, Some(_), _) => {
                return Err(invalid(
                    "Reservation request invalid: Duration must be positive",
                ))
            }
            (None, None, Some(o)) => start.saturating_add(o.end - o.start),
            (None, None, None) => {
                return Err(invalid(
                    "Reservation request invalid: EndTime or Duration must be given",
                ))
            }
        };
        let partition = match (&f.partition, &old) {
            (Some(p), _) => Some(cluster.partition_by_name(p).ok_or_else(|| {
                invalid(format!(
                    "Reservation request invalid: unknown partition '{}'",
                    quoted(p)
                ))
            })?),
            (None, Some(o)) => o.partition,
            (None, None) => None,
        };
        let nodes = match (&f.nodes, f.node_count, &old) {
            (Some(_), Some(_), _) => {
                return Err(invalid(
                    "Reservation request invalid: give Nodes or NodeCnt, not both",
                ))
            }
            (Some(list), None, _) if list.eq_ignore_ascii_case("ALL") => NodeSelection::All,
            (Some(list), None, _) => {
                let names = expand_hostlist_at_most(list, cluster.nodes.len().max(1))
                    .map_err(|e| invalid(format!("Reservation request invalid: Nodes: {e}")))?;
                let ids = names
                    .iter()
                    .map(|n| {
                        cluster.node_by_name(n).ok_or_else(|| {
                            invalid(format!("invalid node name specified: {}", quoted(n)))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                NodeSelection::Named(ids)
            }
            (None, Some(c), _) => NodeSelection::Count(c),
            (None, None, Some(o)) => NodeSelection::Named(o.nodes.clone()),
            (None, None, None) => {
                return Err(invalid(
                    "Reservation request invalid: Nodes or NodeCnt must be given",
                ))
            }
        };
        let list = |given: &Option<String>, old: Option<&Vec<String>>, what: &str| {
            let Some(text) = given else {
                return Ok(old.cloned().unwrap_or_default());
            };
            let names: Vec<String> = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if names.len() > MAX_LISTED {
                return Err(invalid(format!(
                    "Reservation request invalid: at most {MAX_LISTED} {what}"
                )));
            }
            if let Some(bad) = names.iter().find(|n| {
                n.len() > MAX_LISTED_NAME_BYTES
                    || n.starts_with('-')
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c))
            }) {
                return Err(invalid(format!(
                    "Reservation request invalid: '{}' is not a name {what} may list (negated lists are not supported)",
                    quoted(bad)
                )));
            }
            Ok(names)
        };
        let users = list(&f.users, old.map(|o| &o.users), "users")?;
        let accounts = list(&f.accounts, old.map(|o| &o.accounts), "accounts")?;
        let flags = match (&f.flags, &old) {
            (Some(text), _) => ReservationFlags::parse(text).map_err(invalid)?,
            (None, Some(o)) => o.flags,
            (None, None) => ReservationFlags::default(),
        };
        Ok(ReservationRequest {
            name,
            start,
            end,
            nodes,
            partition,
            users,
            accounts,
            flags,
        })
    }

    /// Reservations by start time (`name` empty: all; else that one, or NotFound).
    pub fn reservation_infos(
        &self,
        name: &str,
        now: Time,
    ) -> Result<Vec<api::ReservationInfo>, Refusal> {
        let all = self.sched.reservations();
        let shown: Vec<api::ReservationInfo> = all
            .iter()
            .filter(|(_, r)| name.is_empty() || r.name == name)
            .map(|(_, r)| self.reservation_info(r, now))
            .collect();
        if !name.is_empty() && shown.is_empty() {
            return Err(Refusal::NotFound(format!(
                "Reservation {} not found",
                quoted(name)
            )));
        }
        Ok(shown)
    }

    fn reservation_info(&self, r: &AdvanceReservation, now: Time) -> api::ReservationInfo {
        let cluster = self.sched.cluster();
        api::ReservationInfo {
            name: r.name.clone(),
            start_time: r.start,
            end_time: r.end,
            nodes: r
                .nodes
                .iter()
                .map(|&n| cluster.node(n).name.clone())
                .collect(),
            cores: r
                .nodes
                .iter()
                .map(|&n| cluster.node(n).topology.core_count())
                .sum(),
            partition: r
                .partition
                .map(|p| cluster.partition(p).name.clone())
                .unwrap_or_default(),
            users: r.users.clone(),
            accounts: r.accounts.clone(),
            flags: r.flags.display(),
            active: r.is_active(now),
        }
    }

    /// Deletes (logged) the reservations whose end has passed.
    pub(super) fn end_reservations(&mut self, now: Time) -> Result<(), Refusal> {
        for name in self.sched.ended_reservations(now) {
            self.log(now, &[Entry::ReservationDeleted { name: name.clone() }])?;
            self.sched.delete_reservation(&name).map_err(invalid)?;
            tracing::info!(reservation = %name, "reservation ended");
        }
        Ok(())
    }

    /// The names of the reservations open on node `n` now, and whether one of them is
    /// for maintenance.
    pub(super) fn node_reservations(
        &self,
        n: gantry_kernel::cluster::NodeId,
        now: Time,
    ) -> (Vec<String>, bool) {
        let mut maint = false;
        let names = self
            .sched
            .active_reservations_on(n, now)
            .map(|r| {
                maint |= r.flags.maint;
                r.name.clone()
            })
            .collect();
        (names, maint)
    }

    /// The running jobs inside reservation `id`.
    fn running_in(&self, id: ResvId) -> Vec<gantry_kernel::JobId> {
        self.sched
            .running()
            .iter()
            .copied()
            .filter(|&j| self.sched.job(j).is_some_and(|j| j.reservation == Some(id)))
            .collect()
    }
}
