//! Live media sessions: publishing a local channel to the relay's SFU and playing a stream from
//! it, over WebRTC. The connection task owns them and drives their signaling; their media runs
//! on dedicated threads (encode, decode) and runtime tasks (RTP in and out).

pub mod player;
pub mod publisher;
pub mod session;

use std::sync::Arc;

use onair_media::channel::Fanout;
use onair_media::frame::{SharedAudioFrame, SharedVideoFrame};
use onair_transport::peer::{connection_down, connection_up};
use tokio::sync::{mpsc, watch};
use webrtc::peer_connection::RTCPeerConnectionState;

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

/// Reports a peer connection's fate to the connection task: once when it comes up, once when it
/// fails or closes (then stops).
pub(crate) fn report_state(
    mut state: watch::Receiver<RTCPeerConnectionState>,
    stream_id: String,
    publisher: bool,
    generation: u64,
    events: mpsc::Sender<LiveEvent>,
) {
    tokio::spawn(async move {
        let event = |up| LiveEvent::PeerState {
            stream_id: stream_id.clone(),
            publisher,
            up,
            generation,
        };
        match connection_up(&mut state).await {
            Some(true) => {
                let _ = events.send(event(true)).await;
                if connection_down(state).await.is_some() {
                    let _ = events.send(event(false)).await;
                }
            }
            Some(false) => {
                let _ = events.send(event(false)).await;
            }
            None => {}
        }
    });
}

/// Joins media threads without blocking an async worker: on a runtime the joins go to the
/// blocking pool (the threads have been told to stop and exit within one frame); elsewhere
/// they are joined here.
pub(crate) fn join_off_runtime(threads: Vec<std::thread::JoinHandle<()>>) {
    let join = move || {
        for t in threads {
            let _ = t.join();
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(join);
        }
        Err(_) => join(),
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for (a `select!` arm).
pub(crate) async fn sleep_until_opt(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
