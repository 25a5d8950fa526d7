//! The SFU: receives each publisher's RTP over WebRTC and forwards it, undecoded, to every
//! player of that stream. Keyframe requests from players are aggregated and rate-limited into
//! PLIs to the publisher; a new player triggers one so it gets its first frame fast. NACKs from
//! players are answered by the sending side's NACK responder from its own packet cache.
//!
//! It is driven by the relay's state machine ([`crate::state::Output::Negotiate`],
//! `EndMedia`, `EndPlay`) and reports back through [`SfuEvents`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;

use crate::state::SessionId;
use onair_protocol::error::ErrorCode;
use onair_protocol::messages::{LayerChangeReason, VideoLayer};
use onair_transport::fec::{FecControl, FecTotals};
use onair_transport::fec_guard::FecGuard;
use onair_transport::keyframe_requests::is_keyframe_request;
use onair_transport::link_meter::{LinkMeter, Metered};
use onair_transport::nack_budget::{FULL_SHARE, ResendControl};
use onair_transport::pacer::{Pacer, Padding};
use onair_transport::peer::{
    self, Lost, MediaNetwork, SendOptions, WatchRules, h264_codec, new_peer, new_peer_with,
    opus_codec, watch_connection,
};
use onair_transport::simulcast::{
    CLEAN_LOSS, CONGESTED_LOSS, FED_BACK_PACKETS, FULL_QUEUE_MS, LayerChooser, LayerForwarder,
    LinkSample, MAX_LAYERS, PROBE_QUEUE_MS, layer_of, surely_above,
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

/// Where an ingest's media comes from.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// A publisher (an engine, a WHIP client); `layered` when it sends simulcast,
    /// `restartable` when it restarts ICE through signaling (an engine).
    Publisher { layered: bool, restartable: bool },
    /// Another cluster node (the stream's origin), pulled by this one.
    Pulled,
}

/// Keyframe requests from a node pulling a stream go to its origin at most this often.
const PULLED_PLI_INTERVAL: Duration = Duration::from_secs(1);

/// A player's link estimate starts here (the full layer of a 1080p stream fits; congestion
/// brings it down within a second or two)…
const PLAYER_INITIAL_BPS: f64 = 5_000_000.0;
/// …and stays within these bounds.
const PLAYER_MIN_BPS: f64 = 100_000.0;
const PLAYER_MAX_BPS: f64 = 20_000_000.0;

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
    /// The publisher's media connection failed or closed (`code`: 1003021 when it never
    /// connected in time, else 1003020).
    fn failed(&self, app_id: u32, stream_id: &str, reason: &str, code: ErrorCode);
    /// A player's media connection failed or closed without the relay closing it.
    fn player_failed(&self, app_id: u32, stream_id: &str, session: SessionId, reason: &str);
    /// A player now gets another video layer.
    fn layer_changed(
        &self,
        app_id: u32,
        stream_id: &str,
        session: SessionId,
        layer: usize,
        reason: LayerChangeReason,
    );
    /// The relay's view of a player's link, every [`LINK_REPORT`]: the layer it sends and
    /// the estimate (streams with layers).
    fn play_link(
        &self,
        app_id: u32,
        stream_id: &str,
        session: SessionId,
        layer: usize,
        estimate_kbps: u32,
    );
    /// The layers of a stream players need changed: the publisher may pause the others.
    fn layers_wanted(&self, app_id: u32, stream_id: &str, active: ActiveLayers);
}

/// Which simulcast layers of a stream some player needs: the others may pause at the
/// publisher (the full one never does).
pub type ActiveLayers = [bool; MAX_LAYERS];

/// How often a player of a layered stream hears the relay's view of its link.
pub const LINK_REPORT: Duration = Duration::from_secs(2);

type StreamKey = (u32, String);
type PlayerKey = (u32, String, SessionId);

/// A player's connection while the SFU has it registered.
struct PlayerEntry {
    pc: Arc<dyn PeerConnection>,
    /// Dropped with the entry (unregistered, replaced or closed by the relay): the
    /// connection's watchdog stops at once and lets the connection go, instead of holding it
    /// until its silence timeout (up to 25 s for an engine player).
    _registered: oneshot::Sender<()>,
}

struct Ingest {
    pc: Arc<dyn PeerConnection>,
    /// Each video layer's packets (0: the full picture).
    video: [broadcast::Sender<rtp::Packet>; MAX_LAYERS],
    audio: broadcast::Sender<rtp::Packet>,
    /// Keyframe requests, for a layer.
    keyframe: mpsc::Sender<(KeyframeWhy, usize)>,
    /// Which layers the publisher sends (seen open or flowing).
    available: [AtomicBool; MAX_LAYERS],
    /// The publisher's offer has several video layers (tracks, or RID simulcast).
    layered: bool,
    /// Bytes received per layer (for each layer's bitrate).
    bytes: [std::sync::atomic::AtomicU64; MAX_LAYERS],
    /// Players whose forwarder sends or switches to each layer.
    needed: [std::sync::atomic::AtomicUsize; MAX_LAYERS],
    /// Wakes the layer announcer when a layer becomes needed (a paused one resumes at once).
    needed_again: tokio::sync::Notify,
    closing: AtomicBool,
    /// Wakes the connection's watchdog when the relay closes it, so the watchdog lets the
    /// connection go at once instead of after its silence timeout (up to 25 s).
    closed: tokio::sync::Notify,
}

impl Ingest {
    /// The relay closes this ingest itself: nothing to report, and its watchdog stops.
    fn close_down(&self) {
        self.closing.store(true, Ordering::SeqCst);
        // A stored permit if the watchdog is not waiting yet.
        self.closed.notify_one();
    }

    /// The layer to send for a request of `wanted`: it, or the nearest the publisher sends
    /// (smaller first, then larger); the full picture if nothing is known yet.
    fn effective(&self, wanted: usize) -> usize {
        let has = |l: usize| self.available[l].load(Ordering::Relaxed);
        (wanted..MAX_LAYERS)
            .chain((0..wanted).rev())
            .find(|l| has(*l))
            .unwrap_or(0)
    }
}

/// A player's video: what it asked for, and the forwarder's layer (for its keyframe requests).
struct PlayerVideo {
    control: mpsc::Sender<VideoLayer>,
}

/// Each video layer's track and SSRC at the publisher, for its keyframe requests.
type LayerTracks = Arc<Mutex<[Option<(Arc<dyn TrackRemote>, u32)>; MAX_LAYERS]>>;

/// Sends keyframe requests to the publisher: per layer, at most as often as
/// [`forward_pli`] allows.
async fn send_keyframe_requests(
    mut requests: mpsc::Receiver<(KeyframeWhy, usize)>,
    tracks: LayerTracks,
    pulled: bool,
) {
    let mut last: [Option<Instant>; MAX_LAYERS] = [None; MAX_LAYERS];
    while let Some((why, layer)) = requests.recv().await {
        let layer = layer.min(MAX_LAYERS - 1);
        // Upstream to another node: at most one a second, whatever its players ask.
        let due = |t: Instant| {
            if pulled {
                t.elapsed() >= PULLED_PLI_INTERVAL
            } else {
                forward_pli(why, t.elapsed())
            }
        };
        if last[layer].is_some_and(|t| !due(t)) {
            continue;
        }
        let Some((track, media_ssrc)) = tracks.lock()[layer].clone() else {
            continue;
        };
        last[layer] = Some(Instant::now());
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        if track.write_rtcp(vec![Box::new(pli)]).await.is_err() {
            tracing::debug!(layer, "keyframe request not sent: the track is gone");
        }
    }
}

