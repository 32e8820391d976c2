//! The log's own types: what a [`crate::store::Entry`] holds of a submission, an
//! allocation, an outcome, a hold, a preemption and a reservation's flags, converted to
//! and from the kernel's types at the edge. The kernel's structs may change without
//! changing what is on disk; a change of what is on disk is a new schema version
//! ([`crate::store::SCHEMA_VERSION`]) with its migration.
//!
//! Invariant: these serialize exactly as schema 0 and 1 entries were written (the tests
//! hold them to that text); every field added later has a default, so older entries
//! still read.

use fixedbitset::FixedBitSet;
use gantry_kernel::cluster::{GresId, NodeId};
use gantry_kernel::job::{self as kernel, JobId};
use gantry_kernel::Time;
use serde::{Deserialize, Serialize};

/// A submission as the user stated it (`JobSpec`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub user: String,
    pub account: Option<String>,
    pub partition: Option<String>,
    pub qos: Option<String>,
    pub request: Request,
    pub time_limit: Option<Time>,
    #[serde(default)]
    pub time_unlimited: bool,
    pub array: Option<Array>,
    pub dependencies: Vec<Dependency>,
    pub requeue: Option<bool>,
    #[serde(default)]
    pub hold: bool,
    #[serde(default)]
    pub begin: Option<Time>,
    #[serde(default)]
    pub nice: i32,
    #[serde(default)]
    pub deadline: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub nodes: Option<u32>,
    pub tasks: u32,
    pub cpus_per_task: u32,
    pub memory: Memory,
    pub gpus: Gpus,
    pub gres: Vec<(String, u64)>,
    pub exclusive: bool,
    pub features: Vec<String>,
    #[serde(default)]
    pub nodelist: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Memory {
    None,
    PerNode(u64),
    PerCpu(u64),
    WholeNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gpus {
    None,
    PerNode(u32),
    PerJob(u32),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Array {
    pub indices: Vec<u32>,
    pub throttle: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    After,
    AfterAny,
    AfterOk,
    AfterNotOk,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dependency {
    On(DependencyKind, Vec<JobId>),
    Singleton,
}

/// What a started job holds: per node, its index in the cluster description, tasks,
/// cores, memory, GPUs (a bit mask) and generic resources by index.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Allocation {
    pub nodes: Vec<NodeAllocation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAllocation {
    pub node: u32,
    pub tasks: u32,
    pub cores: Cores,
    pub memory_mb: u64,
    pub gpus: u64,
    pub gres: Vec<(u16, u64)>,
}

/// A core set as `{"width": n, "cores": [i, ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cores {
    pub width: usize,
    pub cores: Vec<usize>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Exited(i32),
    Timeout,
    NodeFail,
}

/// Who held a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldBy {
    User,
    Admin,
}

/// What a preemption did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreemptMode {
    Cancel,
    Requeue,
    Suspend,
}

/// `Flags=` of an advance reservation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationFlags {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maint: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_jobs: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlap: bool,
}

