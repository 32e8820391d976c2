//! Identity tokens: `v1.<user>.<uid>.<role>.<expires>.<mac>`, where `mac` is the
//! HMAC-SHA256 (hex) of everything before it.
//!
//! Two kinds of key sign them, so that a node's secret is never the cluster's:
//! - **User and admin tokens** are signed with the cluster key, which only the
//!   controller (and the admins who mint tokens) hold.
//! - **Agent tokens** (role `agent`, user = the node's name) are signed with that node's
//!   own key, [`node_key`]`(cluster key, node)`: an HMAC of the node's name under the
//!   cluster key. The controller derives it to check a node's token; the node holds only
//!   its own, cannot work back to the cluster key, and cannot derive another node's.
//!   An agent mints itself short-lived tokens ([`AGENT_TOKEN_TTL`]).
//!
//! Local callers on the controller's Unix socket need no token: the socket's peer
//! credentials say who they are.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Their own jobs.
    User,
    /// Everything: every job, nodes, policies.
    Admin,
    /// The agent link of one node.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user: String,
    pub uid: u32,
    pub role: Role,
    /// Unix seconds; 0 never expires.
    pub expires: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed (expected v1.<user>.<uid>.<role>.<expires>.<mac>)")]
    Malformed,
    #[error("the token's signature does not match this cluster's key")]
    BadSignature,
    #[error("the token expired at {0}")]
    Expired(i64),
    #[error("the cluster key is too short: use at least 32 bytes")]
    ShortKey,
    #[error("a user name may not be empty or contain '.' or whitespace")]
    BadUser,
}

/// The least key length accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// How long an agent's own tokens are valid, in seconds; it mints a fresh one for
/// every connection and call.
pub const AGENT_TOKEN_TTL: i64 = 300;

/// How long a user or admin token lives when its minter names no lifetime, in seconds.
pub const DEFAULT_TOKEN_TTL: i64 = 7 * 86_400;

/// The key that signs `node`'s agent tokens: HMAC-SHA256 of a fixed label and the node's
/// name under the cluster key (32 bytes). Knowing it reveals neither the cluster key nor
/// any other node's key.
pub fn node_key(cluster_key: &[u8], node: &str) -> Result<Vec<u8>, TokenError> {
    if cluster_key.len() < MIN_KEY_BYTES {
        return Err(TokenError::ShortKey);
    }
    let mut m = Hmac::<Sha256>::new_from_slice(cluster_key).map_err(|_| TokenError::ShortKey)?;
    m.update(b"gantry node credential v1\0");
    m.update(node.as_bytes());
    Ok(m.finalize().into_bytes().to_vec())
}

/// The user a token claims to speak for, read without checking anything: only to pick
/// the key to check it with (an agent token's node). Never trust it before [`verify`].
pub fn claimed_user(token: &str) -> Option<&str> {
    let mut parts = token.trim().split('.');
    (parts.next()? == "v1").then_some(())?;
    parts.next()
}

