//! Building peer connections the same way on both ends: H.264 (packetization-mode 1,
//! constrained baseline) and Opus, the default interceptors (NACK generator and responder,
//! receiver and sender reports, transport-wide CC feedback) plus [`KeyframeRequests`], host
//! candidates on one interface, and non-trickle ICE (the SDP carries every candidate).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{
    CongestionControlBuilder, FlexFec03ReceiveBuilder, NackResponderBuilder, Registry, Slot,
    TwccReceiverBuilder, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, configure_simulcast_extension_headers,
    configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_FLEX_FEC03, MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{
    RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy,
};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use crate::keyframe_requests::KeyframeRequests;
use crate::nack::{NackRequester, NackStats};
use crate::nack_count::nack_count;
use crate::send_loss::send_loss;
use crate::udp_mux::{MuxRuntime, UdpMux};

/// Send-side options of a publishing peer.
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    /// Bandwidth estimation (GCC over transport-wide CC feedback, no pacer): the start, floor
    /// and ceiling of the estimate in bits per second. None: no estimation.
    pub estimate: Option<(f64, f64, f64)>,
    /// With `estimate`: meter the link only while the FEC sender has repairs in use
    /// ([`crate::fec::FecControl::in_use`]; see `gate`): a leg that estimates only for its
    /// repairs' sake (`fec_guard`) costs nothing more on a clean link.
    pub estimate_only_with_fec: bool,
    /// Share (0..1) of outgoing RTP packets to drop on the wire side, to try the recovery
    /// paths on a lossy link. 0 in normal use.
    pub simulated_loss: f64,
    /// Send Reed–Solomon repair packets for the video (`rs_fec`), as many as the remote's
    /// NACKs call for (`fec`), where the remote negotiated a repair SSRC. Every connection
    /// can receive them.
    pub fec: bool,
    /// Also count the repair packets this connection sends and the packets its FEC decoder
    /// rebuilds here (a relay's totals over its connections, for `/metrics`).
    pub fec_totals: Option<Arc<crate::fec::FecTotals>>,
}

/// How long a NACK resend takes to arrive after a loss over a link with round trip `rtt`:
/// up to one NACK tick to notice, up to one more upstream (a loss before the relay is
/// repaired by the relay's own NACK to the publisher), the round trip, and 2 ms of slack.
pub fn repair_time(rtt: Duration) -> Duration {
    rtt + crate::nack::TICK * 2 + Duration::from_millis(2)
}

/// Packets behind the newest that SRTP still accepts (a resend of a packet lost that long
/// ago): a few seconds of 1080p, longer than the NACK requester asks (`nack::MAX_AGE`).
pub const SRTP_REPLAY_WINDOW: usize = 8_192;

/// The H.264 payload type we offer.
pub const H264_PAYLOAD_TYPE: u8 = 102;
/// The Opus payload type we offer.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// The FlexFEC-03 (video repair) payload type we offer.
pub const FLEXFEC_PAYLOAD_TYPE: u8 = 118;

fn feedback(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    }
}

/// H.264 constrained baseline, packetization mode 1.
pub fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .into(),
        rtcp_feedback: vec![
            feedback("nack", ""),
            feedback("nack", "pli"),
            feedback("ccm", "fir"),
            feedback("transport-cc", ""),
        ],
    }
}

/// Opus, stereo signalling as WebRTC requires, in-band FEC allowed.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        // NACK for audio too: a resend within the playout delay is better than concealment.
        rtcp_feedback: vec![feedback("nack", ""), feedback("transport-cc", "")],
    }
}

/// What a peer connection reports, as channels the owner can wait on.
pub struct PeerEvents {
    /// True once ICE gathering completed.
    pub gathered: watch::Receiver<bool>,
    /// The connection state.
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// Remote tracks as they arrive.
    pub tracks: mpsc::Receiver<Arc<dyn TrackRemote>>,
    /// Packets the remote reported missing in its NACKs so far (the sending side's loss).
    pub nacked: Arc<std::sync::atomic::AtomicU64>,
    /// What our own NACK requester did for the packets we receive (losses, repairs, the
    /// measured repair time).
    pub nack: Arc<NackStats>,
    /// Packets received so far (RTP and RTCP): see [`connection_lost`].
    pub received: Arc<std::sync::atomic::AtomicU64>,
    /// What the remote's transport-wide feedback acknowledged (counted only where the
    /// connection estimates its send rate).
    pub link: Arc<crate::link_meter::LinkMeter>,
    /// What the retransmission budget allows (see `nack_budget`).
    pub resends: Arc<crate::nack_budget::ResendControl>,
    /// The FEC sender's control and figures (see `fec`; idle unless `SendOptions::fec`).
    pub fec: Arc<crate::fec::FecControl>,
    /// Packets of ours the remote's FEC rebuilt so far.
    pub fec_recovered: Arc<std::sync::atomic::AtomicU64>,
}

struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: mpsc::Sender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.try_send(track);
    }
}

/// Why a peer connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("WebRTC: {0}")]
pub struct PeerError(pub String);

impl From<webrtc::error::Error> for PeerError {
    fn from(e: webrtc::error::Error) -> Self {
        PeerError(e.to_string())
    }
}

/// Where a peer connection's media sockets are bound and what it tells the other side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaNetwork {
    /// Addresses to bind media sockets on (an ephemeral port each). An unspecified address
    /// (`0.0.0.0`, `::`) means every interface of that family except loopback and link-local.
    pub bind: Vec<IpAddr>,
    /// 1:1 NAT: the addresses the world reaches this host at. When set, the host candidates in
    /// the SDP this side hands out carry these instead of the bound addresses (LiveKit's
    /// `node_ip`; see [`MediaNetwork::advertise`]).
    pub public_ips: Vec<IpAddr>,
    /// Take part in mDNS (accept `.local` candidates from the other side). Needs a multicast
    /// route; off, no multicast socket is opened at all.
    pub mdns: bool,
    /// STUN and TURN servers to gather server-reflexive and relayed candidates from.
    pub ice_servers: Vec<onair_protocol::IceServer>,
    /// Use only relayed (TURN) candidates: every packet goes through the TURN server
    /// (`ice_transport_policy = relay`), for networks that block direct UDP.
    pub relay_only: bool,
    /// Bind media sockets only on ports in this inclusive range (one firewall rule for the
    /// range); None: ephemeral ports.
    pub udp_port_range: Option<(u16, u16)>,
    /// Every answering connection on one shared UDP port (see [`crate::udp_mux`]); the
    /// range above then applies only to connections this side offers.
    pub udp_mux: Option<SharedPort>,
}

/// A shared media port, compared by identity (two networks are equal when they share the
/// same one).
#[derive(Clone, Debug)]
pub struct SharedPort(pub Arc<UdpMux>);

impl PartialEq for SharedPort {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedPort {}

impl MediaNetwork {
    /// Host candidates on `ip` only, no mDNS.
    pub fn on(ip: IpAddr) -> Self {
        MediaNetwork {
            bind: vec![ip],
            ..Default::default()
        }
    }

    /// What a server listening on `listen` binds: that address, or, when it is unspecified,
    /// every interface (IPv4, and IPv6 for `::`). Loopback is not added there: a loopback
    /// candidate would be paired with every remote peer's candidates and fail each check
    /// (a socket on 127.0.0.1 cannot send off the machine), while same-machine peers reach
    /// the interface addresses anyway.
    pub fn for_listen(listen: IpAddr) -> Self {
        let bind = match listen {
            IpAddr::V6(v6) if v6.is_unspecified() => vec![IpAddr::from([0, 0, 0, 0]), listen],
            ip => vec![ip],
        };
        MediaNetwork {
            bind,
            ..Default::default()
        }
    }

    /// The same network for a connection this side offers: its own sockets (two muxed ends
    /// would share one address pair, see [`crate::udp_mux`]).
    pub fn without_mux(&self) -> MediaNetwork {
        MediaNetwork {
            udp_mux: None,
            ..self.clone()
        }
    }

