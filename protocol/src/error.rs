//! Every error Onair reports, as one enum of stable numeric codes.
//!
//! Codes that ZEGO Express also has keep ZEGO's numbers (1002067, 1002033, 1003072, 1003028,
//! 1002050, 1004002) so people who know that SDK recognise them; every other failure has its own
//! number in the same blocks: 1000xxx common and protocol, 1002xxx room and auth, 1003xxx publish,
//! 1004xxx play. `docs/ERRORS.md` is generated from [`ErrorCode::ALL`] (`onair errors --markdown`)
//! and a test keeps the two identical. A code, once released, never changes meaning.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, cause: $cause:literal, fix: $fix:literal; )*) => {
        /// A stable, documented error code. `code()` is the number on the wire and in events.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name, )*
        }

        impl ErrorCode {
            /// Every code, in documentation order.
            pub const ALL: &'static [ErrorCode] = &[ $( ErrorCode::$name, )* ];

            /// The number carried on the wire and in events.
            pub const fn code(self) -> u32 {
                match self { $( ErrorCode::$name => $code, )* }
            }

            /// The variant's name, as written in `docs/ERRORS.md`.
            pub const fn name(self) -> &'static str {
                match self { $( ErrorCode::$name => stringify!($name), )* }
            }

            /// What makes this error happen.
            pub const fn cause(self) -> &'static str {
                match self { $( ErrorCode::$name => $cause, )* }
            }

            /// What the user or developer should do about it.
            pub const fn fix(self) -> &'static str {
                match self { $( ErrorCode::$name => $fix, )* }
            }

            /// The code with this number, if there is one.
            pub fn from_code(code: u32) -> Option<ErrorCode> {
                match code { $( $code => Some(ErrorCode::$name), )* _ => None }
            }
        }
    };
}

