//! Advance reservations in the cycle: jobs outside one never run into its window, jobs
//! inside one start only while it is open and only on its nodes, backfill plans around
//! it, and a request that conflicts with running jobs or other reservations is refused.

mod common;

use common::*;
use gantry_kernel::cluster::NodeId;
use gantry_kernel::job::{JobState, PendingReason, SubmitError};
use gantry_kernel::reservation::{
    NodeSelection, ReservationError, ReservationFlags, ReservationRequest,
};
use gantry_kernel::{
    Backfill, Cluster, JobSpec, ResourceRequest, Scheduler, SchedulerConfig, Time,
};

fn job(user: &str, nodes: u32, limit: Time) -> JobSpec {
    let mut s = JobSpec::new(
        "job",
        user,
        ResourceRequest {
            nodes: Some(nodes),
            tasks: nodes,
            exclusive: true,
            ..ResourceRequest::default()
        },
    );
    s.time_limit = Some(limit);
    s
}

fn request(name: &str, start: Time, end: Time, nodes: NodeSelection) -> ReservationRequest {
    ReservationRequest {
        name: name.into(),
        start,
        end,
        nodes,
        partition: None,
        users: vec!["team".into()],
        accounts: Vec::new(),
        flags: ReservationFlags::default(),
    }
}

fn four_nodes() -> Scheduler {
    scheduler(
        Cluster::homogeneous(4, 4, 16_000),
        SchedulerConfig {
            backfill: Backfill::Easy,
            ..SchedulerConfig::default()
        },
    )
}

fn nodes_of(s: &Scheduler, id: gantry_kernel::JobId) -> Vec<NodeId> {
    let a = s.job(id).unwrap().allocation.as_ref().unwrap();
    a.nodes.iter().map(|n| n.node).collect()
}

#[test]
fn a_job_that_would_run_into_a_maintenance_window_does_not_start_there() {
    let mut s = four_nodes();
    let mut maint = request(
        "maint",
        3_600,
        7_200,
        NodeSelection::Named(vec![NodeId(0), NodeId(1)]),
    );
    maint.flags.maint = true;
    let r = s.plan_reservation(&maint, 0, None).unwrap();
    s.set_reservation(r);

    // Two hours on all four nodes would run into the window: it waits.
    let long_all = s.submit(job("u", 4, 7_200), 0).unwrap()[0];
    // Half an hour on all four ends before the window: it starts (after the long one
    // reserved its place, backfill puts it in front without delaying it).
    let short_all = s.submit(job("u", 4, 1_800), 0).unwrap()[0];
    s.cycle(0);
    assert_eq!(s.job(long_all).unwrap().state, JobState::Pending);
    assert_eq!(s.job(short_all).unwrap().state, JobState::Running);
    let planned = s.planned_starts(0, 100);
    let p = planned.iter().find(|p| p.job == long_all).unwrap();
    assert_eq!(p.start, 7_200, "planned after the window");
    s.job_ended(short_all, 1_000, gantry_kernel::job::JobOutcome::Exited(0))
        .unwrap();
    s.cancel(long_all, 1_000).unwrap();

    // Two hours on two nodes fit beside the window: they go to the unreserved nodes.
    let long_two = s.submit(job("u", 2, 7_200), 1_000).unwrap()[0];
    s.cycle(1_000);
    assert_eq!(s.job(long_two).unwrap().state, JobState::Running);
    assert_eq!(nodes_of(&s, long_two), [NodeId(2), NodeId(3)]);

    // Backfill plans four nodes after the window and after the two-node job.
    let again = s.submit(job("u", 4, 7_200), 1_000).unwrap()[0];
    s.cycle(1_000);
    let planned = s.planned_starts(1_000, 100);
    let p = planned.iter().find(|p| p.job == again).unwrap();
    assert_eq!(p.start, 8_200, "after long_two ends at 1000 + 7200");
}

