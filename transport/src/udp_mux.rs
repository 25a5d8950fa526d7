//! One UDP port for every peer connection of a relay (LiveKit's `rtc.udp_port`): datagrams
//! arriving on the shared socket go to their connection by the ICE username of a STUN
//! binding request (`<our ufrag>:<their ufrag>`), then by the remote address that request
//! came from. The rules are the sans-I/O [`MuxTable`]; the rest is glue that plugs the shared
//! socket into webrtc-rs through its `Runtime::wrap_udp_socket` hook, so the stack itself is
//! unchanged: each connection still "binds" an ephemeral socket, which is closed at once and
//! kept only as the connection's label for its host candidate (the SDP handed out carries
//! the shared port instead, see [`crate::peer::MediaNetwork::advertise`]).
//!
//! Only answering connections may share the port: two connections that are both muxed on each
//! end would share one remote address, and DTLS/SRTP carry nothing to tell them apart.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    Transmit,
};

/// Datagrams queued for one connection before the newest are dropped (a 720p keyframe is
/// about 60 packets; a connection's driver drains its queue far faster than the link fills it).
const QUEUE: usize = 1024;

/// Send and receive buffers of a shared socket: every connection's traffic crosses it.
const SOCKET_BUFFER: usize = 8 << 20;

/// A connection on a shared socket.
pub type SlotId = u64;

/// Remote addresses a connection holds at most (its peer's candidates, and a new one after
/// a move); the oldest goes first.
const ADDRESSES_PER_CONNECTION: usize = 8;

/// Which connection a datagram on the shared port belongs to (sans-I/O).
#[derive(Debug, Default)]
pub struct MuxTable {
    by_ufrag: HashMap<String, SlotId>,
    by_addr: HashMap<SocketAddr, SlotId>,
    /// Each connection's addresses, oldest first.
    addrs_of: HashMap<SlotId, std::collections::VecDeque<SocketAddr>>,
}

impl MuxTable {
    /// A connection whose local ICE username fragment is `ufrag`.
    pub fn register(&mut self, ufrag: &str, slot: SlotId) {
        self.by_ufrag.insert(ufrag.to_string(), slot);
    }

    /// Forgets a connection: its ufrag and every address learned for it.
    pub fn remove(&mut self, slot: SlotId) {
        self.by_ufrag.retain(|_, s| *s != slot);
        for addr in self.addrs_of.remove(&slot).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&slot) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The connection `datagram` from `from` is for. A binding request goes by the ufrag it
    /// names (an unknown one is dropped) and binds nothing: anyone who knows a ufrag can send
    /// one, from any address. Anything else (STUN answers, DTLS, SRTP) goes by address.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<SlotId> {
        if let Some(ufrag) = stun_local_ufrag(datagram) {
            return self.by_ufrag.get(ufrag).copied();
        }
        self.by_addr.get(&from).copied()
    }

    /// `slot` sends `datagram` to `to`. A binding success response means its ICE agent
    /// checked the request's integrity: `to` is its peer's now (a peer that moved, or an ICE
    /// restart), whoever held it. Anything else it sends claims `to` only if nobody holds it
    /// (our checks may be answered before the peer's first request arrives).
    pub fn on_send(&mut self, to: SocketAddr, datagram: &[u8], slot: SlotId) {
        let answered = is_binding_success(datagram);
        match self.by_addr.get(&to) {
            Some(s) if *s == slot => return,
            Some(_) if !answered => return,
            _ => {}
        }
        if let Some(previous) = self.by_addr.insert(to, slot)
            && let Some(list) = self.addrs_of.get_mut(&previous)
        {
            list.retain(|a| *a != to);
        }
        let list = self.addrs_of.entry(slot).or_default();
        list.push_back(to);
        if list.len() > ADDRESSES_PER_CONNECTION
            && let Some(oldest) = list.pop_front()
            && self.by_addr.get(&oldest) == Some(&slot)
        {
            self.by_addr.remove(&oldest);
        }
    }

    /// Remote addresses held, over all connections.
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }

    /// Connections registered.
    pub fn len(&self) -> usize {
        self.by_ufrag.len()
    }

    /// No connection registered.
    pub fn is_empty(&self) -> bool {
        self.by_ufrag.is_empty()
    }
}

