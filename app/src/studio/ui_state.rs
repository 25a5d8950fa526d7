//! The panels' own state (what is typed, selected, paused or open), apart from the session.
//! File dialogs run on their own threads and report back over channels, so the UI thread
//! never waits on them.

use crossbeam_channel::{Receiver, Sender, bounded};

use super::model::LogFilter;
use super::panels::broadcast::DeviceList;
use super::settings::ConnectionSettings;

/// The connect dialog.
#[derive(Default)]
pub struct ConnectDialog {
    /// Whether it is open.
    pub open: bool,
    /// Use the embedded relay.
    pub embedded: bool,
    /// Remote relay URL.
    pub server: String,
    /// App ID as typed.
    pub app_id: String,
    /// App sign.
    pub app_sign: String,
    /// Token.
    pub token: String,
    /// User ID.
    pub user_id: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

impl ConnectDialog {
    /// Opens it filled from the current settings.
    pub fn open_with(&mut self, connection: &ConnectionSettings, user_id: &str) {
        self.open = true;
        self.error = None;
        self.user_id = user_id.to_string();
        match connection {
            ConnectionSettings::Embedded => {
                self.embedded = true;
                if self.server.is_empty() {
                    self.server = "ws://127.0.0.1:7880".into();
                }
            }
            ConnectionSettings::Remote {
                server,
                app_id,
                app_sign,
                token,
            } => {
                self.embedded = false;
                self.server = server.clone();
                self.app_id = app_id.to_string();
                self.app_sign = app_sign.clone();
                self.token = token.clone();
            }
        }
    }

    /// The connection the dialog describes, or why it is not valid.
    pub fn connection(&self) -> Result<ConnectionSettings, String> {
        if self.embedded {
            return Ok(ConnectionSettings::Embedded);
        }
        let server = self.server.trim().to_string();
        // One relay, or a cluster's nodes separated by commas (or its dispatch URL).
        let valid = |u: &str| {
            ["ws://", "wss://", "http://", "https://"]
                .iter()
                .any(|p| u.starts_with(p))
        };
        if server.split(',').map(str::trim).any(|u| !valid(u)) {
            return Err(
                "the relay URL starts with ws:// or wss:// (a cluster: several, separated by \
                 commas, or a node's http(s)://…/dispatch)"
                    .into(),
            );
        }
        let app_id: u32 = self
            .app_id
            .trim()
            .parse()
            .map_err(|_| "the app ID is a number".to_string())?;
        let sign = self.app_sign.trim().to_string();
        if sign.is_empty() && self.token.trim().is_empty() {
            return Err("give the app sign or a token".into());
        }
        if !sign.is_empty() && onair_engine::token::AppSign::from_hex(&sign).is_none() {
            return Err("the app sign is 64 hex characters".into());
        }
        Ok(ConnectionSettings::Remote {
            server,
            app_id,
            app_sign: sign,
            token: self.token.trim().to_string(),
        })
    }
}

/// The chat panel's state.
#[derive(Default)]
pub struct ChatState {
    /// The room shown (the first one when unset).
    pub room: Option<String>,
    /// The message being typed.
    pub input: String,
    /// Send as barrage rather than broadcast.
    pub barrage: bool,
    /// The extra info key being set.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// The users panel: who is selected for a custom command, and the command being typed.
#[derive(Default)]
pub struct UsersState {
    /// (room, user) pairs selected.
    pub selected: std::collections::BTreeSet<(String, String)>,
    /// The command being typed, per room.
    pub command: std::collections::BTreeMap<String, String>,
}

/// The panels' state.
pub struct UiState {
    /// The chat panel: its room, what is typed, barrage or broadcast, the extra info being set.
    pub chat: ChatState,
    /// The users panel's selection and command.
    pub users: UsersState,
    /// Draw barrage messages over the room's tiles.
    pub barrage_over_tiles: bool,
    /// Cameras and microphones.
    pub devices: DeviceList,
    /// The room ID being typed in the monitor.
    pub join_room: String,
    /// The tile shown large, if any.
    pub enlarged: Option<String>,
    /// The event log's filter.
    pub log_filter: LogFilter,
    /// When the log was paused (studio seconds), if it is.
    pub log_paused_at: Option<f64>,
    /// Focus the log's search box on the next frame.
    pub focus_log_search: bool,
    /// The last export's outcome.
    pub export_status: Option<String>,
    /// The stream whose quality is plotted.
    pub quality_stream: Option<String>,
    /// Seconds the timelines show.
    pub timeline_window_s: f64,
    /// The connect dialog.
    pub connect: ConnectDialog,
    picked_file: (Sender<String>, Receiver<String>),
    export_done: (Sender<String>, Receiver<String>),
}

impl Default for UiState {
    fn default() -> Self {
        UiState {
            chat: ChatState::default(),
            users: UsersState::default(),
            barrage_over_tiles: true,
            devices: DeviceList::default(),
            join_room: String::new(),
            enlarged: None,
            log_filter: LogFilter::default(),
            log_paused_at: None,
            focus_log_search: false,
            export_status: None,
            quality_stream: None,
            timeline_window_s: 120.0,
            connect: ConnectDialog::default(),
            picked_file: bounded(1),
            export_done: bounded(4),
        }
    }
}

impl UiState {
    /// Pauses the log at `now`, or resumes it.
    pub fn toggle_log_pause(&mut self, now: f64) {
        self.log_paused_at = match self.log_paused_at {
            Some(_) => None,
            None => Some(now),
        };
    }

