//! Who is calling. Two ways in: a signed token in the `authorization` metadata (any
//! transport; see `gantry_api::auth`), or, on the controller's Unix socket without a
//! token, the peer's uid from the kernel (`SO_PEERCRED`). Admins are root, the users the
//! configuration names, and holders of admin tokens. Agents always present an agent
//! token. Every refusal is logged.

use gantry_api::auth::{verify, Role};
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::controller::Caller;

pub struct Authenticator {
    key: Vec<u8>,
    admins: Vec<String>,
}

/// A passwd entry's name and primary group.
pub fn passwd_by_uid(uid: u32) -> Option<(String, u32)> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pwd` and `buf`, both live and sized as passed.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some((name, pwd.pw_gid))
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
        Self { key, admins }
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
            let gid = passwd_by_uid(claims.uid).map_or(claims.uid, |(_, g)| g);
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
        let (user, gid) = passwd_by_uid(uid).unwrap_or_else(|| (uid.to_string(), cred.gid()));
        Ok(Caller {
            admin: uid == 0 || self.admins.contains(&user),
            user,
            uid,
            gid,
        })
    }

    /// An agent: it must present an agent token; the token's user is the node name.
    pub fn agent<T>(&self, req: &Request<T>, now: i64, node: &str) -> Result<(), Status> {
        let token = bearer(req)
            .ok_or_else(|| self.refuse("agents must present an agent token".into()))??;
        let claims = verify(&self.key, &token, now)
            .map_err(|e| self.refuse(format!("agent token refused: {e}")))?;
        if claims.role != Role::Agent {
            return Err(self.refuse(format!("{} is not an agent token", claims.user)));
        }
        if claims.user != node && claims.user != "*" {
            return Err(self.refuse(format!(
                "this agent token is for node {}, not {node}",
                claims.user
            )));
        }
        Ok(())
    }
}
