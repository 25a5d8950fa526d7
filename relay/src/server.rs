//! The relay's I/O: an axum HTTP server with the `/ws` signaling endpoint, `/metrics` and
//! `/healthz`, feeding the sans-I/O [`RelayState`] under one short-held lock.
//!
//! Each connection has a reader (this task) and a writer task fed by a bounded queue. A client
//! that stops reading fills its queue and is disconnected, never slowing anyone else down. No lock
//! is held across an `.await`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, ClusterHost};
use crate::config::RelayConfig;
use crate::metrics;
use crate::sfu::{Sfu, SfuEvents};
use crate::state::{ConnId, Output, RelayState};

/// Messages queued for one connection before it counts as a slow consumer.
const OUT_QUEUE: usize = 1024;

enum Outgoing {
    Text(Utf8Bytes),
    Close(u16, String),
}

struct ConnHandle {
    tx: mpsc::Sender<Outgoing>,
    kill: Arc<Notify>,
}

struct Inner {
    state: RelayState,
    conns: HashMap<ConnId, ConnHandle>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Set first when stopping, so no new connection is accepted while goodbyes go out.
    closing: std::sync::atomic::AtomicBool,
    shutdown: watch::Receiver<bool>,
    transport_limit: usize,
    sfu: Arc<Sfu>,
    /// HTTP requests per client address (not the `/ws` upgrade).
    limiter: Mutex<crate::limiter::HttpLimiter>,
    /// Largest SDP offer accepted over WHIP/WHEP.
    max_sdp_bytes: usize,
    /// On a cluster node: the glue to the other nodes.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// The signaling URL, as `/dispatch` names this relay.
    own_url: std::sync::OnceLock<String>,
    /// Streams pulled from other nodes: since when each has had no local player (None: it
    /// has some).
    pulled: Mutex<HashMap<(u32, String), Option<Instant>>>,
    /// ICE restarts answered, and refused or failed (for `/metrics`).
    ice_restarts: [std::sync::atomic::AtomicU64; 2],
    /// One pull at a time per stream (players asking at once share it).
    pulling: Mutex<HashMap<(u32, String), PullGate>>,
    /// Session numbers for other nodes pulling a stream from this one (never a real session).
    next_pull_session: std::sync::atomic::AtomicU64,
}

/// Held while a stream is being pulled.
type PullGate = Arc<tokio::sync::Mutex<()>>;

/// A pulled stream with no local player for this long is let go.
const PULL_IDLE: Duration = Duration::from_secs(5);
/// Other nodes' pulls are players with session numbers from here up.
const PULL_SESSIONS: u64 = 1 << 62;

/// The relay as the cluster glue sees it.
struct Host(std::sync::Weak<Shared>);

impl ClusterHost for Host {
    fn apply(&self, f: &mut dyn FnMut(&mut RelayState) -> Vec<Output>) {
        if let Some(shared) = self.0.upgrade() {
            shared.with_state(f);
        }
    }

    fn load(&self) -> (usize, usize, usize) {
        let Some(shared) = self.0.upgrade() else {
            return (0, 0, 0);
        };
        let sessions = shared.inner.lock().state.gauges().sessions;
        (
            sessions,
            shared.sfu.player_count(),
            shared.sfu.stream_count(),
        )
    }

    fn answer_pull(
        self: Arc<Self>,
        app_id: u32,
        stream_id: String,
        offer: String,
    ) -> futures_util::future::BoxFuture<'static, Result<String, String>> {
        Box::pin(async move {
            let shared = self.0.upgrade().ok_or("the relay is stopping")?;
            if !shared
                .inner
                .lock()
                .state
                .cluster_may_pull(app_id, &stream_id)
            {
                return Err(format!("stream {stream_id} is not flowing here"));
            }
            let session = PULL_SESSIONS
                + shared
                    .next_pull_session
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let events: Arc<dyn SfuEvents> = Arc::new(RelayEvents(Arc::downgrade(&shared)));
            shared
                .sfu
                .subscribe(
                    app_id,
                    stream_id,
                    session,
                    offer,
                    onair_protocol::messages::VideoLayer::Big,
                    false,
                    events,
                )
                .await
        })
    }
}

/// The SFU's reports, fed back into the state machine.
struct RelayEvents(std::sync::Weak<Shared>);

impl SfuEvents for RelayEvents {
    fn layer_changed(
        &self,
        app_id: u32,
        stream_id: &str,
        session: super::state::SessionId,
        layer: usize,
        reason: onair_protocol::messages::LayerChangeReason,
    ) {
        if let Some(shared) = self.0.upgrade() {
            shared.with_state(|s| s.layer_changed(app_id, stream_id, session, layer, reason));
        }
    }

    fn play_link(
        &self,
        app_id: u32,
        stream_id: &str,
        session: super::state::SessionId,
        layer: usize,
        estimate_kbps: u32,
    ) {
        if let Some(shared) = self.0.upgrade() {
            shared.with_state(|s| s.play_link(app_id, stream_id, session, layer, estimate_kbps));
        }
    }

