//! Playing one stream: a recvonly peer connection, RTP → access units (with loss detection and
//! keyframe requests), a decoder thread per kind, decoded frames handed on through the stream's
//! fanout, first-frame reports. No jitter buffer holds a frame that has arrived whole: on a clean
//! link each access unit is decoded the moment its last packet lands.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;

use crate::live::{LiveEvent, PlayOutputs};
use crate::room::events::Event;
use crate::room::sink::EventSink;
use onair_media::codec::h264::H264Decoder;
use onair_media::codec::opus::OpusDecoder;
use onair_transport::assembler::{AccessUnit, Assembler};
use onair_transport::jitter::{Buffered, JitterBuffer};
use onair_transport::playout::Playout;
use std::collections::VecDeque;

/// The longest a player waits behind a missing packet (for a reorder or a NACK retransmission)
/// before giving up on it and asking for a keyframe; the actual wait adapts: about two
/// interarrival jitters on a clean link (~2 ms), [`REPAIR_ROUNDS`] repair times on a lossy one.
const MAX_REORDER_WAIT: Duration = Duration::from_millis(1_000);
/// How many NACK rounds a gap is waited for (a resend can be lost too: at 20 % loss each way
/// the first round mends ~64 % of losses and each doubled retry ~92 % of the rest).
const REPAIR_ROUNDS: u32 = 8;
/// The most delay playout adds to smooth repaired frames.
const MAX_PLAYOUT_DELAY: Duration = Duration::from_millis(1_000);
use onair_transport::peer::{self, MediaNetwork, PeerError, PeerEvents, new_peer};
use onair_transport::sei;

/// Counters a player keeps (read by stats).
#[derive(Debug, Default)]
pub struct PlayerCounters {
    /// Video frames decoded.
    pub frames: AtomicU64,
    /// RTP packets missing.
    pub lost: AtomicU64,
    /// Latest end-to-end delay (capture → decoded), µs.
    pub delay_us: AtomicU64,
    /// Bytes of video received.
    pub bytes: AtomicU64,
    /// Interarrival jitter of the video, µs.
    pub jitter_us: AtomicU64,
    /// Stutters: gaps between decoded frames longer than [`STUTTER_GAP`].
    pub stutters: AtomicU64,
    /// Total time spent in those gaps, µs.
    pub stutter_us: AtomicU64,
    /// Round trip to the relay in µs (from the stats, once a second): the jitter buffer
    /// waits about this long plus the NACK interval for a resend.
    pub rtt_us: AtomicU64,
    /// Keyframe requests (PLI) sent.
    pub keyframe_requests: AtomicU64,
    /// Keyframes received whole.
    pub keyframes: AtomicU64,
    /// Delay added to play smoothly (jitter buffer and playout), µs.
    pub playout_delay_us: AtomicU64,
    /// Audio frames decoded from their own packet.
    pub audio_played: AtomicU64,
    /// Audio frames rebuilt (FEC) or concealed (PLC).
    pub audio_concealed: AtomicU64,
    /// Audio frames lost.
    pub audio_lost: AtomicU64,
    /// RTP packets received (video and audio, resends included).
    pub packets: AtomicU64,
}

/// A gap between two decoded frames this long is a stutter a viewer notices.
pub const STUTTER_GAP: Duration = Duration::from_millis(200);

/// A player's connection and its media threads.
pub struct PlayerPeer {
    /// The peer connection.
    pub pc: Arc<dyn PeerConnection>,
    events: Option<PeerEvents>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Counters.
    pub counters: Arc<PlayerCounters>,
    /// What the NACK requester did (repairs, the measured repair time).
    pub nack: Arc<onair_transport::nack::NackStats>,
    /// Packets the FEC decoder rebuilt (repair packets from the relay, `transport::fec`).
    pub fec_recovered: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    seen: u64,
}

impl Drop for PlayerPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        crate::live::join_off_runtime(std::mem::take(&mut self.threads));
        let pc = self.pc.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// Creates the connection and its offer.
pub async fn offer(net: &MediaNetwork) -> Result<(PlayerPeer, String), PeerError> {
    let (pc, mut ev) = new_peer(net).await?;
    peer::add_receivers(&pc, &[RtpCodecKind::Video, RtpCodecKind::Audio]).await?;
    let offer = pc.create_offer(None).await?;
    let sdp = peer::finish_local(&pc, &mut ev, offer).await?;
    Ok((
        PlayerPeer {
            pc,
            nack: ev.nack.clone(),
            fec_recovered: ev.fec_recovered.clone(),
            received: ev.received.clone(),
            seen: 0,
            events: Some(ev),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            counters: Arc::new(PlayerCounters::default()),
        },
        sdp,
    ))
}