/// A STUN binding success response (what an ICE agent sends only to a request that passed
/// its integrity check).
pub fn is_binding_success(datagram: &[u8]) -> bool {
    datagram.len() >= 20
        && datagram[0..2] == [0x01, 0x01]
        && datagram[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

/// The local ufrag of a STUN binding request: the part of its USERNAME before the colon
/// (RFC 8445 §7.2.2: the receiver's fragment comes first). None for anything else.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
    const USERNAME: u16 = 0x0006;
    if datagram.len() < 20 || datagram[0..2] != BINDING_REQUEST || datagram[4..8] != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let body = datagram.get(20..20 + length)?;
    let mut at = 0;
    while let Some(header) = body.get(at..at + 4) {
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Counters of a [`UdpMux`], for `/metrics`.
#[derive(Debug, Default)]
pub struct MuxCounters {
    /// Datagrams that matched no connection (stale peers, scans).
    pub unrouted: AtomicU64,
    /// Datagrams dropped because a connection's queue or the socket's send buffer was full.
    pub dropped: AtomicU64,
}

/// One shared UDP port, bound on each address media is served on.
pub struct UdpMux {
    /// The port every address shares (0 until the first bind picks one, when asked for 0).
    port: parking::Mutex<u16>,
    sockets: parking::Mutex<HashMap<IpAddr, Arc<Shared>>>,
    next_slot: AtomicU64,
    counters: Arc<MuxCounters>,
}

impl fmt::Debug for UdpMux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = *self.port.lock();
        let addresses: Vec<IpAddr> = self.sockets.lock().keys().copied().collect();
        f.debug_struct("UdpMux")
            .field("port", &port)
            .field("addresses", &addresses)
            .finish()
    }
}

/// A std mutex that shrugs off poisoning: the tables stay usable after a panicking holder
/// (which would be a bug elsewhere, not a reason to stop every connection).
mod parking {
    pub struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Mutex(std::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

struct Routes {
    table: MuxTable,
    queues: HashMap<SlotId, mpsc::Sender<(Bytes, SocketAddr)>>,
}

/// The socket of one address and its routes; its reader task ends when it is dropped.
struct Shared {
    socket: Arc<tokio::net::UdpSocket>,
    local: SocketAddr,
    routes: Arc<parking::Mutex<Routes>>,
    reader: tokio::task::AbortHandle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl UdpMux {
    /// A mux on `port` (0: one port chosen at the first bind, then shared by every address).
    /// Nothing is bound until [`UdpMux::bind`] or a connection needs an address.
    pub fn new(port: u16) -> Arc<UdpMux> {
        Arc::new(UdpMux {
            port: parking::Mutex::new(port),
            sockets: parking::Mutex::new(HashMap::new()),
            next_slot: AtomicU64::new(1),
            counters: Arc::new(MuxCounters::default()),
        })
    }

    /// Binds the shared port on `ip` now (a relay does this at start-up, so a port already
    /// in use is an error there, not a silent fallback later). Must run inside a tokio
    /// runtime. Returns the bound address.
    pub fn bind(&self, ip: IpAddr) -> io::Result<SocketAddr> {
        self.shared_for(ip).map(|s| s.local)
    }

    /// The shared port of `ip`, if it is bound there (host candidates on other addresses
    /// keep their own port).
    pub fn port_on(&self, ip: IpAddr) -> Option<u16> {
        self.sockets.lock().get(&ip).map(|s| s.local.port())
    }

    /// The addresses bound.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = self.sockets.lock().values().map(|s| s.local).collect();
        out.sort();
        out
    }

    /// Datagrams unrouted and dropped so far.
    pub fn counters(&self) -> &MuxCounters {
        &self.counters
    }

    /// Connections on the mux now.
    pub fn connections(&self) -> usize {
        self.sockets
            .lock()
            .values()
            .map(|s| s.routes.lock().queues.len())
            .sum()
    }

    fn shared_for(&self, ip: IpAddr) -> io::Result<Arc<Shared>> {
        let mut sockets = self.sockets.lock();
        if let Some(shared) = sockets.get(&ip) {
            return Ok(shared.clone());
        }
        let mut port = self.port.lock();
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(SocketAddr::new(ip, 0)),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if ip.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        // Best effort: a kernel cap on buffer sizes is not a reason to refuse.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.set_nonblocking(true)?;
        socket
            .bind(&SocketAddr::new(ip, *port).into())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot bind the media port {ip}:{}: {e} (choose another with \
                         --udp-port or [rtc] udp_port)",
                        *port
                    ),
                )
            })?;
        let socket = Arc::new(tokio::net::UdpSocket::from_std(socket.into())?);
        let local = socket.local_addr()?;
        *port = local.port();
        let routes = Arc::new(parking::Mutex::new(Routes {
            table: MuxTable::default(),
            queues: HashMap::new(),
        }));
        let reader = tokio::spawn(read_loop(
            socket.clone(),
            routes.clone(),
            self.counters.clone(),
        ))
        .abort_handle();
        let shared = Arc::new(Shared {
            socket,
            local,
            routes,
            reader,
        });
        sockets.insert(ip, shared.clone());
        tracing::debug!(%local, "media port bound");
        Ok(shared)
    }

    /// A connection's socket on `label`'s address, receiving what is routed to `ufrag`.
    fn open(&self, label: SocketAddr, ufrag: &str) -> io::Result<MuxSocket> {
        let shared = self.shared_for(label.ip())?;
        let slot = self.next_slot.fetch_add(1, Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        {
            let mut routes = shared.routes.lock();
            routes.table.register(ufrag, slot);
            routes.queues.insert(slot, tx);
        }
        Ok(MuxSocket {
            shared,
            slot,
            label,
            rx: parking::Mutex::new(rx),
            known: parking::Mutex::new(Vec::new()),
            counters: self.counters.clone(),
        })
    }
}

