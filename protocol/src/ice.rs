//! ICE servers (STUN and TURN) as both ends name them, and short-lived TURN credentials in
//! the TURN REST scheme coturn implements (`use-auth-secret`): the relay and the TURN server
//! share a secret, the relay hands each client a username `expiry:user` and the credential
//! base64(HMAC-SHA1(secret, username)), and the TURN server checks both without a database.
//! No long-lived TURN password is ever given out.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// A STUN or TURN server, as in WebRTC's `RTCIceServer`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port[?transport=udp|tcp]` or `turns:…`.
    pub urls: Vec<String>,
    /// TURN username (empty for STUN).
    #[serde(default)]
    pub username: String,
    /// TURN credential (empty for STUN).
    #[serde(default)]
    pub credential: String,
}

impl std::fmt::Display for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credential.
        write!(f, "{}", self.urls.join(","))?;
        if !self.username.is_empty() {
            write!(f, " (user {})", self.username)?;
        }
        Ok(())
    }
}

/// TURN REST credentials for `user`, valid until `expires_unix` (seconds since the epoch),
/// signed with the secret shared with the TURN server.
pub fn turn_rest_credentials(secret: &str, user: &str, expires_unix: u64) -> (String, String) {
    let username = format!("{expires_unix}:{user}");
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return (username, String::new()),
    };
    mac.update(username.as_bytes());
    let credential = STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_credentials_match_the_published_scheme() {
        // HMAC-SHA1("secret", "1700000000:alice"), computed independently:
        // printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let (user, cred) = turn_rest_credentials("secret", "alice", 1_700_000_000);
        assert_eq!(user, "1700000000:alice");
        assert_eq!(cred, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        let (_, other) = turn_rest_credentials("other", "alice", 1_700_000_000);
        assert_ne!(cred, other);
    }

    #[test]
    fn display_hides_the_credential() {
        let s = IceServer {
            urls: vec!["turn:10.77.0.1:3478".into()],
            username: "1:a".into(),
            credential: "hidden".into(),
        };
        assert!(!s.to_string().contains("hidden"));
    }
}
