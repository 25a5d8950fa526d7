//! The SDK's own error type; codes and wire errors come from `onair-protocol`.

pub use onair_protocol::error::{ErrorCode, WireError, errors_markdown};

/// Errors from the engine's synchronous calls (creating an engine, connecting a client).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine profile was rejected.
    #[error("invalid engine profile: {0}")]
    InvalidProfile(String),
    /// The engine's runtime could not start.
    #[error("could not start the engine runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// A relay replied with an error.
    #[error(transparent)]
    Relay(#[from] WireError),
    /// The WebSocket to the relay failed.
    #[error("connection to the relay failed: {0}")]
    Connection(String),
    /// The relay's TLS certificate was not accepted (or the TLS setup failed).
    #[error("TLS with the relay failed: {0}")]
    Tls(String),
}

impl EngineError {
    /// The stable code of this error.
    pub fn code(&self) -> u32 {
        match self {
            EngineError::InvalidProfile(_) => ErrorCode::InvalidProfile.code(),
            EngineError::Runtime(_) => ErrorCode::Internal.code(),
            EngineError::Relay(e) => e.code,
            EngineError::Connection(_) => ErrorCode::ConnectionFailed.code(),
            EngineError::Tls(_) => ErrorCode::TlsFailed.code(),
        }
    }
}
