//! Publishing one local channel: a sendonly peer connection with H.264 and Opus tracks, an
//! encoder thread per kind fed from the channel's fanout, the capture time in an SEI before
//! each access unit, and keyframes on the SFU's request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtc::media::Sample;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::mpsc;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

use crate::live::LiveEvent;
use crate::live::controls::{PublishControls, black_like, silence_like};
use onair_media::channel::FrameReceiver;
use onair_media::codec::h264::H264Encoder;
use onair_media::codec::opus::OpusEncoder;
use onair_media::config::VideoConfig;
use onair_media::frame::{SharedAudioFrame, SharedVideoFrame};
use onair_transport::keyframe_requests::is_keyframe_request;
use onair_transport::peer::{
    self, MediaNetwork, PeerError, SendOptions, h264_codec, new_peer_with, opus_codec,
};
use onair_transport::{sei, stap};

/// One simulcast layer's track, its sender, and the flag its keyframe requests set.
type VideoTrack = (
    Arc<TrackLocalStaticSample>,
    Arc<dyn RtpSender>,
    Arc<AtomicBool>,
);

/// A negotiated (or negotiating) publisher connection.
pub struct PublisherPeer {
    /// The peer connection.
    pub pc: Arc<dyn PeerConnection>,
    /// One video track per simulcast layer (the full picture first), each with the flag its
    /// keyframe requests set.
    video: Vec<VideoTrack>,
    audio: (Arc<TrackLocalStaticSample>, Arc<dyn RtpSender>),
    /// Packets the relay reported missing (NACK) so far.
    pub nacked: Arc<std::sync::atomic::AtomicU64>,
    received: Arc<std::sync::atomic::AtomicU64>,
    seen: u64,
    /// What the FEC sender calls for and costs (its share and its overhead in bytes).
    pub fec: Arc<onair_transport::fec::FecControl>,
}

impl PublisherPeer {
    /// Whether packets (the relay's RTCP) arrived since the last time this was asked.
    pub fn still_receiving(&mut self) -> bool {
        let n = self.received.load(std::sync::atomic::Ordering::Relaxed);
        std::mem::replace(&mut self.seen, n) != n
    }
}

async fn sample_track(
    pc: &Arc<dyn PeerConnection>,
    stream_id: &str,
    kind: RtpCodecKind,
    layer: usize,
) -> Result<(Arc<TrackLocalStaticSample>, Arc<dyn RtpSender>), PeerError> {
    let codec = if kind == RtpCodecKind::Video {
        h264_codec()
    } else {
        opus_codec()
    };
    // The relay tells layers apart by the track ID (`…-video`, `…-video-1`, `…-video-2`).
    let id = match layer {
        0 => format!("{stream_id}-{kind}"),
        n => format!("{stream_id}-{kind}-{n}"),
    };
    let track = Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            stream_id.to_string(),
            id.clone(),
            id,
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(rand::random::<u32>()),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        ),
    )?);
    let sender = pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
    Ok((track, sender))
}

/// Creates the connection (a video track per simulcast layer) and its offer (with every
/// candidate).
pub async fn offer(
    net: &MediaNetwork,
    stream_id: &str,
    layers: usize,
    generation: u64,
    events: mpsc::Sender<LiveEvent>,
    send: SendOptions,
) -> Result<(PublisherPeer, String), PeerError> {
    let (pc, mut ev) = new_peer_with(net, send).await?;
    let mut video = Vec::new();
    for layer in 0..layers.max(1) {
        let (track, sender) = sample_track(&pc, stream_id, RtpCodecKind::Video, layer).await?;
        video.push((track, sender, Arc::new(AtomicBool::new(false))));
    }
    let audio = sample_track(&pc, stream_id, RtpCodecKind::Audio, 0).await?;
    let offer = pc.create_offer(None).await?;
    let sdp = peer::finish_local(&pc, &mut ev, offer).await?;
    crate::live::report_state(
        ev.state.clone(),
        stream_id.to_string(),
        true,
        generation,
        events,
    );
    // Keyframe requests from the SFU set the layer's flag, read by the encoder before each
    // frame.
    for (track, _, flag) in &video {
        let (track, flag) = (track.clone(), flag.clone());
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(packets) = event
                    && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
                {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        });
    }
    Ok((
        PublisherPeer {
            pc,
            video,
            audio,
            nacked: ev.nacked.clone(),
            received: ev.received.clone(),
            seen: 0,
            fec: ev.fec.clone(),
        },
        sdp,
    ))
}

/// One simulcast layer's encoder and where its packets go.
struct LayerEncoder {
    encoder: H264Encoder,
    configured_kbps: u32,
    applied_kbps: u32,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: u8,
    keyframe: Arc<AtomicBool>,
    /// Not encoded since the relay said no player needs it.
    paused: bool,
}

