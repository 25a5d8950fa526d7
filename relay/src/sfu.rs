//! The SFU: receives each publisher's RTP over WebRTC and forwards it, undecoded, to every
//! player of that stream. Keyframe requests from players are aggregated and rate-limited into
//! PLIs to the publisher; a new player triggers one so it gets its first frame fast. NACKs from
//! players are answered by the sending side's NACK responder from its own packet cache.
//!
//! It is driven by the relay's state machine ([`crate::state::Output::Negotiate`],
//! `EndMedia`, `EndPlay`) and reports back through [`SfuEvents`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{broadcast, mpsc};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::PeerConnection;

use crate::state::SessionId;
use onair_transport::keyframe_requests::is_keyframe_request;
use onair_transport::peer::{
    self, MediaNetwork, WatchRules, h264_codec, new_peer, opus_codec, watch_connection,
};

/// Packets buffered per player before it counts as lagging (then it skips to the newest and a
/// keyframe is requested): about a second of 720p video.
const FORWARD_QUEUE: usize = 512;
/// A new player's keyframe request goes to the publisher unless one went this recently.
const NEW_PLAYER_PLI_INTERVAL: Duration = Duration::from_millis(100);
/// A keyframe request for repair (a player's PLI, a lagging player) goes to the publisher at
/// most this often, however many players ask: one player on a bad link must not make the
/// publisher send keyframes to everyone several times a second.
const REPAIR_PLI_INTERVAL: Duration = Duration::from_millis(500);

/// Why a player needs a keyframe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyframeWhy {
    /// It just subscribed.
    NewPlayer,
    /// It lost what it could not repair, or fell behind.
    Repair,
}

/// Whether a keyframe request for `why` goes upstream, `since_last` after the last one.
fn forward_pli(why: KeyframeWhy, since_last: Duration) -> bool {
    since_last
        >= match why {
            KeyframeWhy::NewPlayer => NEW_PLAYER_PLI_INTERVAL,
            KeyframeWhy::Repair => REPAIR_PLI_INTERVAL,
        }
}

/// What the SFU tells the relay.
pub trait SfuEvents: Send + Sync {
    /// The stream's first media packet arrived.
    fn flowing(&self, app_id: u32, stream_id: &str);
    /// The publisher's media connection failed or closed.
    fn failed(&self, app_id: u32, stream_id: &str, reason: &str);
    /// A player's media connection failed or closed without the relay closing it.
    fn player_failed(&self, app_id: u32, stream_id: &str, session: SessionId, reason: &str);
}

type StreamKey = (u32, String);
type PlayerKey = (u32, String, SessionId);

struct Ingest {
    pc: Arc<dyn PeerConnection>,
    video: broadcast::Sender<rtp::Packet>,
    audio: broadcast::Sender<rtp::Packet>,
    keyframe: mpsc::Sender<KeyframeWhy>,
    closing: AtomicBool,
}

/// The forwarding plane.
pub struct Sfu {
    network: MediaNetwork,
    /// When a publisher's or player's connection is given up on.
    rules: WatchRules,
    streams: Mutex<HashMap<StreamKey, Arc<Ingest>>>,
    players: Mutex<HashMap<PlayerKey, Arc<dyn PeerConnection>>>,
}

impl Sfu {
    /// Where its peer connections bind and what they advertise.
    pub fn network(&self) -> &MediaNetwork {
        &self.network
    }

    /// An SFU whose peer connections bind and advertise as `network` says.
    pub fn new(network: MediaNetwork, rules: WatchRules) -> Sfu {
        Sfu {
            network,
            rules,
            streams: Mutex::new(HashMap::new()),
            players: Mutex::new(HashMap::new()),
        }
    }

    /// Streams with an ingest.
    pub fn stream_count(&self) -> usize {
        self.streams.lock().len()
    }

    /// Players connected.
    pub fn player_count(&self) -> usize {
        self.players.lock().len()
    }