    /// Opens a file dialog for a media file (on its own thread).
    pub fn pick_media_file(&self) {
        let tx = self.picked_file.0.clone();
        std::thread::spawn(move || {
            if let Some(path) = rfd::FileDialog::new()
                .set_title("Media file to broadcast")
                .add_filter("Media", &["mp4", "mkv", "mov", "webm", "ts", "flv", "avi"])
                .add_filter("Any file", &["*"])
                .pick_file()
            {
                let _ = tx.try_send(path.to_string_lossy().into_owned());
            }
        });
    }

    /// The media file picked, once the dialog has closed.
    pub fn take_picked_file(&self) -> Option<String> {
        self.picked_file.1.try_recv().ok()
    }

    /// Asks where to save the log and writes it there (on its own thread).
    pub fn export_log(&mut self, json_lines: String) {
        let tx = self.export_done.0.clone();
        self.export_status = Some("choosing where to save…".into());
        std::thread::spawn(move || {
            let outcome = match rfd::FileDialog::new()
                .set_title("Export events as JSON lines")
                .set_file_name("onair-events.jsonl")
                .save_file()
            {
                Some(path) => match std::fs::write(&path, json_lines) {
                    Ok(()) => format!("saved {}", path.display()),
                    Err(e) => format!("could not save {}: {e}", path.display()),
                },
                None => "export cancelled".to_string(),
            };
            let _ = tx.try_send(outcome);
        });
    }

    /// Takes the outcome of a finished export into the status line.
    pub fn poll_dialogs(&mut self) {
        if let Ok(status) = self.export_done.1.try_recv() {
            self.export_status = Some(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_dialog_takes_one_relay_or_a_clusters_nodes() {
        let dialog = |server: &str| ConnectDialog {
            server: server.into(),
            app_id: "1".into(),
            token: "t".into(),
            ..Default::default()
        };
        assert!(dialog("wss://relay.example.com").connection().is_ok());
        assert!(dialog("ws://a:7880, ws://b:7880").connection().is_ok());
        assert!(dialog("https://a:7880/dispatch").connection().is_ok());
        assert!(dialog("ws://a:7880,b:7880").connection().is_err());
        assert!(dialog("relay.example.com").connection().is_err());
    }
}