impl PlayerPeer {
    /// Whether packets arrived since the last time this was asked.
    pub fn still_receiving(&mut self) -> bool {
        let n = self.received.load(Ordering::Relaxed);
        std::mem::replace(&mut self.seen, n) != n
    }

    /// Applies the relay's answer and starts receiving into `outputs`.
    #[allow(clippy::too_many_arguments)]
    pub async fn accept(
        &mut self,
        answer_sdp: String,
        stream_id: String,
        generation: u64,
        outputs: &PlayOutputs,
        events: mpsc::Sender<LiveEvent>,
        sink: &EventSink,
    ) -> Result<(), PeerError> {
        self.pc
            .set_remote_description(peer::answer(answer_sdp)?)
            .await?;
        let Some(mut ev) = self.events.take() else {
            return Err(PeerError("answer applied twice".into()));
        };
        crate::live::report_state(
            ev.state.clone(),
            stream_id.clone(),
            false,
            generation,
            events.clone(),
        );
        // Decoder threads, fed through bounded channels: a decoder that falls behind drops
        // units (and waits for a keyframe) rather than building a queue. Room for a second of video: after a frame repaired late, the frames queued behind
        // it go on together and the decoder catches up in a few milliseconds each; only a
        // decoder that cannot keep up at all fills it.
        let (video_tx, video_rx) = crossbeam_channel::bounded::<AccessUnit>(30);
        let (audio_tx, audio_rx) = crossbeam_channel::bounded::<AudioIn>(50);
        let (stop, video_out, counters) = (
            self.stop.clone(),
            outputs.video.clone(),
            self.counters.clone(),
        );
        let (controls, sink) = (outputs.controls.clone(), sink.clone());
        let (tx, stream) = (events.clone(), stream_id.clone());
        self.threads.push(
            std::thread::Builder::new()
                .name("onair-decode-video".into())
                .spawn(move || {
                    let Ok(mut decoder) = H264Decoder::new() else {
                        return;
                    };
                    let mut first = true;
                    let mut size = (0, 0);
                    let mut last_decoded: Option<std::time::Instant> = None;
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(unit) = video_rx.recv_timeout(Duration::from_millis(50)) else {
                            continue;
                        };
                        let capture = sei::read_capture_time(&unit.data).unwrap_or(0);
                        let pts_us = i64::from(unit.rtp_timestamp) * 100 / 9;
                        let user_data = sei::read_user_data(&unit.data);
                        let decoded = decoder.decode(&unit.data, pts_us, capture);
                        // Muted here: decoded all the same (the picture resumes without
                        // waiting for a keyframe), delivered to no one.
                        let muted = controls.video_muted();
                        if !muted {
                            // With the frame it rode on: the same pts as that frame.
                            for data in user_data {
                                sink.emit(Event::PlayerSyncRecvSEI {
                                    stream_id: stream.clone(),
                                    data,
                                    pts_us,
                                    capture_time_us: capture,
                                });
                            }
                        }
                        let Ok(Some(frame)) = decoded else {
                            continue;
                        };
                        let now = onair_media::frame::wall_clock_us();
                        if capture > 0 {
                            counters
                                .delay_us
                                .store(now.saturating_sub(capture), Ordering::Relaxed);
                        }
                        counters.frames.fetch_add(1, Ordering::Relaxed);
                        let decoded_at = std::time::Instant::now();
                        if let Some(prev) = last_decoded.replace(decoded_at) {
                            let gap = decoded_at - prev;
                            if gap >= STUTTER_GAP {
                                counters.stutters.fetch_add(1, Ordering::Relaxed);
                                counters
                                    .stutter_us
                                    .fetch_add(gap.as_micros() as u64, Ordering::Relaxed);
                            }
                        }
                        if (frame.width, frame.height) != size {
                            size = (frame.width, frame.height);
                            sink.emit(Event::PlayerVideoSizeChanged {
                                stream_id: stream.clone(),
                                width: size.0,
                                height: size.1,
                            });
                        }
                        if !muted {
                            video_out.send(&Arc::new(frame));
                        }
                        if first {
                            first = false;
                            // Never blocks: the task draining this channel may be waiting on us.
                            let _ = tx.try_send(LiveEvent::FirstVideoFrame {
                                stream_id: stream.clone(),
                                generation,
                            });
                        }
                    }
                })
                .map_err(|e| PeerError(e.to_string()))?,
        );
        let (stop, audio_out) = (self.stop.clone(), outputs.audio.clone());
        let audio_controls = outputs.controls.clone();
        // Muted here: nothing delivered; otherwise at the stream's volume.
        let deliver = move |mut pcm: onair_media::frame::AudioFrame| {
            if !audio_controls.audio_muted() {
                audio_controls.apply_volume(&mut pcm.samples);
                audio_out.send(&Arc::new(pcm));
            }
        };
        let audio_counters = self.counters.clone();
        let (tx, stream) = (events.clone(), stream_id.clone());
        self.threads.push(
            std::thread::Builder::new()
                .name("onair-decode-audio".into())
                .spawn(move || {
                    let Ok(mut decoder) = OpusDecoder::new(1) else {
                        return;
                    };
                    let mut first = true;
                    let mut conceal = Concealment::default();
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(input) = audio_rx.recv_timeout(Duration::from_millis(50)) else {
                            continue;
                        };
                        let packet = match input {
                            AudioIn::Packet(packet) => packet,
                            AudioIn::Lost(n) => {
                                for _ in 0..n {
                                    match conceal.next() {
                                        Some(pcm) => {
                                            audio_counters
                                                .audio_concealed
                                                .fetch_add(1, Ordering::Relaxed);
                                            deliver(pcm);
                                        }
                                        None => {
                                            audio_counters
                                                .audio_lost
                                                .fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                }
                                continue;
                            }
                        };
                        if let Ok(Some(pcm)) = decoder.decode(&packet, 0, 0) {
                            audio_counters.audio_played.fetch_add(1, Ordering::Relaxed);
                            conceal.heard(&pcm);
                            deliver(pcm);
                            if first {
                                first = false;
                                let _ = tx.try_send(LiveEvent::FirstAudioFrame {
                                    stream_id: stream.clone(),
                                    generation,
                                });
                            }
                        }
                    }
                })
                .map_err(|e| PeerError(e.to_string()))?,
        );
        // Tracks: RTP in.
        let counters = self.counters.clone();
        let nack = self.nack.clone();
        let fec_recovered = self.fec_recovered.clone();
        tokio::spawn(async move {
            while let Some(track) = ev.tracks.recv().await {
                let kind = track.kind().await;
                if kind == RtpCodecKind::Video {
                    tokio::spawn(receive_video(
                        track,
                        video_tx.clone(),
                        counters.clone(),
                        nack.clone(),
                        fec_recovered.clone(),
                    ));
                } else {
                    tokio::spawn(receive_audio(
                        track,
                        audio_tx.clone(),
                        counters.clone(),
                        nack.clone(),
                    ));
                }
            }
        });
        Ok(())
    }
}