    /// `sdp` as the other side must see it: host candidates on the shared port (where it is
    /// bound on their address) and with the public addresses of a 1:1 NAT.
    pub fn advertise(&self, sdp: &str) -> String {
        let mux = self.udp_mux.as_ref().map(|m| m.0.as_ref());
        if self.public_ips.is_empty() && mux.is_none() {
            return sdp.to_string();
        }
        let mut out = String::with_capacity(sdp.len());
        for line in sdp.split_inclusive('\n') {
            out.push_str(
                &rewrite_candidate(line, &self.public_ips, mux).unwrap_or_else(|| line.to_string()),
            );
        }
        out
    }
}

/// A new peer connection on `net`.
pub async fn new_peer(
    net: &MediaNetwork,
) -> Result<(Arc<dyn PeerConnection>, PeerEvents), PeerError> {
    new_peer_with(net, SendOptions::default()).await
}

/// As [`new_peer`], with send-side bandwidth estimation and loss simulation as `send` says.
/// The estimate is read from the stats (`outbound_rtp_streams().target_bitrate`); no pacer is
/// installed, so a frame is never held back: the encoder's rate follows the estimate instead.
pub async fn new_peer_with(
    net: &MediaNetwork,
    send: SendOptions,
) -> Result<(Arc<dyn PeerConnection>, PeerEvents), PeerError> {
    if net.bind.is_empty() {
        return Err(PeerError("no address to bind media on".into()));
    }
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: h264_codec(),
            payload_type: H264_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: OPUS_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    // FlexFEC-03 for the video: it gives each stream a repair SSRC. Our own repair packets
    // go there with our payload type (`rs_fec`, where `send.fec` asks; always received), and
    // another sender's FlexFEC-03 is still decoded.
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_FLEX_FEC03.into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: "repair-window=10000000".into(),
                rtcp_feedback: Vec::new(),
            },
            payload_type: FLEXFEC_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    // The defaults (NACK, TWCC feedback, RTCP reports, simulcast headers), with our own NACK
    // requester in the generator's slot (asks again only after the measured repair time, a
    // bounded number of times: see `nack`).
    // (configure_nack's own registry is dropped: it only registers the feedback types here.)
    let _ = configure_nack(Registry::new(), &mut media);
    configure_simulcast_extension_headers(&mut media)?;
    let nack = Arc::new(NackStats::default());
    // The transport-wide feedback records arrivals below the FEC decoder (5_500, not its
    // usual 8_000): a packet the decoder rebuilt is not reported as arrived. (Repair packets
    // carry no transport-wide number: rtc binds only the media SSRC. configure_twcc_receiver_
    // only's registry is dropped: it only registers the extension and feedback types here.)
    let _ = configure_twcc_receiver_only(Registry::new(), &mut media)?;
    let fec_recovered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let registry = configure_rtcp_reports(Registry::new())
        .with(Slot::from(5_500), TwccReceiverBuilder::new().build())
        // The transport-wide number off again before the FEC decoder: the sender's repair
        // packets cover the media without it (see `fec_form`).
        .with(Slot::from(5_800), crate::fec_form::twcc_strip())
        // Our Reed–Solomon repairs (`rs_fec`), then FlexFEC-03 from any other sender.
        .with(Slot::from(5_900), crate::rs_fec::RsFecReceiver::new())
        .with(Slot::FecDecoder, FlexFec03ReceiveBuilder::new().build())
        .with(
            Slot::from(6_500),
            crate::received::fec_recovered_count(fec_recovered.clone(), send.fec_totals.clone()),
        )
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::NackGenerator, NackRequester::new(nack.clone()));
    let fec = Arc::new(crate::fec::FecControl::default());
    let nacked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let resends = Arc::new(crate::nack_budget::ResendControl::default());
    // Below the NACK responder (4_000) on the way in, so it sees each NACK before it is
    // answered.
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut registry = registry
        .with(Slot::from(14_000), KeyframeRequests::default())
        .with(Slot::from(3_500), nack_count(nacked.clone()))
        // Between the count (which sees every request) and the responder: resends at most
        // one per packet sent (see `nack_budget`).
        .with(
            Slot::from(3_600),
            crate::nack_budget::nack_budget(resends.clone()),
        )
        .with(
            Slot::from(3_400),
            crate::received::received_count(received.clone()),
        );
    let link = Arc::new(crate::link_meter::LinkMeter::default());
    if let Some((initial, min, max)) = send.estimate {
        let said = Arc::new(crate::late_acks::FeedbackSaid::default());
        let twcc = TwccSenderBuilder::new().build();
        let cc = CongestionControlBuilder::new(crate::link_meter::MeteredGcc::new(
            initial,
            min,
            max,
            link.clone(),
            said.clone(),
        ))
        .build();
        // Nearer the wire than the congestion controller (1_000): reads each feedback
        // before rtc's send history does (see `late_acks`).
        registry = registry.with(Slot::from(900), crate::late_acks::feedback_tap(said));
        registry = if send.estimate_only_with_fec {
            let fec = fec.clone();
            let open: crate::gate::Open = Arc::new(move || fec.in_use());
            registry
                .with(
                    Slot::TwccSender,
                    crate::gate::Gated::new(twcc, open.clone()),
                )
                .with(Slot::CongestionControl, crate::gate::Gated::new(cc, open))
        } else {
            registry
                .with(Slot::TwccSender, twcc)
                .with(Slot::CongestionControl, cc)
        };
    }
    if send.fec {
        registry = registry.with(
            Slot::FecEncoder,
            crate::fec::fec_sender(fec.clone(), send.fec_totals.clone()),
        );
    }
    if send.simulated_loss > 0.0 {
        // Below the send history (1_000): what is dropped was sent as far as the sender knows.
        registry = registry.with(Slot::from(500), send_loss(send.simulated_loss));
    }
    let (gathered_tx, gathered) = watch::channel(false);
    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    let (tracks_tx, tracks) = mpsc::channel(8);
    let handler = Arc::new(Handler {
        gathered: gathered_tx,
        state: state_tx,
        tracks: tracks_tx,
    });
    let mut runtime =
        webrtc::runtime::default_runtime().ok_or_else(|| PeerError("no async runtime".into()))?;
    let mut settings = setting_engine(net);
    if let Some(mux) = &net.udp_mux {
        // Static credentials: the mux routes a connection's checks by its ufrag, known
        // before the connection binds anything (and kept across an ICE restart).
        let ufrag = random_token(16);
        settings = setting_engine_builder(net)
            .with_ice_credentials(ufrag.clone(), random_token(32))
            .build();
        runtime = Arc::new(MuxRuntime::new(runtime, mux.0.clone(), ufrag));
    }
    let pc = PeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(
                    net.ice_servers
                        .iter()
                        .map(|s| RTCIceServer {
                            urls: s.urls.clone(),
                            username: s.username.clone(),
                            credential: s.credential.clone(),
                        })
                        .collect(),
                )
                .with_ice_transport_policy(if net.relay_only {
                    RTCIceTransportPolicy::Relay
                } else {
                    RTCIceTransportPolicy::All
                })
                .build(),
        )
        .with_media_engine(media)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
        .with_runtime(runtime)
        .with_udp_addrs(udp_addrs(net)?)
        .build()
        .await?;
    Ok((
        Arc::new(pc),
        PeerEvents {
            gathered,
            state,
            tracks,
            nacked,
            nack,
            received,
            link,
            resends,
            fec,
            fec_recovered,
        },
    ))
}

