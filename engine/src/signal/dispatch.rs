//! Asking a cluster which node to use: an `http://` or `https://` server URL in the profile
//! is a relay's `/dispatch` endpoint; the engine asks it (with the app and the room it logs
//! into) before each connection and connects to the signaling URL it names.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::error::EngineError;

/// How long the whole request may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer read.
const MAX_ANSWER: u64 = 64 * 1024;

/// Whether `server` is a dispatch URL rather than a signaling one.
pub fn is_dispatch(server: &str) -> bool {
    server.starts_with("http://") || server.starts_with("https://")
}

/// Checks a dispatch URL; it gets `app_id` and `room_id` added when asked.
pub fn check(server: &str) -> Result<String, EngineError> {
    let url = url::Url::parse(server)
        .map_err(|e| EngineError::InvalidProfile(format!("dispatch URL {server:?}: {e}")))?;
    if url.host_str().is_none() {
        return Err(EngineError::InvalidProfile(format!(
            "dispatch URL {server:?} has no host"
        )));
    }
    Ok(url.to_string())
}

/// Asks `dispatch` which node serves `room_id` of `app_id`: its signaling URL.
pub async fn resolve(
    dispatch: &str,
    app_id: u32,
    room_id: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<String, EngineError> {
    let mut url = url::Url::parse(dispatch)
        .map_err(|e| EngineError::Connection(format!("dispatch URL: {e}")))?;
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/dispatch");
    }
    url.query_pairs_mut()
        .append_pair("app_id", &app_id.to_string())
        .append_pair("room_id", room_id);
    let answer = tokio::task::spawn_blocking(move || get(&url, tls))
        .await
        .map_err(|e| EngineError::Connection(e.to_string()))?
        .map_err(|e| EngineError::Connection(format!("dispatch: {e}")))?;
    let json: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|e| EngineError::Connection(format!("dispatch answer: {e}")))?;
    let node = json["url"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| EngineError::Connection(format!("dispatch named no node: {answer}")))?;
    crate::signal::normalize_url(node)
}

/// A blocking HTTP/1.1 GET (plain or TLS): the body of a 200 answer.
fn get(url: &url::Url, tls: Arc<rustls::ClientConfig>) -> Result<String, String> {
    let host = url.host_str().ok_or("no host")?.to_string();
    let port = url.port_or_known_default().ok_or("no port")?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("the host has no address")?;
    let tcp = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    if url.scheme() == "https" {
        let name =
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(tls, name).map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        // A server that closes without close_notify still sent the whole answer.
        if let Err(e) = stream.take(MAX_ANSWER).read_to_end(&mut raw)
            && raw.is_empty()
        {
            return Err(e.to_string());
        }
    } else {
        let mut tcp = tcp;
        tcp.write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        tcp.take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .map_err(|e| e.to_string())?;
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("{status}: {}", body.trim()));
    }
    Ok(body.to_string())
}