    /// Answers a publisher's offer and starts receiving its media.
    pub async fn ingest(
        self: &Arc<Self>,
        app_id: u32,
        stream_id: String,
        offer: String,
        events: Arc<dyn SfuEvents>,
    ) -> Result<String, String> {
        let (pc, mut ev) = new_peer(&self.network).await.map_err(|e| e.to_string())?;
        peer::add_receivers(&pc, &[RtpCodecKind::Video, RtpCodecKind::Audio])
            .await
            .map_err(|e| e.to_string())?;
        let sdp = peer::answer_offer(&pc, &mut ev, offer)
            .await
            .map_err(|e| e.to_string())?;
        let sdp = peer::advertise_public_ips(&sdp, &self.network.public_ips);
        let (keyframe_tx, mut keyframe_rx) = mpsc::channel::<KeyframeWhy>(16);
        let ingest = Arc::new(Ingest {
            pc: pc.clone(),
            video: broadcast::channel(FORWARD_QUEUE).0,
            audio: broadcast::channel(FORWARD_QUEUE / 4).0,
            keyframe: keyframe_tx,
            closing: AtomicBool::new(false),
        });
        let key = (app_id, stream_id.clone());
        if let Some(old) = self.streams.lock().insert(key, ingest.clone()) {
            old.closing.store(true, Ordering::SeqCst);
            let pc = old.pc.clone();
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
        }
        // Tracks: forward their packets; PLIs go to the video track.
        let flowing = Arc::new(AtomicBool::new(false));
        let forward_ingest = ingest.clone();
        let forward_events = events.clone();
        let forward_stream = stream_id.clone();
        tokio::spawn(async move {
            while let Some(track) = ev.tracks.recv().await {
                let kind = track.kind().await;
                let ingest = forward_ingest.clone();
                let events = forward_events.clone();
                let stream_id = forward_stream.clone();
                let flowing = flowing.clone();
                if kind == RtpCodecKind::Video {
                    let pli_track = track.clone();
                    let mut last_pli: Option<Instant> = None;
                    let mut requests = std::mem::replace(&mut keyframe_rx, mpsc::channel(1).1);
                    tokio::spawn(async move {
                        while let Some(why) = requests.recv().await {
                            if last_pli.is_some_and(|t| !forward_pli(why, t.elapsed())) {
                                continue;
                            }
                            last_pli = Some(Instant::now());
                            let media_ssrc = pli_track.ssrcs().await.first().copied().unwrap_or(0);
                            let pli = PictureLossIndication {
                                sender_ssrc: 0,
                                media_ssrc,
                            };
                            if pli_track.write_rtcp(vec![Box::new(pli)]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
                tokio::spawn(async move {
                    let tx = if kind == RtpCodecKind::Video {
                        &ingest.video
                    } else {
                        &ingest.audio
                    };
                    while let Some(event) = track.poll().await {
                        if let TrackRemoteEvent::OnRtpPacket(mut packet) = event {
                            if !flowing.swap(true, Ordering::SeqCst) {
                                events.flowing(app_id, &stream_id);
                            }
                            // Players negotiate their own header extensions (if any): the
                            // publisher's would not map. Dropped once here, so the copy each
                            // player takes from the channel allocates nothing.
                            packet.header.extension = false;
                            packet.header.extensions.clear();
                            packet.header.extensions.shrink_to_fit();
                            let _ = tx.send(packet);
                        }
                    }
                });
            }
        });
        // The publisher's connection: gone means the stream is over.
        let watch_ingest = ingest.clone();
        let rules = self.rules;
        tokio::spawn(async move {
            if let Some(s) = watch_connection(ev.state.clone(), ev.received.clone(), rules).await
                && !watch_ingest.closing.load(Ordering::SeqCst)
            {
                events.failed(app_id, &stream_id, &format!("publisher connection {s}"));
            }
        });
        Ok(sdp)
    }

    /// Answers a player's offer and starts forwarding the stream to it.
    pub async fn subscribe(
        self: &Arc<Self>,
        app_id: u32,
        stream_id: String,
        session: SessionId,
        offer: String,
        events: Arc<dyn SfuEvents>,
    ) -> Result<String, String> {
        let ingest = self
            .streams
            .lock()
            .get(&(app_id, stream_id.clone()))
            .cloned()
            .ok_or_else(|| "the stream has no media".to_string())?;
        let (pc, mut ev) = new_peer(&self.network).await.map_err(|e| e.to_string())?;
        let mut tracks = Vec::new();
        for (kind, codec) in [
            (RtpCodecKind::Video, h264_codec()),
            (RtpCodecKind::Audio, opus_codec()),
        ] {
            let ssrc = rand::random::<u32>();
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                stream_id.clone(),
                format!("{stream_id}-{kind}"),
                format!("{stream_id}-{kind}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec,
                    ..Default::default()
                }],
            )));
            let sender = pc
                .add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(|e| e.to_string())?;
            tracks.push((kind, ssrc, track, sender));
        }
        let sdp = peer::answer_offer(&pc, &mut ev, offer)
            .await
            .map_err(|e| e.to_string())?;
        let sdp = peer::advertise_public_ips(&sdp, &self.network.public_ips);
        for (kind, ssrc, track, sender) in tracks {
            let payload_type = sender
                .get_parameters()
                .await
                .map(|p| p.rtp_parameters.codecs.first().map(|c| c.payload_type))
                .ok()
                .flatten();
            let mut rx = if kind == RtpCodecKind::Video {
                ingest.video.subscribe()
            } else {
                ingest.audio.subscribe()
            };
            let keyframe = ingest.keyframe.clone();
            let writer = track.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(mut packet) => {
                            packet.header.ssrc = ssrc;
                            if let Some(pt) = payload_type {
                                packet.header.payload_type = pt;
                            }
                            if writer.write_rtp(packet).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // Too far behind: skip ahead and restart from a keyframe.
                            let _ = keyframe.try_send(KeyframeWhy::Repair);
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
            if kind == RtpCodecKind::Video {
                let keyframe = ingest.keyframe.clone();
                tokio::spawn(async move {
                    while let Some(event) = track.poll().await {
                        if let TrackLocalEvent::OnRtcpPacket(packets) = event
                            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
                        {
                            let _ = keyframe.try_send(KeyframeWhy::Repair);
                        }
                    }
                });
            }
        }
        // A new player starts at the next keyframe: ask for one now.
        let _ = ingest.keyframe.try_send(KeyframeWhy::NewPlayer);
        let key = (app_id, stream_id.clone(), session);
        if let Some(old) = self.players.lock().insert(key.clone(), pc.clone()) {
            tokio::spawn(async move {
                let _ = old.close().await;
            });
        }
        // The player's connection: if it fails or closes while still registered (the relay
        // unregisters before it closes one itself), the player is gone: tell the state machine.
        let (state, received) = (ev.state.clone(), ev.received.clone());
        let sfu = Arc::downgrade(self);
        let rules = self.rules;
        tokio::spawn(async move {
            let Some(s) = watch_connection(state, received, rules).await else {
                return;
            };
            let ours = sfu.upgrade().is_some_and(|sfu| {
                let mut players = sfu.players.lock();
                let same = players.get(&key).is_some_and(|p| Arc::ptr_eq(p, &pc));
                if same {
                    players.remove(&key);
                }
                same
            });
            if ours {
                events.player_failed(
                    app_id,
                    &stream_id,
                    session,
                    &format!("player connection {s}"),
                );
            }
        });
        Ok(sdp)
    }

    /// Closes a stream's ingest and all its players.
    pub fn end_media(&self, app_id: u32, stream_id: &str) {
        let ingest = self.streams.lock().remove(&(app_id, stream_id.to_string()));
        let players: Vec<Arc<dyn PeerConnection>> = {
            let mut players = self.players.lock();
            let keys: Vec<_> = players
                .keys()
                .filter(|(a, s, _)| *a == app_id && s == stream_id)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| players.remove(&k))
                .collect()
        };
        if let Some(ingest) = ingest {
            ingest.closing.store(true, Ordering::SeqCst);
            let pc = ingest.pc.clone();
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
        }
        for pc in players {
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
        }
    }

    /// Closes one player's connection.
    pub fn end_play(&self, app_id: u32, stream_id: &str, session: SessionId) {
        if let Some(pc) = self
            .players
            .lock()
            .remove(&(app_id, stream_id.to_string(), session))
        {
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_requests_are_limited_harder_than_a_new_players() {
        let ms = Duration::from_millis;
        assert!(forward_pli(KeyframeWhy::NewPlayer, ms(150)));
        assert!(!forward_pli(KeyframeWhy::NewPlayer, ms(50)));
        assert!(!forward_pli(KeyframeWhy::Repair, ms(150)));
        assert!(forward_pli(KeyframeWhy::Repair, ms(500)));
    }
}