/// `len` random letters and digits (ICE ufrag and password characters).
fn random_token(len: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn setting_engine(
    net: &MediaNetwork,
) -> rtc::peer_connection::configuration::setting_engine::SettingEngine {
    setting_engine_builder(net).build()
}

fn setting_engine_builder(net: &MediaNetwork) -> SettingEngineBuilder {
    // Connectivity checks every 20 ms (default 200 ms) and host candidates accepted at once: on
    // a LAN or loopback the first check succeeds, so this is first-frame time.
    SettingEngineBuilder::new()
        // SRTP's replay window is 64 packets by default: a NACK resend arriving more than 64
        // packets behind the newest (half a second of 720p, less during a keyframe) is
        // rejected as a replay, so on a link with a 100 ms round trip and loss both ways a
        // repair failed however often it was sent. The window must cover the longest repair.
        .with_srtp_replay_protection_window(SRTP_REPLAY_WINDOW)
        // ICE keepalive checks every 500 ms (default 2 s): ICE fails a path after 25 s without
        // an answered check, and on a link losing 70 % each way a check is answered one time
        // in eleven — at 2 s that is a one-in-three chance per 25 s of failing a connection
        // media still crosses; at 500 ms one in a hundred. Two small STUN packets a second.
        .with_ice_timeouts(None, None, Some(Duration::from_millis(500)))
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(100))
        .with_host_acceptance_min_wait(Some(Duration::ZERO))
        .with_include_loopback_candidate(net.bind.iter().any(IpAddr::is_loopback))
        .with_multicast_dns_mode(if net.mdns {
            MulticastDnsMode::QueryOnly
        } else {
            MulticastDnsMode::Disabled
        })
    // `public_ips` are applied to the SDP ([`MediaNetwork::advertise`]): webrtc-rs 0.21 keeps
    // `with_nat_1to1_ips` but never uses it when gathering.
}

