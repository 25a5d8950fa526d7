//! Play sessions in the connection task: a [`PlaySession`] (the decisions) with the peer
//! connection and decoders it drives.

use std::collections::VecDeque;
use std::time::Instant;

use super::Connection;
use crate::live::PlayerConfig;
use crate::live::player::PlayerPeer;
use crate::live::session::{Action, PlaySession};
use crate::room::link::Pending;
use crate::room::quality::Deltas;
use onair_protocol::messages::RequestBody;

/// A play session with what it drives.
pub(super) struct Player {
    pub(super) session: PlaySession,
    pub(super) config: PlayerConfig,
    pub(super) offer: Option<String>,
    pub(super) peer: Option<PlayerPeer>,
    pub(super) deltas: Deltas<2>,
    /// (packets seen missing, repaired, only reordered, received) for the network quality.
    pub(super) net: Deltas<4>,
    /// The simulcast layer the relay last said it sends.
    pub(super) layer: Option<usize>,
    /// The relay's latest estimate of this player's link, kbit/s.
    pub(super) estimate_kbps: f64,
    /// The layer asked for in the play request in flight, then (once answered) the one the
    /// relay knows: a change asked for meanwhile is sent after the answer.
    pub(super) sent_layer: Option<onair_protocol::messages::VideoLayer>,
    pub(super) relay_has_play: bool,
}

impl Connection {
    /// Carries out a play session's actions (and those they lead to).
    pub(super) async fn run_play(&mut self, stream_id: &str, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let now = Instant::now();
            let net = self.media_network();
            let relay_layer = match self.players.get(stream_id) {
                Some(p) => self.relay_layer(stream_id, p.config.video_layer),
                None => return,
            };
            let live_tx = self.live_tx.clone();
            let Some(p) = self.players.get_mut(stream_id) else {
                return;
            };
            match action {
                Action::Emit(e) => self.events.emit(e),
                Action::Offer { generation } => {
                    let result = match &net {
                        Some(net) => crate::live::player::offer(net)
                            .await
                            .map_err(|e| e.to_string()),
                        None => Err("no local address for media".to_string()),
                    };
                    let Some(p) = self.players.get_mut(stream_id) else {
                        return;
                    };
                    match result {
                        Ok((peer, sdp)) => {
                            p.peer = Some(peer);
                            p.offer = Some(sdp);
                            queue.extend(p.session.offer_ready(generation));
                        }
                        Err(e) => queue.extend(p.session.offer_failed(generation, &e, now)),
                    }
                }
                Action::SendRequest { generation } => {
                    let Some(sdp) = p.offer.take() else {
                        continue;
                    };
                    let layer = relay_layer;
                    p.sent_layer = Some(layer);
                    p.relay_has_play = false;
                    let body = RequestBody::Play {
                        stream_id: stream_id.to_string(),
                        sdp,
                        video_layer: layer,
                    };
                    self.send(body, Pending::Play(stream_id.to_string(), generation))
                        .await;
                }
                Action::Accept { generation, sdp } => {
                    let outputs = self
                        .play_outputs
                        .lock()
                        .entry(stream_id.to_string())
                        .or_default()
                        .clone();
                    let Some(peer) = p.peer.as_mut() else {
                        continue;
                    };
                    let accepted = peer
                        .accept(
                            sdp,
                            stream_id.to_string(),
                            generation,
                            &outputs,
                            live_tx,
                            &self.events,
                        )
                        .await;
                    if let Err(e) = accepted {
                        queue.extend(p.session.accept_failed(generation, &e.to_string(), now));
                        continue;
                    }
                    // The relay has the play: a layer asked for while it was in flight
                    // goes now.
                    p.relay_has_play = true;
                    let wanted = relay_layer;
                    if p.sent_layer != Some(wanted) {
                        p.sent_layer = Some(wanted);
                        let body = RequestBody::SetPlayLayer {
                            stream_id: stream_id.to_string(),
                            video_layer: wanted,
                        };
                        self.send(body, Pending::Other).await;
                    }
                }
                Action::RestartIce { generation } => {
                    self.restart_ice(stream_id, false, generation).await;
                }
                Action::DropPeer => {
                    p.relay_has_play = false;
                    p.peer = None;
                    p.offer = None;
                }
                Action::SendStop => {
                    let body = RequestBody::StopPlay {
                        stream_id: stream_id.to_string(),
                    };
                    self.send(body, Pending::Other).await;
                }
                Action::ReleaseChannel => {}
            }
        }
        // Refused for good: the app may play it again later (after logging in, say).
        if self
            .players
            .get(stream_id)
            .is_some_and(|p| p.session.is_ended())
        {
            self.players.remove(stream_id);
        }
    }
    /// Stops playing `stream_id`.
    pub(super) async fn end_playing(&mut self, stream_id: &str) {
        let Some(p) = self.players.get_mut(stream_id) else {
            return;
        };
        let actions = p.session.stop();
        self.run_play(stream_id, actions).await;
        self.players.remove(stream_id);
    }
}