/// The forwarding plane.
pub struct Sfu {
    network: MediaNetwork,
    /// When an engine's connection is given up on (it restarts ICE through signaling, so it
    /// gets longer).
    rules: WatchRules,
    /// When any other connection (WHIP, WHEP, a cluster pull) is given up on.
    fixed_rules: WatchRules,
    streams: Mutex<HashMap<StreamKey, Arc<Ingest>>>,
    players: Mutex<HashMap<PlayerKey, PlayerEntry>>,
    /// Each player's video control (layer requests).
    player_video: Mutex<HashMap<PlayerKey, PlayerVideo>>,
    /// Connections restarting ICE now ((app, stream, session), publishing), one restart at
    /// a time each.
    restarting: Mutex<std::collections::HashSet<(PlayerKey, bool)>>,
    /// Whether engine players get FEC repair packets (`transport::fec`).
    fec: bool,
    /// Repair packets sent and packets rebuilt over every connection (`/metrics`).
    fec_totals: Arc<FecTotals>,
}

impl Sfu {
    /// Where its peer connections bind and what they advertise.
    pub fn network(&self) -> &MediaNetwork {
        &self.network
    }

    /// An SFU whose peer connections bind and advertise as `network` says, giving up on an
    /// engine's connection by `rules` and on any other by `fixed_rules`.
    pub fn new(network: MediaNetwork, rules: WatchRules, fixed_rules: WatchRules) -> Sfu {
        Sfu {
            network,
            rules,
            fixed_rules,
            streams: Mutex::new(HashMap::new()),
            players: Mutex::new(HashMap::new()),
            player_video: Mutex::new(HashMap::new()),
            restarting: Mutex::new(std::collections::HashSet::new()),
            fec: true,
            fec_totals: Arc::default(),
        }
    }

    /// Repair packets sent to players and packets rebuilt from publishers' repair packets,
    /// since the start.
    pub fn fec_totals(&self) -> &FecTotals {
        &self.fec_totals
    }

    /// The SFU sending engine players FEC repair packets (`fec`, the default) or not.
    pub fn with_fec(mut self, fec: bool) -> Sfu {
        self.fec = fec;
        self
    }

