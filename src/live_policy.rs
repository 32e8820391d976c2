//! `gantry policy list|load|activate|shadow|rollback`: the policy versions of a live
//! controller (`test` and `new` need none: `policy_test`, `policy_new`; `whatif`
//! replays its history here: `whatif`). Every way a version becomes active (load, activate, rollback --to) tries
//! it on the last cycle's batch first; a version that fails there is marked unhealthy,
//! the command exits non-zero, and the active one stays. The version replaced becomes
//! the first fallback: a version that fails later falls back to it, not to the native
//! default.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use gantry_api as api;

use crate::client::{client, print_json, refused, Conn};

#[derive(Subcommand, Debug)]
pub enum PolicyAction {
    /// Versions per slot (the active one marked), who answers each slot now (a version,
    /// a fallback after a failure, or the native default), its fallbacks, its latest
    /// failure and its swap history.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Load a component into a slot and, after trying it on the last cycle's batch,
    /// activate it between two cycles (admin). Exits non-zero, leaving the active
    /// version active, if the trial fails.
    Load {
        /// priority, fairshare, preemption or placement.
        kind: String,
        file: PathBuf,
        /// Configuration text for the policy's init (a file).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Load only; activate later with `policy activate KIND VERSION`.
        #[arg(long)]
        no_activate: bool,
    },
    /// Make a loaded version active, after trying it on the last cycle's batch (admin).
    /// The version it replaces becomes its first fallback.
    Activate { kind: String, version: u32 },
    /// What a loaded version would change on the queue the slot last saw (admin), or
    /// with --cycles N beside the answering version on each of the next N cycles,
    /// summed up in `policy list`. A version that fails here is marked unhealthy.
    Shadow {
        kind: String,
        version: u32,
        /// Shadow over time: this many cycles (at most 86,400).
        #[arg(long, value_name = "N")]
        cycles: Option<u32>,
    },
    /// Back to the last healthy fallback, or to --to VERSION (tried first) (admin).
    Rollback {
        kind: String,
        #[arg(long)]
        to: Option<u32>,
    },
    /// Check any component without a controller: answers well-formed, the same on
    /// repeated calls, within the deadline on a 100,000-job batch; prints its size, load
    /// time and per-call cost. Exits 1 when a check fails.
    Test(crate::policy_test::TestArgs),
    /// Make a policy project that builds as a component outside Gantry's tree:
    /// `cargo test` runs it natively, `cargo build --release --target
    /// wasm32-unknown-unknown` builds the component.
    New(crate::policy_new::NewArgs),
    /// Replay the workload the cluster saw (its finished jobs since --since) through
    /// the simulator with the active policies and again with CANDIDATE in KIND's slot,
    /// and compare: waits, slowdown, utilization, per account, and the jobs that would
    /// start much earlier or later (admin). Exits 3 if the candidate failed in the replay.
    Whatif(crate::whatif::WhatifArgs),
}

pub async fn policy(conn: &Conn, a: PolicyAction) -> Result<u8> {
    // No controller, nothing else on this runtime: these may block.
    match a {
        PolicyAction::Test(t) => return crate::policy_test::run(t),
        PolicyAction::New(n) => return crate::policy_new::run(n),
        PolicyAction::Whatif(w) => return crate::whatif::run(conn, w).await,
        _ => {}
    }
    live(conn, a).await.map(|()| 0)
}

async fn live(conn: &Conn, a: PolicyAction) -> Result<()> {
    let mut c = client(conn).await?;
    match a {
        PolicyAction::Test(_) | PolicyAction::New(_) | PolicyAction::Whatif(_) => {
            unreachable!("handled before")
        }
        PolicyAction::List { json } => {
            let slots = c
                .policy_list(api::PolicyListRequest {})
                .await
                .map_err(refused)?
                .into_inner()
                .slots;
            if json {
                let v: Vec<_> = slots.iter().map(slot_json).collect();
                return print_json(&serde_json::json!({ "slots": v }));
            }
            print_slots(&slots);
            Ok(())
        }
        PolicyAction::Load {
            kind,
            file,
            config,
            no_activate,
        } => {
            let component =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let config = match config {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
                None => String::new(),
            };
            let r = c
                .policy_load(api::PolicyLoadRequest {
                    kind: kind.clone(),
                    component,
                    config,
                    no_activate,
                })
                .await
                .map_err(refused)?
                .into_inner();
            let state = match (r.activated, r.tried) {
                (false, _) => "",
                (true, true) => ", tried on the last cycle's batch, active",
                (true, false) => ", active (no cycle had run yet: not tried)",
            };
            println!(
                "{kind} policy version {} loaded ({}){state}",
                r.version,
                &r.sha256[..16.min(r.sha256.len())],
            );
            Ok(())
        }
        PolicyAction::Activate { kind, version } => {
            let r = c
                .policy_activate(api::PolicyActivateRequest {
                    kind: kind.clone(),
                    version,
                })
                .await
                .map_err(refused)?
                .into_inner();
            print_active(&kind, &r);
            Ok(())
        }
        PolicyAction::Shadow {
            kind,
            version,
            cycles,
        } => {
            let r = c
                .policy_shadow(api::PolicyShadowRequest {
                    kind: kind.clone(),
                    version,
                    cycles: cycles.unwrap_or(0),
                })
                .await
                .map_err(refused)?
                .into_inner();
            if let Some(n) = cycles {
                println!(
                    "{kind} policy version {version}: shadowed beside the answering version for the next {n} cycles; `gantry policy list` sums it up"
                );
                return Ok(());
            }
            println!("{} of {} decisions would change", r.changed, r.batch);
            for e in r.examples {
                println!("  {e}");
            }
            Ok(())
        }
        PolicyAction::Rollback { kind, to } => {
            let r = c
                .policy_rollback(api::PolicyRollbackRequest {
                    kind: kind.clone(),
                    to: to.unwrap_or(0),
                })
                .await
                .map_err(refused)?
                .into_inner();
            print_active(&kind, &r);
            Ok(())
        }
    }
}