/// Counters a publisher keeps (read once a second for quality events).
#[derive(Debug, Default)]
pub struct PublisherCounters {
    /// Video frames encoded and sent.
    pub frames: std::sync::atomic::AtomicU64,
    /// Bytes of video sent.
    pub video_bytes: std::sync::atomic::AtomicU64,
    /// Bytes of audio sent.
    pub audio_bytes: std::sync::atomic::AtomicU64,
    /// Keyframes sent on request.
    pub keyframes_requested: std::sync::atomic::AtomicU64,
    /// The encoder's target in kbps; the engine lowers and raises it with the bandwidth
    /// estimate (never above the configured bitrate), the encode thread applies it before the
    /// next frame without a keyframe.
    pub target_kbps: std::sync::atomic::AtomicU32,
}

/// The encoding threads of a publisher; stopped and joined on drop.
pub struct PublisherMedia {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Counters.
    pub counters: Arc<PublisherCounters>,
}

impl Drop for PublisherMedia {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        crate::live::join_off_runtime(std::mem::take(&mut self.threads));
    }
}

async fn writer_target(
    track: &Arc<TrackLocalStaticSample>,
    sender: &Arc<dyn RtpSender>,
) -> Option<(u32, u8)> {
    let ssrc = *track.ssrcs().await.first()?;
    let pt = sender
        .get_parameters()
        .await
        .ok()?
        .rtp_parameters
        .codecs
        .first()?
        .payload_type;
    Some((ssrc, pt))
}

impl PublisherPeer {
    /// Applies the relay's answer.
    pub async fn accept(&self, answer_sdp: String) -> Result<(), PeerError> {
        self.pc
            .set_remote_description(peer::answer(answer_sdp)?)
            .await?;
        Ok(())
    }

