//! The stream list: per room, each stream with its publisher, how long it has been live, its
//! extra info and mute states and, when we play it, the player's state and the latest SEI
//! (text and hex, with the pts of the frame it rode on).

use eframe::egui;
use onair_engine::media::frame::wall_clock_us;

use crate::studio::model::{PlayerModel, StreamEntry};
use crate::studio::panels::{format_duration, phase_color, player_phase, publisher_phase};
use crate::studio::session::Session;

/// A stream's extra info, mute states and latest SEI, as short phrases.
fn details(s: &StreamEntry, player: Option<&PlayerModel>) -> Vec<String> {
    let mut out = Vec::new();
    if !s.extra_info.is_empty() {
        out.push(format!("extra: {}", s.extra_info));
    }
    if s.audio_muted {
        out.push("mic muted".into());
    }
    if s.video_muted {
        out.push("camera off".into());
    }
    if let Some(p) = player
        && let Some(sei) = &p.last_sei
    {
        let text = String::from_utf8_lossy(&sei.data);
        let hex: String = sei
            .data
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let more = if sei.data.len() > 16 { "…" } else { "" };
        out.push(format!(
            "SEI #{} on frame pts {} µs: {:?} (hex {hex}{more})",
            p.sei_count, sei.pts_us, text
        ));
    }
    out
}

/// Draws the panel.
pub fn show(ui: &mut egui::Ui, session: &mut Session) {
    let now_ms = wall_clock_us() / 1000;
    let mut action: Option<(String, bool)> = None;
    egui::ScrollArea::vertical()
        .auto_shrink(false)
        .show(ui, |ui| {
            if let Some(stream) = &session.live_stream {
                let p = session.model.publishers.get(stream);
                let phase = publisher_phase(p.and_then(|p| p.state), p.map_or(0, |p| p.error_code));
                ui.horizontal(|ui| {
                    super::dot(ui, phase_color(phase));
                    ui.strong(format!("{stream} (ours, in {})", session.host.room));
                    ui.weak(phase.label());
                });
            }
            for (room_id, room) in &session.model.rooms {
                ui.strong(room_id);
                if room.streams.is_empty() {
                    ui.weak("  no streams");
                    continue;
                }
                egui::Grid::new(("streams_grid", room_id))
                    .num_columns(4)
                    .striped(true)
                    .show(ui, |ui| {
                        for (stream_id, s) in &room.streams {
                            let player = session.model.players.get(stream_id);
                            let state = player.and_then(|p| p.state);
                            let phase = player_phase(state, player.map_or(0, |p| p.error_code));
                            ui.horizontal(|ui| {
                                super::dot(ui, phase_color(phase));
                                ui.label(stream_id);
                            });
                            ui.label(&s.user_id);
                            let since = now_ms.saturating_sub(s.since_unix_ms) as f64 / 1000.0;
                            ui.weak(if s.since_unix_ms > 0 {
                                format!("live {}", format_duration(since))
                            } else {
                                "live".into()
                            });
                            let playing = session.tiles.get(stream_id).is_some_and(|t| t.playing());
                            ui.horizontal(|ui| {
                                ui.weak(state.map_or("not playing".into(), |s| format!("{s:?}")));
                                if session.tiles.contains_key(stream_id)
                                    && ui
                                        .small_button(if playing { "Stop" } else { "Play" })
                                        .clicked()
                                {
                                    action = Some((stream_id.clone(), !playing));
                                }
                            });
                            ui.end_row();
                            let details = details(s, player);
                            if !details.is_empty() {
                                ui.label("");
                                ui.weak(details.join(" · "));
                                ui.end_row();
                            }
                        }
                    });
            }
        });
    match action {
        Some((s, true)) => session.play(&s),
        Some((s, false)) => session.stop_play(&s),
        None => {}
    }
}
