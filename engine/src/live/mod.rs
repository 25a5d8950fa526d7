//! Live media sessions: publishing a local channel to the relay's SFU and playing a stream from
//! it, over WebRTC. The connection task owns them and drives their signaling; their media runs
//! on dedicated threads (encode, decode) and runtime tasks (RTP in and out).

pub mod controls;
pub mod player;
pub mod publisher;
pub mod session;

use std::sync::Arc;

use onair_media::channel::Fanout;
use onair_media::frame::{SharedAudioFrame, SharedVideoFrame};
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
    /// Which video layer of a simulcast stream (ZEGO's `setPlayStreamVideoType`); Auto lets
    /// the relay choose.
    pub video_layer: onair_protocol::messages::VideoLayer,
}

/// A peer connection's state as the sessions see it: WebRTC's states that mean something to
/// them (New and Connecting mean nothing: the session's connect timeout runs meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerLink {
    /// Connected: media can flow.
    Up,
    /// Disconnected (ICE lost its path, e.g. a Wi-Fi hiccup): it may come back by itself, so
    /// the session waits for a grace period before it gives the connection up.
    Disconnected,
    /// Failed or closed: gone for good.
    Down,
}

impl PeerLink {
    /// What WebRTC's `state` means to a session, if anything.
    pub fn of(state: RTCPeerConnectionState) -> Option<PeerLink> {
        match state {
            RTCPeerConnectionState::Connected => Some(PeerLink::Up),
            RTCPeerConnectionState::Disconnected => Some(PeerLink::Disconnected),
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => Some(PeerLink::Down),
            _ => None,
        }
    }
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
        /// Up, disconnected (maybe for a moment) or down for good.
        state: PeerLink,
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
    /// Mutes and volume set by the app.
    pub controls: Arc<controls::PlayControls>,
}

/// Reports a peer connection's state changes to the connection task: each change between
/// [`PeerLink`]s (up, disconnected, up again, …) once, until it goes down for good (then stops).
pub(crate) fn report_state(
    mut state: watch::Receiver<RTCPeerConnectionState>,
    stream_id: String,
    publisher: bool,
    generation: u64,
    events: mpsc::Sender<LiveEvent>,
) {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let seen = PeerLink::of(*state.borrow_and_update());
            if let Some(link) = seen
                && last != seen
            {
                last = seen;
                let event = LiveEvent::PeerState {
                    stream_id: stream_id.clone(),
                    publisher,
                    state: link,
                    generation,
                };
                if events.send(event).await.is_err() || link == PeerLink::Down {
                    return;
                }
            }
            // The connection was dropped: nobody needs its reports any more.
            if state.changed().await.is_err() {
                return;
            }
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