#[test]
fn a_job_in_a_reservation_starts_when_it_opens_and_only_on_its_nodes() {
    let mut s = four_nodes();
    let r = s
        .plan_reservation(
            &request("gputeam", 100, 5_000, NodeSelection::Named(vec![NodeId(3)])),
            0,
            None,
        )
        .unwrap();
    s.set_reservation(r);
    let mut inside = job("team", 1, 600);
    inside.reservation = Some("gputeam".into());
    let inside = s.submit(inside, 0).unwrap()[0];
    s.cycle(0);
    assert_eq!(s.job(inside).unwrap().reason, PendingReason::Reservation);
    s.cycle(100);
    assert_eq!(s.job(inside).unwrap().state, JobState::Running);
    assert_eq!(nodes_of(&s, inside), [NodeId(3)]);

    // Others fill the rest but not node 3, which the reservation holds until 5000.
    let others: Vec<_> = (0..4)
        .map(|_| s.submit(job("u", 1, 600), 100).unwrap()[0])
        .collect();
    s.cycle(100);
    let running: Vec<_> = others
        .iter()
        .filter(|&&o| s.job(o).unwrap().state == JobState::Running)
        .collect();
    assert_eq!(running.len(), 3, "node 3 is reserved");
    for &o in running {
        assert_ne!(nodes_of(&s, o), [NodeId(3)]);
    }

    // Two more in the reservation: one node, one at a time.
    let mut second = job("team", 1, 600);
    second.reservation = Some("gputeam".into());
    let second = s.submit(second, 100).unwrap()[0];
    s.cycle(100);
    assert_eq!(s.job(second).unwrap().state, JobState::Pending);

    // Deleted: its waiting jobs stay, and say why.
    s.delete_reservation("gputeam").unwrap();
    s.cycle(200);
    assert_eq!(
        s.job(second).unwrap().reason,
        PendingReason::ReservationDeleted
    );
    assert_eq!(s.job(inside).unwrap().state, JobState::Running);
}

#[test]
fn only_the_users_and_accounts_it_names_may_use_a_reservation() {
    let mut s = four_nodes();
    let r = s
        .plan_reservation(&request("r", 0, 600, NodeSelection::Count(1)), 0, None)
        .unwrap();
    s.set_reservation(r);
    let mut stranger = job("mallory", 1, 60);
    stranger.reservation = Some("r".into());
    assert!(matches!(
        s.submit(stranger, 0),
        Err(SubmitError::ReservationAccess(_))
    ));
    let mut typo = job("team", 1, 60);
    typo.reservation = Some("nosuch".into());
    assert!(matches!(
        s.submit(typo, 0),
        Err(SubmitError::UnknownReservation(_))
    ));
}

#[test]
fn reservations_do_not_take_busy_or_reserved_nodes() {
    let mut s = four_nodes();
    let running = s.submit(job("u", 1, 10_000), 0).unwrap()[0];
    s.cycle(0);
    let busy = nodes_of(&s, running)[0];
    let over_job = request("a", 600, 1_200, NodeSelection::Named(vec![busy]));
    assert!(matches!(
        s.plan_reservation(&over_job, 0, None),
        Err(ReservationError::Busy(_))
    ));
    let mut ignoring = over_job.clone();
    ignoring.flags.ignore_jobs = true;
    assert!(s.plan_reservation(&ignoring, 0, None).is_ok());

    // NodeCnt picks nodes the running job does not hold.
    let three = s
        .plan_reservation(&request("b", 600, 1_200, NodeSelection::Count(3)), 0, None)
        .unwrap();
    assert!(!three.nodes.contains(&busy));
    s.set_reservation(three);
    assert!(matches!(
        s.plan_reservation(&request("c", 900, 2_000, NodeSelection::Count(1)), 0, None),
        Err(ReservationError::Busy(_))
    ));
    // Another window, or an overlapping maintenance one, is fine.
    assert!(s
        .plan_reservation(
            &request("c", 1_200, 2_000, NodeSelection::Count(3)),
            0,
            None
        )
        .is_ok());
    let mut maint = request("m", 0, 2_000, NodeSelection::All);
    maint.flags = ReservationFlags::parse("maint,ignore_jobs").unwrap();
    assert!(s.plan_reservation(&maint, 0, None).is_ok());
    // Names are unique; times must make sense; someone must be admitted.
    assert!(matches!(
        s.plan_reservation(
            &request("b", 5_000, 6_000, NodeSelection::Count(1)),
            0,
            None
        ),
        Err(ReservationError::NameTaken(_))
    ));
    assert!(s
        .plan_reservation(&request("d", 600, 600, NodeSelection::Count(1)), 0, None)
        .is_err());
    let mut nobody = request("e", 5_000, 6_000, NodeSelection::Count(1));
    nobody.users.clear();
    assert!(s.plan_reservation(&nobody, 0, None).is_err());
    assert!(ReservationFlags::parse("FLEX").is_err());
}