error_codes! {
    /// The client speaks a signaling protocol version the relay does not.
    ProtocolVersionUnsupported = 1000001,
        cause: "The `hello` message named a protocol version this relay does not speak.",
        fix: "Use an engine and relay from the same Onair release.";
    /// The message is not valid JSON or not a known request shape.
    MalformedMessage = 1000002,
        cause: "A signaling message was not valid JSON, was binary, had an unknown `type`, or lacked a required field.",
        fix: "Send requests exactly as described in docs/ARCHITECTURE.md (Signaling protocol); check the `message` text for the field.";
    /// The message is larger than the relay accepts.
    MessageTooLarge = 1000003,
        cause: "A signaling message exceeded the relay's `limits.max_message_bytes`. Far larger messages close the connection.",
        fix: "Keep messages small (extra info, SDP); raise `max_message_bytes` in the relay config if needed.";
    /// The session sent requests faster than its allowance.
    RateLimited = 1000004,
        cause: "More requests per second than the relay's `limits.requests_per_second` (with `request_burst`).",
        fix: "Slow down; heartbeats need only one request per interval.";
    /// A request came before `hello`, or `hello` came twice.
    OutOfOrder = 1000005,
        cause: "A request other than `hello` was sent before `hello` succeeded, or `hello` was sent twice.",
        fix: "Send `hello` first and only once per connection.";
    /// The app ID is not configured on the relay.
    UnknownApp = 1000006,
        cause: "The app ID in `hello` is not one of the relay's configured apps.",
        fix: "Use the app ID printed by `onair serve`, or add the app to the relay's TOML config.";
    /// Too many errors in a row; the relay closed the connection.
    AbuseClosed = 1000007,
        cause: "The connection sent many invalid or rate-limited requests in a row, or a message far over the size limit, and the relay closed it.",
        fix: "Fix the client; a well-behaved engine never sees this.";
    /// The relay could not deliver to this connection fast enough.
    SlowConsumer = 1000008,
        cause: "The connection's outgoing queue filled because the client stopped reading.",
        fix: "Keep reading the socket; the engine reconnects and resynchronises by itself.";
    /// The relay session was replaced by a newer connection resuming it.
    SessionSuperseded = 1000009,
        cause: "A new connection resumed this session, so the old connection was closed.",
        fix: "Nothing: this is normal after a network change.";
    /// The relay is shutting down.
    ServerShuttingDown = 1000010,
        cause: "The relay is stopping.",
        fix: "The engine reconnects when the relay is back; nothing to do.";
    /// The engine could not reach the relay.
    ConnectionFailed = 1000011,
        cause: "The engine could not open the WebSocket to the relay (wrong address, relay not running, network down).",
        fix: "Check `server` in the engine profile and that `onair serve` (or the studio's embedded relay) is running.";
    /// A request got no response in time.
    RequestTimeout = 1000012,
        cause: "The relay did not answer a request within the engine's request timeout.",
        fix: "Check the network and the relay's load; the engine retries where it can.";
    /// The engine profile is invalid.
    InvalidProfile = 1000013,
        cause: "The engine profile has an invalid server URL or an app sign that is not 64 hex characters.",
        fix: "Pass `ws://host:port` as `server` and the app sign exactly as the relay prints it.";
    /// The engine was destroyed.
    EngineDestroyed = 1000014,
        cause: "A call was made after `destroy()`.",
        fix: "Create a new engine.";
    /// The engine's command queue is full.
    CommandQueueFull = 1000015,
        cause: "Thousands of calls were made faster than the engine could take them.",
        fix: "Call the engine less often; retry the call.";
    /// An internal error in the relay or engine.
    Internal = 1000016,
        cause: "An internal invariant failed; the session was not affected beyond this request.",
        fix: "Report it with the relay's log.";
    /// The TLS handshake with the relay failed.
    TlsFailed = 1000017,
        cause: "The `wss://` connection to the relay failed its TLS handshake: the relay's certificate is not signed by a trusted authority, has expired, or names another host (the message says which).",
        fix: "Give the relay a certificate for the name or address in the URL; for a development relay started with `--self-signed`, trust its CA (`--ca-cert ~/.config/onair/ca.pem`, `ONAIR_CA_CERT`, or `EngineProfile::ca_cert`).";
    /// The relay did not know the engine's session any more.
    RelaySessionLost = 1000018,
        cause: "On reconnecting, the relay no longer knew this engine's session (it was restarted, or the session expired), so every stream's media was gone with it.",
        fix: "Nothing: the engine publishes and plays again at once; players see the stream back as soon as its publisher is.";
    /// The relay has as many connections as it accepts.
    TooManyConnections = 1000019,
        cause: "The relay holds `limits.max_connections` signaling connections and WebRTC sessions in total, or `limits.max_connections_per_ip` from this client's address, and refused another.",
        fix: "Close connections you no longer use; behind a shared NAT, ask the relay's operator to raise `max_connections_per_ip`. The engine retries by itself.";
    /// Too many HTTP requests from one address.
    HttpRateLimited = 1000020,
        cause: "This address sent more than `limits.http_requests_per_second` HTTP requests (WHIP, WHEP, `/live`, `/metrics`) in a second, beyond the burst allowance; the relay answered 429.",
        fix: "Wait the `Retry-After` seconds and try again; do not retry WHIP/WHEP in a tight loop.";
    /// The relay cannot reach its cluster's Redis.
    ClusterUnavailable = 1000021,
        cause: "The relay runs as a node of a cluster (`onair serve --redis`) and cannot reach Redis, which holds the cluster's rooms, users and stream IDs, so it cannot admit a new login or stream without risking a duplicate. Media already flowing is not affected.",
        fix: "The engine retries by itself; it succeeds once Redis is back (the relay reconnects every second). Operators: check the Redis server named by `--redis`.";
    /// The room ID breaks the ID rules.
    InvalidRoomId = 1002005,
        cause: "Room IDs are 1 to 128 bytes of letters, digits, `-`, `_` and `.`.",
        fix: "Use a room ID that follows the rule.";
    /// The user ID breaks the ID rules.
    InvalidUserId = 1002006,
        cause: "User IDs are 1 to 64 bytes of letters, digits, `-`, `_` and `.`.",
        fix: "Use a user ID that follows the rule.";
    /// The user name is too long.
    InvalidUserName = 1002007,
        cause: "User names are at most 256 bytes.",
        fix: "Shorten the user name.";
    /// The session is not logged into that room.
    NotLoggedIn = 1002001,
        cause: "Logout, publish or another room request named a room this session is not logged into.",
        fix: "Log into the room first; after KICK_OUT or RECONNECT_FAILED log in again.";
    /// The session is already in the room as a different user.
    RoomUserConflict = 1002002,
        cause: "One connection tried to log into the same room twice with different user IDs.",
        fix: "Log out of the room first, or use a second engine for a second user.";
    /// The app has reached its room limit.
    TooManyRooms = 1002010,
        cause: "Creating this room would exceed the relay's `limits.max_rooms_per_app`.",
        fix: "Close unused rooms or raise the limit in the relay config.";
    /// The room is full.
    RoomFull = 1002011,
        cause: "The room has `limits.max_users_per_room` users already.",
        fix: "Use another room or raise the limit.";
    /// The app has reached its user limit.
    TooManyUsers = 1002013,
        cause: "The app has `limits.max_users_per_app` users logged in across its rooms.",
        fix: "Wait for users to leave or raise the limit in the relay config.";
    /// The session is in too many rooms.
    TooManyRoomsForSession = 1002012,
        cause: "This connection is logged into `limits.max_rooms_per_session` rooms already.",
        fix: "Log out of a room first or raise the limit.";
    /// The user has too many sessions.
    TooManySessionsForUser = 1002014,
        cause: "This user ID is already logged in from `limits.max_sessions_per_user` sessions (connections or WHIP/WHEP resources) in this app.",
        fix: "Log out the user's unused sessions, or give each device its own user ID.";
    /// Too many WHIP/WHEP sessions.
    TooManyHttpSessions = 1002015,
        cause: "The app already has `limits.max_http_sessions_per_app` WHIP/WHEP resources, or this token's user has `limits.max_http_sessions_per_user`.",
        fix: "DELETE resources you no longer use (their `Location`); a second POST for the same room, stream and user replaces the first.";
    /// The token is malformed, wrongly signed or expired.
    TokenInvalid = 1002033,
        cause: "The token is not a valid HS256 JWT signed with this app's sign, or it has expired (`extended_data` says which).",
        fix: "Mint a fresh token with `onair token` (or your server) using this app's sign.";
    /// The token is for another app.
    TokenWrongApp = 1002034,
        cause: "The token's `app_id` claim is not the app this engine logged in with.",
        fix: "Mint the token for the same app ID as the engine profile.";
    /// The token is for another user.
    TokenWrongUser = 1002035,
        cause: "The token's `user_id` claim is not the user logging in.",
        fix: "Mint the token for the user ID passed to login_room.";
    /// The token is limited to another room.
    TokenWrongRoom = 1002036,
        cause: "The token carries a `room_id` claim for a different room.",
        fix: "Mint a token without `--room`, or for this room.";
    /// The token does not grant login.
    TokenNoLoginPrivilege = 1002037,
        cause: "The token's privileges do not include login.",
        fix: "Mint the token with the login privilege (the default).";
    /// The app does not accept app-sign login.
    AppSignNotAllowed = 1002038,
        cause: "The app is configured with `allow_app_sign = false`, so only tokens are accepted.",
        fix: "Log in with a token.";
    /// The app sign is wrong.
    AppSignInvalid = 1002039,
        cause: "The app sign sent at login does not match the app's sign.",
        fix: "Use the app sign printed by `onair serve` or set in the relay config.";
    /// Kicked out: the same user logged in elsewhere.
    KickedOut = 1002050,
        cause: "Another connection logged into this room with the same user ID, so this one was removed.",
        fix: "Use distinct user IDs per device, or log in again to take the seat back.";
    /// Removed from the room: its token expired.
    TokenExpiredKicked = 1002054,
        cause: "The token this session logged into the room with expired and was not renewed, so the relay removed the session from the room (its streams and plays there ended). The relay warns 30 s before (`RoomTokenWillExpire`).",
        fix: "On `RoomTokenWillExpire`, mint a new token and call `renew_token(room_id, token)`; or log in again with a fresh token.";
    /// The relay removed the session after missed heartbeats.
    HeartbeatTimeout = 1002053,
        cause: "The relay heard nothing from this session for `limits.heartbeat_timeout_ms` and removed it with its streams.",
        fix: "Keep the process and network alive; the engine logs in again by itself when it can.";
    /// Login needs a token or the app sign.
    NoCredentials = 1002067,
        cause: "Login carried neither a token nor an app sign.",
        fix: "Pass `RoomConfig.token`, or create the engine with the app sign.";
    /// The engine gave up reconnecting.
    ReconnectGaveUp = 1002070,
        cause: "The connection stayed down longer than the engine's `reconnect_timeout`.",
        fix: "Check the network and the relay, then log in again.";
    /// The stream ID breaks the ID rules.
    InvalidStreamId = 1003005,
        cause: "Stream IDs are 1 to 256 bytes of letters, digits, `-`, `_` and `.`.",
        fix: "Use a stream ID that follows the rule.";
    /// Stop of a stream this session does not publish.
    NotPublishing = 1003010,
        cause: "A stop-publishing request named a stream this session is not publishing.",
        fix: "Only stop streams you started.";
    /// The session publishes too many streams.
    TooManyStreams = 1003011,
        cause: "This connection already publishes `limits.max_streams_per_session` streams.",
        fix: "Stop a stream first or raise the limit.";
    /// The extra info is too long.
    ExtraInfoTooLong = 1003012,
        cause: "Stream extra info is at most 1024 bytes.",
        fix: "Shorten the extra info.";
    /// The publisher's WebRTC connection could not be set up or failed.
    MediaNegotiationFailed = 1003020,
        cause: "The relay could not answer the publisher's WebRTC offer, or the media connection failed later (ICE, DTLS, or no media), or stayed disconnected longer than the engine's peer disconnect grace (5 s by default).",
        fix: "The engine retries by itself; check that UDP between engine and relay is open.";
    /// The publisher's WebRTC connection did not come up in time.
    PublishConnectTimeout = 1003021,
        cause: "The publisher's WebRTC connection did not reach Connected within the engine's peer connect timeout (10 s by default) after the relay answered, or the relay did not answer the publish request within that time.",
        fix: "The engine retries by itself, waiting 1, 2, 4 … up to 16 s between attempts. Check that UDP between engine and relay is open and, when the relay is on another host or behind NAT, that its `[rtc] public_ips` names an address this host can reach.";
    /// The stream ID is already being published.
    StreamIdTaken = 1003028,
        cause: "Another publisher in this app (in any room) is already publishing this stream ID.",
        fix: "Stream IDs must be unique within an app: pick another one, or stop the other publisher first.";
    /// Publishing is not allowed by the token.
    PublishNotAuthorized = 1003072,
        cause: "The token used to log into this room does not grant the publish privilege.",
        fix: "Mint the token with `--publish`.";
    /// The token does not list this stream ID.
    StreamIdNotAuthorized = 1003073,
        cause: "The token used to log into this room carries a `stream_id_list`, and this stream ID is not in it.",
        fix: "Publish one of the listed stream IDs, or mint the token with this one (`onair token --stream-id ID`).";
    /// The room message is too long.
    MessageTooLong = 1009001,
        cause: "A broadcast message, barrage message or custom command is longer than 1 KiB (1024 bytes of UTF-8), or empty.",
        fix: "Send at most 1024 bytes; split longer text.";
    /// Room messages are sent too fast.
    MessageRateLimited = 1009002,
        cause: "The room already carried 10 broadcast messages (or 20 barrage messages) in the last second, ZEGO's limits.",
        fix: "Send less often; batch text into fewer messages; a barrage may simply be dropped.";
    /// A custom command names no one in the room.
    CommandNoRecipients = 1009003,
        cause: "None of the users a custom command was addressed to is in the room.",
        fix: "Address users from the room's user list, or an empty list for everyone.";
    /// The room extra info key is too long.
    ExtraInfoKeyInvalid = 1009010,
        cause: "A room extra info key is empty or longer than 128 bytes.",
        fix: "Use a key of 1 to 128 bytes.";
    /// The room extra info value is too long.
    ExtraInfoValueTooLong = 1009011,
        cause: "A room extra info value is longer than 4 KiB (4096 bytes).",
        fix: "Keep values at most 4096 bytes; store larger data elsewhere and put its address here.";
    /// The room has too many extra info keys.
    TooManyExtraInfoKeys = 1009012,
        cause: "The room already has 10 extra info keys, ZEGO's limit, and this one is new.",
        fix: "Reuse a key (setting it again replaces its value) or keep fewer keys.";
    /// The SEI data is too long.
    SeiTooLong = 1009020,
        cause: "`send_sei` was given more than 4 KiB (4096 bytes), ZEGO's limit, or nothing.",
        fix: "Send at most 4096 bytes per call; put larger data in room extra info or a custom command.";
    /// SEI is sent too often.
    SeiRateLimited = 1009021,
        cause: "This channel already queued 30 SEI messages in the last second, ZEGO's limit (one per frame at 30 fps).",
        fix: "Send at most 30 a second; merge data that belongs to one frame into one call.";
    /// SEI needs a publishing channel.
    SeiNotPublishing = 1009022,
        cause: "`send_sei` was called for a channel that is not publishing (its video encoder is not running), so no frame could carry the data.",
        fix: "Call it after `PublisherStateUpdate` reports Publishing for the channel.";
    /// No camera on this machine.
    NoCamera = 1006001,
        cause: "No video capture device was found (no /dev/video*, or none that nokhwa can open).",
        fix: "Connect a camera, or use the test source (`VideoSource::Test`) or a media file.";
    /// The camera could not be opened.
    CameraOpenFailed = 1006002,
        cause: "The camera exists but could not be opened or started (busy, no permission, or it stopped delivering frames).",
        fix: "Close other programs using it, check permissions (the `video` group on Linux), or pick another device.";
    /// The camera cannot deliver the requested format.
    CameraFormatUnsupported = 1006003,
        cause: "The camera offers no format close to the requested resolution and frame rate that Onair can convert.",
        fix: "Pick one of the formats `list_cameras()` reports.";
    /// No microphone on this machine.
    NoMicrophone = 1006010,
        cause: "No audio input device was found.",
        fix: "Connect a microphone, or use the tone generator or a media file as the audio source.";
    /// The microphone could not be opened.
    MicrophoneOpenFailed = 1006011,
        cause: "The audio input exists but could not be opened or started (busy, unsupported format, no permission).",
        fix: "Close other programs using it or pick another device.";
    /// The media file could not be opened or decoded.
    MediaFileOpenFailed = 1006020,
        cause: "FFmpeg could not open or read the media file (missing, unreadable, or an unknown format).",
        fix: "Check the path; use a file FFmpeg can play.";
    /// The media file has nothing to play.
    MediaFileNoStream = 1006021,
        cause: "The media file has no video or audio stream Onair can decode.",
        fix: "Use a file with H.264, VP8/9, AV1 or another common video codec, or a common audio codec.";
    /// A codec is missing from the FFmpeg build.
    CodecUnavailable = 1007001,
        cause: "The FFmpeg libraries on this machine lack libx264, libopus or the H.264 decoder.",
        fix: "Install Debian's FFmpeg (`libavcodec-dev`, which is built with libx264 and libopus).";
    /// Encoding failed.
    EncodeFailed = 1007002,
        cause: "The encoder rejected a frame or its settings.",
        fix: "Check the video config; report the log if it persists.";
    /// Decoding failed.
    DecodeFailed = 1007003,
        cause: "A packet could not be decoded (corrupt, or from an unsupported stream).",
        fix: "Usually transient after loss: the next keyframe recovers it.";
    /// The video config is out of range.
    InvalidVideoConfig = 1007004,
        cause: "Width and height must be even and 16–4096, fps 1–120, bitrate 10–100,000 kbps.",
        fix: "Use a preset (`VideoConfig::preset`) or values in range.";
    /// The publish channel does not exist.
    InvalidChannel = 1007005,
        cause: "The channel index is not one of the engine's publish channels (0 = main, 1 = aux).",
        fix: "Use `PublishChannel::Main` or `PublishChannel::Aux`.";
    /// The stream does not exist.
    StreamNotFound = 1004002,
        cause: "The stream ID names no stream being published in this app.",
        fix: "Check the stream ID; wait for a roomStreamUpdate Add before playing.";
    /// The player's WebRTC connection could not be set up.
    PlayNegotiationFailed = 1004020,
        cause: "The relay could not answer the player's WebRTC offer, or the media connection failed later (ICE, DTLS), or stayed disconnected longer than the engine's peer disconnect grace (5 s by default).",
        fix: "The engine retries by itself; check that UDP between engine and relay is open.";
    /// The player's WebRTC connection did not come up in time.
    PlayConnectTimeout = 1004021,
        cause: "The player's WebRTC connection did not reach Connected within the engine's peer connect timeout (10 s by default) after the relay answered, or the relay did not answer the play request within that time.",
        fix: "The engine retries by itself, waiting 1, 2, 4 … up to 16 s between attempts. Check that UDP between engine and relay is open and, when the relay is on another host or behind NAT, that its `[rtc] public_ips` names an address this host can reach.";
    /// Not allowed to play this stream.
    PlayNotAuthorized = 1004030,
        cause: "The session is not logged into the stream's room (and the app does not set `cross_room_play`), or it left that room (logout; kick-out and token expiry carry their own codes), so the relay refused or stopped the play.",
        fix: "Log into the stream's room before playing it; for cross-room co-hosting, set `cross_room_play = true` on the app in the relay config.";
    /// The session plays too many streams.
    TooManyPlays = 1004031,
        cause: "This session already plays `limits.max_plays_per_session` streams through the relay.",
        fix: "Stop playing streams nobody watches, or raise the limit in the relay config.";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// An error as it travels on the wire: a code and a human-readable message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("error {code}: {message}")]
pub struct WireError {
    /// One of [`ErrorCode`]'s numbers.
    pub code: u32,
    /// What went wrong, for people; never contains a token or app sign.
    pub message: String,
}

impl WireError {
    /// An error with `code` and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.code(),
            message: message.into(),
        }
    }
}