    fn rules(&self, restartable: bool) -> WatchRules {
        if restartable {
            self.rules
        } else {
            self.fixed_rules
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
        restartable: bool,
        events: Arc<dyn SfuEvents>,
    ) -> Result<String, String> {
        let layered = offer.matches("m=video").count() > 1 || offer.contains("a=simulcast");
        let receive = SendOptions {
            fec_totals: Some(self.fec_totals.clone()),
            ..Default::default()
        };
        let (pc, mut ev) = new_peer_with(&self.network, receive)
            .await
            .map_err(|e| e.to_string())?;
        peer::add_receivers(&pc, &[RtpCodecKind::Video, RtpCodecKind::Audio])
            .await
            .map_err(|e| e.to_string())?;
        let sdp = peer::answer_offer(&pc, &mut ev, offer)
            .await
            .map_err(|e| e.to_string())?;
        let sdp = self.network.advertise(&sdp);
        self.attach_ingest(
            app_id,
            stream_id,
            pc,
            ev,
            Source::Publisher {
                layered,
                restartable,
            },
            events,
        );
        Ok(sdp)
    }

    /// Pulls a stream published on another relay (a cluster node): offers to receive its
    /// video (the full layer) and audio, hands the offer to `exchange` (which gets the other
    /// node's answer), and from then on treats the connection like a publisher's ingest, so
    /// local players subscribe to it as usual.
    pub async fn pull<F, Fut>(
        self: &Arc<Self>,
        app_id: u32,
        stream_id: String,
        events: Arc<dyn SfuEvents>,
        exchange: F,
    ) -> Result<(), String>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<String, String>>,
    {
        // Offered from its own socket: the other node answers on its shared port, and two
        // shared ports at both ends could not tell this leg from another node's.
        let network = self.network.without_mux();
        let (pc, mut ev) = new_peer(&network).await.map_err(|e| e.to_string())?;
        peer::add_receivers(&pc, &[RtpCodecKind::Video, RtpCodecKind::Audio])
            .await
            .map_err(|e| e.to_string())?;
        let offer = pc.create_offer(None).await.map_err(|e| e.to_string())?;
        let offer = peer::finish_local(&pc, &mut ev, offer)
            .await
            .map_err(|e| e.to_string())?;
        let offer = network.advertise(&offer);
        let answer = match exchange(offer).await {
            Ok(a) => a,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let desc = peer::answer(answer).map_err(|e| e.to_string())?;
        if let Err(e) = pc.set_remote_description(desc).await {
            let _ = pc.close().await;
            return Err(e.to_string());
        }
        self.attach_ingest(app_id, stream_id, pc, ev, Source::Pulled, events);
        Ok(())
    }

    /// Whether the stream has an ingest here (published here, or pulled).
    pub fn has_ingest(&self, app_id: u32, stream_id: &str) -> bool {
        self.streams
            .lock()
            .contains_key(&(app_id, stream_id.to_string()))
    }

    /// Players of one stream connected here.
    pub fn players_of(&self, app_id: u32, stream_id: &str) -> usize {
        self.players
            .lock()
            .keys()
            .filter(|(a, s, _)| *a == app_id && s == stream_id)
            .count()
    }

    /// Receives a stream's media on `pc` (a publisher's, or a pull from another node) and
    /// forwards it to the stream's players.
    fn attach_ingest(
        self: &Arc<Self>,
        app_id: u32,
        stream_id: String,
        pc: Arc<dyn PeerConnection>,
        ev: onair_transport::peer::PeerEvents,
        source: Source,
        events: Arc<dyn SfuEvents>,
    ) {
        let (layered, pulled, restartable) = match source {
            Source::Publisher {
                layered,
                restartable,
            } => (layered, false, restartable),
            Source::Pulled => (false, true, false),
        };
        let mut ev = ev;
        let (keyframe_tx, keyframe_rx) = mpsc::channel::<(KeyframeWhy, usize)>(16);
        let ingest = Arc::new(Ingest {
            pc: pc.clone(),
            video: std::array::from_fn(|_| broadcast::channel(FORWARD_QUEUE).0),
            audio: broadcast::channel(FORWARD_QUEUE / 4).0,
            keyframe: keyframe_tx,
            available: std::array::from_fn(|_| AtomicBool::new(false)),
            layered,
            bytes: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
            needed: std::array::from_fn(|_| std::sync::atomic::AtomicUsize::new(0)),
            needed_again: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
            closed: tokio::sync::Notify::new(),
        });
        if layered {
            tokio::spawn(announce_layers(
                Arc::downgrade(&ingest),
                events.clone(),
                app_id,
                stream_id.clone(),
            ));
        }
        let key = (app_id, stream_id.clone());
        if let Some(old) = self.streams.lock().insert(key, ingest.clone()) {
            old.close_down();
            let pc = old.pc.clone();
            tokio::spawn(async move {
                let _ = pc.close().await;
            });
        }
        // Where each layer's keyframe requests go: its track and SSRC, once it opened.
        let layer_tracks: LayerTracks = Arc::default();
        tokio::spawn(send_keyframe_requests(
            keyframe_rx,
            layer_tracks.clone(),
            pulled,
        ));
        // Tracks: forward their packets, each video SSRC to its layer's channel.
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
                let layer_tracks = layer_tracks.clone();
                tokio::spawn(async move {
                    let video = kind == RtpCodecKind::Video;
                    // A browser's simulcast track carries several SSRCs, one per RID.
                    let mut layers: HashMap<u32, usize> = HashMap::new();
                    let mut default_layer = 0;
                    while let Some(event) = track.poll().await {
                        match event {
                            TrackRemoteEvent::OnOpen(init) if video => {
                                let layer = layer_of(init.rid.as_deref(), &init.track_id);
                                layers.insert(init.ssrc, layer);
                                default_layer = layer;
                                ingest.available[layer].store(true, Ordering::Relaxed);
                                layer_tracks.lock()[layer] = Some((track.clone(), init.ssrc));
                            }
                            TrackRemoteEvent::OnRtpPacket(mut packet) => {
                                if !flowing.swap(true, Ordering::SeqCst) {
                                    events.flowing(app_id, &stream_id);
                                }
                                // Players negotiate their own header extensions (if any): the
                                // publisher's would not map. Dropped once here, so the copy
                                // each player takes from the channel allocates nothing.
                                packet.header.extension = false;
                                packet.header.extension_profile = 0;
                                packet.header.extensions.clear();
                                packet.header.extensions.shrink_to_fit();
                                // (its padding too: an extension the player leg adds, such
                                // as the transport-wide sequence number, starts afresh)
                                packet.header.extensions_padding = 0;
                                if !video {
                                    let _ = ingest.audio.send(packet);
                                    continue;
                                }
                                let ssrc = packet.header.ssrc;
                                let layer = *layers.entry(ssrc).or_insert_with(|| {
                                    // Not announced by an open: this track's layer.
                                    ingest.available[default_layer].store(true, Ordering::Relaxed);
                                    let mut tracks = layer_tracks.lock();
                                    if tracks[default_layer].is_none() {
                                        tracks[default_layer] = Some((track.clone(), ssrc));
                                    }
                                    default_layer
                                });
                                ingest.bytes[layer]
                                    .fetch_add(packet.payload.len() as u64 + 12, Ordering::Relaxed);
                                let _ = ingest.video[layer].send(packet);
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        // The publisher's connection: gone means the stream is over.
        let watch_ingest = ingest.clone();
        let rules = self.rules(restartable);
        tokio::spawn(async move {
            let lost = tokio::select! {
                s = watch_connection(ev.state.clone(), ev.received.clone(), rules) => s,
                () = watch_ingest.closed.notified() => None,
            };
            if let Some(s) = lost
                && !watch_ingest.closing.load(Ordering::SeqCst)
            {
                // Never connected: the same code the engine's own connect timeout gives, so
                // the publisher sees one verdict whichever side's timer fires first.
                let code = if matches!(s, Lost::NeverConnected) {
                    ErrorCode::PublishConnectTimeout
                } else {
                    ErrorCode::MediaNegotiationFailed
                };
                events.failed(
                    app_id,
                    &stream_id,
                    &format!("publisher connection {s}"),
                    code,
                );
            }
        });
    }

    /// Answers a player's offer and starts forwarding the stream to it.
    #[allow(clippy::too_many_arguments)]
    pub async fn subscribe(
        self: &Arc<Self>,
        app_id: u32,
        stream_id: String,
        session: SessionId,
        offer: String,
        video_layer: VideoLayer,
        restartable: bool,
        events: Arc<dyn SfuEvents>,
    ) -> Result<String, String> {
        let ingest = self
            .streams
            .lock()
            .get(&(app_id, stream_id.clone()))
            .cloned()
            .ok_or_else(|| "the stream has no media".to_string())?;
        // A stream with layers: estimate the player's link (GCC over its transport-wide
        // feedback) so Auto can pick the layer that fits. A single-layer stream's leg that
        // gets repairs is metered only while they are in use (`gate`): its standing queue
        // keeps them within the room the link has (`fec_guard`).
        let layered = ingest.layered;
        tracing::debug!(stream_id, layered, "player subscribes");
        // Repair packets for players of our own engine (`restartable`: they play through our
        // signaling), as many as their losses call for; a browser's WHEP player and another
        // node's pull get NACK repair only.
        let fec = restartable && self.fec;
        let send = SendOptions {
            estimate: (layered || fec).then_some((
                PLAYER_INITIAL_BPS,
                PLAYER_MIN_BPS,
                PLAYER_MAX_BPS,
            )),
            // On a layered stream's leg too: the transport-wide numbers added below the FEC
            // sender are taken off again before the player's decoder (`fec_form`). An Auto
            // player's repairs wait for a check of its link (`forward_video`).
            estimate_only_with_fec: !layered,
            fec,
            fec_totals: Some(self.fec_totals.clone()),
            ..Default::default()
        };
        let (pc, mut ev) = new_peer_with(&self.network, send)
            .await
            .map_err(|e| e.to_string())?;
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
        let sdp = self.network.advertise(&sdp);
        for (kind, ssrc, track, sender) in tracks {
            let payload_type = sender
                .get_parameters()
                .await
                .map(|p| p.rtp_parameters.codecs.first().map(|c| c.payload_type))
                .ok()
                .flatten();
            let keyframe = ingest.keyframe.clone();
            let writer = track.clone();
            if kind == RtpCodecKind::Audio {
                let mut rx = ingest.audio.subscribe();
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
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => break,
                        }
                    }
                });
                continue;
            }
            // Video: the layer forwarder, steered by the player's requests.
            let (control_tx, control_rx) = mpsc::channel(8);
            self.player_video.lock().insert(
                (app_id, stream_id.clone(), session),
                PlayerVideo {
                    control: control_tx,
                },
            );
            let sending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            tokio::spawn(forward_video(
                VideoLeg {
                    ingest: ingest.clone(),
                    writer,
                    ssrc,
                    payload_type,
                    sending: sending.clone(),
                    events: events.clone(),
                    who: (app_id, stream_id.clone(), session),
                    estimating: layered.then(|| pc.clone()),
                    nacked: ev.nacked.clone(),
                    link: ev.link.clone(),
                    resends: ev.resends.clone(),
                    fec: ev.fec.clone(),
                    fec_guarded: fec,
                    fec_totals: self.fec_totals.clone(),
                },
                video_layer,
                control_rx,
            ));
            // The player's keyframe requests go to the layer it gets.
            tokio::spawn(async move {
                while let Some(event) = track.poll().await {
                    if let TrackLocalEvent::OnRtcpPacket(packets) = event
                        && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
                    {
                        let layer = sending.load(Ordering::Relaxed);
                        let _ = keyframe.try_send((KeyframeWhy::Repair, layer));
                    }
                }
            });
        }
        // A new player starts at the next keyframe of its layer: ask for one now.
        let first = ingest.effective(video_layer.index());
        let _ = ingest.keyframe.try_send((KeyframeWhy::NewPlayer, first));
        let key = (app_id, stream_id.clone(), session);
        let (registered, unregistered) = oneshot::channel();
        let entry = PlayerEntry {
            pc: pc.clone(),
            _registered: registered,
        };
        if let Some(old) = self.players.lock().insert(key.clone(), entry) {
            tokio::spawn(async move {
                let _ = old.pc.close().await;
            });
        }
        // The player's connection: if it fails or closes while still registered (the relay
        // unregisters before it closes one itself), the player is gone: tell the state machine.
        let (state, received) = (ev.state.clone(), ev.received.clone());
        let sfu = Arc::downgrade(self);
        let rules = self.rules(restartable);
        tokio::spawn(async move {
            let lost = tokio::select! {
                s = watch_connection(state, received, rules) => s,
                // Unregistered: the relay ended this play itself.
                _ = unregistered => None,
            };
            let Some(s) = lost else {
                return;
            };
            let ours = sfu.upgrade().is_some_and(|sfu| {
                let mut players = sfu.players.lock();
                let same = players.get(&key).is_some_and(|p| Arc::ptr_eq(&p.pc, &pc));
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
        self.player_video
            .lock()
            .retain(|(a, s, _), _| !(*a == app_id && s == stream_id));
        let players: Vec<Arc<dyn PeerConnection>> = {
            let mut players = self.players.lock();
            let keys: Vec<_> = players
                .keys()
                .filter(|(a, s, _)| *a == app_id && s == stream_id)
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| players.remove(&k))
                .map(|e| e.pc)
                .collect()
        };
        if let Some(ingest) = ingest {
            ingest.close_down();
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

    /// A player asks for another video layer (it switches at that layer's next keyframe).
    pub fn set_layer(&self, app_id: u32, stream_id: &str, session: SessionId, layer: VideoLayer) {
        let key = (app_id, stream_id.to_string(), session);
        if let Some(v) = self.player_video.lock().get(&key) {
            let _ = v.control.try_send(layer);
        }
    }

    /// Restarts ICE on a publisher's connection (or a session's play connection) with the
    /// client's restart offer; returns the answer to hand back.
    pub async fn restart_ice(
        &self,
        app_id: u32,
        stream_id: &str,
        session: SessionId,
        publish: bool,
        offer: String,
    ) -> Result<String, String> {
        let pc = if publish {
            self.streams
                .lock()
                .get(&(app_id, stream_id.to_string()))
                .map(|i| i.pc.clone())
        } else {
            self.players
                .lock()
                .get(&(app_id, stream_id.to_string(), session))
                .map(|e| e.pc.clone())
        };
        let pc = pc.ok_or_else(|| "no such connection".to_string())?;
        let key = ((app_id, stream_id.to_string(), session), publish);
        if !self.restarting.lock().insert(key.clone()) {
            return Err("a restart of this connection is already running".into());
        }
        let sdp = peer::restart_answer(&pc, offer).await;
        self.restarting.lock().remove(&key);
        Ok(self.network.advertise(&sdp.map_err(|e| e.to_string())?))
    }

    /// Closes one player's connection.
    pub fn end_play(&self, app_id: u32, stream_id: &str, session: SessionId) {
        self.player_video
            .lock()
            .remove(&(app_id, stream_id.to_string(), session));
        if let Some(entry) = self
            .players
            .lock()
            .remove(&(app_id, stream_id.to_string(), session))
        {
            tokio::spawn(async move {
                let _ = entry.pc.close().await;
            });
        }
    }
}

/// A small layer nobody has needed for this long is paused at the publisher…
const LAYER_IDLE: Duration = Duration::from_secs(3);
/// …but not in a stream's first seconds: every layer's bitrate is measured first (an Auto
/// player's choice needs the rate of layers it does not get).
const LAYER_WARMUP: Duration = Duration::from_secs(5);

/// Tells the publisher of a layered stream which layers players need, whenever that changes
/// (checked every [`LAYER_CHECK`]): the full picture always, a smaller one while some
/// player's forwarder sends or switches to it and for [`LAYER_IDLE`] after.
async fn announce_layers(
    ingest: std::sync::Weak<Ingest>,
    events: Arc<dyn SfuEvents>,
    app_id: u32,
    stream_id: String,
) {
    let started = Instant::now();
    let mut last_needed = [started; MAX_LAYERS];
    let mut told: Option<ActiveLayers> = None;
    let mut tick = tokio::time::interval(LAYER_CHECK);
    loop {
        {
            let Some(ingest) = ingest.upgrade() else {
                return;
            };
            tokio::select! {
                _ = tick.tick() => {}
                _ = ingest.needed_again.notified() => {}
            }
        }
        let Some(ingest) = ingest.upgrade() else {
            return;
        };
        if ingest.closing.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let mut active = [true; MAX_LAYERS];
        for l in 1..MAX_LAYERS {
            if ingest.needed[l].load(Ordering::Relaxed) > 0 {
                last_needed[l] = now;
            }
            active[l] = now.saturating_duration_since(started) < LAYER_WARMUP
                || now.saturating_duration_since(last_needed[l]) < LAYER_IDLE;
        }
        if told != Some(active) {
            tracing::debug!(stream_id, ?active, "layers wanted");
            events.layers_wanted(app_id, &stream_id, active);
            told = Some(active);
        }
    }
}

/// The layers one forwarder holds in its stream's [`Ingest::needed`] counts (released when
/// the forwarder ends).
struct Needs {
    ingest: Arc<Ingest>,
    held: [bool; MAX_LAYERS],
}

impl Needs {
    fn set(&mut self, layer: usize, need: bool) {
        if self.held[layer] != need {
            self.held[layer] = need;
            if need {
                if self.ingest.needed[layer].fetch_add(1, Ordering::Relaxed) == 0 {
                    self.ingest.needed_again.notify_one();
                }
            } else {
                self.ingest.needed[layer].fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for Needs {
    fn drop(&mut self) {
        for l in 0..MAX_LAYERS {
            self.set(l, false);
        }
    }
}

/// What a player's video forwarding task works with.
struct VideoLeg {
    ingest: Arc<Ingest>,
    writer: Arc<TrackLocalStaticRTP>,
    /// The player track's SSRC and payload type.
    ssrc: u32,
    payload_type: Option<u8>,
    /// The layer being sent (read by the player's keyframe-request task).
    sending: Arc<std::sync::atomic::AtomicUsize>,
    events: Arc<dyn SfuEvents>,
    who: PlayerKey,
    /// The player's connection, when its link is estimated (streams with layers).
    estimating: Option<Arc<dyn PeerConnection>>,
    /// Packets the player reported missing so far (its NACKs).
    nacked: Arc<std::sync::atomic::AtomicU64>,
    /// What the player's transport-wide feedback acknowledged.
    link: Arc<LinkMeter>,
    /// The player connection's retransmission budget.
    resends: Arc<ResendControl>,
    /// The player connection's FEC sender (idle where the player did not negotiate it).
    fec: Arc<FecControl>,
    /// Its repairs are kept within the room the link has (`fec_guard`; the link is metered)
    /// wherever the layer chooser does not rule them.
    fec_guarded: bool,
    /// The relay's FEC totals (the guard's trips are counted there).
    fec_totals: Arc<FecTotals>,
}

/// How often a player's wanted layer is checked against the layers the publisher sends (a
/// small layer may open after the player subscribed).
const LAYER_CHECK: Duration = Duration::from_millis(500);
/// Between layer checks, an Auto player's losses are looked at this often (two counters, no
/// stats report): a link that fills up runs the check at once instead of at the next tick.
const CONGESTION_PEEK: Duration = Duration::from_millis(125);
/// While a probe runs its queue is looked at this often: the sooner it ends, the less of the
/// queue it built is there when it does.
const PROBE_PEEK: Duration = Duration::from_millis(50);
/// An early check at most this often (each reads the connection's stats).
const EARLY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// At most this many copies of each packet while probing for a better layer.
const MAX_PROBE_COPIES: usize = 6;

/// [`LINK_REPORT`] in [`LAYER_CHECK`] ticks.
const LINK_REPORT_TICKS: u64 = (LINK_REPORT.as_millis() / LAYER_CHECK.as_millis()) as u64;

impl VideoLeg {
    /// Tells the player the layer it gets and the estimate of its link (bits/s).
    fn report_link(&self, layer: usize, estimate_bps: f64) {
        let (app_id, stream_id, session) = &self.who;
        let kbps = (estimate_bps / 1000.0)
            .round()
            .clamp(0.0, f64::from(u32::MAX)) as u32;
        self.events
            .play_link(*app_id, stream_id, *session, layer, kbps);
    }
}

/// Receives from a broadcast channel if there is one, else waits forever (a `select!` arm).
async fn recv_layer(
    rx: &mut Option<broadcast::Receiver<rtp::Packet>>,
) -> Result<rtp::Packet, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One player's video: packets of the layer it gets (and, while switching, of the layer it
/// switches to) through its [`LayerForwarder`] to its track.
async fn forward_video(leg: VideoLeg, wanted: VideoLayer, mut control: mpsc::Receiver<VideoLayer>) {
    let mut wanted = wanted;
    // An Auto player of a layered stream gets repair packets only once a check found its link
    // not full: on a thin link the first second's losses are its capacity, and repairs for
    // them (up to half again as many packets) only delayed the step down.
    if leg.estimating.is_some() && wanted.is_auto() {
        leg.fec.allow(false);
    }
    let mut forwarder = LayerForwarder::new(leg.ingest.effective(wanted.index()));
    let mut rx: [Option<broadcast::Receiver<rtp::Packet>>; MAX_LAYERS] = Default::default();
    let mut check = tokio::time::interval(LAYER_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (The first look comes one period on: an interval's first tick is at once, and a look
    // right after the check that started a probe would judge it on the queue before it.)
    let peek_every = |every: Duration| {
        let mut peek = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        peek.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        peek
    };
    let mut peek = peek_every(CONGESTION_PEEK);
    let mut peek_probing = false;
    let mut early_at: Option<Instant> = None;
    let mut reason = LayerChangeReason::Requested;
    let mut chooser = LayerChooser::default();
    let mut rates = LayerRates::default();
    let mut per_layer = [None; MAX_LAYERS];
    let mut sampler = LinkSampler::default();
    let mut sent = Sent::default();
    // The first keyframe sent is always told (the player learns its layer).
    let mut first_switch = true;
    let mut needs = Needs {
        ingest: leg.ingest.clone(),
        held: [false; MAX_LAYERS],
    };
    // Copies of each packet sent while probing.
    let mut padding = Padding::default();
    let mut ticks = 0u64;
    let mut switch_since: Option<(usize, Instant)> = None;
    // The old layer was stopped for a switch down (nothing is sent until the target's
    // keyframe).
    let mut dropped_old = false;
    let mut pacer = Pacer::default();
    // The link holds a standing queue: only the picture's packets are resent while it does
    // (see `ResendControl::resend_only`; the 250 kbit/s viewer's link stayed full for two
    // seconds after its switch to 180p, its sound's resends a third of what crossed it).
    let mut jammed = false;
    let mut guard = leg.fec_guarded.then(FecGuard::default);
    // However this task ends, the sound's resends are not left refused.
    let _resend_all = ResendAll(leg.resends.clone());
    loop {
        // Listen to the layer being sent and the one being switched to, and no other.
        for (layer, slot) in rx.iter_mut().enumerate() {
            let needed = wanted != VideoLayer::Off
                && (forwarder.current() == Some(layer) || forwarder.target() == layer);
            needs.set(layer, needed);
            match (needed, slot.is_some()) {
                (true, false) => *slot = Some(leg.ingest.video[layer].subscribe()),
                (false, true) => *slot = None,
                _ => {}
            }
        }
        let [r0, r1, r2] = &mut rx;
        let (layer, received) = tokio::select! {
            asked = control.recv() => {
                let Some(asked) = asked else { return };
                let was_off = wanted == VideoLayer::Off;
                wanted = asked;
                reason = LayerChangeReason::Requested;
                if !wanted.is_auto() {
                    // A layer asked for by name is sent as it comes: no pacing, no probe, and
                    // a return to Auto starts its choice afresh.
                    set_pace(&leg, &mut pacer, None);
                    jammed = false;
                    leg.resends.resend_only(None);
                    padding.set(0.0, Instant::now());
                    chooser = LayerChooser::default();
                    dropped_old = false;
                    // Unpaced is not unguarded: a hold on the link's queue stays.
                    if wanted != VideoLayer::Off {
                        guard_fec(&leg, guard.as_mut());
                    }
                } else if leg.estimating.is_some() {
                    // Back to Auto: repair packets wait for a check of the link again, and
                    // the chooser rules them, not what the guard held to on a named layer.
                    leg.fec.allow(false);
                    leg.fec.set_ceiling(onair_transport::fec::MAX_SHARE);
                    leg.resends.share.store(FULL_SHARE, Ordering::Relaxed);
                    guard = leg.fec_guarded.then(FecGuard::default);
                }
                if wanted == VideoLayer::Off {
                    // No video until asked again (its channels are dropped above).
                    forwarder.pause();
                } else if was_off {
                    // Back from the next keyframe of the layer it gets.
                    let layer = leg.ingest.effective(wanted.index());
                    forwarder.set_target(layer);
                    let _ = leg.ingest.keyframe.try_send((KeyframeWhy::NewPlayer, layer));
                } else {
                    retarget(&leg, &mut forwarder, wanted);
                }
                continue;
            }
            _ = peek.tick(), if leg.estimating.is_some() && wanted.is_auto() => {
                let now = Instant::now();
                let settled = forwarder.current() == Some(forwarder.target());
                let due = early_at.is_none_or(|t| now.saturating_duration_since(t) >= EARLY_CHECK_EVERY);
                // A probe that loses or queues is looked at at once (the chooser ends it if
                // that is more than the link's own); otherwise a congested share of losses.
                let (due, threshold) = if padding.probing() {
                    (true, CLEAN_LOSS * 2.0)
                } else {
                    (due, CONGESTED_LOSS)
                };
                let metered = leg.link.read();
                let probe_queued =
                    padding.probing() && metered.queue_us as f64 / 1e3 >= PROBE_QUEUE_MS;
                // A queue standing on the path: the link is full before it drops a tenth.
                let standing = metered.standing_us as f64 / 1e3 >= FULL_QUEUE_MS;
                if standing != jammed {
                    jammed = standing;
                    leg.resends.resend_only(jammed.then_some(leg.ssrc));
                }
                // (Measured over a quarter second at least: what a shorter spell delivered
                // says little of the link's rate.)
                let standing = standing && sampler.older_than(now, STANDING_SAMPLE);
                if settled
                    && due
                    && (probe_queued || standing || sampler.congested_since_last(
                        sent,
                        leg.nacked.load(Ordering::Relaxed),
                        metered,
                        now,
                        threshold,
                        !padding.probing(),
                    ))
                {
                    early_at = Some(now);
                    check.reset_immediately();
                }
                continue;
            }
            _ = check.tick() => {
                ticks += 1;
                if wanted == VideoLayer::Off {
                    continue;
                }
                if forwarder.current() != Some(forwarder.target()) {
                    // Still waiting for the target layer's keyframe: ask again (the first
                    // request may have fallen in another's rate-limit window).
                    let _ = leg
                        .ingest
                        .keyframe
                        .try_send((KeyframeWhy::NewPlayer, forwarder.target()));
                }
                let report = ticks.is_multiple_of(LINK_REPORT_TICKS);
                match (&leg.estimating, wanted.is_auto()) {
                    // Auto on a layered stream: the layer the link's estimate fits, checked
                    // each tick (each layer's rate measured over a second).
                    (Some(pc), true)
                        if !waiting_keyframe(&forwarder, dropped_old, &mut switch_since) =>
                    {
                        let now = Instant::now();
                        if ticks.is_multiple_of(2) || per_layer.iter().all(Option::is_none) {
                            per_layer = rates.step(&leg.ingest, now);
                        }
                        let link = sampler.sample(
                            player_estimate(pc).await,
                            sent,
                            leg.nacked.load(Ordering::Relaxed),
                            leg.link.read(),
                            now,
                        );
                        let current = forwarder.current().unwrap_or(forwarder.target());
                        let choice = chooser.decide(current, link, per_layer, now);
                        let layer = choice.layer;
                        // A probe: copies of each packet up to the better layer's rate,
                        // ramped up (see `Padding`).
                        let extra = match (choice.probe, per_layer[current]) {
                            (Some(up), Some(rate)) if rate > 0.0 => per_layer[up]
                                .map_or(0.0, |r| (r / rate - 1.0).max(0.0))
                                .min(MAX_PROBE_COPIES as f64),
                            _ => 0.0,
                        };
                        padding.set(extra, now);
                        if padding.probing() != peek_probing {
                            peek_probing = padding.probing();
                            peek = peek_every(if peek_probing { PROBE_PEEK } else { CONGESTION_PEEK });
                        }
                        tracing::debug!(player = ?leg.who.2, ?link, ?per_layer, current, ?choice, extra, pace = ?pacer.rate_bps(), "auto layer");
                        if layer != forwarder.target() && forwarder.set_target(layer) {
                            reason = LayerChangeReason::Bandwidth;
                            let _ = leg.ingest.keyframe.try_send((KeyframeWhy::NewPlayer, layer));
                            tracing::debug!(layer, ?link, "layer by bandwidth");
                            if layer > current {
                                // Down for lack of bandwidth: the old layer stops now. Its
                                // packets would only keep the full link's queue full for the
                                // new layer's keyframe to wait behind (the picture holds its
                                // last frame until that keyframe, numbered on without a gap).
                                forwarder.pause();
                                dropped_old = true;
                                // Nor are its lost packets resent: the player starts over at
                                // that keyframe, and their resends filled the thin link for a
                                // second after the step (the budget owed up to 200 of them;
                                // the 250 kbit/s viewer's 180p picture waited behind them).
                                if let Some(next) = forwarder.next_seq() {
                                    leg.resends.set_floor(leg.ssrc, next);
                                }
                            }
                        }
                        // Paced for the layer it gets; a step down is paced for the new layer
                        // at once (nothing of the old one flows), and the new keyframe waits
                        // until the queue the link was last seen holding has drained: sent into
                        // it, its tail is dropped and must be repaired across that queue. A
                        // switch up sets the new layer's pace when it happens (the old layer's
                        // packets paced at the new one's rate would hold its keyframe back).
                        let paced = if dropped_old { forwarder.target() } else { current };
                        set_pace(
                            &leg,
                            &mut pacer,
                            pace_rate(paced, choice.probe, per_layer, chooser.capacity_bps(now)),
                        );
                        if link.full() || link.standing_queue_ms >= FULL_QUEUE_MS / 2.0 {
                            leg.fec.allow(false);
                        }
                        if dropped_old && paced != current {
                            let queue = Duration::from_micros(leg.link.read().queue_us);
                            pacer.hold(now + queue, now);
                        }
                        if report {
                            leg.report_link(current, link.estimate_bps);
                        }
                    }
                    // Auto, switching: the choice was made and waits for the target's
                    // keyframe (deciding again now would weigh the old layer's figures and
                    // could call the switch off).
                    (Some(_), true) => {}
                    (Some(pc), false) => {
                        retarget(&leg, &mut forwarder, wanted);
                        guard_fec(&leg, guard.as_mut());
                        if report {
                            let estimate = player_estimate(pc).await;
                            leg.report_link(forwarder.current().unwrap_or(forwarder.target()), estimate);
                        }
                    }
                    _ => {
                        retarget(&leg, &mut forwarder, wanted);
                        guard_fec(&leg, guard.as_mut());
                    }
                }
                continue;
            }
            r = recv_layer(r0) => (0, r),
            r = recv_layer(r1) => (1, r),
            r = recv_layer(r2) => (2, r),
        };
        let packet = match received {
            Ok(p) => p,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too far behind: skip ahead and restart from a keyframe.
                let _ = leg.ingest.keyframe.try_send((KeyframeWhy::Repair, layer));
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let out = forwarder.push(layer, packet, Instant::now());
        let switch_seq = out.packets.first().map(|p| p.header.sequence_number);
        // Only a paced player can fall behind its channel this way (reading the channel's
        // length takes its lock: not for every player's every packet).
        let backlog = match pacer.rate_bps() {
            Some(_) => rx[layer].as_ref().map_or(0, |r| r.len()),
            None => 0,
        };
        for mut p in out.packets {
            sent.packets += 1;
            sent.bytes += p.payload.len() as u64;
            p.header.ssrc = leg.ssrc;
            if let Some(pt) = leg.payload_type {
                p.header.payload_type = pt;
            }
            // While probing, duplicates (the player drops them) fill the link up to the
            // better layer's rate.
            // The packet goes before its copies (a queue the probe overruns drops what comes
            // last).
            let bytes = p.payload.len() + RTP_OVERHEAD;
            let copies = if padding.probing() {
                padding.copies(Instant::now())
            } else {
                0
            };
            let copy = (copies > 0).then(|| p.clone());
            if backlog > MAX_PACED_BACKLOG {
                // Pacing let packets pile up in the channel (the layer grew past its
                // measured rate): catch up at once rather than add seconds of delay.
                pacer.restart();
            }
            pace(&mut pacer, bytes).await;
            if leg.writer.write_rtp(p).await.is_err() {
                return;
            }
            if let Some(copy) = copy {
                for _ in 0..copies {
                    pace(&mut pacer, bytes).await;
                    if leg.writer.write_rtp(copy.clone()).await.is_err() {
                        return;
                    }
                }
            }
        }
        if out.switched_to.is_some()
            && let Some(first) = switch_seq
        {
            // The player starts over at this keyframe: what it lost before it is not resent.
            leg.resends.set_floor(leg.ssrc, first);
        }
        if let Some(now) = out.switched_to
            && leg.estimating.is_some()
            && wanted.is_auto()
        {
            set_pace(
                &leg,
                &mut pacer,
                pace_rate(now, None, per_layer, chooser.capacity_bps(Instant::now())),
            );
        }
        if out.switched_to.is_some() {
            dropped_old = false;
        }
        if let Some(now) = out.switched_to {
            // Resuming after Off on the same layer is no change to tell.
            if leg.sending.swap(now, Ordering::Relaxed) == now && !first_switch {
                continue;
            }
            first_switch = false;
            let (app_id, stream_id, session) = &leg.who;
            leg.events
                .layer_changed(*app_id, stream_id, *session, now, reason);
        }
    }
}

/// Keeps a player's repair packets within the room its link has: off while a standing queue
/// they built shows, then back at most at half the share that filled it (see `fec_guard`).
/// Its resends are cut to a twentieth while the queue outlives the repairs: at full budget
/// they kept it full after the repairs stopped, half of all that was sent dropped (the
/// picture froze for the rest of the run).
fn guard_fec(leg: &VideoLeg, guard: Option<&mut FecGuard>) {
    let Some(guard) = guard else { return };
    let standing_ms = leg.link.read().standing_long_us as f64 / 1e3;
    let trips = guard.trips();
    // The share counts only if repairs went out since the last step (the one the sender
    // reports lags a second behind, and holds its old value while they are held off).
    let sent = guard.sent_since(leg.fec.repair_packets.load(Ordering::Relaxed));
    let share = if sent { leg.fec.share() } else { 0.0 };
    let allowed = guard.step(standing_ms, share, Instant::now());
    if guard.trips() != trips {
        leg.fec_totals.guard_trips.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(player = ?leg.who.2, standing_ms, ceiling = allowed.ceiling, hold = ?guard.hold(), "fec guard: the link holds a queue");
    }
    leg.fec.allow(allowed.repairs);
    leg.fec.set_ceiling(allowed.ceiling);
    leg.resends.share.store(
        if allowed.resends_cut {
            CONGESTED_RESEND_SHARE
        } else {
            FULL_SHARE
        },
        Ordering::Relaxed,
    );
}

/// Lifts [`ResendControl::resend_only`] and any cut of the budget when dropped.
struct ResendAll(Arc<ResendControl>);

impl Drop for ResendAll {
    fn drop(&mut self) {
        self.0.resend_only(None);
        // Nor cut (the sound shares the budget).
        self.0.share.store(FULL_SHARE, Ordering::Relaxed);
    }
}

/// Reads a player connection's send-side estimate (bits/s; 0 until there is one).
async fn player_estimate(pc: &Arc<dyn PeerConnection>) -> f64 {
    let report = pc
        .get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None)
        .await;
    report
        .outbound_rtp_streams()
        .map(|s| s.target_bitrate)
        .filter(|b| *b > 0.0)
        .fold(0.0, f64::max)
}

/// What the forwarder sent a player and what it reported missing, as running totals.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    packets: u64,
    bytes: u64,
}

/// Turns the running totals into [`LinkSample`]s. The loss is the share of packets sent that
/// the player NACKed (each counted once however often it asks), not its receiver reports'
/// fraction lost: resends arrive as duplicates and hide the loss there.
#[derive(Default)]
struct LinkSampler {
    last: Option<(Sent, u64, Metered, Instant)>,
}

impl LinkSampler {
    /// Whether the last sample was taken longer than `age` before `now` (or none was).
    fn older_than(&self, now: Instant, age: Duration) -> bool {
        self.last
            .is_none_or(|(.., at)| now.saturating_duration_since(at) >= age)
    }

    /// Whether the player NACKed a congested share ([`CONGESTED_LOSS`]) of what it was sent
    /// since the last sample: at least 200 ms and 20 packets, so a single loss is not it;
    /// `strict`: surely that share ([`surely_above`]), not a few unlucky packets.
    fn congested_since_last(
        &self,
        sent: Sent,
        nacked: u64,
        metered: Metered,
        now: Instant,
        threshold: f64,
        strict: bool,
    ) -> bool {
        let Some((before, nacked_before, metered_before, at)) = self.last else {
            return false;
        };
        if now.saturating_duration_since(at) < Duration::from_millis(200) {
            return false;
        }
        let packets = sent.packets.saturating_sub(before.packets);
        let lost = nacked.saturating_sub(nacked_before);
        let (_, arrived, missing) = metered.since(metered_before);
        let over = |lost: u64, n: u64| {
            n >= 20
                && if strict {
                    surely_above(lost as f64 / n as f64, n, threshold)
                } else {
                    lost as f64 >= n as f64 * threshold
                }
        };
        // The feedback's own count where it covers enough (see `LinkSample::worst_loss`).
        if arrived + missing >= FED_BACK_PACKETS {
            over(missing, arrived + missing)
        } else {
            over(lost, packets)
        }
    }

    fn sample(
        &mut self,
        estimate_bps: f64,
        sent: Sent,
        nacked: u64,
        metered: Metered,
        now: Instant,
    ) -> LinkSample {
        let (mut delivered_bps, mut wire_loss) = (0.0, 0.0);
        let (mut loss_packets, mut wire_packets) = (0, 0);
        let (sent_bps, loss) = match self.last {
            Some((before, nacked_before, metered_before, at)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64().max(0.05);
                let (bytes, arrived, missing) = metered.since(metered_before);
                if arrived + missing > 0 {
                    delivered_bps = bytes as f64 * 8.0 / secs;
                    wire_loss = missing as f64 / (arrived + missing) as f64;
                }
                wire_packets = arrived + missing;
                let packets = sent.packets.saturating_sub(before.packets);
                loss_packets = packets;
                let lost = nacked.saturating_sub(nacked_before);
                (
                    sent.bytes.saturating_sub(before.bytes) as f64 * 8.0 / secs,
                    if packets == 0 {
                        0.0
                    } else {
                        (lost as f64 / packets as f64).min(1.0)
                    },
                )
            }
            None => (0.0, 0.0),
        };
        self.last = Some((sent, nacked, metered, now));
        LinkSample {
            estimate_bps,
            sent_bps,
            loss,
            rtt_ms: 0.0,
            delivered_bps,
            wire_loss,
            queue_ms: metered.queue_us as f64 / 1e3,
            standing_queue_ms: metered.standing_us as f64 / 1e3,
            loss_packets,
            wire_packets,
        }
    }
}

/// Each layer's bitrate as it arrives, from the ingest's byte counters between two calls: the
/// mean of its last [`RATE_WINDOWS`] measurements (a keyframe's window among them), and for a
/// paused layer the mean of its windows before the one it paused in (a paused 360p layer was
/// offered at what arrived in its last, partial window, 92 kbit/s, a third of what it sends,
/// and chosen for a 400 kbit/s link it then filled).
#[derive(Default)]
struct LayerRates {
    last: Option<([u64; MAX_LAYERS], Instant)>,
    /// Each layer's rate over its last windows with data (newest last).
    recent: [VecDeque<f64>; MAX_LAYERS],
    /// Whether each layer sent anything in the last window.
    last_sent: [bool; MAX_LAYERS],
}

/// Windows (about a second each) a layer's rate is the mean of: one holds a keyframe at a
/// two-second keyframe interval.
const RATE_WINDOWS: usize = 3;

impl LayerRates {
    /// Bits/s per layer since the previous call (None: the layer is not sent).
    fn step(&mut self, ingest: &Ingest, now: Instant) -> [Option<f64>; MAX_LAYERS] {
        let bytes: [u64; MAX_LAYERS] =
            std::array::from_fn(|l| ingest.bytes[l].load(Ordering::Relaxed));
        let available: [bool; MAX_LAYERS] =
            std::array::from_fn(|l| ingest.available[l].load(Ordering::Relaxed));
        self.step_with(bytes, available, now)
    }

    /// [`Self::step`] given each layer's byte counter and whether it is offered.
    fn step_with(
        &mut self,
        bytes: [u64; MAX_LAYERS],
        available: [bool; MAX_LAYERS],
        now: Instant,
    ) -> [Option<f64>; MAX_LAYERS] {
        let mut out = [None; MAX_LAYERS];
        if let Some((before, at)) = self.last {
            let secs = now.saturating_duration_since(at).as_secs_f64().max(0.1);
            for l in 0..MAX_LAYERS {
                let delta = bytes[l].saturating_sub(before[l]);
                let recent = &mut self.recent[l];
                if delta > 0 {
                    recent.push_back(delta as f64 * 8.0 / secs);
                    if recent.len() > RATE_WINDOWS {
                        recent.pop_front();
                    }
                } else if !available[l] {
                    continue;
                } else if self.last_sent[l] && recent.len() > 1 {
                    // Just paused: the window it paused in was partial.
                    recent.pop_back();
                }
                self.last_sent[l] = delta > 0;
                // Sent, or paused at the publisher (nobody needed it): offered at what it
                // sent last.
                if !recent.is_empty() {
                    out[l] = Some(recent.iter().sum::<f64>() / recent.len() as f64);
                }
            }
        }
        self.last = Some((bytes, now));
        out
    }
}

/// The resend budget (thousandths of the full one) of a player whose link held a queue after
/// its repairs stopped (`guard_fec`): a single-layer stream that nearly fills a link stays
/// overloaded by the resends of what the overload drops unless they nearly stop (at a quarter
/// the 1,200 kbit/s link went on dropping a fifth of what it was sent).
const CONGESTED_RESEND_SHARE: u32 = 50;
/// An Auto player below the best layer sent is on a link known to be thin: its packets are
/// paced at this many times its layer's rate (libwebrtc's factor), so a keyframe is spread
/// over a few frame intervals instead of overrunning the link's queue.
const PACE_FACTOR: f64 = 2.5;
/// A thin player's video is paced within this share of the link's measured capacity.
const PACE_CAPACITY_SHARE: f64 = 0.75;
/// Packets waiting in a paced player's channel beyond which pacing stops holding them (about
/// a second of a small layer).
const MAX_PACED_BACKLOG: usize = 32;
/// Never paced slower than this (a layer's rate measured over a moment it barely sent).
const PACE_FLOOR_BPS: f64 = 150_000.0;
/// While probing, packets and their copies are paced at this many times the better layer's
/// rate.
const PROBE_PACE_FACTOR: f64 = 1.25;
/// The retransmission budget's share (thousandths of the full one) for an Auto player below
/// the best layer: a quarter of a resend per packet sent. With the full budget, a link kept
/// full by resends of its own losses stayed congested at a layer that fits it (the 250 kbit/s
/// viewer of `tests/weaknet` lost 30-50 % on 180p for seconds on end).
const THIN_LINK_RESEND_SHARE: u32 = 250;
/// A standing queue runs an early layer check once the last sample is this old.
const STANDING_SAMPLE: Duration = Duration::from_millis(250);
/// Bytes an RTP packet carries besides its payload (header, extensions, SRTP tag, UDP/IP).
const RTP_OVERHEAD: usize = 60;

/// The pacing rate for an Auto player sending `current` (and probing for `probe`): None on
/// the best layer sent (nothing says its link is thin; a keyframe there goes at once).
fn pace_rate(
    current: usize,
    probe: Option<usize>,
    per_layer: [Option<f64>; MAX_LAYERS],
    capacity: Option<f64>,
) -> Option<f64> {
    let best = per_layer.iter().position(Option::is_some)?;
    if current <= best {
        return None;
    }
    match probe {
        // A probe tests whether the link carries the better layer's rate: it is sent at
        // about that rate, not in bursts above it (they overran the thin link's queue and
        // froze the picture for a second even when the probe was cut short).
        Some(up) => per_layer[up].map(|r| r * PROBE_PACE_FACTOR),
        // Within what the link was measured to carry when full, less room for the audio and
        // resends beside the video (a keyframe paced above the link only fills its queue),
        // but never so slow that the layer itself queues.
        None => per_layer[current].map(|r| {
            let most = r * PACE_FACTOR;
            capacity.map_or(most, |c| (c * PACE_CAPACITY_SHARE).clamp(r * 1.2, most))
        }),
    }
    .map(|r| r.max(PACE_FLOOR_BPS))
}

/// Paces an Auto player at `rate` (None: not at all). Below the best layer the link is known
/// to be thin: resends compete with the media there, and a full budget keeps it congested.
fn set_pace(leg: &VideoLeg, pacer: &mut Pacer, rate: Option<f64>) {
    pacer.set_rate(rate);
    // Nor are repair packets sent there: its losses are its capacity.
    leg.fec.allow(rate.is_none());
    leg.resends.share.store(
        if rate.is_some() {
            THIN_LINK_RESEND_SHARE
        } else {
            FULL_SHARE
        },
        Ordering::Relaxed,
    );
}

/// Waits until the pacer lets a packet of `bytes` go.
async fn pace(pacer: &mut Pacer, bytes: usize) {
    if pacer.rate_bps().is_none() {
        return;
    }
    let now = Instant::now();
    let at = pacer.admit(bytes, now);
    if at > now {
        tokio::time::sleep_until(at.into()).await;
    }
}

/// The longest an Auto player's switch waits for the target layer's keyframe before its layer
/// is chosen again (the layer may have stopped).
const SWITCH_WAIT: Duration = Duration::from_secs(3);

/// Whether `forwarder` is between two layers, waiting for the target's keyframe (not for
/// longer than [`SWITCH_WAIT`]; then the layer is chosen again, from the target); `since`
/// keeps when that wait began.
fn waiting_keyframe(
    forwarder: &LayerForwarder,
    dropped_old: bool,
    since: &mut Option<(usize, Instant)>,
) -> bool {
    let target = forwarder.target();
    // Stopped the old layer for the switch (`dropped_old`), or still sending it.
    let switching = match forwarder.current() {
        None => dropped_old,
        Some(c) => c != target,
    };
    if !switching {
        *since = None;
        return false;
    }
    let (_, started) = match *since {
        Some((t, at)) if t == target => (t, at),
        _ => *since.insert((target, Instant::now())),
    };
    started.elapsed() < SWITCH_WAIT
}

/// Points `forwarder` at the layer to send for `wanted`; a change asks the publisher for a
/// keyframe of it.
fn retarget(leg: &VideoLeg, forwarder: &mut LayerForwarder, wanted: VideoLayer) {
    let layer = leg.ingest.effective(wanted.index());
    if forwarder.set_target(layer) {
        let _ = leg
            .ingest
            .keyframe
            .try_send((KeyframeWhy::NewPlayer, layer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layers_rate_is_its_recent_mean_and_a_paused_layer_keeps_its_full_windows() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut r = LayerRates::default();
        let on = [true, true, false];
        assert_eq!(r.step_with([0; MAX_LAYERS], on, s(0)), [None; MAX_LAYERS]);
        // 720p: a keyframe's second at 1.6 Mbit/s among seconds of 800 kbit/s; 360p: 300
        // kbit/s, then paused part way through a second.
        let kb = |k: u64| k * 1_000 / 8;
        let mut total = [0u64; MAX_LAYERS];
        let mut step = |r: &mut LayerRates, add: [u64; MAX_LAYERS], at| {
            for l in 0..MAX_LAYERS {
                total[l] += add[l];
            }
            r.step_with(total, on, at)
        };
        assert_eq!(
            step(&mut r, [kb(1_600), kb(300), 0], s(1)),
            [Some(1_600_000.0), Some(300_000.0), None]
        );
        assert_eq!(
            step(&mut r, [kb(800), kb(300), 0], s(2)),
            [Some(1_200_000.0), Some(300_000.0), None]
        );
        assert_eq!(
            step(&mut r, [kb(800), kb(60), 0], s(3))[1],
            Some(220_000.0),
            "the partial window counts while it is not known to be one"
        );
        assert_eq!(
            step(&mut r, [kb(800), 0, 0], s(4))[1],
            Some(300_000.0),
            "paused: offered at what it sent in whole windows"
        );
        assert_eq!(
            step(&mut r, [kb(800), 0, 0], s(5)),
            [Some(800_000.0), Some(300_000.0), None]
        );
    }

    #[test]
    fn congestion_between_samples_is_seen_early_but_not_from_one_loss() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = LinkSampler::default();
        let sent = |packets| Sent {
            packets,
            bytes: packets * 1_000,
        };
        let none = Metered::default();
        let c = CONGESTED_LOSS;
        assert!(
            !s.congested_since_last(sent(100), 50, none, t0, c, true),
            "no sample yet"
        );
        s.sample(0.0, sent(100), 0, none, t0);
        assert!(
            !s.congested_since_last(sent(140), 20, none, t0 + ms(150), c, true),
            "too soon"
        );
        assert!(s.congested_since_last(sent(140), 20, none, t0 + ms(250), c, true));
        assert!(
            !s.congested_since_last(sent(140), 3, none, t0 + ms(250), c, true),
            "a few losses"
        );
        assert!(
            !s.congested_since_last(sent(110), 5, none, t0 + ms(250), c, true),
            "too few packets"
        );
        // The transport-wide feedback tells it before any NACK does.
        let fed = |arrived, missing| Metered {
            acked_bytes: arrived * 1_000,
            acked_packets: arrived,
            lost_packets: missing,
            queue_us: 0,
            standing_us: 0,
            standing_long_us: 0,
        };
        assert!(s.congested_since_last(sent(140), 0, fed(28, 12), t0 + ms(250), c, true));
        assert!(!s.congested_since_last(sent(140), 0, fed(38, 2), t0 + ms(250), c, true));
        assert!(
            s.congested_since_last(
                sent(140),
                0,
                fed(38, 2),
                t0 + ms(250),
                CLEAN_LOSS * 2.0,
                false
            ),
            "a probe's threshold is lower"
        );
        assert!(
            !s.congested_since_last(sent(140), 0, fed(8, 4), t0 + ms(250), c, true),
            "too few reported"
        );
        // 5 of 40 is over a tenth, but a link losing 5 % at random loses that many now and
        // then: only a probe's lower threshold counts it as such.
        assert!(!s.congested_since_last(sent(140), 0, fed(35, 5), t0 + ms(250), c, true));
        assert!(s.congested_since_last(sent(140), 0, fed(35, 5), t0 + ms(250), c, false));
    }

    #[test]
    fn a_thin_player_is_paced_within_its_link_and_the_best_layer_is_not() {
        let rates = [Some(1_000_000.0), Some(340_000.0), Some(100_000.0)];
        assert_eq!(pace_rate(0, None, rates, Some(250_000.0)), None);
        // No measurement: 2.5x the layer.
        assert_eq!(pace_rate(1, None, rates, None), Some(850_000.0));
        // A 600 kbit/s link: within three quarters of it, never under 1.2x the layer.
        assert_eq!(pace_rate(1, None, rates, Some(600_000.0)), Some(450_000.0));
        assert_eq!(pace_rate(1, None, rates, Some(300_000.0)), Some(408_000.0));
        // A 250 kbit/s link on the small layer: the floor.
        assert_eq!(pace_rate(2, None, rates, Some(250_000.0)), Some(187_500.0));
        assert_eq!(
            pace_rate(2, None, rates, Some(150_000.0)),
            Some(PACE_FLOOR_BPS)
        );
        // A probe goes at about the better layer's rate.
        assert_eq!(
            pace_rate(2, Some(1), rates, Some(250_000.0)),
            Some(425_000.0)
        );
    }

    #[test]
    fn repair_requests_are_limited_harder_than_a_new_players() {
        let ms = Duration::from_millis;
        assert!(forward_pli(KeyframeWhy::NewPlayer, ms(150)));
        assert!(!forward_pli(KeyframeWhy::NewPlayer, ms(50)));
        assert!(!forward_pli(KeyframeWhy::Repair, ms(150)));
        assert!(forward_pli(KeyframeWhy::Repair, ms(500)));
    }
}