/// Routes every datagram arriving on `socket` to its connection's queue.
async fn read_loop(
    socket: Arc<tokio::net::UdpSocket>,
    routes: Arc<parking::Mutex<Routes>>,
    counters: Arc<MuxCounters>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // An ICMP unreachable for an earlier send surfaces here; it concerns one peer.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "media port: receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let datagram = &buf[..n];
        let mut routes = routes.lock();
        let Some(slot) = routes.table.route(from, datagram) else {
            counters.unrouted.fetch_add(1, Relaxed);
            continue;
        };
        let delivered = routes
            .queues
            .get(&slot)
            .is_some_and(|q| q.try_send((Bytes::copy_from_slice(datagram), from)).is_ok());
        if !delivered {
            counters.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// One connection's view of a shared socket.
struct MuxSocket {
    shared: Arc<Shared>,
    slot: SlotId,
    /// The address webrtc-rs knows this socket by (its own ephemeral bind).
    label: SocketAddr,
    rx: parking::Mutex<mpsc::Receiver<(Bytes, SocketAddr)>>,
    /// Destinations already bound to this connection in the table (few: the peer's
    /// candidates), so a send takes the shared lock only for a new one.
    known: parking::Mutex<Vec<SocketAddr>>,
    counters: Arc<MuxCounters>,
}

impl fmt::Debug for MuxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxSocket")
            .field("shared", &self.shared.local)
            .field("label", &self.label)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Drop for MuxSocket {
    fn drop(&mut self) {
        let mut routes = self.shared.routes.lock();
        routes.table.remove(self.slot);
        routes.queues.remove(&self.slot);
    }
}

impl MuxSocket {
    fn send_one(&self, contents: &[u8], to: SocketAddr) -> io::Result<()> {
        match self.shared.socket.try_send_to(contents, to) {
            Ok(_) => Ok(()),
            // Many connections share the socket and tokio wakes only the last waiter on
            // writability, so a full send buffer drops the datagram, as a full link would.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.counters.dropped.fetch_add(1, Relaxed);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

impl AsyncUdpSocket for MuxSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.label)
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let to = transmit.destination;
        let contents = transmit.contents;
        if is_binding_success(contents) {
            // A few a second per connection (its peer's checks): each (re)binds `to`.
            self.shared
                .routes
                .lock()
                .table
                .on_send(to, contents, self.slot);
        } else {
            let mut known = self.known.lock();
            if !known.contains(&to) {
                if known.len() >= 32 {
                    known.clear();
                }
                known.push(to);
                self.shared
                    .routes
                    .lock()
                    .table
                    .on_send(to, contents, self.slot);
            }
        }
        let result = match transmit.segment_size {
            Some(size) if size > 0 && size < contents.len() => contents
                .chunks(size)
                .try_for_each(|chunk| self.send_one(chunk, to)),
            _ => self.send_one(contents, to),
        };
        Poll::Ready(result.map(|()| contents.len()))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let max = bufs.len().min(meta.len());
        if max == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut rx = self.rx.lock();
        let first = match rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(Err(io::Error::other("media port closed"))),
            Poll::Ready(Some(d)) => d,
        };
        let mut fill = |i: usize, (data, from): (Bytes, SocketAddr)| {
            let len = data.len().min(bufs[i].len());
            bufs[i][..len].copy_from_slice(&data[..len]);
            let mut m = RecvMeta::default();
            m.addr = from;
            m.len = len;
            m.stride = len.max(1);
            m.dst_ip = Some(self.label.ip());
            meta[i] = m;
        };
        fill(0, first);
        let mut n = 1;
        while n < max {
            match rx.try_recv() {
                Ok(d) => {
                    fill(n, d);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        Poll::Ready(Ok(n))
    }
}

/// The runtime one muxed connection is built with: the default (tokio) runtime, except that
/// its UDP sockets are views of the shared port routed by `ufrag` (set as the connection's
/// static ICE credentials, which an ICE restart keeps).
pub struct MuxRuntime {
    inner: Arc<dyn Runtime>,
    mux: Arc<UdpMux>,
    ufrag: String,
}

impl MuxRuntime {
    /// `inner` with UDP on `mux` for the connection whose local ufrag is `ufrag`.
    pub fn new(inner: Arc<dyn Runtime>, mux: Arc<UdpMux>, ufrag: String) -> MuxRuntime {
        MuxRuntime { inner, mux, ufrag }
    }
}

impl fmt::Debug for MuxRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxRuntime")
            .field("mux", &self.mux)
            .field("ufrag", &self.ufrag)
            .finish()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Runtime for MuxRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let label = socket.local_addr()?;
        match self.mux.open(label, &self.ufrag) {
            Ok(muxed) => Ok(Arc::new(muxed)),
            Err(e) => {
                // An address that appeared after start-up and cannot take the shared port:
                // this connection keeps its own socket there (its candidate keeps its port).
                tracing::warn!(%label, error = %e, "media port: not shared on this address");
                self.inner.wrap_udp_socket(socket)
            }
        }
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> BoxFuture<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio+udp-mux"
    }
}

/// The addresses a relay serving on `bind` shares its port on: each address as given, an
/// unspecified one expanded to every interface of its family that is not loopback or
/// link-local (what webrtc-rs binds for it), or kept as it is when there is none.
pub fn expand_bind(bind: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let interfaces: Vec<IpAddr> = rtc::shared::ifaces::ifaces()
        .map(|list| {
            list.into_iter()
                .filter_map(|i| i.addr.map(|a| a.ip()))
                .collect()
        })
        .unwrap_or_default();
    for ip in bind {
        if !ip.is_unspecified() {
            if !out.contains(ip) {
                out.push(*ip);
            }
            continue;
        }
        let usable: Vec<IpAddr> = interfaces
            .iter()
            .copied()
            .filter(|i| i.is_ipv4() == ip.is_ipv4())
            .filter(|i| !i.is_loopback() && !i.is_unspecified() && !is_link_local(i))
            .collect();
        if usable.is_empty() {
            out.push(*ip);
        }
        for i in usable {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request as a peer sends it: USERNAME `to:from` after another attribute.
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // PRIORITY (0x0024), 4 bytes.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut out = vec![0x00, 0x01];
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        out.extend_from_slice(&[7; 12]);
        out.extend_from_slice(&attrs);
        out
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn the_local_ufrag_is_read_from_a_binding_request_only() {
        assert_eq!(
            stun_local_ufrag(&binding_request("relayU:peerU")),
            Some("relayU")
        );
        let mut response = binding_request("relayU:peerU");
        response[0] = 0x01; // 0x0101: a success response
        assert_eq!(stun_local_ufrag(&response), None);
        assert_eq!(stun_local_ufrag(&[0x80, 0x60, 0, 1]), None, "RTP");
        assert_eq!(stun_local_ufrag(&[22, 254, 253, 0, 0]), None, "DTLS");
        // Truncated or lying lengths are not read past the datagram.
        let whole = binding_request("relayU:peerU");
        for cut in 0..whole.len() {
            let _ = stun_local_ufrag(&whole[..cut]);
        }
        let mut lying = whole.clone();
        lying[3] = 0xff;
        assert_eq!(stun_local_ufrag(&lying), None);
    }

    /// What a connection's agent sends back to a request it authenticated.
    fn binding_success() -> Vec<u8> {
        let mut out = binding_request("x:y");
        out[0] = 0x01;
        out
    }

    #[test]
    fn answered_requests_bind_addresses_and_the_rest_follows_them() {
        let mut t = MuxTable::default();
        t.register("aaaa", 1);
        t.register("bbbb", 2);
        let (p, q) = (addr("10.0.0.5:5000"), addr("10.0.0.6:6000"));
        assert_eq!(t.route(p, b"\x80\x60media"), None, "unknown address");
        assert_eq!(t.route(p, &binding_request("aaaa:x")), Some(1));
        assert_eq!(
            t.route(p, b"\x80\x60media"),
            None,
            "a request alone binds nothing (anyone knowing the ufrag may send one)"
        );
        t.on_send(p, &binding_success(), 1);
        assert_eq!(t.route(q, &binding_request("bbbb:y")), Some(2));
        t.on_send(q, &binding_success(), 2);
        assert_eq!(t.route(p, b"\x80\x60media"), Some(1));
        assert_eq!(t.route(q, b"\x17\xfe\xfddtls"), Some(2));
        // An unknown ufrag from a known address does not steal it.
        assert_eq!(t.route(p, &binding_request("zzzz:y")), None);
        assert_eq!(t.route(p, b"\x80\x60media"), Some(1));
        // A request for connection 2 from p, unanswered (a spoofed source): p stays 1's.
        assert_eq!(t.route(p, &binding_request("bbbb:y2")), Some(2));
        assert_eq!(t.route(p, b"\x80\x60media"), Some(1));
        // Answered (the peer moved there, or restarted ICE): p is 2's now.
        t.on_send(p, &binding_success(), 2);
        assert_eq!(t.route(p, b"\x80\x60media"), Some(2));
        t.remove(2);
        assert_eq!(t.route(p, b"\x80\x60media"), None);
        assert_eq!(t.route(q, &binding_request("bbbb:y")), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn a_send_claims_its_destination_unless_another_holds_it() {
        let mut t = MuxTable::default();
        t.register("aaaa", 1);
        t.register("bbbb", 2);
        let p = addr("10.0.0.5:5000");
        t.on_send(p, b"\x00\x01check", 1);
        assert_eq!(t.route(p, b"\x80answer"), Some(1));
        t.on_send(p, b"\x00\x01check", 2);
        assert_eq!(t.route(p, b"\x80answer"), Some(1));
    }

    #[test]
    fn a_connection_holds_a_bounded_number_of_addresses() {
        let mut t = MuxTable::default();
        t.register("aaaa", 1);
        for port in 0..100u16 {
            t.on_send(
                SocketAddr::from(([10, 0, 0, 5], 5000 + port)),
                &binding_success(),
                1,
            );
        }
        assert_eq!(t.addresses(), ADDRESSES_PER_CONNECTION);
        // The newest stay.
        assert_eq!(t.route(addr("10.0.0.5:5099"), b"\x80media"), Some(1));
        assert_eq!(t.route(addr("10.0.0.5:5000"), b"\x80media"), None);
    }

    #[test]
    fn wildcards_expand_to_interfaces_and_given_addresses_stay() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(expand_bind(&[lo]), vec![lo]);
        let any = expand_bind(&[IpAddr::from([0, 0, 0, 0])]);
        assert!(!any.is_empty());
        assert!(any.iter().all(|ip| ip.is_ipv4() && !ip.is_loopback()));
    }
}
