//! Once a second: quality events from the media counters and the WebRTC stats, and the
//! bandwidth estimate handed to the encoders.

use std::sync::Arc;
use std::time::Instant;

use super::Connection;
use crate::room::events::{Event, MediaPath, PlayerState, PublisherState};
use crate::room::link::Pending;
use crate::room::network_quality::{LinkSample, loss_share};
use crate::room::quality::{self, PlayerCounts, PublisherCounts};
use onair_protocol::messages::RequestBody;

impl Connection {
    /// Emits a quality event per publisher and player (once a second).
    pub(super) async fn report_quality(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let bandwidth_estimation = self.settings.bandwidth_estimation;
        let mut reports = Vec::new();
        for (stream_id, p) in &mut self.publishers {
            let (Some(media), Some(peer)) = (p.media.as_ref(), p.peer.as_ref()) else {
                continue;
            };
            let c = &media.counters;
            let counts = PublisherCounts {
                frames: c.frames.load(Relaxed),
                video_bytes: c.video_bytes.load(Relaxed),
                audio_bytes: c.audio_bytes.load(Relaxed),
                keyframes_requested: c.keyframes_requested.load(Relaxed),
                nacked: peer.nacked.load(Relaxed),
            };
            let e =
                quality::publisher_report(stream_id, &mut p.deltas, counts, p.config.bitrate_kbps);
            reports.push((e, peer.pc.clone()));
        }
        for (stream_id, p) in &mut self.players {
            let Some(peer) = p.peer.as_ref() else {
                continue;
            };
            let c = &peer.counters;
            let counts = PlayerCounts {
                frames: c.frames.load(Relaxed),
                bytes: c.bytes.load(Relaxed),
                lost: c.lost.load(Relaxed),
                delay_us: c.delay_us.load(Relaxed),
                jitter_us: c.jitter_us.load(Relaxed),
                stutters: c.stutters.load(Relaxed),
                stutter_us: c.stutter_us.load(Relaxed),
                keyframe_requests: c.keyframe_requests.load(Relaxed),
                repaired: peer.nack.repaired.load(Relaxed),
                fec_recovered: peer.fec_recovered.load(Relaxed),
                playout_delay_us: c.playout_delay_us.load(Relaxed),
                audio: quality::AudioCounts {
                    played: c.audio_played.load(Relaxed),
                    concealed: c.audio_concealed.load(Relaxed),
                    lost: c.audio_lost.load(Relaxed),
                },
                keyframes: c.keyframes.load(Relaxed),
            };
            let e = quality::player_report(stream_id, &mut p.deltas, counts);
            reports.push((e, peer.pc.clone()));
        }
        for (mut e, pc) in reports {
            let LinkStats {
                rtt_ms: measured,
                estimate_bps,
                path: media_path,
                packets_sent,
            } = link_stats(&pc).await;
            tracing::debug!(rtt_ms = measured, estimate_bps, "link stats");
            match &mut e {
                Event::PublisherQualityUpdate {
                    stream_id,
                    rtt_ms,
                    target_kbps,
                    path,
                    ..
                } => {
                    *rtt_ms = measured;
                    *path = media_path;
                    // Only a live publisher's link counts (one still connecting says nothing).
                    if let Some(p) = self.publishers.get_mut(stream_id.as_str())
                        && p.session.state() == PublisherState::Publishing
                        && let Some(peer) = p.peer.as_ref()
                    {
                        let [nacked, sent] = p.net.step([peer.nacked.load(Relaxed), packets_sent]);
                        self.net_quality.upstream(LinkSample {
                            rtt_ms: measured,
                            loss: loss_share(nacked, sent.saturating_sub(nacked)),
                            jitter_ms: 0.0,
                            flowing: sent > 0,
                        });
                    }
                    // The bandwidth estimate drives the encoder (within its configured bitrate).
                    if bandwidth_estimation
                        && estimate_bps > 0.0
                        && let Some(p) = self.publishers.get(stream_id.as_str())
                        && let Some(media) = p.media.as_ref()
                    {
                        // With simulcast the estimate covers every layer: the full one's share.
                        let total: u32 = p.config.layers().iter().map(|l| l.bitrate_kbps).sum();
                        let full = f64::from(p.config.bitrate_kbps) / f64::from(total.max(1));
                        // Repair packets go beside the media, outside the estimate's count
                        // (they carry no transport-wide number): the media leaves them room,
                        // what they cost in bytes (a one-packet frame's repair packet is as
                        // large as it).
                        let fec = p.peer.as_ref().map_or(0.0, |peer| peer.fec.overhead());
                        let kbps = quality::encoder_target_kbps(
                            estimate_bps * full / (1.0 + fec),
                            p.config.bitrate_kbps,
                        );
                        media.counters.target_kbps.store(kbps, Relaxed);
                        *target_kbps = kbps;
                    }
                }
                Event::PlayerQualityUpdate {
                    stream_id,
                    rtt_ms,
                    path,
                    jitter_ms,
                    video_layer,
                    estimate_kbps,
                    ..
                } => {
                    *rtt_ms = measured;
                    *path = media_path;
                    if let Some(p) = self.players.get(stream_id.as_str()) {
                        *video_layer = p.layer;
                        *estimate_kbps = p.estimate_kbps;
                    }
                    if let Some(p) = self.players.get_mut(stream_id.as_str())
                        && p.session.state() == PlayerState::Playing
                        && let Some(peer) = p.peer.as_ref()
                    {
                        let [missing, repaired, reordered, received] = p.net.step([
                            peer.nack.missing.load(Relaxed),
                            peer.nack.repaired.load(Relaxed),
                            peer.nack.reordered.load(Relaxed),
                            peer.counters.packets.load(Relaxed),
                        ]);
                        // Lost on the link: missing, less what was only late (a packet FEC
                        // rebuilt was lost: the requester counts it repaired, not late).
                        // Received counts resends too: the packets sent were received +
                        // missing − repaired.
                        let lost = missing.saturating_sub(reordered);
                        let sent = (received + missing).saturating_sub(repaired);
                        self.net_quality.downstream(LinkSample {
                            rtt_ms: measured,
                            loss: loss_share(lost, sent.saturating_sub(lost)),
                            jitter_ms: *jitter_ms,
                            flowing: received > 0,
                        });
                    }
                    // The player's jitter buffer sizes its wait for a resend from the round trip.
                    if let Some(peer) = self
                        .players
                        .get(stream_id.as_str())
                        .and_then(|p| p.peer.as_ref())
                    {
                        peer.counters
                            .rtt_us
                            .store((measured * 1000.0) as u64, Relaxed);
                    }
                }
                _ => {}
            }
            self.events.emit(e);
        }
        if let Some((upstream, downstream)) = self.net_quality.poll(Instant::now()) {
            self.events.emit(Event::NetworkQuality {
                user_id: String::new(),
                upstream,
                downstream,
            });
            // The room hears a publisher's upstream (the relay shares only publishers').
            if !self.publishers.is_empty() && self.client.is_some() {
                let body = RequestBody::ReportNetworkQuality {
                    upstream: upstream as u8,
                };
                self.send(body, Pending::Other).await;
            }
        }
    }
}