/// Sizes `jitter`'s wait behind a gap: the measured reordering, then [`REPAIR_ROUNDS`] repair
/// times — the NACK requester's measured one or, until it has one, the round trip from the
/// stats plus the NACK ticks; never less than that round trip, which the requester also gets
/// as its floor. Returns the repair time.
fn repair_patience(
    counters: &PlayerCounters,
    nack: &onair_transport::nack::NackStats,
    jitter: &mut JitterBuffer,
) -> Duration {
    let rtt = Duration::from_micros(counters.rtt_us.load(Ordering::Relaxed));
    nack.rtt_floor_us
        .store(rtt.as_micros() as u64, Ordering::Relaxed);
    let repair = nack.repair_time().map_or_else(
        || peer::repair_time(rtt),
        |r| r.max(rtt) + onair_transport::nack::TICK,
    );
    jitter.set_repair_time(nack.reorder_time() + repair * REPAIR_ROUNDS);
    repair
}

/// The earlier of two optional instants.
fn earliest(
    a: Option<std::time::Instant>,
    b: Option<std::time::Instant>,
) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// RTP → jitter buffer (order, NACK repair) → access units → playout (on time) → decoder.
async fn receive_video(
    track: Arc<dyn TrackRemote>,
    units: crossbeam_channel::Sender<AccessUnit>,
    counters: Arc<PlayerCounters>,
    nack: Arc<onair_transport::nack::NackStats>,
    fec_recovered: Arc<AtomicU64>,
) {
    use std::time::Instant;
    let mut jitter = JitterBuffer::new(90_000, MAX_REORDER_WAIT);
    let mut assembler = Assembler::default();
    let mut playout = Playout::new(90_000, MAX_PLAYOUT_DELAY);
    let mut last_sps: Option<Vec<u8>> = None;
    // The last SPS seen in the packets, and the packet's sequence number (the jitter buffer's
    // `new_encoding`).
    let mut rtp_sps: Option<(Vec<u8>, u16)> = None;
    let mut newest_seq: Option<u16> = None;
    let mut held: VecDeque<(Instant, AccessUnit)> = VecDeque::new();
    let mut last_pli: Option<Instant> = None;
    let mut last_log = Instant::now();
    let media_ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    loop {
        let repair = repair_patience(&counters, &nack, &mut jitter);
        // Frames whose playout time has come go to the decoder.
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, unit)) = held.pop_front()
                && units.try_send(unit).is_err()
            {
                assembler.require_keyframe();
            }
        }
        let deadline = earliest(jitter.deadline(), held.front().map(|(due, _)| *due));
        let ready = tokio::select! {
            event = track.poll() => match event {
                Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                    // A new SPS: another encoding (the relay switched simulcast layers).
                    // Only a packet newer than any before counts (a late resend of the old
                    // encoding's SPS is not a switch back).
                    let seq = p.header.sequence_number;
                    let newest = newest_seq
                        .is_none_or(|n: u16| seq != n && seq.wrapping_sub(n) < 0x8000);
                    if newest {
                        newest_seq = Some(seq);
                    }
                    // The first SPS counts too: nothing before it can be decoded (on a thin
                    // link the first layer's keyframe may never arrive whole, and the gaps it
                    // left must not hold the layer the relay switched to).
                    // An SPS is recorded from any packet newer than the one it was last
                    // recorded from (the new layer's may arrive only as a resend); only the
                    // newest packet marks a new encoding.
                    let new_encoding = match onair_transport::simulcast::rtp_sps(&p.payload) {
                        Some(sps)
                            if rtp_sps.as_ref().is_none_or(|(known, at)| {
                                known.as_slice() != sps
                                    && seq != *at
                                    && seq.wrapping_sub(*at) < 0x8000
                            }) =>
                        {
                            rtp_sps = Some((sps.to_vec(), seq));
                            newest
                        }
                        _ => false,
                    };
                    let packet = Buffered {
                        seq: p.header.sequence_number,
                        timestamp: p.header.timestamp,
                        marker: p.header.marker,
                        new_encoding,
                        payload: p.payload,
                    };
                    jitter.push(packet, std::time::Instant::now())
                }
                Some(_) => continue,
                None => break,
            },
            _ = crate::live::sleep_until_opt(deadline) => jitter.release(std::time::Instant::now()),
        };
        counters
            .jitter_us
            .store(jitter.jitter().as_micros() as u64, Ordering::Relaxed);
        if last_log.elapsed() >= Duration::from_secs(1) {
            last_log = Instant::now();
            tracing::debug!(
                given_up = jitter.lost,
                wait_ms = jitter.wait().as_secs_f64() * 1e3,
                missing = nack.missing.load(Ordering::Relaxed),
                nacks = nack.requests.load(Ordering::Relaxed),
                repaired = nack.repaired.load(Ordering::Relaxed),
                abandoned = nack.abandoned.load(Ordering::Relaxed),
                repair_ms = repair.as_secs_f64() * 1e3,
                reorder_ms = nack.reorder_time().as_secs_f64() * 1e3,
                playout_ms = playout.delay().as_secs_f64() * 1e3,
                held = held.len(),
                assembler_lost = assembler.stats.lost,
                fec_recovered = fec_recovered.load(Ordering::Relaxed),
                "video receive"
            );
        }
        for p in ready {
            let fed = assembler.push(p.seq, p.timestamp, p.marker, &p.payload);
            counters.lost.store(assembler.stats.lost, Ordering::Relaxed);
            let mut want_keyframe = fed.request_keyframe;
            if let Some(unit) = fed.unit {
                if unit.keyframe {
                    counters.keyframes.fetch_add(1, Ordering::Relaxed);
                    // Another encoding (the relay switched simulcast layers): the old one's
                    // lateness is no guide.
                    if let Some(sps) = onair_transport::assembler::sps_of(&unit.data)
                        && last_sps.as_deref() != Some(sps)
                    {
                        if last_sps.is_some() {
                            playout.restart();
                            // What the old encoding still holds goes now, not after its
                            // delay: the new keyframe is due at once and follows it.
                            while let Some((_, old)) = held.pop_front() {
                                let _ = units.try_send(old);
                            }
                        }
                        last_sps = Some(sps.to_vec());
                    }
                }
                let now = Instant::now();
                let due = playout.schedule(unit.rtp_timestamp, now);
                counters
                    .playout_delay_us
                    .store(playout.delay().as_micros() as u64, Ordering::Relaxed);
                if held.is_empty() && due <= now {
                    if units.try_send(unit).is_err() {
                        // The decoder is behind and this unit is dropped (decoding stale
                        // frames only adds delay); what follows it cannot decode until the
                        // next keyframe.
                        assembler.require_keyframe();
                        want_keyframe = true;
                    }
                } else {
                    held.push_back((due, unit));
                }
            }
            // Ask for a keyframe when repair failed; again only when one had time to arrive
            // (twice the repair time, at least 300 ms): asking every 100 ms over a slow link
            // only makes the publisher send keyframes back to back (the SFU limits it too).
            let again = (repair.saturating_mul(2)).max(Duration::from_millis(300));
            if want_keyframe && last_pli.is_none_or(|t| t.elapsed() >= again) {
                last_pli = Some(Instant::now());
                counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                let _ = track.write_rtcp(vec![Box::new(pli)]).await;
            }
        }
    }
}

