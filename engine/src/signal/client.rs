//! A typed signaling WebSocket: send [`Request`]s, receive [`ServerMessage`]s.
//!
//! The engine's connection task drives one with `send`/`recv`; tests, benchmarks and tools use
//! the convenience `request`, which waits for the matching response and keeps events aside.

use std::collections::VecDeque;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{EngineError, ErrorCode, WireError};
use onair_protocol::messages::{Request, RequestBody, ResponseBody, ServerMessage};

/// Turns `ws://host:port` (with or without `/ws`) into the relay's signaling URL.
pub fn normalize_url(server: &str) -> Result<String, EngineError> {
    let mut url = url::Url::parse(server)
        .map_err(|e| EngineError::InvalidProfile(format!("server URL {server:?}: {e}")))?;
    if url.scheme() != "ws" && url.scheme() != "wss" {
        return Err(EngineError::InvalidProfile(format!(
            "server URL {server:?} must start with ws:// or wss://"
        )));
    }
    if url.host_str().is_none() {
        return Err(EngineError::InvalidProfile(format!(
            "server URL {server:?} has no host"
        )));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/ws");
    }
    Ok(url.to_string())
}

/// One signaling connection.
pub struct SignalClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: VecDeque<ServerMessage>,
}

impl SignalClient {
    /// Opens the WebSocket to `url` (`ws://host:port[/ws]` or `wss://…`, trusting the system's
    /// certificate authorities and the one in `ONAIR_CA_CERT`, if set).
    pub async fn connect(url: &str) -> Result<SignalClient, EngineError> {
        Self::connect_with(url, &super::tls::TlsTrust::from_env()?).await
    }

    /// Opens the WebSocket to `url`, trusting `trust` for `wss://`.
    pub async fn connect_with(
        url: &str,
        trust: &super::tls::TlsTrust,
    ) -> Result<SignalClient, EngineError> {
        let url = normalize_url(url)?;
        super::tls::warn_if_plain_remote(&url);
        let connector = url
            .starts_with("wss:")
            .then(|| tokio_tungstenite::Connector::Rustls(trust.client_config()));
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, true, connector)
                .await
                .map_err(super::tls::connect_error)?;
        Ok(SignalClient {
            ws,
            next_id: 1,
            events: VecDeque::new(),
        })
    }

    /// Connects, says hello for `app_id`, and logs into `room_id` as `user` with the app sign:
    /// what a tool or test needs to stand in a room as a bare client.
    pub async fn join(
        url: &str,
        app_id: u32,
        room_id: &str,
        user: onair_protocol::messages::User,
        app_sign: &str,
    ) -> Result<(SignalClient, ResponseBody), EngineError> {
        let mut client = SignalClient::connect(url).await?;
        client
            .request(RequestBody::Hello {
                protocol: onair_protocol::messages::PROTOCOL_VERSION,
                app_id,
                resume: None,
            })
            .await?;
        let snapshot = client
            .request(RequestBody::Login {
                room_id: room_id.to_string(),
                user,
                token: None,
                app_sign: Some(app_sign.to_string()),
                is_user_status_notify: false,
            })
            .await?;
        Ok((client, snapshot))
    }

    /// The local IP this connection uses (WebRTC host candidates go on the same interface).
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.local_addr().ok().map(|a| a.ip()),
            MaybeTlsStream::Rustls(tls) => tls.get_ref().0.local_addr().ok().map(|a| a.ip()),
            _ => None,
        }
    }

    /// Sends a request and returns its id.
    pub async fn send(&mut self, body: RequestBody) -> Result<u64, EngineError> {
        let id = self.next_id;
        self.next_id += 1;
        let text = serde_json::to_string(&Request { id, body })
            .map_err(|e| EngineError::Connection(e.to_string()))?;
        self.send_raw(text).await?;
        Ok(id)
    }

    /// Sends any text, well-formed or not (tests use it to send garbage).
    pub async fn send_raw(&mut self, text: String) -> Result<(), EngineError> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| EngineError::Connection(e.to_string()))
    }

    /// Sends a binary frame (which the relay refuses).
    pub async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), EngineError> {
        self.ws
            .send(Message::binary(data))
            .await
            .map_err(|e| EngineError::Connection(e.to_string()))
    }

    /// The next message from the relay, including events set aside by [`Self::request`];
    /// `None` once the connection is closed. A message that does not parse is an error.
    pub async fn recv(&mut self) -> Option<Result<ServerMessage, EngineError>> {
        if let Some(e) = self.events.pop_front() {
            return Some(Ok(e));
        }
        self.recv_wire().await
    }

    async fn recv_wire(&mut self) -> Option<Result<ServerMessage, EngineError>> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(text.as_str()).map_err(|e| {
                        EngineError::Connection(format!("unreadable message from the relay: {e}"))
                    }));
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => return Some(Err(EngineError::Connection(e.to_string()))),
            }
        }
    }

    /// Sends a request and waits for its response; events that arrive meanwhile are kept for
    /// [`Self::recv`].
    pub async fn request(&mut self, body: RequestBody) -> Result<ResponseBody, EngineError> {
        let id = self.send(body).await?;
        loop {
            match self.recv_wire().await {
                None => return Err(EngineError::Connection("connection closed".into())),
                Some(Err(e)) => return Err(e),
                Some(Ok(ServerMessage::Response {
                    id: Some(rid),
                    result,
                    error,
                })) if rid == id => {
                    return match (result, error) {
                        (Some(r), _) => Ok(r),
                        (None, Some(e)) => Err(EngineError::Relay(e)),
                        (None, None) => Err(EngineError::Relay(WireError::new(
                            ErrorCode::Internal,
                            "empty response",
                        ))),
                    };
                }
                Some(Ok(other)) => self.events.push_back(other),
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
