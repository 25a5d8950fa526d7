//! Which certificate authorities a `wss://` connection trusts: the system's, plus one given by
//! the app (`EngineProfile::ca_cert`, `--ca-cert`, `ONAIR_CA_CERT`) — for a relay with a
//! development CA (`onair serve --self-signed`) or a private one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::EngineError;

/// The environment variable naming a CA certificate file (PEM) to trust as well.
pub const CA_CERT_ENV: &str = "ONAIR_CA_CERT";

/// Certificate authorities to trust for `wss://`.
#[derive(Clone)]
pub struct TlsTrust {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTrust(..)")
    }
}

impl TlsTrust {
    /// The system's authorities, plus every certificate in `extra_pem` (PEM text) if given.
    pub fn new(extra_pem: Option<&str>) -> Result<TlsTrust, EngineError> {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates are skipped; a missing store leaves only the extra CA.
        let native = rustls_native_certs::load_native_certs();
        let _ = roots.add_parsable_certificates(native.certs);
        if let Some(pem) = extra_pem {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| EngineError::InvalidProfile(format!("CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(EngineError::InvalidProfile(
                    "the CA certificate holds no PEM certificate".into(),
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| EngineError::InvalidProfile(format!("CA certificate: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EngineError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsTrust {
            config: Arc::new(config),
        })
    }

    /// The system's authorities plus the file named by `ONAIR_CA_CERT`, if set.
    pub fn from_env() -> Result<TlsTrust, EngineError> {
        match std::env::var_os(CA_CERT_ENV) {
            Some(path) => {
                let pem = std::fs::read_to_string(&path).map_err(|e| {
                    EngineError::InvalidProfile(format!(
                        "{CA_CERT_ENV}={}: {e}",
                        path.to_string_lossy()
                    ))
                })?;
                TlsTrust::new(Some(&pem))
            }
            None => TlsTrust::new(None),
        }
    }

    /// The rustls configuration for a connection.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

/// A failed connect as an engine error: certificate problems are [`EngineError::Tls`] (not
/// worth retrying), everything else a connection failure.
pub(crate) fn connect_error(e: tokio_tungstenite::tungstenite::Error) -> EngineError {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Tls(tls) => EngineError::Tls(describe_tls(&tls.to_string())),
        other => {
            let text = other.to_string();
            if text.contains("certificate") || text.contains("InvalidCertificate") {
                EngineError::Tls(describe_tls(&text))
            } else {
                EngineError::Connection(text)
            }
        }
    }
}

/// rustls's wording, with what it means in plain words first.
fn describe_tls(text: &str) -> String {
    let plain = if text.contains("UnknownIssuer") {
        "the relay's certificate is not signed by an authority this engine trusts"
    } else if text.contains("Expired") {
        "the relay's certificate has expired"
    } else if text.contains("NotValidForName") {
        "the relay's certificate is for another host name or address"
    } else if text.contains("NotValidYet") {
        "the relay's certificate is not valid yet (check the clocks)"
    } else {
        "the TLS handshake failed"
    };
    format!("{plain} ({text})")
}

static WARNED_PLAIN: AtomicBool = AtomicBool::new(false);

/// Logs once per process that `ws://` to another host sends tokens in clear.
pub(crate) fn warn_if_plain_remote(url: &str) {
    let Ok(parsed) = url::Url::parse(url) else {
        return;
    };
    if parsed.scheme() != "ws" {
        return;
    }
    let local = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => true,
    };
    if !local && !WARNED_PLAIN.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            url,
            "signaling over plain ws:// to another host: tokens and app signs cross the network in clear; use wss://"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_is_an_invalid_profile() {
        assert!(TlsTrust::new(None).is_ok());
        let err = TlsTrust::new(Some("not a certificate")).expect_err("refused");
        assert_eq!(err.code(), crate::ErrorCode::InvalidProfile.code());
    }

    #[test]
    fn certificate_errors_read_as_words() {
        let d = describe_tls("invalid peer certificate: UnknownIssuer");
        assert!(
            d.starts_with("the relay's certificate is not signed"),
            "{d}"
        );
        assert!(d.contains("UnknownIssuer"));
    }
}