/// What one stats report tells about a link.
struct LinkStats {
    /// The selected pair's round trip, ms.
    rtt_ms: f64,
    /// The send-side bandwidth estimate, bits/s (0 when there is none).
    estimate_bps: f64,
    /// Direct or through TURN.
    path: MediaPath,
    /// RTP packets sent so far (all outgoing streams).
    packets_sent: u64,
}

/// A link's round trip, estimate, path and packets sent, from one stats report.
async fn link_stats(pc: &Arc<dyn webrtc::peer_connection::PeerConnection>) -> LinkStats {
    use rtc::peer_connection::transport::RTCIceCandidateType;
    use rtc::statistics::report::RTCStatsReportEntry;
    let report = pc
        .get_stats(Instant::now(), webrtc::peer_connection::StatsSelector::None)
        .await;
    let rtt = report
        .candidate_pairs()
        .map(|p| p.current_round_trip_time)
        .filter(|rtt| *rtt > 0.0)
        .fold(0.0, f64::max)
        * 1000.0;
    let estimate = report
        .outbound_rtp_streams()
        .map(|s| s.target_bitrate)
        .filter(|b| *b > 0.0)
        .fold(0.0, f64::max);
    // The nominated pair carries the media; relayed if either end is a TURN candidate. Pairs
    // name candidates by their own ID; the candidates' stats entries carry a type prefix.
    let relayed = |id: &str| {
        report.iter().find_map(|e| match e {
            RTCStatsReportEntry::LocalCandidate(c) | RTCStatsReportEntry::RemoteCandidate(c)
                if e.id() == id || e.id().ends_with(&format!("_{id}")) =>
            {
                Some(c.candidate_type == RTCIceCandidateType::Relay)
            }
            _ => None,
        })
    };
    let path = report
        .candidate_pairs()
        .filter(|p| p.nominated)
        .max_by_key(|p| p.bytes_received + p.bytes_sent)
        .and_then(|p| {
            match (
                relayed(&p.local_candidate_id),
                relayed(&p.remote_candidate_id),
            ) {
                (None, None) => None,
                (l, r) => Some(l.unwrap_or(false) || r.unwrap_or(false)),
            }
        })
        .map_or(MediaPath::Unknown, |r| {
            if r {
                MediaPath::Relayed
            } else {
                MediaPath::Direct
            }
        });
    let packets_sent = report
        .outbound_rtp_streams()
        .map(|s| s.sent_rtp_stream_stats.packets_sent)
        .sum();
    LinkStats {
        rtt_ms: rtt,
        estimate_bps: estimate,
        path,
        packets_sent,
    }
}
