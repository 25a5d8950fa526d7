//! Relays as one cluster on Redis: each node's lease, app-wide stream-ID claims, room events
//! between nodes, and the exchange that lets one node pull a stream from the node it is
//! published on. The rules stay in the sans-I/O state ([`crate::state`]'s `cluster` module);
//! this is the glue that carries them over Redis.
//!
//! Keys (all under `onair:`; IDs never contain `:`):
//! - `node:{id}` — the node's lease: JSON [`NodeLease`] (address, load), expires after
//!   [`LEASE_TTL`] unless renewed every [`LEASE_EVERY`]; `nodes` — the set of node IDs.
//! - `stream:{app}:{stream}` — the node publishing that stream ID (`SET NX`, same TTL,
//!   renewed while the stream lives): one publisher per ID across the cluster.
//! - `room:{app}:{room}:users` / `:streams` — hashes of who and what is in a room on which
//!   node, read by a node when its first member logs into the room.
//! - channels `room:{app}:{room}` (room events, [`RoomMessage`]) and `to:{node}` (requests
//!   between nodes, [`NodeMessage`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::AsyncCommands;
use redis::aio::{MultiplexedConnection, PubSubSink};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::state::{ClusterOutput, Output, RelayState, RoomEvent};
use onair_protocol::messages::{StreamInfo, User};

/// How long a node's lease and its stream claims live without renewal: a killed node's users
/// and streams leave the other nodes' rooms this long after it died, at most.
pub const LEASE_TTL: Duration = Duration::from_secs(4);
/// How often leases and claims are renewed and other nodes' leases checked.
pub const LEASE_EVERY: Duration = Duration::from_secs(1);
/// After Redis comes back, how long a node waits before judging others dead (their leases
/// may be missing only because Redis lost its data and they have not renewed yet).
const JUDGE_AFTER: Duration = Duration::from_secs(5);
/// How long a pull request waits for the publishing node's answer.
const PULL_TIMEOUT: Duration = Duration::from_secs(5);
/// Room events queued for Redis before they are dropped (and counted).
const OUT_QUEUE: usize = 4096;

/// `[cluster]` in the config file, or `onair serve --redis … --node-id … --advertise …`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]`.
    pub redis: String,
    /// This node's ID, unique in the cluster (letters, digits, `-`, `_`, `.`).
    pub node_id: String,
    /// Where clients reach this node (`ws://…` or `wss://…`), as `/dispatch` hands it out;
    /// default: the signaling URL the node listens on.
    #[serde(default)]
    pub advertise: Option<String>,
}

impl ClusterConfig {
    /// Whether the node ID is usable in keys and channels.
    pub fn check(&self) -> Result<(), String> {
        let ok = !self.node_id.is_empty()
            && self.node_id.len() <= 64
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "node ID {:?}: 1 to 64 letters, digits, '-', '_' or '.'",
                self.node_id
            ))
        }
    }
}

/// A node's lease: where it is and how loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeLease {
    /// Its ID.
    pub node_id: String,
    /// Where clients reach it.
    pub url: String,
    /// Sessions.
    pub sessions: usize,
    /// Players (plays through its SFU).
    pub players: usize,
    /// Streams with media there.
    pub streams: usize,
    /// The relay process's CPU over the last lease period, % of one core.
    #[serde(default)]
    pub cpu_pct: f64,
}

/// CPU seconds (user + system) this process has used, from /proc (Linux; 100 ticks a second).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A room event on the room's channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RoomMessage {
    node: String,
    app_id: u32,
    room_id: String,
    event: RoomEvent,
}

/// One entry of a room's hash (`…:users` or `…:streams`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Placed<T> {
    node: String,
    #[serde(flatten)]
    item: T,
}

/// A request between nodes, on the receiver's `to:{node}` channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum NodeMessage {
    /// `from` wants to pull a stream published here: `sdp` is its offer.
    Pull {
        from: String,
        request: u64,
        app_id: u32,
        stream_id: String,
        sdp: String,
    },
    /// The answer to a [`NodeMessage::Pull`].
    PullAnswer {
        request: u64,
        result: Result<String, String>,
    },
}