fn print_active(kind: &str, r: &api::PolicyListReply) {
    if let Some(v) = r
        .slots
        .first()
        .and_then(|s| s.versions.iter().find(|v| v.active))
    {
        println!("{kind} policy: version {} ({}) active", v.id, v.name);
    }
}

fn slot_json(s: &api::PolicySlotInfo) -> serde_json::Value {
    serde_json::json!({
        "kind": s.kind,
        "versions": s.versions.iter().map(|v| serde_json::json!({"id": v.id, "name": v.name, "version": v.version, "sha256": v.sha256, "active": v.active, "healthy": v.healthy})).collect::<Vec<_>>(),
        "answering": answering(s),
        "fallbacks": s.fallbacks,
        "history": s.history.iter().map(|h| serde_json::json!({"at": h.at, "who": h.who, "action": h.action, "from": h.from, "to": h.to, "sha256": h.sha256})).collect::<Vec<_>>(),
        "failures": s.failures,
        "last_failure": (s.last_failure_version != 0).then(|| serde_json::json!({"version": s.last_failure_version, "at": s.last_failure_at, "reason": s.last_failure})),
        "native_answers": s.native_answers,
        "shadowing": s.shadowing.as_ref().map(|w| serde_json::json!({
            "version": w.version, "cycles": w.cycles, "cycles_left": w.cycles_left,
            "differing": w.differing, "changed": w.changed, "most_changed": w.most_changed,
            "batch": w.batch, "examples": w.examples,
            "failed": (!w.failed.is_empty()).then_some(&w.failed),
        })),
    })
}

/// Who answers the slot, in words: the active version, or plainly a fallback or the
/// native default when that is what answered its last call.
fn answering(s: &api::PolicySlotInfo) -> String {
    let active = s.versions.iter().find(|v| v.active);
    match (s.answering.as_str(), active) {
        ("native", _) => "the native default (no version could answer)".into(),
        ("", Some(v)) => format!("v{} {} (no call yet)", v.id, v.name),
        ("", None) => "the native default (no version active)".into(),
        (who, Some(v)) if who == format!("v{}", v.id) => {
            if s.history.last().is_some_and(|h| h.action == "fallback") {
                format!("v{} {} (a fallback, after a failure)", v.id, v.name)
            } else {
                format!("v{} {}", v.id, v.name)
            }
        }
        (who, _) => who.to_string(),
    }
}

fn print_slots(slots: &[api::PolicySlotInfo]) {
    println!(
        "{:<11} {:>3}  {:<22} {:<8} {:<7} {:<8} SHA256",
        "SLOT", "ID", "NAME", "VERSION", "ACTIVE", "HEALTHY"
    );
    for s in slots {
        for v in &s.versions {
            println!(
                "{:<11} {:>3}  {:<22} {:<8} {:<7} {:<8} {}",
                s.kind,
                v.id,
                crate::format::printable(&v.name),
                crate::format::printable(&v.version),
                if v.active { "*" } else { "" },
                if v.healthy { "yes" } else { "no" },
                &v.sha256[..16.min(v.sha256.len())]
            );
        }
    }
    for s in slots {
        println!();
        println!("{}: answered by {}", s.kind, answering(s));
        if !s.fallbacks.is_empty() {
            let list: Vec<String> = s.fallbacks.iter().map(|v| format!("v{v}")).collect();
            println!("  fallbacks: {}", list.join(", "));
        }
        if s.last_failure_version != 0 {
            println!(
                "  last failure: v{} at {}: {}",
                s.last_failure_version,
                crate::when::format(s.last_failure_at).unwrap_or_else(|| "-".into()),
                crate::format::printable(&s.last_failure)
            );
        }
        if let Some(w) = &s.shadowing {
            println!(
                "  shadowing v{}: {} cycles of {} ({} left); {} would have decided differently, {} entries in all, at most {} of {} in one",
                w.version,
                w.cycles,
                w.cycles + w.cycles_left,
                w.cycles_left,
                w.differing,
                w.changed,
                w.most_changed,
                w.batch
            );
            if !w.failed.is_empty() {
                println!("    failed: {}", crate::format::printable(&w.failed));
            }
            for e in &w.examples {
                println!("    {}", crate::format::printable(e));
            }
        }
        if s.native_answers > 0 {
            println!(
                "  calls answered by the native default: {}",
                s.native_answers
            );
        }
        for h in &s.history {
            let from = if h.from == 0 {
                "-".to_string()
            } else {
                format!("v{}", h.from)
            };
            println!(
                "  {} {:<8} {from} -> v{} by {}",
                crate::when::format(h.at).unwrap_or_else(|| "-".into()),
                h.action,
                h.to,
                crate::format::printable(&h.who)
            );
        }
    }
}