    fn layers_wanted(&self, app_id: u32, stream_id: &str, active: crate::sfu::ActiveLayers) {
        if let Some(shared) = self.0.upgrade() {
            shared.with_state(|s| s.layers_wanted(app_id, stream_id, active.to_vec()));
        }
    }

    fn flowing(&self, app_id: u32, stream_id: &str) {
        if let Some(shared) = self.0.upgrade() {
            shared.with_state(|s| s.stream_flowing(app_id, stream_id));
        }
    }

    fn failed(
        &self,
        app_id: u32,
        stream_id: &str,
        reason: &str,
        code: onair_protocol::error::ErrorCode,
    ) {
        if let Some(shared) = self.0.upgrade() {
            shared.with_state(|s| s.media_failed_with(app_id, stream_id, reason, code));
        }
    }

    fn player_failed(
        &self,
        app_id: u32,
        stream_id: &str,
        session: super::state::SessionId,
        reason: &str,
    ) {
        if let Some(shared) = self.0.upgrade() {
            shared.with_state(|s| s.player_failed(app_id, stream_id, session, reason));
        }
    }
}

impl Shared {
    /// Runs `f` on the state under the lock and delivers what it returns; media work starts
    /// after the lock is released.
    fn with_state(self: &Arc<Self>, f: impl FnOnce(&mut RelayState) -> Vec<Output>) {
        let media = {
            let mut inner = self.inner.lock();
            let outputs = f(&mut inner.state);
            deliver(&inner.conns, outputs)
        };
        for output in media {
            self.start_media(output);
        }
    }