/// The socket addresses to bind: port 0 (ephemeral), or a free port of the range.
fn udp_addrs(net: &MediaNetwork) -> Result<Vec<String>, PeerError> {
    net.bind
        .iter()
        .map(|ip| {
            let port = match net.udp_port_range {
                // A muxed connection's own socket is only a label (see `udp_mux`).
                _ if net.udp_mux.is_some() => 0,
                None => 0,
                Some(range) => free_port(*ip, range).ok_or_else(|| {
                    PeerError(format!(
                        "no free UDP port in {}-{} on {ip}",
                        range.0, range.1
                    ))
                })?,
            };
            Ok(format!("{}:{port}", ip_for_bind(*ip)))
        })
        .collect()
}

/// A UDP port in `range` that `ip` can bind now. Ports are tried round-robin from where the
/// last search ended, so consecutive connections do not race for the same one.
fn free_port(ip: IpAddr, (first, last): (u16, u16)) -> Option<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let (first, last) = (u32::from(first.min(last)), u32::from(first.max(last)));
    let span = last - first + 1;
    let start = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (0..span).find_map(|i| {
        let port = u16::try_from(first + (start + i) % span).ok()?;
        std::net::UdpSocket::bind((ip, port)).ok().map(|socket| {
            drop(socket);
            NEXT.store(start + i + 1, std::sync::atomic::Ordering::Relaxed);
            port
        })
    })
}

fn ip_for_bind(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Sets the local description and waits for ICE gathering, then returns the complete SDP.
pub async fn finish_local(
    pc: &Arc<dyn PeerConnection>,
    events: &mut PeerEvents,
    desc: RTCSessionDescription,
) -> Result<String, PeerError> {
    pc.set_local_description(desc).await?;
    let gathered = tokio::time::timeout(Duration::from_secs(5), events.gathered.wait_for(|g| *g))
        .await
        .is_ok_and(|r| r.is_ok());
    if !gathered {
        return Err(PeerError("ICE gathering did not complete".into()));
    }
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| PeerError("no local description".into()))
}

/// `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ host …`:
/// the shared port where `mux` has one on that address, and the public address for a
/// non-loopback one.
fn rewrite_candidate(line: &str, public_ips: &[IpAddr], mux: Option<&UdpMux>) -> Option<String> {
    let body = line.trim_end_matches(['\r', '\n']);
    let ending = &line[body.len()..];
    let rest = body.strip_prefix("a=candidate:")?;
    let mut fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() < 8 || fields[6] != "typ" || fields[7] != "host" {
        return None;
    }
    let address: IpAddr = fields[4].parse().ok()?;
    let port = mux.and_then(|m| m.port_on(address)).map(|p| p.to_string());
    if let Some(port) = &port {
        fields[5] = port;
    }
    let public = (!address.is_loopback())
        .then(|| public_ips.iter().find(|p| p.is_ipv4() == address.is_ipv4()))
        .flatten()
        .map(|p| p.to_string());
    if let Some(public) = &public {
        fields[4] = public;
    }
    if port.is_none() && public.is_none() {
        return None;
    }
    Some(format!("a=candidate:{}{ending}", fields.join(" ")))
}

/// Applies a remote offer and returns the complete local answer (every candidate gathered).
pub async fn answer_offer(
    pc: &Arc<dyn PeerConnection>,
    events: &mut PeerEvents,
    offer_sdp: String,
) -> Result<String, PeerError> {
    pc.set_remote_description(offer(offer_sdp)?).await?;
    let answer = pc.create_answer(None).await?;
    finish_local(pc, events, answer).await
}

/// How long a restart's local description may take to carry candidates again.
const RESTART_GATHER: Duration = Duration::from_secs(3);