impl From<&kernel::JobSpec> for Spec {
    fn from(s: &kernel::JobSpec) -> Self {
        let r = &s.request;
        Self {
            name: s.name.clone(),
            user: s.user.clone(),
            account: s.account.clone(),
            partition: s.partition.clone(),
            qos: s.qos.clone(),
            request: Request {
                nodes: r.nodes,
                tasks: r.tasks,
                cpus_per_task: r.cpus_per_task,
                memory: match r.memory {
                    kernel::MemoryRequest::None => Memory::None,
                    kernel::MemoryRequest::PerNode(m) => Memory::PerNode(m),
                    kernel::MemoryRequest::PerCpu(m) => Memory::PerCpu(m),
                    kernel::MemoryRequest::WholeNode => Memory::WholeNode,
                },
                gpus: match r.gpus {
                    kernel::GpuRequest::None => Gpus::None,
                    kernel::GpuRequest::PerNode(g) => Gpus::PerNode(g),
                    kernel::GpuRequest::PerJob(g) => Gpus::PerJob(g),
                },
                gres: r.gres.clone(),
                exclusive: r.exclusive,
                features: r.features.clone(),
                nodelist: r.nodelist.clone(),
                exclude: r.exclude.clone(),
            },
            time_limit: s.time_limit,
            time_unlimited: s.time_unlimited,
            array: s.array.as_ref().map(|a| Array {
                indices: a.indices.clone(),
                throttle: a.throttle,
            }),
            dependencies: s
                .dependencies
                .iter()
                .map(|d| match d {
                    kernel::Dependency::On(kind, jobs) => Dependency::On(
                        match kind {
                            kernel::DependencyKind::After => DependencyKind::After,
                            kernel::DependencyKind::AfterAny => DependencyKind::AfterAny,
                            kernel::DependencyKind::AfterOk => DependencyKind::AfterOk,
                            kernel::DependencyKind::AfterNotOk => DependencyKind::AfterNotOk,
                        },
                        jobs.clone(),
                    ),
                    kernel::Dependency::Singleton => Dependency::Singleton,
                })
                .collect(),
            requeue: s.requeue,
            hold: s.hold,
            begin: s.begin,
            nice: s.nice,
            deadline: s.deadline,
            reservation: s.reservation.clone(),
        }
    }
}

impl From<Spec> for kernel::JobSpec {
    fn from(s: Spec) -> Self {
        let r = s.request;
        Self {
            name: s.name,
            user: s.user,
            account: s.account,
            partition: s.partition,
            qos: s.qos,
            request: kernel::ResourceRequest {
                nodes: r.nodes,
                tasks: r.tasks,
                cpus_per_task: r.cpus_per_task,
                memory: match r.memory {
                    Memory::None => kernel::MemoryRequest::None,
                    Memory::PerNode(m) => kernel::MemoryRequest::PerNode(m),
                    Memory::PerCpu(m) => kernel::MemoryRequest::PerCpu(m),
                    Memory::WholeNode => kernel::MemoryRequest::WholeNode,
                },
                gpus: match r.gpus {
                    Gpus::None => kernel::GpuRequest::None,
                    Gpus::PerNode(g) => kernel::GpuRequest::PerNode(g),
                    Gpus::PerJob(g) => kernel::GpuRequest::PerJob(g),
                },
                gres: r.gres,
                exclusive: r.exclusive,
                features: r.features,
                nodelist: r.nodelist,
                exclude: r.exclude,
            },
            time_limit: s.time_limit,
            time_unlimited: s.time_unlimited,
            array: s.array.map(|a| kernel::ArraySpec {
                indices: a.indices,
                throttle: a.throttle,
            }),
            dependencies: s
                .dependencies
                .into_iter()
                .map(|d| match d {
                    Dependency::On(kind, jobs) => kernel::Dependency::On(
                        match kind {
                            DependencyKind::After => kernel::DependencyKind::After,
                            DependencyKind::AfterAny => kernel::DependencyKind::AfterAny,
                            DependencyKind::AfterOk => kernel::DependencyKind::AfterOk,
                            DependencyKind::AfterNotOk => kernel::DependencyKind::AfterNotOk,
                        },
                        jobs,
                    ),
                    Dependency::Singleton => kernel::Dependency::Singleton,
                })
                .collect(),
            requeue: s.requeue,
            hold: s.hold,
            begin: s.begin,
            nice: s.nice,
            deadline: s.deadline,
            reservation: s.reservation,
        }
    }
}

impl From<&kernel::Allocation> for Allocation {
    fn from(a: &kernel::Allocation) -> Self {
        Self {
            nodes: a
                .nodes
                .iter()
                .map(|n| NodeAllocation {
                    node: n.node.0,
                    tasks: n.tasks,
                    cores: Cores {
                        width: n.cores.len(),
                        cores: n.cores.ones().collect(),
                    },
                    memory_mb: n.memory_mb,
                    gpus: n.gpus,
                    gres: n.gres.iter().map(|&(g, c)| (g.0, c)).collect(),
                })
                .collect(),
        }
    }
}

