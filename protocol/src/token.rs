//! Tokens: HS256 JWTs signed with the app sign, minted by `onair token` or a business server.
//!
//! Claims: `app_id`, `user_id`, optional `room_id`, `privilege` (login, publish), `iat`, `exp`.
//! Verification checks the signature (constant time), expiry, app, user and room, and maps every
//! failure to its own stable [`ErrorCode`]. Tokens are secrets: never log one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::ErrorCode;

type HmacSha256 = Hmac<Sha256>;

/// An app sign: the app's 32-byte secret, written as 64 hex characters.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSign([u8; 32]);

impl AppSign {
    /// Parses 64 hex characters.
    pub fn from_hex(hex_str: &str) -> Option<AppSign> {
        let bytes = hex::decode(hex_str.trim()).ok()?;
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(AppSign(arr))
    }

    /// A fresh random sign.
    pub fn random() -> AppSign {
        AppSign(rand::random())
    }

    /// The 64 hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Compares with a sign a client sent, in constant time.
    pub fn matches_hex(&self, other_hex: &str) -> bool {
        match AppSign::from_hex(other_hex) {
            Some(other) => constant_time_eq(&self.0, &other.0),
            None => false,
        }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        #[allow(clippy::expect_used)]
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length")
    }
}

impl std::fmt::Debug for AppSign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppSign(…)")
    }
}

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privilege {
    /// May log into rooms.
    pub login: bool,
    /// May publish streams.
    pub publish: bool,
}

/// A token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The app.
    pub app_id: u32,
    /// The user the token is for.
    pub user_id: String,
    /// If set, the only room the token opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    /// What it allows.
    pub privilege: Privilege,
    /// If set, the only stream IDs it may publish (ZEGO token04's `stream_id_list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id_list: Option<Vec<String>>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts, bad JSON, or an algorithm other than HS256.
    #[error("token is malformed")]
    Malformed,
    /// The signature does not match the app sign.
    #[error("token signature does not match the app sign")]
    BadSignature,
    /// Past its `exp`.
    #[error("token expired")]
    Expired,
    /// Minted for another app.
    #[error("token is for app {0}")]
    WrongApp(u32),
    /// Minted for another user.
    #[error("token is for another user")]
    WrongUser,
    /// Limited to another room.
    #[error("token is for another room")]
    WrongRoom,
    /// Does not grant login.
    #[error("token does not grant login")]
    NoLoginPrivilege,
}

impl TokenError {
    /// The stable code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Malformed | TokenError::BadSignature | TokenError::Expired => {
                ErrorCode::TokenInvalid
            }
            TokenError::WrongApp(_) => ErrorCode::TokenWrongApp,
            TokenError::WrongUser => ErrorCode::TokenWrongUser,
            TokenError::WrongRoom => ErrorCode::TokenWrongRoom,
            TokenError::NoLoginPrivilege => ErrorCode::TokenNoLoginPrivilege,
        }
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Mints a token for `claims`, signed with `sign`.
pub fn mint(claims: &Claims, sign: &AppSign) -> String {
    let header = URL_SAFE_NO_PAD.encode(HEADER);
    // Claims are plain strings and numbers: serialising them cannot fail.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut mac = sign.mac();
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// The app a token claims to be for, read without checking the signature (to pick the key).
pub fn peek_app_id(token: &str) -> Option<u32> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value
        .get("app_id")?
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
}

/// The user a token claims to be for, read without checking the signature.
pub fn peek_user_id(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("user_id")?.as_str().map(String::from)
}