    /// Starts encoding `video` and `audio` into the tracks.
    pub async fn start_media(
        &self,
        config: VideoConfig,
        video: FrameReceiver<SharedVideoFrame>,
        audio: FrameReceiver<SharedAudioFrame>,
        controls: Arc<PublishControls>,
    ) -> Result<PublisherMedia, PeerError> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(PublisherCounters::default());
        counters
            .target_kbps
            .store(config.bitrate_kbps, Ordering::Relaxed);
        let handle = tokio::runtime::Handle::current();
        // Each layer: its encoder's config, track, SSRC, payload type and keyframe flag.
        let mut layers = Vec::new();
        for (config, (track, sender, keyframe)) in config.layers().into_iter().zip(&self.video) {
            let (ssrc, pt) = writer_target(track, sender)
                .await
                .ok_or_else(|| PeerError("video sender not negotiated".into()))?;
            layers.push((config, track.clone(), ssrc, pt, keyframe.clone()));
        }
        let (assrc, apt) = writer_target(&self.audio.0, &self.audio.1)
            .await
            .ok_or_else(|| PeerError("audio sender not negotiated".into()))?;
        let mut threads = Vec::new();
        {
            let (stop, handle) = (stop.clone(), handle.clone());
            let interval = Duration::from_secs_f64(1.0 / f64::from(config.fps.max(1)));
            let counters = counters.clone();
            let controls = controls.clone();
            let full_kbps = config.bitrate_kbps;
            threads.push(
                std::thread::Builder::new()
                    .name("onair-encode-video".into())
                    .spawn(move || {
                        // The full picture first: the small layers never delay it.
                        let mut encoders = Vec::new();
                        for (config, track, ssrc, pt, keyframe) in layers {
                            match H264Encoder::new(config) {
                                Ok(e) => encoders.push(LayerEncoder {
                                    encoder: e,
                                    configured_kbps: config.bitrate_kbps,
                                    applied_kbps: config.bitrate_kbps,
                                    track,
                                    ssrc,
                                    pt,
                                    keyframe,
                                    paused: false,
                                }),
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot open the video encoder");
                                    return;
                                }
                            }
                        }
                        // SEI may be sent while this runs.
                        let _encoding = controls.encoding();
                        let mut black: Option<SharedVideoFrame> = None;
                        while !stop.load(Ordering::Relaxed) {
                            let Some(mut frame) = video.recv_timeout(Duration::from_millis(50))
                            else {
                                continue;
                            };
                            if controls.video_muted() {
                                // A black picture in the camera's place (one allocation while
                                // the size holds).
                                let b = match black.take() {
                                    Some(b)
                                        if b.width == frame.width && b.height == frame.height =>
                                    {
                                        let mut b = b;
                                        if let Some(f) = Arc::get_mut(&mut b) {
                                            f.pts_us = frame.pts_us;
                                            f.capture_time_us = frame.capture_time_us;
                                        }
                                        b
                                    }
                                    _ => Arc::new(black_like(&frame)),
                                };
                                frame = b.clone();
                                black = Some(b);
                            }
                            // The estimate scales every layer alike (never above its own
                            // configured bitrate).
                            let target = counters.target_kbps.load(Ordering::Relaxed);
                            let share =
                                f64::from(target.min(full_kbps)) / f64::from(full_kbps.max(1));
                            // The app's SEI rides on the first frame captured after its call,
                            // in every layer (a player may get any of them).
                            let user_sei = controls.take_sei(frame.capture_time_us, Instant::now());
                            // The layer encoded last (its picture is the next one's source).
                            let mut larger: Option<usize> = None;
                            for i in 0..encoders.len() {
                                let (done, rest) = encoders.split_at_mut(i);
                                let Some(layer) = rest.first_mut() else { break };
                                // A layer no player needs is not encoded; it resumes with a
                                // keyframe (its players start there).
                                let paused = controls.layer_paused(i);
                                if paused != layer.paused {
                                    layer.paused = paused;
                                    tracing::debug!(layer = i, paused, "simulcast layer");
                                    if !paused {
                                        layer.encoder.request_keyframe();
                                    }
                                }
                                if paused {
                                    continue;
                                }
                                let want =
                                    ((f64::from(layer.configured_kbps) * share) as u32).max(30);
                                if target > 0 && want != layer.applied_kbps {
                                    if let Err(e) = layer.encoder.set_bitrate_kbps(want) {
                                        tracing::warn!(error = %e, want, "bitrate change failed");
                                    }
                                    layer.applied_kbps = want;
                                }
                                if layer.keyframe.swap(false, Ordering::SeqCst) {
                                    layer.encoder.request_keyframe();
                                    counters.keyframes_requested.fetch_add(1, Ordering::Relaxed);
                                }
                                let encoded = layer
                                    .encoder
                                    .encode_from(larger.map(|l| &done[l].encoder), &frame);
                                larger = Some(i);
                                let packet = match encoded {
                                    Ok(Some(p)) => p,
                                    Ok(None) => continue,
                                    Err(e) => {
                                        tracing::warn!(error = %e, "encode failed");
                                        continue;
                                    }
                                };
                                let mut data = sei::capture_time_nal(packet.capture_time_us);
                                for user in &user_sei {
                                    data.extend(sei::user_data_nal(user));
                                }
                                data.extend_from_slice(&packet.data);
                                // The stamp and small slices share a packet (see `stap`).
                                let data = stap::aggregate(&data, stap::MAX_PAYLOAD);
                                if i == 0 {
                                    counters.frames.fetch_add(1, Ordering::Relaxed);
                                }
                                counters
                                    .video_bytes
                                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                                let sample = Sample {
                                    data: data.into(),
                                    duration: interval,
                                    ..Sample::new(Instant::now())
                                };
                                let result = handle.block_on(
                                    layer
                                        .track
                                        .sample_writer(layer.ssrc, layer.pt)
                                        .write_sample(&sample),
                                );
                                if result.is_err() {
                                    return;
                                }
                            }
                        }
                    })
                    .map_err(|e| PeerError(e.to_string()))?,
            );
        }
        {
            let (stop, handle, track) = (stop.clone(), handle.clone(), self.audio.0.clone());
            let counters = counters.clone();
            let controls = controls.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("onair-encode-audio".into())
                    .spawn(move || {
                        let mut encoder: Option<OpusEncoder> = None;
                        while !stop.load(Ordering::Relaxed) {
                            let Some(mut frame) = audio.recv_timeout(Duration::from_millis(50))
                            else {
                                continue;
                            };
                            if controls.audio_muted() {
                                frame = Arc::new(silence_like(&frame));
                            }
                            if encoder.is_none() {
                                encoder = OpusEncoder::new(frame.channels, 48, true).ok();
                            }
                            let Some(enc) = encoder.as_mut() else { break };
                            let Ok(packets) = enc.encode(&frame) else {
                                continue;
                            };
                            for p in packets {
                                counters
                                    .audio_bytes
                                    .fetch_add(p.data.len() as u64, Ordering::Relaxed);
                                let sample = Sample {
                                    data: p.data.into(),
                                    duration: Duration::from_millis(20),
                                    ..Sample::new(Instant::now())
                                };
                                if handle
                                    .block_on(track.sample_writer(assrc, apt).write_sample(&sample))
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        }
                    })
                    .map_err(|e| PeerError(e.to_string()))?,
            );
        }
        Ok(PublisherMedia {
            stop,
            threads,
            counters,
        })
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}