    /// Like [`Self::with_state`], for calls that also return a value.
    fn with_state_value<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut RelayState) -> (R, Vec<Output>),
    ) -> R {
        let (value, media) = {
            let mut inner = self.inner.lock();
            let (value, outputs) = f(&mut inner.state);
            (value, deliver(&inner.conns, outputs))
        };
        for output in media {
            self.start_media(output);
        }
        value
    }

    fn start_media(self: &Arc<Self>, output: Output) {
        match output {
            Output::Cluster(c) => {
                if let Some(cluster) = self.cluster.get() {
                    cluster.output(c);
                }
            }
            Output::EndMedia { app_id, stream_id } => {
                self.sfu.end_media(app_id, &stream_id);
                self.pulled.lock().remove(&(app_id, stream_id.clone()));
                self.pulling.lock().remove(&(app_id, stream_id.clone()));
                if let Some(cluster) = self.cluster.get() {
                    cluster.release_stream(app_id, &stream_id);
                }
            }
            Output::EndPlay {
                app_id,
                stream_id,
                session,
            } => self.sfu.end_play(app_id, &stream_id, session),
            Output::SetLayer {
                app_id,
                stream_id,
                session,
                video_layer,
            } => self.sfu.set_layer(app_id, &stream_id, session, video_layer),
            Output::Negotiate {
                conn,
                request_id,
                session,
                app_id,
                stream_id,
                publish,
                sdp,
                video_layer,
                origin,
            } => {
                let shared = self.clone();
                tokio::spawn(async move {
                    let events: Arc<dyn SfuEvents> = Arc::new(RelayEvents(Arc::downgrade(&shared)));
                    if let Err((code, why)) = shared
                        .cluster_first(app_id, &stream_id, publish, origin, &events)
                        .await
                    {
                        shared.with_state(|s| {
                            s.negotiation_refused(
                                conn, request_id, session, app_id, &stream_id, publish, code, &why,
                            )
                        });
                        return;
                    }
                    let answer = if publish {
                        shared
                            .sfu
                            .ingest(app_id, stream_id.clone(), sdp, true, events)
                            .await
                    } else {
                        shared
                            .sfu
                            .subscribe(
                                app_id,
                                stream_id.clone(),
                                session,
                                sdp,
                                video_layer,
                                true,
                                events,
                            )
                            .await
                    };
                    if let Err(e) = &answer {
                        tracing::warn!(stream_id, publish, error = %e, "WebRTC negotiation failed");
                    }
                    shared.with_state(|s| {
                        s.negotiated(
                            conn, request_id, session, app_id, &stream_id, publish, answer,
                        )
                    });
                });
            }
            Output::RestartIce {
                conn,
                request_id,
                session,
                app_id,
                stream_id,
                publish,
                sdp,
            } => {
                let shared = self.clone();
                tokio::spawn(async move {
                    let answer = shared
                        .sfu
                        .restart_ice(app_id, &stream_id, session, publish, sdp)
                        .await;
                    let slot = usize::from(answer.is_err());
                    shared.ice_restarts[slot].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match &answer {
                        Ok(_) => tracing::info!(stream_id, publish, "ICE restarted"),
                        Err(e) => {
                            tracing::warn!(stream_id, publish, error = %e, "ICE restart failed")
                        }
                    }
                    shared.with_state(|s| s.ice_restarted(conn, request_id, publish, answer));
                });
            }
            Output::Send { .. } | Output::Close { .. } => {}
        }
    }

    /// What a cluster node does before negotiating: a publisher's stream ID is claimed
    /// cluster-wide (refused: 1003028; Redis down: 1000021); a stream published on another
    /// node is pulled from it (once, however many players ask).
    async fn cluster_first(
        self: &Arc<Self>,
        app_id: u32,
        stream_id: &str,
        publish: bool,
        origin: Option<String>,
        events: &Arc<dyn SfuEvents>,
    ) -> Result<(), (onair_protocol::error::ErrorCode, String)> {
        use onair_protocol::error::ErrorCode;
        let Some(cluster) = self.cluster.get().cloned() else {
            return Ok(());
        };
        if publish {
            let user = self
                .inner
                .lock()
                .state
                .stream_user(app_id, stream_id)
                .unwrap_or_default();
            return match cluster.claim_stream(app_id, stream_id, &user).await {
                Ok(true) => Ok(()),
                Ok(false) => Err((
                    ErrorCode::StreamIdTaken,
                    "stream ID is already being published in this app (on another node)".into(),
                )),
                Err(e) => Err((
                    ErrorCode::ClusterUnavailable,
                    format!("cannot claim the stream ID: {e}"),
                )),
            };
        }
        let Some(node) = origin else {
            return Ok(());
        };
        let key = (app_id, stream_id.to_string());
        let gate = self.pulling.lock().entry(key.clone()).or_default().clone();
        let _one = gate.lock().await;
        if self.sfu.has_ingest(app_id, stream_id) {
            return Ok(());
        }
        let pull = self
            .sfu
            .pull(app_id, stream_id.to_string(), events.clone(), |offer| {
                let cluster = cluster.clone();
                let (node, stream_id) = (node.clone(), stream_id.to_string());
                async move { cluster.request_pull(&node, app_id, &stream_id, offer).await }
            })
            .await;
        match pull {
            Ok(()) => {
                tracing::info!(stream_id, node, "pulling a stream from its node");
                self.pulled.lock().insert(key, None);
                Ok(())
            }
            Err(e) => Err((
                ErrorCode::PlayNegotiationFailed,
                format!("cannot pull the stream from node {node}: {e}"),
            )),
        }
    }

    /// The cluster's gauges for `/metrics` (nothing for a single relay).
    fn cluster_metrics(&self) -> String {
        let Some(cluster) = self.cluster.get() else {
            return String::new();
        };
        let (up, dropped) = cluster.health();
        let pulled = self.pulled.lock().len();
        let remote_nodes = self.inner.lock().state.cluster_nodes().len();
        format!(
            "# HELP onair_cluster_up Whether this node's Redis answers (1) or not (0: logins refused).\n# TYPE onair_cluster_up gauge\nonair_cluster_up {}\n\
             # HELP onair_cluster_pulled_streams Streams this node pulls from other nodes.\n# TYPE onair_cluster_pulled_streams gauge\nonair_cluster_pulled_streams {pulled}\n\
             # HELP onair_cluster_remote_nodes Other nodes with users or streams in this node's rooms.\n# TYPE onair_cluster_remote_nodes gauge\nonair_cluster_remote_nodes {remote_nodes}\n\
             # HELP onair_cluster_events_dropped_total Room events not sent to Redis (queue full).\n# TYPE onair_cluster_events_dropped_total counter\nonair_cluster_events_dropped_total {dropped}\n",
            u8::from(up)
        )
    }

    /// ICE restarts, and the shared media port's gauges (none when each connection has its
    /// own port).
    fn media_port_metrics(&self) -> String {
        let load = |i: usize| self.ice_restarts[i].load(std::sync::atomic::Ordering::Relaxed);
        let restarts = format!(
            "# HELP onair_ice_restarts_total ICE restarts answered on an existing connection (result=ok) or not (result=failed).\n# TYPE onair_ice_restarts_total counter\nonair_ice_restarts_total{{result=\"ok\"}} {}\nonair_ice_restarts_total{{result=\"failed\"}} {}\n",
            load(0),
            load(1)
        );
        let totals = self.sfu.fec_totals();
        let fec = format!(
            "# HELP onair_fec_repair_sent_total FEC repair packets sent to players.\n# TYPE onair_fec_repair_sent_total counter\nonair_fec_repair_sent_total {}\n\
             # HELP onair_fec_rebuilt_total Packets lost on the way in (from publishers) that FEC repair packets rebuilt.\n# TYPE onair_fec_rebuilt_total counter\nonair_fec_rebuilt_total {}\n\
             # HELP onair_fec_guard_trips_total Times a player's link held a queue its FEC repair packets built (repairs held off).\n# TYPE onair_fec_guard_trips_total counter\nonair_fec_guard_trips_total {}\n",
            totals
                .repair_sent
                .load(std::sync::atomic::Ordering::Relaxed),
            totals.rebuilt.load(std::sync::atomic::Ordering::Relaxed),
            totals
                .guard_trips
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let Some(mux) = &self.sfu.network().udp_mux else {
            return restarts + &fec;
        };
        let counters = mux.0.counters();
        restarts
            + &fec
            + &format!(
                "# HELP onair_media_port_connections Peer connections on the shared media port.\n# TYPE onair_media_port_connections gauge\nonair_media_port_connections {}\n\
             # HELP onair_media_port_unrouted_total Datagrams on the shared media port that matched no connection.\n# TYPE onair_media_port_unrouted_total counter\nonair_media_port_unrouted_total {}\n\
             # HELP onair_media_port_dropped_total Datagrams dropped at the shared media port (a connection's queue or the socket's send buffer full).\n# TYPE onair_media_port_dropped_total counter\nonair_media_port_dropped_total {}\n",
                mux.0.connections(),
                counters.unrouted.load(std::sync::atomic::Ordering::Relaxed),
                counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
            )
    }

    /// Lets go of pulled streams no local player has played for [`PULL_IDLE`].
    fn reap_idle_pulls(&self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        for (key, since) in self.pulled.lock().iter_mut() {
            if self.sfu.players_of(key.0, &key.1) > 0 {
                *since = None;
            } else if since.get_or_insert(now).elapsed() >= PULL_IDLE {
                idle.push(key.clone());
            }
        }
        for key in idle {
            tracing::info!(stream_id = key.1, "pull idle: let go");
            self.pulled.lock().remove(&key);
            self.sfu.end_media(key.0, &key.1);
        }
    }
}

