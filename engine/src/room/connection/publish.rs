//! Publish sessions in the connection task: a [`PublishSession`] (the decisions) with the
//! peer connection, encoders and local channel it drives.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::{Connection, StartPublishing, no_errors};
use crate::error::ErrorCode;
use crate::live::controls::PublishControls;
use crate::live::publisher::{PublisherMedia, PublisherPeer};
use crate::live::session::{Action, PublishSession, publisher_event};
use crate::room::events::{Event, PublisherState};
use crate::room::link::Pending;
use crate::room::machine::RoomPhase;
use crate::room::quality::Deltas;
use onair_media::channel::FrameReceiver;
use onair_media::config::VideoConfig;
use onair_media::frame::{SharedAudioFrame, SharedVideoFrame};
use onair_media::local::PublishChannel;
use onair_protocol::ids;
use onair_protocol::messages::RequestBody;
use onair_transport::peer::SendOptions;

/// A publish session with what it drives.
pub(super) struct Publisher {
    pub(super) session: PublishSession,
    pub(super) channel: PublishChannel,
    pub(super) epoch: u64,
    pub(super) room_id: String,
    pub(super) config: VideoConfig,
    pub(super) video: FrameReceiver<SharedVideoFrame>,
    pub(super) audio: FrameReceiver<SharedAudioFrame>,
    /// Mutes and SEI, shared with the engine handle.
    pub(super) controls: Arc<PublishControls>,
    /// The offer made for the current generation, until it is sent.
    pub(super) offer: Option<String>,
    // Field order matters: the media threads stop before the connection goes.
    pub(super) media: Option<PublisherMedia>,
    pub(super) peer: Option<PublisherPeer>,
    pub(super) deltas: Deltas<5>,
    /// (packets the relay NACKed, packets sent) for the network quality.
    pub(super) net: Deltas<2>,
}

impl Connection {
    /// Checks a publish request and starts its session.
    pub(super) async fn start_publishing(&mut self, start: StartPublishing) {
        let StartPublishing {
            stream_id,
            channel,
            epoch,
            room_id,
            config,
            video,
            audio,
            controls,
        } = start;
        let refused = |code: u32, message: &str| (code, message.to_string());
        let taken = self.publishers.values().any(|p| p.channel == channel)
            || self.publishers.contains_key(&stream_id);
        if taken {
            // The call raised the channel's publish epoch: the publisher already on this
            // channel owns the new one, or (the stream ID is another channel's) nobody does.
            match self.publishers.values_mut().find(|p| p.channel == channel) {
                Some(p) => p.epoch = epoch,
                None => self.release_channel(channel, epoch),
            }
            self.events.emit(Event::ApiCalledResult {
                api: "start_publishing_stream",
                error_code: ErrorCode::StreamIdTaken.code(),
                message: format!("channel {channel:?} or stream {stream_id} is already publishing"),
            });
            return;
        }
        // Publishing right after login_room is fine (the seed's example does it): the
        // offer goes out once the room is logged in.
        let room = room_id.or_else(|| {
            self.rooms
                .values()
                .find(|r| r.phase() == RoomPhase::Logined)
                .or_else(|| self.rooms.values().next())
                .map(|r| r.room_id().to_string())
        });
        let checked = match room.filter(|r| self.rooms.contains_key(r)) {
            None => Err(refused(
                ErrorCode::NotLoggedIn.code(),
                "log into a room first",
            )),
            Some(room_id) => ids::check_stream_id(&stream_id)
                .map(|()| room_id)
                .map_err(|code| refused(code.code(), code.cause())),
        };
        let room_id = match checked {
            Ok(room_id) => room_id,
            Err((code, message)) => {
                self.events.emit(publisher_event(
                    &stream_id,
                    PublisherState::NoPublish,
                    code,
                    &message,
                ));
                self.release_channel(channel, epoch);
                return;
            }
        };
        let (session, actions) = PublishSession::start(&stream_id, self.settings.session_timers());
        self.publishers.insert(
            stream_id.clone(),
            Publisher {
                session,
                channel,
                epoch,
                room_id,
                config,
                video,
                audio,
                controls,
                offer: None,
                media: None,
                peer: None,
                deltas: Deltas::default(),
                net: Deltas::default(),
            },
        );
        self.run_publish(&stream_id, actions).await;
    }

