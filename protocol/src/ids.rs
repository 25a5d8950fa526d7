//! The ID rules shared by the engine and the relay: which room, user and stream IDs are valid.
//!
//! Room ID ≤ 128 bytes, user ID ≤ 64 bytes, stream ID ≤ 256 bytes, each of ASCII letters, digits
//! and `-_.`; user name ≤ 256 bytes of any UTF-8. Both sides check, so a bad ID fails fast locally
//! and a hand-written client still cannot get one past the relay.

use crate::error::ErrorCode;

/// Longest room ID, in bytes.
pub const MAX_ROOM_ID: usize = 128;
/// Longest user ID, in bytes.
pub const MAX_USER_ID: usize = 64;
/// Longest stream ID, in bytes.
pub const MAX_STREAM_ID: usize = 256;
/// Longest user name, in bytes.
pub const MAX_USER_NAME: usize = 256;
/// Longest stream extra info, in bytes.
pub const MAX_EXTRA_INFO: usize = 1024;

fn valid_id(id: &str, max: usize) -> bool {
    !id.is_empty()
        && id.len() <= max
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a room ID.
pub fn check_room_id(id: &str) -> Result<(), ErrorCode> {
    valid_id(id, MAX_ROOM_ID)
        .then_some(())
        .ok_or(ErrorCode::InvalidRoomId)
}

/// Checks a user ID.
pub fn check_user_id(id: &str) -> Result<(), ErrorCode> {
    valid_id(id, MAX_USER_ID)
        .then_some(())
        .ok_or(ErrorCode::InvalidUserId)
}

/// Checks a stream ID.
pub fn check_stream_id(id: &str) -> Result<(), ErrorCode> {
    valid_id(id, MAX_STREAM_ID)
        .then_some(())
        .ok_or(ErrorCode::InvalidStreamId)
}

/// Checks a user name.
pub fn check_user_name(name: &str) -> Result<(), ErrorCode> {
    (name.len() <= MAX_USER_NAME)
        .then_some(())
        .ok_or(ErrorCode::InvalidUserName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_rules() {
        assert!(check_room_id("room-1_a.b").is_ok());
        assert_eq!(check_room_id(""), Err(ErrorCode::InvalidRoomId));
        assert_eq!(check_room_id("a b"), Err(ErrorCode::InvalidRoomId));
        assert_eq!(check_room_id("房间"), Err(ErrorCode::InvalidRoomId));
        assert!(check_room_id(&"r".repeat(128)).is_ok());
        assert_eq!(
            check_room_id(&"r".repeat(129)),
            Err(ErrorCode::InvalidRoomId)
        );
        assert!(check_user_id(&"u".repeat(64)).is_ok());
        assert_eq!(
            check_user_id(&"u".repeat(65)),
            Err(ErrorCode::InvalidUserId)
        );
        assert!(check_stream_id(&"s".repeat(256)).is_ok());
        assert_eq!(
            check_stream_id(&"s".repeat(257)),
            Err(ErrorCode::InvalidStreamId)
        );
        assert!(check_user_name("主播 1").is_ok());
        assert_eq!(
            check_user_name(&"n".repeat(257)),
            Err(ErrorCode::InvalidUserName)
        );
    }
}