/// Sends messages and closes connections; returns the media work for after the lock.
fn deliver(conns: &HashMap<ConnId, ConnHandle>, outputs: Vec<Output>) -> Vec<Output> {
    let mut media = Vec::new();
    for output in outputs {
        match output {
            media_work @ (Output::Negotiate { .. }
            | Output::RestartIce { .. }
            | Output::Cluster(_)
            | Output::EndMedia { .. }
            | Output::EndPlay { .. }
            | Output::SetLayer { .. }) => {
                media.push(media_work);
            }
            Output::Send { to, msg } => {
                let text = match serde_json::to_string(&msg) {
                    Ok(t) => Utf8Bytes::from(t),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serialise a server message");
                        continue;
                    }
                };
                for conn in to {
                    if let Some(h) = conns.get(&conn)
                        && h.tx.try_send(Outgoing::Text(text.clone())).is_err()
                    {
                        tracing::warn!(conn, "slow consumer: disconnecting");
                        h.kill.notify_one();
                    }
                }
            }
            Output::Close { conn, code } => {
                if let Some(h) = conns.get(&conn) {
                    // 1008 policy violation for abuse, 1001 going away otherwise.
                    let ws_code = if code == onair_protocol::error::ErrorCode::AbuseClosed {
                        1008
                    } else {
                        1001
                    };
                    if h.tx
                        .try_send(Outgoing::Close(ws_code, code.name().into()))
                        .is_err()
                    {
                        h.kill.notify_one();
                    }
                }
            }
        }
    }
    media
}

/// How long the SFU keeps a connection that is disconnected (or receives nothing) before it
/// gives it up: long enough for a client's ICE restart to bring it back.
const RESTART_WINDOW: Duration = Duration::from_secs(20);