/// `docs/ERRORS.md`, generated from [`ErrorCode::ALL`].
pub fn errors_markdown() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         Generated by `onair errors --markdown` from `protocol/src/error.rs`; a test keeps this file \
         identical to the code. Numbers that ZEGO Express also uses keep ZEGO's meaning. \
         Codes appear in `RoomStateChanged.error_code`, in relay error responses \
         (`{\"type\":\"response\",\"error\":{\"code\":…}}`) and in the relay's `/metrics`.\n\n\
         | code | name | cause | fix |\n|---:|---|---|---|\n",
    );
    let mut all: Vec<ErrorCode> = ErrorCode::ALL.to_vec();
    all.sort_by_key(|c| c.code());
    for c in all {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            c.code(),
            c.name(),
            c.cause().replace('|', "\\|"),
            c.fix().replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert_eq!(ErrorCode::from_code(c.code()), Some(*c));
        }
        assert_eq!(ErrorCode::from_code(42), None);
    }

    #[test]
    fn zego_numbers_are_kept() {
        assert_eq!(ErrorCode::NoCredentials.code(), 1002067);
        assert_eq!(ErrorCode::TokenInvalid.code(), 1002033);
        assert_eq!(ErrorCode::PublishNotAuthorized.code(), 1003072);
        assert_eq!(ErrorCode::StreamIdTaken.code(), 1003028);
        assert_eq!(ErrorCode::KickedOut.code(), 1002050);
        assert_eq!(ErrorCode::StreamNotFound.code(), 1004002);
    }
}
