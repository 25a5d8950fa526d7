//! The development app: what `onair serve` runs when given no config, and where the other
//! commands find its credentials so that `onair serve` and `onair watch` work with no flags.
//!
//! The sign is random, made once and kept in `$ONAIR_DEV_APP_FILE` or
//! `$XDG_CONFIG_HOME/onair/dev-app.toml` (else `~/.config/onair/dev-app.toml`).

use std::path::PathBuf;

use anyhow::Context as _;
use onair_engine::token::AppSign;

/// The development app's ID.
pub const DEV_APP_ID: u32 = 1;

/// Where the development app's credentials live.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("ONAIR_DEV_APP_FILE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("onair").join("dev-app.toml")
}

/// The development app's sign, if it has been made.
pub fn load() -> Option<AppSign> {
    let text = std::fs::read_to_string(path()).ok()?;
    let value: toml::Table = text.parse().ok()?;
    AppSign::from_hex(value.get("app_sign")?.as_str()?)
}

/// The development app's sign, made and saved on first use.
pub fn load_or_create() -> anyhow::Result<AppSign> {
    let p = path();
    if let Some(sign) = load() {
        // Made by an older version with default permissions: readable by its owner only now.
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(&p)
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
        return Ok(sign);
    }
    let sign = AppSign::random();
    // Written whole beside it, then linked into place only if no other process did so
    // first: several relays started at once (a cluster on one machine) share one app.
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    write_private(
        &tmp,
        &format!(
            "# Onair development app, made by `onair serve`. Keep the sign secret.\napp_id = {DEV_APP_ID}\napp_sign = \"{}\"\n",
            sign.to_hex()
        ),
    )?;
    let linked = std::fs::hard_link(&tmp, &p);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(sign),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            load().with_context(|| format!("reading {}", p.display()))
        }
        Err(e) => Err(e).with_context(|| format!("writing {}", p.display())),
    }
}

/// Where `onair serve --self-signed` keeps its development CA certificate (beside the
/// development app); the client commands trust it when it exists.
pub fn ca_path() -> PathBuf {
    path().with_file_name("ca.pem")
}

/// The development CA's key (kept so a restarted relay is signed by the same CA).
pub fn ca_key_path() -> PathBuf {
    path().with_file_name("ca-key.pem")
}

/// The development CA certificate, if `onair serve --self-signed` made one.
pub fn load_ca() -> Option<String> {
    std::fs::read_to_string(ca_path()).ok()
}

/// Writes `text` to `path`, readable by its owner only (keys, signs).
pub fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
