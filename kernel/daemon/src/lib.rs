//! # gantry-daemon
//!
//! `gantryd`, the controller: it owns the scheduling kernel and everything around it
//! that the kernel must not do — the durable log (SQLite, or PostgreSQL shared by an active and standby
//! controllers), the gRPC API for users and
//! admins, the agent link, authentication, the wall clock, and the loop that runs
//! scheduling cycles.
//!
//! Layers: [`store`] (the log, in its own types: [`logged`]) ← [`controller`] (state and rules, no network) ←
//! [`service`] (gRPC, identity) ← `main.rs` (configuration, sockets, signals);
//! [`leadership`] decides, with a PostgreSQL state, whether this controller is the
//! active one.
//!
//! ## What it must not depend on
//!
//! The CLI or the agent: it speaks to them only through `gantry-api`. Scheduling
//! decisions stay in `gantry-kernel`; this crate applies and records them.

pub mod auth;
pub mod config;
pub mod controller;
pub mod leadership;
pub mod logged;
pub mod service;
pub mod stats;
pub mod store;