    /// Send-side options for a publisher with `config`: the estimate starts at the configured
    /// bitrate and may go down to a tenth of it (at least 100 kbps).
    pub(super) fn send_options(&self, config: &VideoConfig) -> SendOptions {
        // Every simulcast layer together.
        let total: u32 = config.layers().iter().map(|l| l.bitrate_kbps).sum();
        let max = f64::from(total) * 1000.0;
        SendOptions {
            estimate: self
                .settings
                .bandwidth_estimation
                .then(|| (max, (max / 10.0).max(100_000.0).min(max), max)),
            simulated_loss: self.settings.simulated_send_loss,
            // Repair packets to the relay as its NACKs call for (its decoder rebuilds what
            // they cover before it forwards; players get their own from the relay).
            fec: self.settings.publish_fec,
            fec_totals: None,
            // The encoder's rate follows the estimate: always metered.
            estimate_only_with_fec: false,
        }
    }
    /// Carries out a publish session's actions (and those they lead to).
    pub(super) async fn run_publish(&mut self, stream_id: &str, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let now = Instant::now();
            let net = self.media_network();
            let send = self
                .publishers
                .get(stream_id)
                .map(|p| self.send_options(&p.config));
            let live_tx = self.live_tx.clone();
            let Some(p) = self.publishers.get_mut(stream_id) else {
                return;
            };
            match action {
                Action::Emit(e) => self.events.emit(e),
                Action::Offer { generation } => {
                    let result = match &net {
                        Some(net) => {
                            let send = send.unwrap_or_default();
                            let layers = usize::from(p.config.simulcast_layers);
                            crate::live::publisher::offer(
                                net, stream_id, layers, generation, live_tx, send,
                            )
                            .await
                            .map_err(|e| e.to_string())
                        }
                        None => Err("no local address for media".to_string()),
                    };
                    let Some(p) = self.publishers.get_mut(stream_id) else {
                        return;
                    };
                    match result {
                        Ok((peer, sdp)) => {
                            p.media = None;
                            p.peer = Some(peer);
                            p.offer = Some(sdp);
                            queue.extend(p.session.offer_ready(generation));
                        }
                        Err(e) => queue.extend(p.session.offer_failed(generation, &e, now)),
                    }
                }
                Action::SendRequest { generation } => {
                    let body = RequestBody::Publish {
                        room_id: p.room_id.clone(),
                        stream_id: stream_id.to_string(),
                        extra_info: self
                            .stream_extra
                            .get(&p.channel)
                            .cloned()
                            .unwrap_or_default(),
                        sdp: p.offer.take(),
                    };
                    let mute = p.controls.audio_muted() || p.controls.video_muted();
                    self.send(body, Pending::Publish(stream_id.to_string(), generation))
                        .await;
                    // Muted before publishing: the relay registers the state with the stream
                    // (the request comes after the publish on the same connection).
                    if mute {
                        self.send_mute(stream_id).await;
                    }
                }
                Action::Accept { generation, sdp } => {
                    let started = match p.peer.as_ref() {
                        Some(peer) => match peer.accept(sdp).await {
                            Ok(()) => {
                                peer.start_media(
                                    p.config,
                                    p.video.clone(),
                                    p.audio.clone(),
                                    p.controls.clone(),
                                )
                                .await
                            }
                            Err(e) => Err(e),
                        },
                        None => continue,
                    };
                    match started {
                        Ok(media) => p.media = Some(media),
                        Err(e) => {
                            queue.extend(p.session.accept_failed(generation, &e.to_string(), now))
                        }
                    }
                }
                Action::RestartIce { generation } => {
                    self.restart_ice(stream_id, true, generation).await;
                }
                Action::DropPeer => {
                    p.media = None;
                    p.peer = None;
                    p.offer = None;
                }
                Action::SendStop => {
                    let body = RequestBody::StopPublish {
                        stream_id: stream_id.to_string(),
                    };
                    self.send(body, Pending::Other).await;
                }
                Action::ReleaseChannel => {
                    let (channel, epoch) = (p.channel, p.epoch);
                    self.release_channel(channel, epoch);
                }
            }
        }
        if self
            .publishers
            .get(stream_id)
            .is_some_and(|p| p.session.is_ended())
        {
            self.publishers.remove(stream_id);
        }
    }
    /// Tells the relay `stream_id`'s mute state.
    pub(super) async fn send_mute(&mut self, stream_id: &str) {
        let Some(p) = self.publishers.get(stream_id) else {
            return;
        };
        let body = RequestBody::SetStreamMute {
            stream_id: stream_id.to_string(),
            audio_muted: p.controls.audio_muted(),
            video_muted: p.controls.video_muted(),
        };
        self.send(body, Pending::Other).await;
    }

    /// The channel's publish `epoch` is over: let capture stop (unless a newer publish or the
    /// preview holds it). Stopping joins capture threads, so it runs on the blocking pool.
    pub(super) fn release_channel(&self, channel: PublishChannel, epoch: u64) {
        let local = self.local.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(c) = local.lock().get_mut(channel.index()) {
                c.release_publishing(epoch, &no_errors());
            }
        });
    }
    /// Stops publishing `stream_id` for good.
    pub(super) async fn end_publishing(&mut self, stream_id: &str, tell_relay: bool) {
        let Some(p) = self.publishers.get_mut(stream_id) else {
            return;
        };
        let actions = p.session.stop(tell_relay);
        self.run_publish(stream_id, actions).await;
    }
}