/// A running relay inside a tokio runtime.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    turn_urls: Option<Vec<String>>,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    serve_task: JoinHandle<()>,
    tick_task: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` (port 0 for an ephemeral port) and starts serving `config`.
    pub async fn start(config: RelayConfig, listen: SocketAddr) -> std::io::Result<Server> {
        // A deep accept queue: a thousand clients reconnecting at once after a relay restart
        // must not have their SYNs dropped (a dropped SYN costs a full second to retry).
        let socket = if listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_nodelay(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let tick_every =
            Duration::from_millis((config.limits.heartbeat_timeout_ms / 4).clamp(20, 1000));
        let transport_limit = config
            .limits
            .max_message_bytes
            .saturating_mul(4)
            .max(64 * 1024);
        let mut network = config.rtc.network(addr.ip());
        if let Some(port) = config.rtc.shared_port(addr.port()) {
            let mux = onair_transport::udp_mux::UdpMux::new(port);
            for ip in onair_transport::udp_mux::expand_bind(&network.bind) {
                mux.bind(ip)?;
            }
            network.udp_mux = Some(onair_transport::peer::SharedPort(mux));
        }
        let tls = config.tls.clone();
        let metrics_listen = config.metrics_listen;
        let limiter = crate::limiter::HttpLimiter::new(
            config.limits.http_requests_per_second,
            config.limits.http_request_burst,
        );
        let max_sdp_bytes = config.limits.max_sdp_bytes;
        let fec = !config.rtc.no_fec;
        let watch_rules = onair_transport::peer::WatchRules {
            connect_within: Duration::from_millis(config.limits.connect_timeout_ms),
            // A client notices a dead path after ICE's 5 s, restarts ICE 1.5 s later (again
            // every 3 s) and gives up 10 s after its first restart: a disconnected or silent
            // connection is kept longer than that, so the restarts find it (`restart_ice`).
            grace: RESTART_WINDOW,
            // RTCP arrives about every second; a short signaling timeout (tests) must not
            // make a quiet second look like a vanished peer.
            silence: Duration::from_millis(config.limits.heartbeat_timeout_ms).max(RESTART_WINDOW),
        };
        // WHIP and WHEP clients (and other nodes' pulls) do not restart ICE through our
        // signaling: a disconnection over 5 s, or 10 s of silence, ends them.
        let fixed_rules = onair_transport::peer::WatchRules {
            grace: Duration::from_secs(5),
            silence: Duration::from_millis(config.limits.heartbeat_timeout_ms)
                .max(Duration::from_secs(10)),
            ..watch_rules
        };
        let turn_urls = config.rtc.turn.as_ref().map(|t| t.urls.clone());
        let cluster_config = config.cluster.clone();
        let mut state = RelayState::new(config);
        state.set_clustered(cluster_config.is_some());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                state,
                conns: HashMap::new(),
            }),
            closing: std::sync::atomic::AtomicBool::new(false),
            shutdown: shutdown_rx.clone(),
            transport_limit,
            sfu: Arc::new(Sfu::new(network, watch_rules, fixed_rules).with_fec(fec)),
            limiter: Mutex::new(limiter),
            max_sdp_bytes,
            cluster: std::sync::OnceLock::new(),
            own_url: std::sync::OnceLock::new(),
            pulled: Mutex::new(HashMap::new()),
            ice_restarts: Default::default(),
            pulling: Mutex::new(HashMap::new()),
            next_pull_session: std::sync::atomic::AtomicU64::new(0),
        });
        let _ = shared.own_url.set(signaling_url(addr, tls.is_some()));
        if let Some(cluster_config) = &cluster_config {
            let url = signaling_url(addr, tls.is_some());
            let host: Arc<dyn ClusterHost> = Arc::new(Host(Arc::downgrade(&shared)));
            let cluster = Cluster::start(cluster_config, url, host)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            tracing::info!(node = cluster.node_id(), "cluster node");
            let _ = shared.cluster.set(cluster);
        }
        // Routes a web page on another origin may call: WHIP, WHEP and the player page.
        let cross_origin = Router::new()
            .route("/live", get(live_page))
            .route(
                "/whip/{room_id}/{stream_id}",
                axum::routing::post(whip_post),
            )
            .route(
                "/whep/{room_id}/{stream_id}",
                axum::routing::post(whep_post),
            )
            .route(
                "/whip/resource/{session}",
                axum::routing::delete(resource_delete),
            )
            .route(
                "/whep/resource/{session}",
                axum::routing::delete(resource_delete),
            )
            .layer(
                tower_http::cors::CorsLayer::new()
                    .allow_origin(tower_http::cors::Any)
                    .allow_methods([
                        axum::http::Method::POST,
                        axum::http::Method::DELETE,
                        axum::http::Method::OPTIONS,
                    ])
                    .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                    .expose_headers([header::LOCATION, header::LINK]),
            );
        let mut limited = cross_origin;
        if metrics_listen.is_none() {
            limited = limited.route("/metrics", get(metrics_page));
        }
        let limited = limited.layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            http_rate_limit,
        ));
        let app = Router::new()
            .route("/ws", get(ws_upgrade))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/dispatch", get(dispatch))
            .route(
                "/",
                get(|| async { "onair relay: signaling WebSocket at /ws\n" }),
            )
            .merge(limited)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<PeerAddr>();
        let metrics_task = match metrics_listen {
            Some(at) => {
                let listener = tokio::net::TcpListener::bind(at).await?;
                let metrics_app = Router::new()
                    .route("/metrics", get(metrics_page))
                    .with_state(shared.clone());
                let mut stop = shutdown_rx.clone();
                tracing::info!(addr = %listener.local_addr()?, "metrics listening");
                Some(tokio::spawn(async move {
                    let result = axum::serve(listener, metrics_app)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|stop| *stop).await;
                        })
                        .await;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "metrics server failed");
                    }
                }))
            }
            None => None,
        };
        let mut serve_shutdown = shutdown_rx.clone();
        let stopped = async move {
            let _ = serve_shutdown.wait_for(|stop| *stop).await;
        };
        let serve_task = match &tls {
            Some(identity) => {
                let listener = crate::tls::TlsListener::new(listener, identity)?;
                tokio::spawn(async move {
                    let result = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "relay HTTPS server failed");
                    }
                })
            }
            None => tokio::spawn(async move {
                let result = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "relay HTTP server failed");
                }
            }),
        };
        let tick_shared = shared.clone();
        let mut tick_shutdown = shutdown_rx;
        let tick_task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick_every);
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        tick_shared.with_state(|s| s.tick(Instant::now()));
                        tick_shared.reap_idle_pulls();
                    }
                    _ = tick_shutdown.wait_for(|stop| *stop) => break,
                }
            }
        });
        tracing::info!(%addr, "relay listening");
        Ok(Server {
            addr,
            tls: tls.is_some(),
            turn_urls,
            shared,
            shutdown_tx,
            serve_task,
            tick_task,
            metrics_task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The signaling URL engines connect to: `ws://addr/ws`, or `wss://` when serving TLS
    /// (an unspecified listen address is given as 127.0.0.1).
    pub fn url(&self) -> String {
        signaling_url(self.addr, self.tls)
    }

    /// On a cluster node: the glue to the other nodes.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.shared.cluster.get()
    }

    /// Where the SFU's media sockets bind and what they advertise.
    pub fn media_network(&self) -> onair_transport::peer::MediaNetwork {
        self.shared.sfu.network().clone()
    }

    /// The TURN server the relay mints credentials for, if any.
    pub fn turn_urls(&self) -> Option<&[String]> {
        self.turn_urls.as_deref()
    }

    /// Whether the relay serves TLS (`wss://`, HTTPS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The `/metrics` text, as served.
    pub fn metrics_text(&self) -> String {
        let mut text = {
            let inner = self.shared.inner.lock();
            metrics::render(&inner.state.counters, &inner.state.gauges())
        };
        text.push_str(&self.shared.cluster_metrics());
        text.push_str(&self.shared.media_port_metrics());
        text
    }

    /// Says goodbye to every client, closes every connection and frees the port.
    pub async fn shutdown(self) {
        self.shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.with_state(|s| s.shutdown());
        if let Some(cluster) = self.shared.cluster.get() {
            cluster.leave().await;
        }
        let _ = self.shutdown_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.serve_task).await;
        self.tick_task.abort();
        if let Some(t) = self.metrics_task {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        // Wait until every connection task has finished, so the clients see the close.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.shared.inner.lock().conns.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// `ws://addr/ws` (`wss://` with TLS; an unspecified address is given as 127.0.0.1).
fn signaling_url(mut addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "wss" } else { "ws" };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
    }
    format!("{scheme}://{addr}/ws")
}

