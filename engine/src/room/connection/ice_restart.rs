//! ICE restarts in the connection task: a restart offer on a session's existing peer
//! connection (fresh ICE credentials; the same DTLS session, tracks and SSRCs), sent to the
//! relay, and its answer applied. The sessions decide when (`ICE_RESTART_AFTER` of being
//! disconnected); whether it worked, the connection's own state tells them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::peer_connection::PeerConnection;

use super::Connection;
use crate::room::link::Pending;
use onair_protocol::messages::RequestBody;

/// An unanswered restart offer is given up on after this long (a new one may go then).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

impl Connection {
    /// The peer connection of `stream_id`'s publish (or play) session, if it is still the one
    /// of `generation`.
    fn session_peer(
        &self,
        stream_id: &str,
        publish: bool,
        generation: u64,
    ) -> Option<Arc<dyn PeerConnection>> {
        if publish {
            self.publishers
                .get(stream_id)
                .filter(|p| p.session.generation() == generation)
                .and_then(|p| p.peer.as_ref())
                .map(|peer| peer.pc.clone())
        } else {
            self.players
                .get(stream_id)
                .filter(|p| p.session.generation() == generation)
                .and_then(|p| p.peer.as_ref())
                .map(|peer| peer.pc.clone())
        }
    }

    /// Sends a restart offer for the connection of `generation`. Without signaling there is
    /// nobody to answer: the session's grace decides, as without a restart. One offer at a
    /// time: a new one only once the last was answered or [`ANSWER_WITHIN`] passed.
    pub(super) async fn restart_ice(&mut self, stream_id: &str, publish: bool, generation: u64) {
        if self.client.is_none() {
            return;
        }
        let key = (stream_id.to_string(), publish);
        if self
            .ice_restarts
            .get(&key)
            .is_some_and(|(_, sent)| sent.elapsed() < ANSWER_WITHIN)
        {
            return;
        }
        let Some(pc) = self.session_peer(stream_id, publish, generation) else {
            return;
        };
        match onair_transport::peer::restart_offer(&pc).await {
            Ok(sdp) => {
                tracing::info!(stream_id, publish, "ICE restart offered");
                let body = RequestBody::RestartIce {
                    stream_id: stream_id.to_string(),
                    publish,
                    sdp,
                };
                self.next_ice_restart += 1;
                let number = self.next_ice_restart;
                self.ice_restarts.insert(key, (number, Instant::now()));
                let pending =
                    Pending::IceRestart(stream_id.to_string(), publish, generation, number);
                self.send(body, pending).await;
            }
            Err(e) => tracing::warn!(stream_id, publish, error = %e, "no ICE restart offer"),
        }
    }

    /// The relay answered a restart offer (or refused it: the connection then stays as it
    /// is, and is renegotiated anew if it does not come back within the session's time).
    pub(super) async fn ice_restart_answered(
        &mut self,
        stream_id: &str,
        publish: bool,
        generation: u64,
        number: u64,
        answer: Result<String, String>,
    ) {
        // Only the answer to the latest offer applies (a late one would meet a newer offer).
        let key = (stream_id.to_string(), publish);
        if self.ice_restarts.get(&key).map(|(n, _)| *n) != Some(number) {
            return;
        }
        self.ice_restarts.remove(&key);
        let Some(pc) = self.session_peer(stream_id, publish, generation) else {
            return;
        };
        let applied = match answer {
            Ok(sdp) => onair_transport::peer::apply_answer(&pc, sdp)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match applied {
            Ok(()) => tracing::info!(stream_id, publish, "ICE restarted"),
            Err(e) => tracing::warn!(stream_id, publish, error = %e, "ICE restart failed"),
        }
    }
}
