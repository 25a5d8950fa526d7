//! TLS for the relay's HTTP side (`wss://…/ws`, WHIP/WHEP, `/live`): certificates from PEM
//! files or a generated development CA, and a listener that hands axum only connections whose
//! handshake finished (a slow or failed handshake never holds up the others).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file held no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the certificate and key.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// Generating the development certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The relay's certificate chain and key, ready to serve.
#[derive(Clone)]
pub struct TlsIdentity {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsIdentity(..)")
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsIdentity {
    /// A certificate chain and private key in PEM files (as Let's Encrypt or any CA issues).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_pem(&read(cert)?, &read(key)?)
    }

    /// A certificate chain and private key as PEM text.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem(format!("certificate file: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError::Pem(
                "the certificate file holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError::Pem(format!("key file: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            config: Arc::new(config),
        })
    }
}

/// A development certificate authority and a relay certificate it signed.
pub struct DevCertificates {
    /// The CA certificate (PEM): what clients trust (`--ca-cert`, `EngineProfile::ca_cert`).
    pub ca_pem: String,
    /// The relay's certificate (PEM), signed by the CA.
    pub cert_pem: String,
    /// The relay certificate's private key (PEM).
    pub key_pem: String,
}

impl DevCertificates {
    /// A fresh CA and a certificate for `localhost`, 127.0.0.1, ::1 and `names` (host names
    /// or IP addresses), valid for a year.
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        Self::generate_with(None, names).map(|(certs, _)| certs)
    }

    /// As [`Self::generate`], signed by an existing CA (`(ca_pem, ca_key_pem)`) when one is
    /// given, so clients that trust it keep trusting a relay that restarts. Also returns the
    /// CA's key (PEM), to keep for next time.
    pub fn generate_with(
        ca: Option<(&str, &str)>,
        names: &[String],
    ) -> Result<(Self, String), TlsError> {
        let (ca_pem, ca_key_pem, issuer) = match ca {
            Some((ca_pem, ca_key_pem)) => {
                let key = rcgen::KeyPair::from_pem(ca_key_pem)?;
                let issuer = rcgen::Issuer::from_ca_cert_pem(ca_pem, key)?;
                (ca_pem.to_string(), ca_key_pem.to_string(), issuer)
            }
            None => {
                let ca_key = rcgen::KeyPair::generate()?;
                let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
                ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                ca_params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, "Onair development CA");
                ca_params.key_usages = vec![
                    rcgen::KeyUsagePurpose::KeyCertSign,
                    rcgen::KeyUsagePurpose::CrlSign,
                ];
                let ca = ca_params.self_signed(&ca_key)?;
                let key_pem = ca_key.serialize_pem();
                (ca.pem(), key_pem, rcgen::Issuer::new(ca_params, ca_key))
            }
        };
        let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for n in names {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = all
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(rcgen::SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Onair relay");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        let certs = DevCertificates {
            ca_pem,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok((certs, ca_key_pem))
    }

    /// The relay's identity from these certificates.
    pub fn identity(&self) -> Result<TlsIdentity, TlsError> {
        TlsIdentity::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
    }
}

/// The addresses a relay listening on `listen` answers at: the address itself, or every
/// interface's address when it is unspecified (for a development certificate's names).
pub fn listen_names(listen: SocketAddr) -> Vec<String> {
    if !listen.ip().is_unspecified() {
        return vec![listen.ip().to_string()];
    }
    local_addresses().iter().map(IpAddr::to_string).collect()
}

/// This machine's interface addresses (from the kernel's routing view: each address a UDP
/// socket can bind), best effort.
fn local_addresses() -> Vec<IpAddr> {
    // /proc/net/fib_trie lists local IPv4 addresses as "/32 host LOCAL".
    let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut last: Option<IpAddr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if t.contains("/32 host LOCAL")
            && let Some(ip) = last
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// A TCP listener whose `accept` yields finished TLS connections.
pub(crate) struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    _acceptor_task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TlsListener {
    /// Serves TLS with `identity` on `listener`. Each handshake runs in its own task.
    pub(crate) fn new(listener: TcpListener, identity: &TlsIdentity) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(identity.config.clone());
        let (tx, ready) = mpsc::channel(256);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            addr,
            ready,
            _acceptor_task: AbortOnDrop(task),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The acceptor task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_development_certificate_serves_and_bad_pem_is_refused() {
        let dev = DevCertificates::generate(&["10.77.0.1".into(), "relay.test".into()])
            .expect("generated");
        assert!(dev.ca_pem.contains("BEGIN CERTIFICATE"));
        assert!(dev.identity().is_ok());
        assert!(TlsIdentity::from_pem(b"nothing", dev.key_pem.as_bytes()).is_err());
        assert!(TlsIdentity::from_pem(dev.cert_pem.as_bytes(), b"nothing").is_err());
    }

    #[test]
    fn a_kept_ca_signs_the_next_certificate() {
        let (first, ca_key) = DevCertificates::generate_with(None, &[]).expect("first");
        let (second, _) =
            DevCertificates::generate_with(Some((&first.ca_pem, &ca_key)), &["10.77.0.9".into()])
                .expect("second");
        assert_eq!(first.ca_pem, second.ca_pem, "the same CA");
        assert_ne!(first.cert_pem, second.cert_pem);
        assert!(second.identity().is_ok());
    }
}