impl From<&Allocation> for kernel::Allocation {
    fn from(a: &Allocation) -> Self {
        Self {
            nodes: a
                .nodes
                .iter()
                .map(|n| {
                    // Wide enough for every core named, whatever width was written.
                    let width = n
                        .cores
                        .cores
                        .iter()
                        .map(|&i| i + 1)
                        .max()
                        .unwrap_or(0)
                        .max(n.cores.width);
                    let mut cores = FixedBitSet::with_capacity(width);
                    for &i in &n.cores.cores {
                        cores.insert(i);
                    }
                    kernel::NodeAllocation {
                        node: NodeId(n.node),
                        tasks: n.tasks,
                        cores,
                        memory_mb: n.memory_mb,
                        gpus: n.gpus,
                        gres: n.gres.iter().map(|&(g, c)| (GresId(g), c)).collect(),
                    }
                })
                .collect(),
        }
    }
}

impl From<kernel::JobOutcome> for Outcome {
    fn from(o: kernel::JobOutcome) -> Self {
        match o {
            kernel::JobOutcome::Exited(c) => Self::Exited(c),
            kernel::JobOutcome::Timeout => Self::Timeout,
            kernel::JobOutcome::NodeFail => Self::NodeFail,
        }
    }
}

impl From<Outcome> for kernel::JobOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Exited(c) => Self::Exited(c),
            Outcome::Timeout => Self::Timeout,
            Outcome::NodeFail => Self::NodeFail,
        }
    }
}

impl From<kernel::Hold> for HoldBy {
    fn from(h: kernel::Hold) -> Self {
        match h {
            kernel::Hold::User => Self::User,
            kernel::Hold::Admin => Self::Admin,
        }
    }
}

impl From<HoldBy> for kernel::Hold {
    fn from(h: HoldBy) -> Self {
        match h {
            HoldBy::User => Self::User,
            HoldBy::Admin => Self::Admin,
        }
    }
}

impl From<gantry_abi::PreemptMode> for PreemptMode {
    fn from(m: gantry_abi::PreemptMode) -> Self {
        match m {
            gantry_abi::PreemptMode::Cancel => Self::Cancel,
            gantry_abi::PreemptMode::Requeue => Self::Requeue,
            gantry_abi::PreemptMode::Suspend => Self::Suspend,
        }
    }
}

impl From<PreemptMode> for gantry_abi::PreemptMode {
    fn from(m: PreemptMode) -> Self {
        match m {
            PreemptMode::Cancel => Self::Cancel,
            PreemptMode::Requeue => Self::Requeue,
            PreemptMode::Suspend => Self::Suspend,
        }
    }
}

impl From<gantry_kernel::reservation::ReservationFlags> for ReservationFlags {
    fn from(f: gantry_kernel::reservation::ReservationFlags) -> Self {
        Self {
            maint: f.maint,
            ignore_jobs: f.ignore_jobs,
            overlap: f.overlap,
        }
    }
}