fn mac(key: &[u8], body: &str) -> Result<String, TokenError> {
    if key.len() < MIN_KEY_BYTES {
        return Err(TokenError::ShortKey);
    }
    let mut m = Hmac::<Sha256>::new_from_slice(key).map_err(|_| TokenError::ShortKey)?;
    m.update(body.as_bytes());
    Ok(m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Signs `claims` with the cluster key.
pub fn mint(key: &[u8], claims: &Claims) -> Result<String, TokenError> {
    if claims.user.is_empty() || claims.user.contains(['.', ' ', '\t', '\n']) {
        return Err(TokenError::BadUser);
    }
    let body = format!(
        "v1.{}.{}.{}.{}",
        claims.user,
        claims.uid,
        claims.role.as_str(),
        claims.expires
    );
    let m = mac(key, &body)?;
    Ok(format!("{body}.{m}"))
}

/// Checks a token's signature and expiry at time `now` (Unix seconds).
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, TokenError> {
    let token = token.trim();
    let (body, given) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let parts: Vec<&str> = body.split('.').collect();
    let [v, user, uid, role, expires] = parts[..] else {
        return Err(TokenError::Malformed);
    };
    if v != "v1" {
        return Err(TokenError::Malformed);
    }
    let want = mac(key, body)?;
    // Compare without an early exit, so timing does not reveal the MAC.
    let same = want.len() == given.len()
        && want
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(TokenError::BadSignature);
    }
    let claims = Claims {
        user: user.to_string(),
        uid: uid.parse().map_err(|_| TokenError::Malformed)?,
        role: Role::parse(role).ok_or(TokenError::Malformed)?,
        expires: expires.parse().map_err(|_| TokenError::Malformed)?,
    };
    if claims.expires != 0 && claims.expires < now {
        return Err(TokenError::Expired(claims.expires));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn alice() -> Claims {
        Claims {
            user: "alice".into(),
            uid: 1001,
            role: Role::User,
            expires: 2_000,
        }
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let t = mint(KEY, &alice()).unwrap();
        assert_eq!(verify(KEY, &t, 1_000), Ok(alice()));
        assert_eq!(verify(KEY, &t, 3_000), Err(TokenError::Expired(2_000)));
        let forever = Claims {
            expires: 0,
            ..alice()
        };
        let t = mint(KEY, &forever).unwrap();
        assert!(verify(KEY, &t, i64::MAX).is_ok());
    }

    #[test]
    fn a_node_key_signs_for_its_node_and_is_no_cluster_key() {
        let a = node_key(KEY, "cpu01").unwrap();
        let b = node_key(KEY, "cpu02").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            a,
            node_key(KEY, "cpu01").unwrap(),
            "derived the same each time"
        );
        assert_ne!(a.as_slice(), KEY);
        let agent = Claims {
            user: "cpu01".into(),
            uid: 0,
            role: Role::Agent,
            expires: 2_000,
        };
        let t = mint(&a, &agent).unwrap();
        assert_eq!(claimed_user(&t), Some("cpu01"));
        assert_eq!(verify(&a, &t, 1_000), Ok(agent.clone()));
        assert_eq!(verify(&b, &t, 1_000), Err(TokenError::BadSignature));
        // What a node signs with its key is nothing under the cluster key.
        let admin = mint(
            &a,
            &Claims {
                role: Role::Admin,
                ..agent
            },
        )
        .unwrap();
        assert_eq!(verify(KEY, &admin, 1_000), Err(TokenError::BadSignature));
        assert_eq!(node_key(b"short", "x"), Err(TokenError::ShortKey));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(fuzz_cases()))]

        /// Fuzzing: any text is refused (or, for a real token, verified) without a panic,
        /// and no single changed byte of a real token passes.
        #[test]
        fn any_text_or_altered_token_is_refused(
            text in proptest::prelude::any::<String>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let _ = claimed_user(&text);
            proptest::prop_assert!(verify(KEY, &text, 0).is_err());
            let token = mint(KEY, &alice()).unwrap();
            let mut bytes = token.clone().into_bytes();
            let i = at.index(bytes.len());
            proptest::prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            let altered = String::from_utf8_lossy(&bytes);
            // Whitespace around a token is trimmed; anything else changed is refused.
            if altered.trim() != token {
                proptest::prop_assert!(verify(KEY, &altered, 0).is_err(), "{altered}");
            }
        }
    }

    /// `GANTRY_FUZZ_CASES`, as the other fuzz targets read it.
    fn fuzz_cases() -> u32 {
        std::env::var("GANTRY_FUZZ_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(2_000)
    }

    #[test]
    fn tampering_or_another_key_is_refused() {
        let t = mint(KEY, &alice()).unwrap();
        let forged = t.replace(".user.", ".admin.");
        assert_eq!(verify(KEY, &forged, 0), Err(TokenError::BadSignature));
        let other = b"another key that is long enough!!";
        assert_eq!(verify(other, &t, 0), Err(TokenError::BadSignature));
        assert_eq!(verify(KEY, "garbage", 0), Err(TokenError::Malformed));
        assert_eq!(
            verify(KEY, "v1.a.b.c.d.e", 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(mint(b"short", &alice()), Err(TokenError::ShortKey));
        let bad = Claims {
            user: "a.b".into(),
            ..alice()
        };
        assert_eq!(mint(KEY, &bad), Err(TokenError::BadUser));
    }
}