/// What the cluster glue needs from the relay it runs in.
pub(crate) trait ClusterHost: Send + Sync + 'static {
    /// Runs `f` on the state and carries out its outputs.
    fn apply(&self, f: &mut dyn FnMut(&mut RelayState) -> Vec<Output>);
    /// The current load, for the lease.
    fn load(&self) -> (usize, usize, usize);
    /// Answers a pull of a local stream: the SFU subscribes the other node like a player.
    fn answer_pull(
        self: Arc<Self>,
        app_id: u32,
        stream_id: String,
        offer: String,
    ) -> futures_util::future::BoxFuture<'static, Result<String, String>>;
}

/// Runs `f` on the host's state and returns what it returned.
fn read<H: ClusterHost + ?Sized, R: Default>(host: &H, f: impl FnOnce(&RelayState) -> R) -> R {
    let mut f = Some(f);
    let mut value = R::default();
    host.apply(&mut |s| {
        if let Some(f) = f.take() {
            value = f(s);
        }
        Vec::new()
    });
    value
}

/// A Redis connection made on demand and dropped after an error (the next call reconnects).
struct Redis {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl Redis {
    async fn conn(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.conn.lock().clone() {
            return Ok(c);
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.conn.lock() = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on a connection; an error drops the connection.
    async fn run<T, F, Fut>(&self, f: F) -> redis::RedisResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = match self.conn().await {
            Ok(c) => f(c).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            *self.conn.lock() = None;
        }
        result
    }
}

/// The cluster glue of one node.
pub struct Cluster {
    node: String,
    url: String,
    redis: Redis,
    /// Room events and room openings for the writer task, in order.
    out: mpsc::Sender<ClusterOutput>,
    /// Rooms this node listens to.
    rooms: Mutex<HashSet<(u32, String)>>,
    /// Rooms whose record is being read: their events wait here, and are applied after the
    /// record (an event published after the read must not be undone by it).
    reading: Mutex<HashMap<(u32, String), Vec<RoomMessage>>>,
    /// Stream IDs this node claimed → the publishing user.
    claims: Mutex<HashMap<(u32, String), String>>,
    /// Pull requests waiting for their answer.
    pulls: Mutex<HashMap<u64, oneshot::Sender<Result<String, String>>>>,
    next_request: AtomicU64,
    /// The subscription connection's control half, while connected.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Whether Redis answered the last lease renewal.
    up: AtomicBool,
    /// Since when Redis has answered (for judging other nodes dead).
    up_since: Mutex<Option<Instant>>,
    /// Room events dropped because the queue to Redis was full.
    pub dropped: AtomicU64,
    /// Set by [`Cluster::leave`]: the lease is no longer renewed.
    leaving: AtomicBool,
}

fn room_channel(app_id: u32, room_id: &str) -> String {
    format!("onair:room:{app_id}:{room_id}")
}

fn node_channel(node: &str) -> String {
    format!("onair:to:{node}")
}

fn lease_key(node: &str) -> String {
    format!("onair:node:{node}")
}

fn claim_key(app_id: u32, stream_id: &str) -> String {
    format!("onair:stream:{app_id}:{stream_id}")
}

fn users_key(app_id: u32, room_id: &str) -> String {
    format!("onair:room:{app_id}:{room_id}:users")
}

fn streams_key(app_id: u32, room_id: &str) -> String {
    format!("onair:room:{app_id}:{room_id}:streams")
}

fn extra_key(app_id: u32, room_id: &str) -> String {
    format!("onair:room:{app_id}:{room_id}:extra")
}

/// Sets (ARGV[2] non-empty) or deletes — only if this node's (ARGV[3]) — a field of a room's
/// hash, then publishes the event: one atomic step, so a node reading the hash after
/// subscribing misses nothing.
/// An empty field (ARGV[1]) leaves the hashes alone (a message only).
const ROOM_EVENT_SCRIPT: &str = r#"
if ARGV[1] == '' then
  -- nothing to record
elseif ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
else
  local v = redis.call('HGET', KEYS[1], ARGV[1])
  if v and cjson.decode(v).node == ARGV[3] then redis.call('HDEL', KEYS[1], ARGV[1]) end
end
redis.call('PUBLISH', KEYS[2], ARGV[4])
return 1
"#;

/// Claims a stream ID (KEYS[1]) for node ARGV[1] publishing as user ARGV[3] (the value is
/// `node user`): 1 if it is now this node's, 0 if another node holds it for another user.
/// The same user's claim moves to the newer node (an engine that moved to another node
/// publishes again; its old session there is kicked as the same user's older session).
const CLAIM_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. ' ' .. ARGV[3]
if v == false or v == mine or string.match(v, ' (.*)$') == ARGV[3] then
  redis.call('SET', KEYS[1], mine, 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// Keeps this node's claim alive: 1 if KEYS[1] is still ARGV[1]'s (the value starts with
/// `node `), or free and taken again (Redis lost it), 0 if another node holds it.
const RENEW_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[2])
  return 1
end
if string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Deletes a claim only if it is node ARGV[1]'s.
const RELEASE_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

impl Cluster {
    /// Connects the glue for `config` (Redis may be down: the node then refuses logins until
    /// it answers) and starts its tasks; `url` is where clients reach this node.
    pub(crate) fn start(
        config: &ClusterConfig,
        url: String,
        host: Arc<dyn ClusterHost>,
    ) -> Result<Arc<Cluster>, String> {
        config.check()?;
        let client = redis::Client::open(config.redis.as_str())
            .map_err(|e| format!("--redis {:?}: {e}", config.redis))?;
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        let cluster = Arc::new(Cluster {
            node: config.node_id.clone(),
            url: config.advertise.clone().unwrap_or(url),
            redis: Redis {
                client,
                conn: Mutex::new(None),
            },
            out: tx,
            rooms: Mutex::new(HashSet::new()),
            reading: Mutex::new(HashMap::new()),
            claims: Mutex::new(HashMap::new()),
            pulls: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            sink: tokio::sync::Mutex::new(None),
            up: AtomicBool::new(true),
            up_since: Mutex::new(None),
            dropped: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
        });
        tokio::spawn(write_events(Arc::downgrade(&cluster), host.clone(), rx));
        tokio::spawn(listen(Arc::downgrade(&cluster), host.clone()));
        tokio::spawn(keep_lease(Arc::downgrade(&cluster), host));
        Ok(cluster)
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    /// Whether Redis answered the last renewal, and the room events dropped so far.
    pub fn health(&self) -> (bool, u64) {
        (
            self.up.load(Ordering::SeqCst),
            self.dropped.load(Ordering::Relaxed),
        )
    }

    /// This node stops: its lease goes at once, so the other nodes take its users and
    /// streams out of their rooms within a second instead of when the lease would expire.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        tracing::info!(node = self.node, "leaving the cluster");
        let (key, node) = (lease_key(&self.node), self.node.clone());
        let _: redis::RedisResult<()> = self
            .redis
            .run(|mut c| async move {
                let _: i64 = c.del(key).await?;
                let _: i64 = c.srem("onair:nodes", node).await?;
                Ok(())
            })
            .await;
    }