/// The local description once it carries candidates (a restart keeps the sockets, so its
/// candidates are back at once; the gathering events of the first negotiation are spent).
async fn local_with_candidates(pc: &Arc<dyn PeerConnection>) -> Result<String, PeerError> {
    let deadline = tokio::time::Instant::now() + RESTART_GATHER;
    loop {
        if let Some(d) = pc.local_description().await
            && d.sdp.contains("a=candidate:")
        {
            return Ok(d.sdp);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PeerError(
                "no local candidates after the ICE restart".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An ICE-restart offer on a connection that is up (or was): fresh ICE credentials, the same
/// DTLS session, tracks and SSRCs. Apply the answer with [`apply_answer`].
pub async fn restart_offer(pc: &Arc<dyn PeerConnection>) -> Result<String, PeerError> {
    pc.restart_ice().await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    local_with_candidates(pc).await
}

/// Answers an ICE-restart offer on the connection it restarts.
pub async fn restart_answer(
    pc: &Arc<dyn PeerConnection>,
    offer_sdp: String,
) -> Result<String, PeerError> {
    pc.set_remote_description(offer(offer_sdp)?).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    local_with_candidates(pc).await
}

/// Applies the other side's answer (to an offer this side made on `pc`).
pub async fn apply_answer(pc: &Arc<dyn PeerConnection>, sdp: String) -> Result<(), PeerError> {
    pc.set_remote_description(answer(sdp)?).await?;
    Ok(())
}

/// An offer from SDP text.
pub fn offer(sdp: String) -> Result<RTCSessionDescription, PeerError> {
    RTCSessionDescription::offer(sdp).map_err(|e| PeerError(e.to_string()))
}

/// An answer from SDP text.
pub fn answer(sdp: String) -> Result<RTCSessionDescription, PeerError> {
    RTCSessionDescription::answer(sdp).map_err(|e| PeerError(e.to_string()))
}

/// Waits until the connection is lost: failed or closed, or disconnected for longer than
/// `grace` with nothing received (a disconnection that recovers within it is not a loss, nor
/// is one through which packets — counted in `received` — still arrive: ICE judges by its
/// STUN checks alone, which a very lossy link fails while media gets through). Returns the
/// state it was lost in; `None` if the connection was dropped first.
pub async fn connection_lost(
    mut state: watch::Receiver<RTCPeerConnectionState>,
    grace: Duration,
    received: Arc<std::sync::atomic::AtomicU64>,
) -> Option<RTCPeerConnectionState> {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        let s = *state.borrow();
        match s {
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return Some(s),
            RTCPeerConnectionState::Disconnected => {
                let before = received.load(Relaxed);
                let back = state.wait_for(|s| *s != RTCPeerConnectionState::Disconnected);
                match tokio::time::timeout(grace, back).await {
                    Err(_) if received.load(Relaxed) != before => continue,
                    Err(_) => return Some(s),
                    Ok(Err(_)) => return None,
                    Ok(Ok(_)) => continue,
                }
            }
            _ => state.changed().await.ok()?,
        }
    }
}

/// When a connection counts as lost, for [`watch_connection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchRules {
    /// It must reach Connected within this long.
    pub connect_within: Duration,
    /// It may stay Disconnected (receiving nothing) this long, as [`connection_lost`].
    pub grace: Duration,
    /// Once connected, it must receive something (RTP, RTCP) at least this often.
    pub silence: Duration,
}

/// Why [`watch_connection`] gave up on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// It never reached Connected in time.
    NeverConnected,
    /// Failed, closed, or disconnected beyond the grace.
    State(RTCPeerConnectionState),
    /// Connected, but nothing arrived for the silence time.
    Silent,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::NeverConnected => f.write_str("not connected in time"),
            Lost::State(s) => write!(f, "{s}"),
            Lost::Silent => f.write_str("silent"),
        }
    }
}

