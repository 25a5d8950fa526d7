//! The stream list: per room, each stream with its publisher, how long it has been live and,
//! when we play it, the player's state.

use eframe::egui;
use onair_engine::media::frame::wall_clock_us;

use crate::studio::panels::{format_duration, phase_color, player_phase, publisher_phase};
use crate::studio::session::Session;

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