    /// Queues what the state told the cluster.
    pub(crate) fn output(&self, output: ClusterOutput) {
        if self.out.try_send(output).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("cluster queue full: a room event was dropped");
        }
    }

    /// Claims `stream_id` for this node: `Ok(false)` when another node publishes it,
    /// `Err` when Redis does not answer.
    pub(crate) async fn claim_stream(
        &self,
        app_id: u32,
        stream_id: &str,
        user_id: &str,
    ) -> Result<bool, String> {
        let key = claim_key(app_id, stream_id);
        let (node, user) = (self.node.clone(), user_id.to_string());
        let got: i64 = self
            .redis
            .run(|mut c| async move {
                redis::Script::new(CLAIM_SCRIPT)
                    .key(key)
                    .arg(node)
                    .arg(LEASE_TTL.as_millis() as u64)
                    .arg(user)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .map_err(|e| e.to_string())?;
        if got == 1 {
            self.claims
                .lock()
                .insert((app_id, stream_id.to_string()), user_id.to_string());
        }
        Ok(got == 1)
    }

    /// Frees a stream ID this node claimed (its stream ended).
    pub(crate) fn release_stream(self: &Arc<Self>, app_id: u32, stream_id: &str) {
        if self
            .claims
            .lock()
            .remove(&(app_id, stream_id.to_string()))
            .is_none()
        {
            return;
        }
        let me = self.clone();
        let key = claim_key(app_id, stream_id);
        tokio::spawn(async move {
            let node = me.node.clone();
            let _: redis::RedisResult<i64> = me
                .redis
                .run(|mut c| async move {
                    redis::Script::new(RELEASE_SCRIPT)
                        .key(key)
                        .arg(node)
                        .invoke_async(&mut c)
                        .await
                })
                .await;
        });
    }

    /// Asks `node` for its stream with `offer`; its answer SDP, or why not.
    pub(crate) async fn request_pull(
        &self,
        node: &str,
        app_id: u32,
        stream_id: &str,
        offer: String,
    ) -> Result<String, String> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pulls.lock().insert(request, tx);
        let message = NodeMessage::Pull {
            from: self.node.clone(),
            request,
            app_id,
            stream_id: stream_id.to_string(),
            sdp: offer,
        };
        let sent = self.send_to(node, &message).await;
        let result = match sent {
            Err(e) => Err(e),
            Ok(0) => Err(format!("node {node} is not listening")),
            Ok(_) => match tokio::time::timeout(PULL_TIMEOUT, rx).await {
                Ok(Ok(answer)) => answer,
                _ => Err(format!("node {node} did not answer the pull")),
            },
        };
        self.pulls.lock().remove(&request);
        result
    }

    /// Publishes `message` on `node`'s channel; how many received it.
    async fn send_to(&self, node: &str, message: &NodeMessage) -> Result<i64, String> {
        let text = serde_json::to_string(message).map_err(|e| e.to_string())?;
        let channel = node_channel(node);
        self.redis
            .run(|mut c| async move { c.publish(channel, text).await })
            .await
            .map_err(|e| e.to_string())
    }

    /// The live nodes' leases.
    pub async fn nodes(&self) -> Result<Vec<NodeLease>, String> {
        self.redis
            .run(|mut c| async move {
                let ids: Vec<String> = c.smembers("onair:nodes").await?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let keys: Vec<String> = ids.iter().map(|n| lease_key(n)).collect();
                let leases: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
                Ok(leases
                    .into_iter()
                    .flatten()
                    .filter_map(|l| serde_json::from_str(&l).ok())
                    .collect())
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// The node a client of `room_id` should use: among live nodes, the least loaded of
    /// those already carrying the room's streams (then its users), else the least loaded.
    pub async fn dispatch(&self, app_id: u32, room_id: &str) -> Result<NodeLease, String> {
        let nodes = self.nodes().await?;
        let (streams, users) = (streams_key(app_id, room_id), users_key(app_id, room_id));
        let (in_streams, in_users): (Vec<String>, Vec<String>) = self
            .redis
            .run(|mut c| async move {
                let s: Vec<String> = c.hvals(streams).await?;
                let u: Vec<String> = c.hvals(users).await?;
                Ok((s, u))
            })
            .await
            .map_err(|e| e.to_string())?;
        let placed = |v: &[String]| -> BTreeSet<String> {
            v.iter()
                .filter_map(|j| serde_json::from_str::<serde_json::Value>(j).ok())
                .filter_map(|j| j["node"].as_str().map(String::from))
                .collect()
        };
        let least = |among: &dyn Fn(&NodeLease) -> bool| {
            nodes
                .iter()
                .filter(|n| among(n))
                .min_by_key(|n| (n.sessions + n.players, n.node_id.clone()))
                .cloned()
        };
        let (with_streams, with_users) = (placed(&in_streams), placed(&in_users));
        least(&|n| with_streams.contains(&n.node_id))
            .or_else(|| least(&|n| with_users.contains(&n.node_id)))
            .or_else(|| least(&|_| true))
            .ok_or_else(|| "no live node".to_string())
    }
}

/// Carries the state's room events to Redis in order, and opens and closes rooms.
async fn write_events(
    cluster: std::sync::Weak<Cluster>,
    host: Arc<dyn ClusterHost>,
    mut rx: mpsc::Receiver<ClusterOutput>,
) {
    while let Some(output) = rx.recv().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        tracing::debug!(node = cluster.node, ?output, "to the cluster");
        match output {
            ClusterOutput::Room {
                app_id,
                room_id,
                event,
            } => {
                if let Err(e) = cluster.write_room_event(app_id, &room_id, event).await {
                    tracing::warn!(error = %e, room_id, "room event not sent to the cluster");
                }
            }
            ClusterOutput::Opened { app_id, room_id } => {
                cluster.rooms.lock().insert((app_id, room_id.clone()));
                cluster
                    .reading
                    .lock()
                    .insert((app_id, room_id.clone()), Vec::new());
                if let Some(sink) = cluster.sink.lock().await.as_mut()
                    && let Err(e) = sink.subscribe(room_channel(app_id, &room_id)).await
                {
                    tracing::warn!(error = %e, room_id, "cannot listen to a room");
                }
                read_room(&cluster, &*host, app_id, &room_id).await;
            }
            ClusterOutput::Closed { app_id, room_id } => {
                cluster.rooms.lock().remove(&(app_id, room_id.clone()));
                if let Some(sink) = cluster.sink.lock().await.as_mut() {
                    let _ = sink.unsubscribe(room_channel(app_id, &room_id)).await;
                }
            }
        }
    }
}

impl Cluster {
    async fn write_room_event(
        &self,
        app_id: u32,
        room_id: &str,
        event: RoomEvent,
    ) -> Result<(), String> {
        let (hash, field, value) = match &event {
            RoomEvent::UserAdd { user } => (
                users_key(app_id, room_id),
                user.user_id.clone(),
                placed_json(&self.node, user),
            ),
            RoomEvent::UserDelete { user_id } => {
                (users_key(app_id, room_id), user_id.clone(), String::new())
            }
            RoomEvent::StreamAdd { stream } => (
                streams_key(app_id, room_id),
                stream.stream_id.clone(),
                placed_json(&self.node, stream),
            ),
            RoomEvent::StreamDelete { stream_id } => (
                streams_key(app_id, room_id),
                stream_id.clone(),
                String::new(),
            ),
            RoomEvent::StreamInfo { stream } => (
                streams_key(app_id, room_id),
                stream.stream_id.clone(),
                placed_json(&self.node, stream),
            ),
            RoomEvent::ExtraInfo { info } => (
                extra_key(app_id, room_id),
                info.key.clone(),
                placed_json(&self.node, info),
            ),
            RoomEvent::Deliver { .. } => (users_key(app_id, room_id), String::new(), String::new()),
        };
        let message = serde_json::to_string(&RoomMessage {
            node: self.node.clone(),
            app_id,
            room_id: room_id.to_string(),
            event,
        })
        .map_err(|e| e.to_string())?;
        let (channel, node) = (room_channel(app_id, room_id), self.node.clone());
        self.redis
            .run(|mut c| async move {
                redis::Script::new(ROOM_EVENT_SCRIPT)
                    .key(hash)
                    .key(channel)
                    .arg(field)
                    .arg(value)
                    .arg(node)
                    .arg(message)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn placed_json<T: Serialize + Clone>(node: &str, item: &T) -> String {
    serde_json::to_string(&Placed {
        node: node.to_string(),
        item: item.clone(),
    })
    .unwrap_or_default()
}

/// Reads who and what other nodes have in a room and gives it to the state.
async fn read_room<H: ClusterHost + ?Sized>(
    cluster: &Cluster,
    host: &H,
    app_id: u32,
    room_id: &str,
) {
    let (users, streams, extra) = (
        users_key(app_id, room_id),
        streams_key(app_id, room_id),
        extra_key(app_id, room_id),
    );
    type Record = (
        HashMap<String, String>,
        HashMap<String, String>,
        HashMap<String, String>,
    );
    let read: redis::RedisResult<Record> = cluster
        .redis
        .run(|mut c| async move {
            let u: HashMap<String, String> = c.hgetall(users).await?;
            let s: HashMap<String, String> = c.hgetall(streams).await?;
            let x: HashMap<String, String> = c.hgetall(extra).await?;
            Ok((u, s, x))
        })
        .await;
    let key = (app_id, room_id.to_string());
    let Ok((users, streams, extra)) = read else {
        tracing::warn!(room_id, "cannot read the room's other nodes");
        let mut reading = cluster.reading.lock();
        for m in reading.remove(&key).unwrap_or_default() {
            apply_room_message(host, m);
        }
        return;
    };
    let me = cluster.node.as_str();
    let users: Vec<(String, User)> = users
        .values()
        .filter_map(|j| serde_json::from_str::<Placed<User>>(j).ok())
        .filter(|p| p.node != me)
        .map(|p| (p.node, p.item))
        .collect();
    let streams: Vec<(String, StreamInfo)> = streams
        .values()
        .filter_map(|j| serde_json::from_str::<Placed<StreamInfo>>(j).ok())
        .filter(|p| p.node != me)
        .map(|p| (p.node, p.item))
        .collect();
    let extra: Vec<(String, onair_protocol::messages::RoomExtraInfo)> = extra
        .values()
        .filter_map(|j| {
            serde_json::from_str::<Placed<onair_protocol::messages::RoomExtraInfo>>(j).ok()
        })
        .filter(|p| p.node != me)
        .map(|p| (p.node, p.item))
        .collect();
    let room_id = room_id.to_string();
    let mut snapshot = Some((users, streams, extra));
    // The record, then what was published while it was read, in one step as the listener
    // sees it.
    let mut reading = cluster.reading.lock();
    host.apply(&mut |s| match snapshot.take() {
        Some((u, st, x)) => s.cluster_snapshot(app_id, &room_id, u, st, x),
        None => Vec::new(),
    });
    for m in reading.remove(&key).unwrap_or_default() {
        apply_room_message(host, m);
    }
}

fn apply_room_message<H: ClusterHost + ?Sized>(host: &H, m: RoomMessage) {
    tracing::debug!(from = m.node, room_id = m.room_id, event = ?m.event, "room event");
    let mut event = Some(m.event);
    host.apply(&mut |s| match event.take() {
        Some(e) => s.cluster_event(&m.node, m.app_id, &m.room_id, e),
        None => Vec::new(),
    });
}

/// The subscription connection: this node's channel and its rooms' channels, reconnected
/// (and resubscribed) after any failure.
async fn listen(cluster: std::sync::Weak<Cluster>, host: Arc<dyn ClusterHost>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let pubsub = match c.redis.client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "cluster subscription: Redis unreachable");
                drop(c);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut ok = sink.subscribe(node_channel(&c.node)).await.is_ok();
        let rooms: Vec<(u32, String)> = c.rooms.lock().iter().cloned().collect();
        for (app_id, room_id) in &rooms {
            ok &= sink.subscribe(room_channel(*app_id, room_id)).await.is_ok();
        }
        if !ok {
            drop(c);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        *c.sink.lock().await = Some(sink);
        // Rooms opened before (re)subscribing: catch up on what happened meanwhile.
        for (app_id, room_id) in &rooms {
            read_room(&c, &*host, *app_id, room_id).await;
        }
        drop(c);
        while let Some(msg) = stream.next().await {
            let Some(c) = cluster.upgrade() else {
                return;
            };
            let h = host.clone();
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            if msg.get_channel_name().starts_with("onair:to:") {
                match serde_json::from_str::<NodeMessage>(&text) {
                    Ok(m) => on_node_message(&c, h, m),
                    Err(e) => tracing::warn!(error = %e, "unreadable cluster request"),
                }
                continue;
            }
            match serde_json::from_str::<RoomMessage>(&text) {
                Ok(m) if m.node != c.node => {
                    let mut reading = c.reading.lock();
                    match reading.get_mut(&(m.app_id, m.room_id.clone())) {
                        Some(waiting) => waiting.push(m),
                        None => apply_room_message(&*h, m),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "unreadable room event"),
            }
        }
        if let Some(c) = cluster.upgrade() {
            *c.sink.lock().await = None;
        }
        tracing::warn!("cluster subscription lost; reconnecting");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn on_node_message(cluster: &Arc<Cluster>, host: Arc<dyn ClusterHost>, message: NodeMessage) {
    match message {
        NodeMessage::PullAnswer { request, result } => {
            if let Some(tx) = cluster.pulls.lock().remove(&request) {
                let _ = tx.send(result);
            }
        }
        NodeMessage::Pull {
            from,
            request,
            app_id,
            stream_id,
            sdp,
        } => {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let result = host.answer_pull(app_id, stream_id.clone(), sdp).await;
                if let Err(e) = &result {
                    tracing::info!(stream_id, from, error = %e, "pull refused");
                }
                let answer = NodeMessage::PullAnswer { request, result };
                if let Err(e) = cluster.send_to(&from, &answer).await {
                    tracing::warn!(error = %e, "pull answer not sent");
                }
            });
        }
    }
}

/// Renews the lease and the stream claims every [`LEASE_EVERY`], tells the state whether
/// Redis answers, rewrites this node's rooms after Redis lost them, and removes nodes whose
/// lease expired.
async fn keep_lease(cluster: std::sync::Weak<Cluster>, host: Arc<dyn ClusterHost>) {
    let mut tick = tokio::time::interval(LEASE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gone: HashSet<String> = HashSet::new();
    let mut cpu_then = (Instant::now(), process_cpu_seconds().unwrap_or(0.0));
    loop {
        tick.tick().await;
        let cpu_now = (Instant::now(), process_cpu_seconds().unwrap_or(0.0));
        let wall = cpu_now.0.duration_since(cpu_then.0).as_secs_f64().max(1e-3);
        let cpu_pct = ((cpu_now.1 - cpu_then.1) / wall * 1000.0).round() / 10.0;
        cpu_then = cpu_now;
        let Some(c) = cluster.upgrade() else {
            return;
        };
        if c.leaving.load(Ordering::SeqCst) {
            return;
        }
        let h = host.clone();
        let (sessions, players, streams) = h.load();
        let lease = NodeLease {
            node_id: c.node.clone(),
            url: c.url.clone(),
            sessions,
            players,
            streams,
            cpu_pct,
        };
        let renewed = c.renew(&lease).await;
        let was_up = c.up.swap(renewed.is_ok(), Ordering::SeqCst);
        match (&renewed, was_up) {
            (Err(e), true) => {
                tracing::warn!(error = %e, "Redis unreachable: new logins are refused");
                *c.up_since.lock() = None;
                h.apply(&mut |s| {
                    s.set_cluster_up(false);
                    Vec::new()
                });
            }
            (Ok(lost), false) => {
                tracing::info!("Redis answers again");
                h.apply(&mut |s| {
                    s.set_cluster_up(true);
                    Vec::new()
                });
                *c.up_since.lock() = Some(Instant::now());
                if *lost {
                    c.rewrite_rooms(&*h).await;
                }
            }
            (Ok(_), true) => {
                // Up from the start: judge at once (only a Redis that came back waits).
                let mut since = c.up_since.lock();
                since.get_or_insert_with(|| {
                    Instant::now()
                        .checked_sub(JUDGE_AFTER)
                        .unwrap_or_else(Instant::now)
                });
            }
            (Err(_), false) => {}
        }
        if renewed.is_err() {
            continue;
        }
        let judging = c
            .up_since
            .lock()
            .is_some_and(|t| t.elapsed() >= JUDGE_AFTER);
        if judging {
            c.sweep_dead(&*h, &mut gone).await;
        }
    }
}

impl Cluster {
    /// Renews the lease and every claim; `Ok(true)` when the lease had vanished (Redis lost
    /// its data, or this node was presumed dead).
    async fn renew(&self, lease: &NodeLease) -> Result<bool, String> {
        let key = lease_key(&self.node);
        let value = serde_json::to_string(lease).map_err(|e| e.to_string())?;
        let node = self.node.clone();
        let ttl = LEASE_TTL.as_millis() as u64;
        let claims: Vec<((u32, String), String)> = self
            .claims
            .lock()
            .iter()
            .map(|(k, u)| (k.clone(), u.clone()))
            .collect();
        let lost: Vec<(u32, String)> = self
            .redis
            .run(|mut c| async move {
                let existed: bool = c.exists(&key).await?;
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await?;
                let _: () = c.sadd("onair:nodes", &node).await?;
                let mut lost = Vec::new();
                if !existed {
                    lost.push((0, String::new()));
                }
                for ((app_id, stream_id), user) in claims {
                    let got: i64 = redis::Script::new(RENEW_SCRIPT)
                        .key(claim_key(app_id, &stream_id))
                        .arg(&node)
                        .arg(ttl)
                        .arg(user)
                        .invoke_async(&mut c)
                        .await?;
                    if got == 0 {
                        lost.push((app_id, stream_id));
                    }
                }
                Ok(lost)
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut lease_lost = false;
        for (app_id, stream_id) in lost {
            if stream_id.is_empty() {
                lease_lost = true;
            } else {
                tracing::warn!(
                    app_id,
                    stream_id,
                    "another node holds a stream ID this node publishes"
                );
            }
        }
        Ok(lease_lost)
    }

    /// Writes this node's users and streams back into its rooms' records and tells the
    /// rooms again (after Redis lost its data).
    async fn rewrite_rooms<H: ClusterHost + ?Sized>(&self, host: &H) {
        let rooms = read(host, |s| s.cluster_local_rooms());
        for (app_id, room_id, users, streams) in rooms {
            for user in users {
                let _ = self
                    .write_room_event(app_id, &room_id, RoomEvent::UserAdd { user })
                    .await;
            }
            for stream in streams {
                let _ = self
                    .write_room_event(app_id, &room_id, RoomEvent::StreamAdd { stream })
                    .await;
            }
        }
    }

    /// Nodes this one has users or streams of whose lease expired: gone from every room
    /// here, and from the records of those rooms.
    async fn sweep_dead<H: ClusterHost + ?Sized>(&self, host: &H, gone: &mut HashSet<String>) {
        let known = read(host, |s| s.cluster_nodes());
        let listed: Vec<String> = self
            .redis
            .run(|mut c| async move { c.smembers("onair:nodes").await })
            .await
            .unwrap_or_default();
        let candidates: BTreeSet<String> = known
            .into_iter()
            .chain(listed)
            .filter(|n| *n != self.node)
            .collect();
        for node in candidates {
            let key = lease_key(&node);
            let alive: redis::RedisResult<bool> = self
                .redis
                .run(|mut c| async move { c.exists(key).await })
                .await;
            match alive {
                Ok(true) => {
                    gone.remove(&node);
                    continue;
                }
                Ok(false) => {}
                Err(_) => return,
            }
            let mut removed = Vec::new();
            host.apply(&mut |s| {
                let (out, r) = s.cluster_node_gone(&node);
                removed = r;
                out
            });
            if gone.insert(node.clone()) {
                tracing::warn!(
                    node,
                    "cluster node gone (its lease expired or was given up)"
                );
            }
            let node_id = node.clone();
            let _: redis::RedisResult<()> = self
                .redis
                .run(|mut c| async move {
                    for room in removed {
                        for u in room.users {
                            let _: i64 = c.hdel(users_key(room.app_id, &room.room_id), u).await?;
                        }
                        for s in room.streams {
                            let _: i64 = c.hdel(streams_key(room.app_id, &room.room_id), s).await?;
                        }
                    }
                    let _: i64 = c.srem("onair:nodes", node_id).await?;
                    Ok(())
                })
                .await;
        }
    }
}
