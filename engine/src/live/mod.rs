//! Live media sessions: publishing a local channel to the relay's SFU and playing a stream from
//! it, over WebRTC. The connection task owns them and drives their signaling; their media runs
//! on dedicated threads (encode, decode) and runtime tasks (RTP in and out).

pub mod player;
pub mod publisher;

use std::sync::Arc;

use crate::media::channel::Fanout;
use crate::media::frame::{SharedAudioFrame, SharedVideoFrame};

/// Where a player's stream comes from, as the seed's `ZegoStreamResourceMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResourceMode {
    /// The SDK's choice (here: L3).
    #[default]
    Default,
    /// Ultra-low-latency live (L3): the relay's SFU over WebRTC.
    OnlyL3,
}

/// Options for playing a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlayerConfig {
    /// Where the stream comes from.
    pub resource_mode: ResourceMode,
}

/// What media tasks report back to the connection task.
#[derive(Debug)]
pub enum LiveEvent {
    /// A publisher's or player's peer connection changed state.
    PeerState {
        /// The stream.
        stream_id: String,
        /// A publisher (or a player).
        publisher: bool,
        /// Connected (true) or failed/closed (false).
        up: bool,
        /// Which generation of the session this is about (stale reports are ignored).
        generation: u64,
    },
    /// A player decoded its first video frame.
    FirstVideoFrame {
        /// The stream.
        stream_id: String,
        /// The generation.
        generation: u64,
    },
    /// Time to try a publisher or player again.
    Retry {
        /// The stream.
        stream_id: String,
        /// A publisher (or a player).
        publisher: bool,
        /// The generation that failed.
        generation: u64,
    },
    /// A player decoded its first audio frame.
    FirstAudioFrame {
        /// The stream.
        stream_id: String,
        /// The generation.
        generation: u64,
    },
}

/// A played stream's outputs, created on first use and kept for the engine's life so a UI can
/// hold its receivers across restarts of the stream.
#[derive(Default)]
pub struct PlayOutputs {
    /// Decoded video.
    pub video: Arc<Fanout<SharedVideoFrame>>,
    /// Decoded audio.
    pub audio: Arc<Fanout<SharedAudioFrame>>,
}