#[derive(serde::Deserialize)]
struct DispatchQuery {
    app_id: u32,
    room_id: String,
}

/// `GET /dispatch?app_id=…&room_id=…`: the node a client of that room should use, as JSON
/// `{"node_id", "url", "sessions", "players", "streams"}` (a single relay names itself).
async fn dispatch(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<DispatchQuery>,
) -> Response {
    use onair_protocol::error::{ErrorCode, WireError};
    let Some(cluster) = shared.cluster.get().cloned() else {
        let (sessions, players, streams) = Host(Arc::downgrade(&shared)).load();
        let url = shared.own_url.get().cloned().unwrap_or_default();
        return axum::Json(crate::cluster::NodeLease {
            node_id: String::new(),
            url,
            sessions,
            players,
            streams,
            cpu_pct: 0.0,
        })
        .into_response();
    };
    match cluster.dispatch(q.app_id, &q.room_id).await {
        Ok(lease) => axum::Json(lease).into_response(),
        Err(e) => http_error(&WireError::new(ErrorCode::ClusterUnavailable, e)),
    }
}

async fn metrics_page(State(shared): State<Arc<Shared>>) -> Response {
    let mut body = {
        let inner = shared.inner.lock();
        metrics::render(&inner.state.counters, &inner.state.gauges())
    };
    body.push_str(&shared.cluster_metrics());
    body.push_str(&shared.media_port_metrics());
    // The relay's own tasks: a leak shows here first (the soak benchmark watches it).
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    body.push_str(&format!(
        "# HELP onair_runtime_tasks Tasks alive in the relay's runtime.\n# TYPE onair_runtime_tasks gauge\nonair_runtime_tasks {tasks}\n"
    ));
    // The heap in use: where a leak of memory shows (resident memory keeps the high water).
    body.push_str(&crate::heap::render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// A client's address, as the connection limits and the HTTP rate limit see it.
#[derive(Clone, Copy, Debug)]
struct PeerAddr(SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Answers 429 with `Retry-After` to an address over its HTTP request allowance.
async fn http_rate_limit(
    State(shared): State<Arc<Shared>>,
    axum::extract::ConnectInfo(PeerAddr(peer)): axum::extract::ConnectInfo<PeerAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let verdict = shared.limiter.lock().check(peer.ip(), Instant::now());
    match verdict {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            use onair_protocol::error::{ErrorCode, WireError};
            let e = WireError::new(
                ErrorCode::HttpRateLimited,
                format!("too many requests from this address; retry in {wait} s"),
            );
            let mut response = http_error(&e);
            if let Ok(v) = axum::http::HeaderValue::from_str(&wait.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}

/// A browser page that publishes over WHIP or plays over WHEP (`/live?mode=whip&room=…`).
async fn live_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../../assets/web/live.html"),
    )
        .into_response()
}

fn http_error(e: &onair_protocol::error::WireError) -> Response {
    use axum::http::StatusCode;
    use onair_protocol::error::ErrorCode as C;
    let status = match C::from_code(e.code) {
        Some(
            C::NoCredentials
            | C::TokenInvalid
            | C::TokenWrongApp
            | C::TokenWrongUser
            | C::TokenWrongRoom
            | C::TokenNoLoginPrivilege,
        ) => StatusCode::UNAUTHORIZED,
        Some(C::PublishNotAuthorized) => StatusCode::FORBIDDEN,
        Some(C::StreamIdTaken) => StatusCode::CONFLICT,
        Some(C::StreamNotFound) => StatusCode::NOT_FOUND,
        Some(C::MessageTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        Some(C::HttpRateLimited) => StatusCode::TOO_MANY_REQUESTS,
        Some(
            C::TooManyConnections
            | C::TooManyHttpSessions
            | C::TooManySessionsForUser
            | C::ClusterUnavailable,
        ) => StatusCode::SERVICE_UNAVAILABLE,
        Some(C::StreamIdNotAuthorized | C::PlayNotAuthorized) => StatusCode::FORBIDDEN,
        Some(C::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let body = serde_json::json!({ "code": e.code, "message": e.message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn whip_post(
    State(shared): State<Arc<Shared>>,
    axum::extract::ConnectInfo(PeerAddr(peer)): axum::extract::ConnectInfo<PeerAddr>,
    axum::extract::Path((room_id, stream_id)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    http_negotiate(shared, peer, room_id, stream_id, headers, body, true).await
}

async fn whep_post(
    State(shared): State<Arc<Shared>>,
    axum::extract::ConnectInfo(PeerAddr(peer)): axum::extract::ConnectInfo<PeerAddr>,
    axum::extract::Path((room_id, stream_id)): axum::extract::Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    http_negotiate(shared, peer, room_id, stream_id, headers, body, false).await
}

/// WHIP (RFC 9725) and WHEP: bearer token, SDP offer in, `201 Created` with the answer and a
/// `Location` to `DELETE` when done. The client is a user in the room like any engine.
async fn http_negotiate(
    shared: Arc<Shared>,
    peer: SocketAddr,
    room_id: String,
    stream_id: String,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
    publish: bool,
) -> Response {
    use onair_protocol::error::{ErrorCode, WireError};
    // Read at most the limit (and one byte more, to tell "too large").
    let offer = match axum::body::to_bytes(body, shared.max_sdp_bytes + 1).await {
        Ok(b) if b.len() <= shared.max_sdp_bytes => match String::from_utf8(b.to_vec()) {
            Ok(s) => s,
            Err(_) => {
                return http_error(&WireError::new(
                    ErrorCode::MalformedMessage,
                    "the SDP offer is not UTF-8",
                ));
            }
        },
        _ => {
            return http_error(&WireError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "SDP offer larger than {} bytes (limits.max_sdp_bytes)",
                    shared.max_sdp_bytes
                ),
            ));
        }
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return http_error(&WireError::new(
            ErrorCode::NoCredentials,
            "send Authorization: Bearer <token>",
        ));
    };
    let begun = shared.with_state_value(|s| {
        match s.http_begin_from(
            Some(peer.ip()),
            token,
            &room_id,
            &stream_id,
            publish,
            Instant::now(),
        ) {
            Ok((sid, secret, app, out)) => (Ok((sid, secret, app)), out),
            Err(e) => (Err(e), Vec::new()),
        }
    });
    let (session, secret, app_id) = match begun {
        Ok(v) => v,
        Err(e) => return http_error(&e),
    };
    let events: Arc<dyn SfuEvents> = Arc::new(RelayEvents(Arc::downgrade(&shared)));
    // A cluster node: claim the stream ID, or pull the stream from its node.
    let origin = shared.inner.lock().state.stream_origin(app_id, &stream_id);
    if let Err((code, why)) = shared
        .cluster_first(app_id, &stream_id, publish, origin, &events)
        .await
    {
        shared.with_state(|s| s.http_end(session, &secret).1);
        return http_error(&WireError::new(code, why));
    }
    let answer = if publish {
        shared
            .sfu
            .ingest(app_id, stream_id.clone(), offer, false, events)
            .await
    } else {
        shared
            .sfu
            .subscribe(
                app_id,
                stream_id.clone(),
                session,
                offer,
                onair_protocol::messages::VideoLayer::Auto,
                false,
                events,
            )
            .await
    };
    match answer {
        Ok(sdp) => {
            shared.with_state(|s| {
                s.negotiated(0, 0, session, app_id, &stream_id, publish, Ok(sdp.clone()))
            });
            let kind = if publish { "whip" } else { "whep" };
            let ice = shared.inner.lock().state.ice_servers_for(session);
            let mut response = (
                axum::http::StatusCode::CREATED,
                [
                    (header::CONTENT_TYPE, "application/sdp".to_string()),
                    (
                        header::LOCATION,
                        format!("/{kind}/resource/{session}-{secret}"),
                    ),
                ],
                sdp,
            )
                .into_response();
            // The session's STUN/TURN servers as `Link` headers (RFC 9725 §4.6).
            for link in ice_links(&ice) {
                if let Ok(v) = axum::http::HeaderValue::from_str(&link) {
                    response.headers_mut().append(header::LINK, v);
                }
            }
            response
        }
        Err(e) => {
            shared.with_state(|s| s.http_end(session, &secret).1);
            let code = if publish {
                ErrorCode::MediaNegotiationFailed
            } else {
                ErrorCode::PlayNegotiationFailed
            };
            http_error(&WireError::new(code, e))
        }
    }
}

/// `Link` header values for ICE servers, as WHIP and WHEP clients read them (RFC 9725 §4.6).
fn ice_links(servers: &[onair_protocol::IceServer]) -> Vec<String> {
    let quote = |v: &str| v.replace(['"', '\\'], "");
    servers
        .iter()
        .flat_map(|s| {
            s.urls.iter().map(move |url| {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                if !s.username.is_empty() {
                    link.push_str(&format!(
                        "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        quote(&s.username),
                        quote(&s.credential)
                    ));
                }
                link
            })
        })
        .collect()
}

async fn resource_delete(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(resource): axum::extract::Path<String>,
) -> Response {
    let found = resource.split_once('-').and_then(|(id, secret)| {
        let id: u64 = id.parse().ok()?;
        Some(shared.with_state_value(|s| s.http_end(id, secret)))
    });
    if found == Some(true) {
        axum::http::StatusCode::OK.into_response()
    } else {
        axum::http::StatusCode::NOT_FOUND.into_response()
    }
}

async fn ws_upgrade(
    ws: WebSocketUpgrade,
    State(shared): State<Arc<Shared>>,
    axum::extract::ConnectInfo(PeerAddr(peer)): axum::extract::ConnectInfo<PeerAddr>,
) -> Response {
    if shared.closing.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "relay shutting down\n",
        )
            .into_response();
    }
    let admitted = shared.inner.lock().state.admit(Some(peer.ip()));
    if let Err(e) = admitted {
        tracing::warn!(%peer, code = e.code, "signaling connection refused: {}", e.message);
        return http_error(&e);
    }
    let limit = shared.transport_limit;
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| connection(socket, shared, peer))
}

async fn connection(socket: WebSocket, shared: Arc<Shared>, peer: SocketAddr) {
    if shared.closing.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUT_QUEUE);
    let kill = Arc::new(Notify::new());
    let conn = {
        let mut inner = shared.inner.lock();
        let id = inner.state.open_conn_from(Some(peer.ip()), Instant::now());
        inner.conns.insert(
            id,
            ConnHandle {
                tx,
                kill: kill.clone(),
            },
        );
        id
    };
    let mut writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outgoing::Text(text) => {
                    if sink.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                Outgoing::Close(code, reason) => {
                    let frame = CloseFrame {
                        code,
                        reason: Utf8Bytes::from(reason),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });
    let mut shutdown = shared.shutdown.clone();
    let mut writer_done = false;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    shared.with_state(|s| s.on_text(conn, text.as_str(), Instant::now()));
                }
                Some(Ok(Message::Binary(_))) => {
                    shared.with_state(|s| s.on_binary(conn, Instant::now()));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    tracing::debug!(conn, error = %e, "signaling connection error");
                    break;
                }
            },
            _ = kill.notified() => break,
            _ = &mut writer => { writer_done = true; break; }
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    {
        let mut inner = shared.inner.lock();
        inner.state.close_conn(conn, Instant::now());
        inner.conns.remove(&conn);
    }
    // The queue's sender is gone: the writer flushes what is queued (a goodbye) and ends.
    if !writer_done
        && tokio::time::timeout(Duration::from_secs(1), &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// A relay with its own runtime, for programs that are not async: the studio embeds one and
/// tests start many. Stops when dropped.
pub struct EmbeddedRelay {
    server: Option<Server>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl EmbeddedRelay {
    /// Starts a relay on `listen` (port 0 for an ephemeral port).
    pub fn start(config: RelayConfig, listen: SocketAddr) -> std::io::Result<EmbeddedRelay> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("onair-relay")
            .enable_all()
            .build()?;
        let server = runtime.block_on(Server::start(config, listen))?;
        Ok(EmbeddedRelay {
            server: Some(server),
            runtime: Some(runtime),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |s| s.local_addr())
    }

    /// The signaling URL, `ws://addr/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.local_addr())
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        self.server
            .as_ref()
            .map(|s| s.metrics_text())
            .unwrap_or_default()
    }

    /// Stops the relay and frees its port.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let (Some(server), Some(rt)) = (self.server.take(), self.runtime.as_ref()) {
            rt.block_on(server.shutdown());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for EmbeddedRelay {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers() {
        let links = ice_links(&[
            onair_protocol::IceServer {
                urls: vec!["stun:10.77.0.1:3478".into()],
                ..Default::default()
            },
            onair_protocol::IceServer {
                urls: vec!["turn:10.77.0.1:3478?transport=udp".into()],
                username: "1700000000:7".into(),
                credential: "abc=".into(),
            },
        ]);
        assert_eq!(
            links,
            [
                "<stun:10.77.0.1:3478>; rel=\"ice-server\"",
                "<turn:10.77.0.1:3478?transport=udp>; rel=\"ice-server\"; username=\"1700000000:7\"; credential=\"abc=\"; credential-type=\"password\"",
            ]
        );
    }
}