/// Waits until a connection should be given up on: not connected within
/// `rules.connect_within`, lost as [`connection_lost`] judges, or silent (nothing received)
/// for `rules.silence` — so neither a peer that never finishes ICE nor one that vanished
/// without a word holds its slot. `None` if the connection was dropped first.
pub async fn watch_connection(
    mut state: watch::Receiver<RTCPeerConnectionState>,
    received: Arc<std::sync::atomic::AtomicU64>,
    rules: WatchRules,
) -> Option<Lost> {
    use std::sync::atomic::Ordering::Relaxed;
    let settled = state.wait_for(|s| {
        matches!(
            s,
            RTCPeerConnectionState::Connected
                | RTCPeerConnectionState::Failed
                | RTCPeerConnectionState::Closed
        )
    });
    match tokio::time::timeout(rules.connect_within, settled).await {
        Err(_) => return Some(Lost::NeverConnected),
        Ok(Err(_)) => return None,
        Ok(Ok(s)) if *s != RTCPeerConnectionState::Connected => return Some(Lost::State(*s)),
        Ok(Ok(_)) => {}
    }
    let silent = {
        let received = received.clone();
        async move {
            let step = (rules.silence / 4).max(Duration::from_millis(50));
            let mut last = (received.load(Relaxed), tokio::time::Instant::now());
            loop {
                tokio::time::sleep(step).await;
                let n = received.load(Relaxed);
                if n != last.0 {
                    last = (n, tokio::time::Instant::now());
                } else if last.1.elapsed() >= rules.silence {
                    return;
                }
            }
        }
    };
    tokio::select! {
        lost = connection_lost(state, rules.grace, received) => lost.map(Lost::State),
        () = silent => Some(Lost::Silent),
    }
}