/// What the audio decoder thread is handed, in play order.
enum AudioIn {
    /// A packet (one 20 ms Opus frame).
    Packet(bytes::Bytes),
    /// This many frames were lost for good (repair failed): conceal them.
    Lost(u64),
}

/// Repeat-and-fade loss concealment: a lost frame is the last one heard at half its level,
/// then a quarter, then an eighth; after that, silence (lost). Cheap, and far smoother than a
/// hole in the stream for the odd lost frame.
#[derive(Default)]
struct Concealment {
    last: Option<onair_media::frame::AudioFrame>,
    run: u32,
}

impl Concealment {
    /// Frames after which concealment gives way to silence.
    const MAX_RUN: u32 = 3;

    fn heard(&mut self, frame: &onair_media::frame::AudioFrame) {
        self.last = Some(frame.clone());
        self.run = 0;
    }

    fn next(&mut self) -> Option<onair_media::frame::AudioFrame> {
        if self.run >= Self::MAX_RUN {
            return None;
        }
        self.run += 1;
        let mut frame = self.last.clone()?;
        let shift = self.run;
        for s in &mut frame.samples {
            *s >>= shift;
        }
        Some(frame)
    }
}

/// RTP → jitter buffer (order, NACK repair) → playout → the decoder thread, with the frames
/// repair could not save marked lost for concealment. Waits like the video does, so the two
/// stay in step.
async fn receive_audio(
    track: Arc<dyn TrackRemote>,
    frames: crossbeam_channel::Sender<AudioIn>,
    counters: Arc<PlayerCounters>,
    nack: Arc<onair_transport::nack::NackStats>,
) {
    use std::time::Instant;
    let mut jitter = JitterBuffer::new(48_000, MAX_REORDER_WAIT);
    let mut playout = Playout::new(48_000, MAX_PLAYOUT_DELAY);
    let mut held: VecDeque<(Instant, AudioIn)> = VecDeque::new();
    loop {
        repair_patience(&counters, &nack, &mut jitter);
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, input)) = held.pop_front() {
                // A decoder thread that fell a whole second behind loses frames here.
                let _ = frames.try_send(input);
            }
        }
        let deadline = earliest(jitter.deadline(), held.front().map(|(due, _)| *due));
        let lost_before = jitter.lost;
        let ready = tokio::select! {
            event = track.poll() => match event {
                Some(TrackRemoteEvent::OnRtpPacket(p)) => {
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                    jitter.push(
                    Buffered {
                        seq: p.header.sequence_number,
                        timestamp: p.header.timestamp,
                        marker: p.header.marker,
                        payload: p.payload,
                        new_encoding: false,
                    },
                    Instant::now(),
                    )
                }
                Some(_) => continue,
                None => break,
            },
            _ = crate::live::sleep_until_opt(deadline) => jitter.release(Instant::now()),
        };
        let now = Instant::now();
        let lost = jitter.lost - lost_before;
        if lost > 0 {
            // Given up behind a gap: the frames lost come before what was released.
            held.push_back((now, AudioIn::Lost(lost.min(50))));
        }
        for p in ready {
            let due = playout.schedule(p.timestamp, now);
            held.push_back((
                due.max(held.back().map_or(due, |(d, _)| *d)),
                AudioIn::Packet(p.payload),
            ));
        }
    }
}
