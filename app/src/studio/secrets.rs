//! Where the studio keeps the app sign and token it connects with: the OS keyring (the Secret
//! Service on Linux, through the `keyring` crate) where there is one; otherwise plain text in
//! its settings, which the connect dialog says in words.
//!
//! Settings are written with the secrets taken out and `secrets_in_keyring` set
//! ([`for_storage`]); read back, the secrets are fetched again ([`restore`]). A keyring write
//! happens only when the secrets change, not on every autosave.

use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::Mutex;

use super::settings::{ConnectionSettings, Settings};

/// The keyring service name the studio's entries go under.
const SERVICE: &str = "onair-studio";

/// What was last written, so an unchanged secret is not written again.
static LAST_PUT: Mutex<Option<(String, String)>> = Mutex::new(None);

/// Whether a keyring answers: 0 not known yet, 1 yes, 2 no.
static AVAILABLE: AtomicU8 = AtomicU8::new(0);

fn entry(server: &str, app_id: u32) -> Result<keyring::Entry, String> {
    keyring::Entry::new(SERVICE, &format!("{app_id}@{server}")).map_err(|e| e.to_string())
}

/// Stores the secrets for a relay and app.
pub fn put(server: &str, app_id: u32, app_sign: &str, token: &str) -> Result<(), String> {
    let account = format!("{app_id}@{server}");
    let value = serde_json::json!({ "app_sign": app_sign, "token": token }).to_string();
    if LAST_PUT.lock().as_ref() == Some(&(account.clone(), value.clone())) {
        return Ok(());
    }
    let result = entry(server, app_id)?
        .set_password(&value)
        .map_err(|e| e.to_string());
    AVAILABLE.store(if result.is_ok() { 1 } else { 2 }, Ordering::Relaxed);
    if result.is_ok() {
        *LAST_PUT.lock() = Some((account, value));
    }
    result
}

/// The secrets stored for a relay and app: `(app_sign, token)`, `None` if there are none.
pub fn get(server: &str, app_id: u32) -> Result<Option<(String, String)>, String> {
    match entry(server, app_id)?.get_password() {
        Ok(value) => {
            let v: serde_json::Value = serde_json::from_str(&value).map_err(|e| e.to_string())?;
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Ok(Some((field("app_sign"), field("token"))))
        }
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether an OS keyring answers (probed once; call from a thread that may wait, not the
/// UI's). `None` until a probe or a write has said.
pub fn available() -> Option<bool> {
    match AVAILABLE.load(Ordering::Relaxed) {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    }
}

/// Asks the keyring once, on its own thread, whether it is there (for the connect dialog).
pub fn probe_in_background() {
    if AVAILABLE.load(Ordering::Relaxed) != 0 {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("onair-keyring".into())
        .spawn(|| {
            let ok = entry("probe", 0)
                .map(|e| matches!(e.get_password(), Ok(_) | Err(keyring::Error::NoEntry)))
                .unwrap_or(false);
            AVAILABLE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
        });
}

/// The settings as written to disk: the secrets moved to the keyring when it takes them
/// (`secrets_in_keyring`), left in place otherwise.
pub fn for_storage(mut settings: Settings) -> Settings {
    settings.secrets_in_keyring = false;
    if let ConnectionSettings::Remote {
        server,
        app_id,
        app_sign,
        token,
    } = &mut settings.connection
        && !(app_sign.is_empty() && token.is_empty())
    {
        match put(server, *app_id, app_sign, token) {
            Ok(()) => {
                app_sign.clear();
                token.clear();
                settings.secrets_in_keyring = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "no OS keyring: the app sign or token is kept in plain text in the studio's settings");
            }
        }
    }
    settings
}

/// Settings as read from disk: secrets kept in the keyring are fetched back.
pub fn restore(settings: &mut Settings) {
    if !std::mem::take(&mut settings.secrets_in_keyring) {
        return;
    }
    if let ConnectionSettings::Remote {
        server,
        app_id,
        app_sign,
        token,
    } = &mut settings.connection
    {
        match get(server, *app_id) {
            Ok(Some((s, t))) => {
                *app_sign = s;
                *token = t;
                AVAILABLE.store(1, Ordering::Relaxed);
            }
            Ok(None) => tracing::warn!("the keyring has no app sign or token for this relay"),
            Err(e) => tracing::warn!(error = %e, "cannot read the keyring"),
        }
    }
}