/// Adds a receive-only transceiver for each of `kinds`.
pub async fn add_receivers(
    pc: &Arc<dyn PeerConnection>,
    kinds: &[RtpCodecKind],
) -> Result<(), PeerError> {
    for kind in kinds {
        pc.add_transceiver_from_kind(
            *kind,
            Some(rtc::rtp_transceiver::RTCRtpTransceiverInit {
                direction: rtc::rtp_transceiver::RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RTCPeerConnectionState as S;

    /// 1:1 NAT: the host candidates in the SDP handed out carry the public address
    /// (webrtc-rs 0.21 stores `nat_1to1_ips` but never applies it).
    fn advertise_public_ips(sdp: &str, public_ips: &[IpAddr]) -> String {
        MediaNetwork {
            public_ips: public_ips.to_vec(),
            ..Default::default()
        }
        .advertise(sdp)
    }

    #[tokio::test]
    async fn host_candidates_on_a_shared_port_carry_it() {
        let mux = UdpMux::new(0);
        let lo = IpAddr::from([127, 0, 0, 1]);
        let port = mux.bind(lo).expect("bind loopback").port();
        let net = MediaNetwork {
            udp_mux: Some(SharedPort(mux)),
            public_ips: vec!["203.0.113.7".parse().expect("ip")],
            ..MediaNetwork::on(lo)
        };
        let sdp = "a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=candidate:2 1 udp 2130706431 10.77.9.129 58850 typ host\r\n";
        let out = net.advertise(sdp);
        assert!(
            out.contains(&format!(" 127.0.0.1 {port} typ host")),
            "the shared port, loopback kept: {out}"
        );
        assert!(
            out.contains(" 203.0.113.7 58850 typ host"),
            "an address without the shared port keeps its own, gets the public address: {out}"
        );
        // Without the port shared, only the public address changes.
        assert_eq!(net.without_mux().advertise(sdp).matches("40000").count(), 1);
    }

    #[test]
    fn host_candidates_carry_the_public_address() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 10.77.9.129 58850 typ host\r\na=candidate:2 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=candidate:3 1 udp 1694498815 1.2.3.4 5 typ srflx raddr 0.0.0.0 rport 0\r\na=candidate:4 1 udp 2130706431 fd00::1 6 typ host\r\na=sendrecv\r\n";
        let public: Vec<IpAddr> = vec!["203.0.113.7".parse().expect("ip")];
        let out = advertise_public_ips(sdp, &public);
        assert!(
            out.contains("a=candidate:1 1 udp 2130706431 203.0.113.7 58850 typ host\r\n"),
            "{out}"
        );
        assert!(
            out.contains(" 127.0.0.1 40000 typ host"),
            "loopback kept: {out}"
        );
        assert!(
            out.contains(" 1.2.3.4 5 typ srflx"),
            "only host candidates: {out}"
        );
        assert!(
            out.contains(" fd00::1 6 typ host"),
            "no IPv6 public address given: {out}"
        );
        assert!(out.ends_with("a=sendrecv\r\n"));
        assert_eq!(advertise_public_ips(sdp, &[]), sdp);
    }

    #[test]
    fn ports_come_from_the_range_and_skip_taken_ones() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let taken = std::net::UdpSocket::bind((lo, 0)).expect("a socket");
        let port = taken.local_addr().expect("addr").port();
        // A range of one taken port has nothing free; one more port and it is found.
        assert_eq!(free_port(lo, (port, port)), None);
        let next = port.checked_add(1).expect("not the last port");
        if std::net::UdpSocket::bind((lo, next)).is_ok() {
            assert_eq!(free_port(lo, (port, next)), Some(next));
        }
        let net = MediaNetwork {
            udp_port_range: Some((port, port)),
            ..MediaNetwork::on(lo)
        };
        assert!(udp_addrs(&net).is_err(), "a clear error, not a random port");
        assert_eq!(
            udp_addrs(&MediaNetwork::on(lo)).expect("ephemeral"),
            ["127.0.0.1:0"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_disconnection_is_not_a_loss_but_a_long_one_is() {
        let quiet = || Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, rx) = watch::channel(S::Connected);
        let lost = tokio::spawn(connection_lost(rx, Duration::from_secs(5), quiet()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(S::Disconnected).expect("watched");
        tokio::time::sleep(Duration::from_secs(3)).await;
        tx.send(S::Connected).expect("watched");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!lost.is_finished(), "recovered within the grace");
        tx.send(S::Disconnected).expect("watched");
        tokio::time::sleep(Duration::from_millis(5_100)).await;
        assert_eq!(lost.await.expect("joined"), Some(S::Disconnected));

        let (tx, rx) = watch::channel(S::Connected);
        let lost = tokio::spawn(connection_lost(rx, Duration::from_secs(5), quiet()));
        tx.send(S::Failed).expect("watched");
        assert_eq!(lost.await.expect("joined"), Some(S::Failed));

        let (tx, rx) = watch::channel(S::Connecting);
        let lost = tokio::spawn(connection_lost(rx, Duration::from_secs(5), quiet()));
        drop(tx);
        assert_eq!(lost.await.expect("joined"), None, "dropped, not lost");
    }

    #[tokio::test(start_paused = true)]
    async fn watched_connections_must_connect_in_time_and_keep_receiving() {
        let rules = WatchRules {
            connect_within: Duration::from_secs(10),
            grace: Duration::from_secs(5),
            silence: Duration::from_secs(30),
        };
        let quiet = || Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Never connected: given up after the connect time.
        let (_tx, rx) = watch::channel(S::Connecting);
        let t = tokio::time::Instant::now();
        let lost = watch_connection(rx, quiet(), rules).await;
        assert_eq!(lost, Some(Lost::NeverConnected));
        assert_eq!(t.elapsed(), Duration::from_secs(10));

        // Connected and receiving for a minute, then silent: given up after the silence time.
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, rx) = watch::channel(S::Connecting);
        let watched = tokio::spawn(watch_connection(rx, received.clone(), rules));
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send(S::Connected).expect("watched");
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            received.fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        }
        assert!(!watched.is_finished(), "receiving: kept");
        let silent_from = tokio::time::Instant::now();
        let lost = watched.await.expect("joined");
        assert_eq!(lost, Some(Lost::Silent));
        let after = silent_from.elapsed();
        assert!(
            after >= Duration::from_secs(29) && after <= Duration::from_secs(38),
            "{after:?}"
        );

        // A failure after connecting is reported as the state.
        let (tx, rx) = watch::channel(S::Connected);
        let watched = tokio::spawn(watch_connection(rx, quiet(), rules));
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(S::Failed).expect("watched");
        assert_eq!(watched.await.expect("joined"), Some(Lost::State(S::Failed)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_disconnection_that_still_receives_is_not_a_loss() {
        let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, rx) = watch::channel(S::Disconnected);
        let lost = tokio::spawn(connection_lost(
            rx,
            Duration::from_secs(5),
            received.clone(),
        ));
        // Twenty seconds "disconnected" with packets arriving: still alive.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        assert!(!lost.is_finished());
        // Then silence: lost one or two graces later.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(lost.await.expect("joined"), Some(S::Disconnected));
        drop(tx);
    }
}
