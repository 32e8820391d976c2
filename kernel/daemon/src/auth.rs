//! Who is calling. Two ways in: a signed token in the `authorization` metadata (any
//! transport; see `gantry_api::auth`), or, on the controller's Unix socket without a
//! token, the peer's uid from the kernel (`SO_PEERCRED`). Admins are root, the users the
//! configuration names, and holders of admin tokens. Agents always present an agent
//! token signed with their own node's key (`gantry_api::auth::node_key`), which speaks
//! for that node alone. Every refusal is logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gantry_api::auth::{claimed_user, node_key, verify, Role};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::controller::Caller;

pub struct Authenticator {
    key: Vec<u8>,
    admins: Vec<String>,
    passwd: PasswdCache,
}

/// How long a passwd lookup is trusted. Every call needs the caller's name or primary
/// group, and asking NSS each time (files, LDAP, SSSD) cost more than the rest of a
/// submission; a minute is what `nscd` keeps positive entries for by default.
pub const PASSWD_TTL: Duration = Duration::from_secs(60);

/// Passwd entries by uid, each kept for [`PASSWD_TTL`]; unknown uids are remembered as
/// unknown for as long, so a flood of calls from one cannot flood the directory either.
#[derive(Default)]
pub struct PasswdCache {
    entries: Mutex<HashMap<u32, (Instant, Option<PasswdEntry>)>>,
}

impl PasswdCache {
    /// The passwd entry of `uid`, looked up again once [`PASSWD_TTL`] has passed.
    pub fn get(&self, uid: u32) -> Option<PasswdEntry> {
        self.get_with(uid, Instant::now(), passwd_by_uid)
    }

    fn get_with(
        &self,
        uid: u32,
        now: Instant,
        lookup: impl FnOnce(u32) -> Option<PasswdEntry>,
    ) -> Option<PasswdEntry> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, entry)) = entries.get(&uid) {
            if now.saturating_duration_since(*at) < PASSWD_TTL {
                return entry.clone();
            }
        }
        // Looked up under the lock: concurrent callers with the same uid wait for one
        // lookup instead of each making their own.
        let entry = lookup(uid);
        entries.insert(uid, (now, entry.clone()));
        entry
    }
}

/// A passwd entry's user name and primary group.
pub type PasswdEntry = (String, u32);

/// The passwd entry of `uid`, from NSS.
pub fn passwd_by_uid(uid: u32) -> Option<PasswdEntry> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some((user.name, user.gid.as_raw()))
}

fn bearer<T>(req: &Request<T>) -> Option<Result<String, Status>> {
    let v = req.metadata().get(gantry_api::AUTHORIZATION)?;
    Some(
        v.to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .map(|s| s.to_string())
            .ok_or_else(|| Status::unauthenticated("malformed authorization header")),
    )
}

impl Authenticator {
    pub fn new(key: Vec<u8>, admins: Vec<String>) -> Self {
        Self {
            key,
            admins,
            passwd: PasswdCache::default(),
        }
    }

    fn refuse(&self, why: String) -> Status {
        tracing::warn!(reason = %why, "unauthenticated call refused");
        Status::unauthenticated(why)
    }

    /// A user or admin calling the controller API.
    pub fn caller<T>(&self, req: &Request<T>, now: i64) -> Result<Caller, Status> {
        if let Some(token) = bearer(req) {
            let claims = verify(&self.key, &token?, now)
                .map_err(|e| self.refuse(format!("token refused: {e}")))?;
            if claims.role == Role::Agent {
                return Err(self.refuse("an agent token cannot call the user API".into()));
            }
            let gid = self.passwd.get(claims.uid).map_or(claims.uid, |(_, g)| g);
            return Ok(Caller {
                admin: claims.role == Role::Admin || self.admins.contains(&claims.user),
                user: claims.user,
                uid: claims.uid,
                gid,
            });
        }
        let cred = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|i| i.peer_cred)
            .ok_or_else(|| {
                self.refuse(
                    "no credentials: call over the controller's Unix socket, or present a token (GANTRY_TOKEN)"
                        .into(),
                )
            })?;
        let uid = cred.uid();
        let (user, gid) = self
            .passwd
            .get(uid)
            .unwrap_or_else(|| (uid.to_string(), cred.gid()));
        Ok(Caller {
            admin: uid == 0 || self.admins.contains(&user),
            user,
            uid,
            gid,
        })
    }

    /// An agent: it must present an agent token for `node`, signed with that node's own
    /// key and with an expiry. There is no wildcard: a token speaks for one node.
    pub fn agent<T>(&self, req: &Request<T>, now: i64, node: &str) -> Result<(), Status> {
        let token = bearer(req)
            .ok_or_else(|| self.refuse("agents must present an agent token".into()))??;
        let claimed = claimed_user(&token).unwrap_or_default();
        if claimed != node {
            return Err(self.refuse(format!(
                "this agent token is for node {:?}, not {node:?}",
                claimed
            )));
        }
        if node.is_empty() || node.contains(['*', '?', '[', ',']) {
            return Err(self.refuse(format!("{node:?} is not one node's name")));
        }
        let key = node_key(&self.key, node)
            .map_err(|e| self.refuse(format!("agent token refused: {e}")))?;
        let claims = verify(&key, &token, now)
            .map_err(|e| self.refuse(format!("agent token for {node} refused: {e}")))?;
        if claims.role != Role::Agent {
            return Err(self.refuse(format!("{} is not an agent token", claims.user)));
        }
        if claims.expires == 0 {
            return Err(self.refuse(format!(
                "the agent token for {node} never expires; agents mint short-lived tokens"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn passwd_entries_are_looked_up_once_per_ttl_and_unknown_uids_too() {
        let cache = PasswdCache::default();
        let lookups = Cell::new(0);
        let lookup = |uid: u32| {
            lookups.set(lookups.get() + 1);
            (uid == 1000).then(|| ("alice".to_string(), 100))
        };
        let t0 = Instant::now();
        let alice = Some(("alice".to_string(), 100));
        assert_eq!(cache.get_with(1000, t0, lookup), alice);
        assert_eq!(cache.get_with(1000, t0 + PASSWD_TTL / 2, lookup), alice);
        assert_eq!(lookups.get(), 1, "a fresh entry is answered from the cache");
        assert_eq!(cache.get_with(4242, t0, lookup), None);
        assert_eq!(
            cache.get_with(4242, t0 + Duration::from_secs(1), lookup),
            None
        );
        assert_eq!(lookups.get(), 2, "an unknown uid is remembered as unknown");
        assert_eq!(cache.get_with(1000, t0 + PASSWD_TTL, lookup), alice);
        assert_eq!(
            lookups.get(),
            3,
            "an entry as old as the TTL is looked up again"
        );
    }

    #[test]
    fn the_cache_answers_what_the_system_answers() {
        let uid = unsafe { libc::getuid() };
        assert_eq!(PasswdCache::default().get(uid), passwd_by_uid(uid));
    }
}
