//! # gantry-api
//!
//! The wire contract between Gantry's programs: the `Controller` service (the CLI and
//! other clients talk to `gantryd`) and the `AgentLink` service (each `gantry-agent`
//! talks to `gantryd`), generated from `proto/gantry.proto`, and the signed identity
//! tokens every call carries ([`auth`]).
//!
//! ## What it must not depend on
//!
//! The kernel, the daemon or the agent: this crate is the contract they share, so it
//! carries messages, not behaviour. Conversions to kernel types live in the daemon.

pub mod auth;

/// Generated messages and services of package `gantry.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("gantry.v1");
}

pub use v1::*;

/// `JobSubmission::time_limit_s` for `--time=UNLIMITED`: the partition's maximum (no
/// limit if it has none).
pub const TIME_UNLIMITED: i64 = -1;

/// Metadata key carrying the caller's token (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

pub mod client;