impl From<ReservationFlags> for gantry_kernel::reservation::ReservationFlags {
    fn from(f: ReservationFlags) -> Self {
        Self {
            maint: f.maint,
            ignore_jobs: f.ignore_jobs,
            overlap: f.overlap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A submission with every field set, and the text schema 0 and 1 wrote for it.
    fn full_spec() -> (kernel::JobSpec, &'static str) {
        let mut s = kernel::JobSpec::new(
            "train",
            "alice",
            kernel::ResourceRequest {
                nodes: Some(2),
                tasks: 8,
                cpus_per_task: 4,
                memory: kernel::MemoryRequest::PerCpu(2048),
                gpus: kernel::GpuRequest::PerNode(4),
                gres: vec![("nvme".into(), 1)],
                exclusive: true,
                features: vec!["avx512".into()],
                nodelist: vec!["gpu01".into()],
                exclude: vec!["gpu02".into()],
            },
        );
        s.account = Some("physics".into());
        s.partition = Some("gpu".into());
        s.qos = Some("high".into());
        s.time_limit = Some(3600);
        s.array = Some(kernel::ArraySpec {
            indices: vec![1, 2, 5],
            throttle: Some(2),
        });
        s.dependencies = vec![
            kernel::Dependency::On(kernel::DependencyKind::AfterOk, vec![JobId(7)]),
            kernel::Dependency::Singleton,
        ];
        s.requeue = Some(false);
        s.hold = true;
        s.begin = Some(100);
        s.nice = 5;
        s.deadline = Some(9000);
        s.reservation = Some("team".into());
        (
            s,
            r#"{"name":"train","user":"alice","account":"physics","partition":"gpu","qos":"high","request":{"nodes":2,"tasks":8,"cpus_per_task":4,"memory":{"PerCpu":2048},"gpus":{"PerNode":4},"gres":[["nvme",1]],"exclusive":true,"features":["avx512"],"nodelist":["gpu01"],"exclude":["gpu02"]},"time_limit":3600,"time_unlimited":false,"array":{"indices":[1,2,5],"throttle":2},"dependencies":[{"On":["afterok",[7]]},"Singleton"],"requeue":false,"hold":true,"begin":100,"nice":5,"deadline":9000,"reservation":"team"}"#,
        )
    }

    #[test]
    fn a_submission_is_written_as_the_log_always_wrote_it() {
        let (spec, text) = full_spec();
        let logged = Spec::from(&spec);
        assert_eq!(serde_json::to_string(&logged).unwrap(), text);
        let read: Spec = serde_json::from_str(text).unwrap();
        assert_eq!(kernel::JobSpec::from(read), spec);
        // An entry from before --reservation, --nice and the rest: their defaults.
        let old = r#"{"name":"j","user":"u","account":null,"partition":null,"qos":null,"request":{"nodes":null,"tasks":1,"cpus_per_task":1,"memory":"None","gpus":"None","gres":[],"exclusive":false,"features":[]},"time_limit":null,"array":null,"dependencies":[],"requeue":null}"#;
        let read: kernel::JobSpec = serde_json::from_str::<Spec>(old).unwrap().into();
        assert_eq!(
            read,
            kernel::JobSpec::new("j", "u", kernel::ResourceRequest::default())
        );
    }

    #[test]
    fn an_allocation_is_written_as_the_log_always_wrote_it() {
        let mut cores = FixedBitSet::with_capacity(8);
        cores.insert(2);
        cores.insert(5);
        let allocation = kernel::Allocation {
            nodes: vec![kernel::NodeAllocation {
                node: NodeId(3),
                tasks: 2,
                cores,
                memory_mb: 1024,
                gpus: 0b1010,
                gres: vec![(GresId(1), 2)],
            }],
        };
        let text = r#"{"nodes":[{"node":3,"tasks":2,"cores":{"width":8,"cores":[2,5]},"memory_mb":1024,"gpus":10,"gres":[[1,2]]}]}"#;
        assert_eq!(
            serde_json::to_string(&Allocation::from(&allocation)).unwrap(),
            text
        );
        let read: Allocation = serde_json::from_str(text).unwrap();
        assert_eq!(kernel::Allocation::from(&read), allocation);
    }

    #[test]
    fn outcomes_holds_modes_and_flags_are_written_as_before() {
        let texts = [
            (Outcome::Exited(3), r#"{"Exited":3}"#),
            (Outcome::Timeout, r#""Timeout""#),
            (Outcome::NodeFail, r#""NodeFail""#),
        ];
        for (o, t) in texts {
            assert_eq!(serde_json::to_string(&o).unwrap(), t);
            assert_eq!(Outcome::from(kernel::JobOutcome::from(o)), o);
        }
        assert_eq!(
            serde_json::to_string(&HoldBy::from(kernel::Hold::Admin)).unwrap(),
            r#""admin""#
        );
        assert_eq!(
            serde_json::to_string(&PreemptMode::from(gantry_abi::PreemptMode::Suspend)).unwrap(),
            r#""suspend""#
        );
        let flags = ReservationFlags {
            maint: true,
            ..ReservationFlags::default()
        };
        assert_eq!(serde_json::to_string(&flags).unwrap(), r#"{"maint":true}"#);
    }
}