/// Checks the signature and expiry and returns the claims; app, user and room are checked by
/// [`Claims::check_login`].
pub fn verify(token: &str, sign: &AppSign, now_unix: u64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TokenError::Malformed)?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Malformed);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = sign.mac();
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now_unix {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

impl Claims {
    /// Claims for `user_id` in `app_id`, valid for `ttl_secs` from `now_unix`.
    pub fn new(app_id: u32, user_id: impl Into<String>, now_unix: u64, ttl_secs: u64) -> Self {
        Claims {
            app_id,
            user_id: user_id.into(),
            room_id: None,
            privilege: Privilege {
                login: true,
                publish: false,
            },
            stream_id_list: None,
            iat: now_unix,
            exp: now_unix.saturating_add(ttl_secs),
        }
    }

    /// Checks that these claims let `user_id` of `app_id` into `room_id`.
    pub fn check_login(&self, app_id: u32, user_id: &str, room_id: &str) -> Result<(), TokenError> {
        if self.app_id != app_id {
            return Err(TokenError::WrongApp(self.app_id));
        }
        if self.user_id != user_id {
            return Err(TokenError::WrongUser);
        }
        if self.room_id.as_deref().is_some_and(|r| r != room_id) {
            return Err(TokenError::WrongRoom);
        }
        if !self.privilege.login {
            return Err(TokenError::NoLoginPrivilege);
        }
        Ok(())
    }
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only (for secrets:
/// app signs, resume secrets, resource secrets).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the compiler from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses a duration such as `90s`, `15m`, `24h`, `7d` or plain seconds.
pub fn parse_ttl(text: &str) -> Option<u64> {
    let text = text.trim();
    let (num, mult) = match text.chars().last()? {
        's' => (&text[..text.len() - 1], 1),
        'm' => (&text[..text.len() - 1], 60),
        'h' => (&text[..text.len() - 1], 3600),
        'd' => (&text[..text.len() - 1], 86400),
        _ => (text, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign() -> AppSign {
        AppSign::from_hex(&"ab".repeat(32)).expect("valid")
    }

    #[test]
    fn mint_and_verify() {
        let mut c = Claims::new(7, "alice", 1000, 60);
        c.room_id = Some("r1".into());
        c.privilege.publish = true;
        let t = mint(&c, &sign());
        assert_eq!(verify(&t, &sign(), 1001), Ok(c.clone()));
        assert_eq!(c.check_login(7, "alice", "r1"), Ok(()));
        assert_eq!(
            c.check_login(8, "alice", "r1"),
            Err(TokenError::WrongApp(7))
        );
        assert_eq!(c.check_login(7, "bob", "r1"), Err(TokenError::WrongUser));
        assert_eq!(c.check_login(7, "alice", "r2"), Err(TokenError::WrongRoom));
    }

    #[test]
    fn refusals() {
        let c = Claims::new(7, "alice", 1000, 60);
        let t = mint(&c, &sign());
        assert_eq!(verify(&t, &sign(), 1060), Err(TokenError::Expired));
        let other = AppSign::from_hex(&"cd".repeat(32)).expect("valid");
        assert_eq!(verify(&t, &other, 1001), Err(TokenError::BadSignature));
        assert_eq!(verify("a.b", &sign(), 1001), Err(TokenError::Malformed));
        assert_eq!(verify("", &sign(), 1001), Err(TokenError::Malformed));
        assert_eq!(
            verify("!!.??.**", &sign(), 1001),
            Err(TokenError::Malformed)
        );
        // A tampered payload fails the signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"app_id":7,"user_id":"mallory","privilege":{"login":true,"publish":true},"iat":0,"exp":99999999999}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), &sign(), 1001),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn sign_parsing() {
        assert!(AppSign::from_hex("abc").is_none());
        assert!(AppSign::from_hex(&"zz".repeat(32)).is_none());
        let s = AppSign::random();
        assert!(s.matches_hex(&s.to_hex()));
        assert!(!s.matches_hex(&"00".repeat(32)));
        assert_eq!(format!("{s:?}"), "AppSign(…)");
    }

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("24h"), Some(86400));
        assert_eq!(parse_ttl("90"), Some(90));
        assert_eq!(parse_ttl("15m"), Some(900));
        assert_eq!(parse_ttl("x"), None);
    }
}
