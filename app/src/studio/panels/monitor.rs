//! The monitor: every room we are in, each with a grid of its streams. A tile shows the
//! stream's picture with an overlay (state, resolution, fps, kbps, end-to-end delay, loss) and
//! has play/stop, mute and enlarge. An enlarged tile fills the panel.

use eframe::egui;
use onair_engine::room::events::RoomState;

use crate::studio::model::ChatKind;
use crate::studio::panels::{phase_color, player_phase};
use crate::studio::session::Session;
use crate::studio::ui_state::UiState;

/// How long a barrage message takes to cross a tile.
const BARRAGE_SECONDS: f64 = 6.0;
/// Barrage messages shown at once over a tile.
const BARRAGE_LANES: usize = 3;

/// Smallest tile width before the grid wraps.
const TILE_MIN_WIDTH: f32 = 240.0;

/// Draws the panel.
pub fn show(ui: &mut egui::Ui, session: &mut Session, state: &mut UiState) {
    ui.horizontal(|ui| {
        let label = ui.label("Room");
        let edit = ui
            .add(
                egui::TextEdit::singleline(&mut state.join_room)
                    .hint_text("room ID")
                    .desired_width(120.0),
            )
            .labelled_by(label.id);
        let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        if ui.button("Log in").clicked() || enter {
            let room = std::mem::take(&mut state.join_room);
            session.login(&room);
        }
        ui.checkbox(&mut session.auto_play, "Play new streams");
        ui.checkbox(&mut state.barrage_over_tiles, "Barrage over tiles");
    });
    ui.separator();

    if let Some(stream) = state.enlarged.clone() {
        if session.tiles.contains_key(&stream) {
            if ui.button("Back to the grid").clicked() {
                state.enlarged = None;
            }
            let size = ui.available_size();
            tile(ui, session, state, &stream, size);
            return;
        }
        state.enlarged = None;
    }

    let rooms: Vec<String> = session.model.rooms.keys().cloned().collect();
    if rooms.is_empty() {
        ui.weak("Not in any room yet: type a room ID above and log in.");
    }
    egui::ScrollArea::vertical()
        .auto_shrink(false)
        .show(ui, |ui| {
            for room_id in rooms {
                room_section(ui, session, state, &room_id);
            }
        });
}

fn room_section(ui: &mut egui::Ui, session: &mut Session, state: &mut UiState, room_id: &str) {
    let Some(room) = session.model.rooms.get(room_id) else {
        return;
    };
    let connected = room.reason.state();
    let (users, streams) = (room.users.len(), room.streams.len());
    let reason = room.reason.name();
    // The room's extra info under its name (edited in the Chat panel).
    let extra: Vec<String> = room
        .extra_info
        .iter()
        .map(|(k, (v, _))| format!("{k}: {v}"))
        .collect();
    let error_code = room.error_code;
    ui.horizontal(|ui| {
        let color = match connected {
            RoomState::Connected => phase_color(crate::studio::model::Phase::Active),
            RoomState::Connecting => phase_color(crate::studio::model::Phase::Connecting),
            RoomState::Disconnected => phase_color(crate::studio::model::Phase::Idle),
        };
        super::dot(ui, color);
        ui.strong(room_id);
        ui.label(format!("{reason} · {users} users · {streams} streams"));
        if error_code != 0 {
            super::error_code_label(ui, error_code);
        }
        if connected == RoomState::Disconnected {
            if ui.small_button("Log in again").clicked() {
                session.login(room_id);
            }
            if ui.small_button("Forget").clicked() {
                session.model.rooms.remove(room_id);
            }
        } else if ui.small_button("Log out").clicked() {
            session.logout(room_id);
        }
    });
    if !extra.is_empty() {
        ui.weak(format!("  {}", extra.join(" · ")))
            .on_hover_text("The room's extra info (set it in the Chat panel)");
    }
    let streams: Vec<String> = session
        .tiles
        .iter()
        .filter(|(_, t)| t.room == room_id)
        .map(|(s, _)| s.clone())
        .collect();
    if streams.is_empty() {
        ui.weak("  no streams from others");
        ui.add_space(6.0);
        return;
    }
    let width = ui.available_width();
    let columns = ((width / TILE_MIN_WIDTH).floor() as usize).max(1);
    let spacing = ui.spacing().item_spacing.x;
    let tile_w = (width - spacing * (columns as f32 - 1.0)) / columns as f32;
    let tile_size = egui::vec2(tile_w, tile_w * 9.0 / 16.0 + 24.0);
    for row in streams.chunks(columns) {
        ui.horizontal(|ui| {
            for stream in row {
                ui.vertical(|ui| {
                    ui.set_width(tile_w);
                    tile(ui, session, state, stream, tile_size);
                });
            }
        });
    }
    ui.add_space(8.0);
}

/// One stream's tile: picture and overlay, controls underneath.
fn tile(
    ui: &mut egui::Ui,
    session: &mut Session,
    state: &mut UiState,
    stream_id: &str,
    size: egui::Vec2,
) {
    let video_size = egui::vec2(size.x, (size.y - 24.0).max(40.0));
    // A small tile asks for a small simulcast layer, a large or enlarged one for the big one.
    let enlarged = state.enlarged.as_deref() == Some(stream_id);
    session.fit_layer(stream_id, size.x, enlarged);
    let (rect, response) = ui.allocate_exact_size(video_size, egui::Sense::click());
    if ui.is_rect_visible(rect) {
        session.tile_seen(stream_id, std::time::Instant::now());
    }
    let player = session.model.players.get(stream_id);
    let player_state = player.and_then(|p| p.state);
    let error_code = player.map_or(0, |p| p.error_code);
    let quality = player.and_then(|p| p.quality);
    let level = player.and_then(|p| p.level);
    let entry = session
        .model
        .room_of_stream(stream_id)
        .and_then(|r| session.model.rooms.get(r))
        .and_then(|r| r.streams.get(stream_id));
    let publisher = entry.map(|s| s.user_id.clone()).unwrap_or_default();
    let (mic_off, camera_off) = entry.map_or((false, false), |s| (s.audio_muted, s.video_muted));
    let upstream = session.model.network.get(&publisher).map(|(up, _)| *up);
    let now = session.now();
    let frozen = session.clock_frozen();
    let barrage: Vec<(f64, String)> = match session.tiles.get(stream_id) {
        Some(t) if state.barrage_over_tiles => session
            .model
            .rooms
            .get(&t.room)
            .map(|r| {
                r.chat
                    .iter()
                    .rev()
                    .take_while(|l| now - l.t < BARRAGE_SECONDS)
                    .filter(|l| l.kind == ChatKind::Barrage)
                    .take(BARRAGE_LANES)
                    .map(|l| (now - l.t, format!("{}: {}", l.from, l.text)))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    let Some(tile) = session.tiles.get_mut(stream_id) else {
        return;
    };
    let mut head = format!("{stream_id} · {publisher}");
    if let Some(up) = upstream {
        head.push_str(&format!(" · net {up}"));
    }
    let mut lines = vec![head];
    if mic_off || camera_off {
        let what = match (mic_off, camera_off) {
            (true, true) => "mic muted · camera off",
            (true, false) => "mic muted",
            _ => "camera off",
        };
        lines.push(what.to_string());
    }
    match tile.view.as_mut() {
        Some(view) => {
            view.paint(ui, rect);
            let res = view
                .size
                .map_or_else(|| "—".to_string(), |(w, h)| format!("{w}×{h}"));
            let decoded = quality.map_or(String::new(), |q| format!("{:.0} fps · ", q.fps));
            let layer = player
                .and_then(|p| p.layer)
                .map_or(String::new(), |l| format!(" · layer {l}"));
            lines.push(format!(
                "{} {res} {decoded}shown {:.0}/s{layer}",
                player_state.map_or("NoPlay".into(), |s| format!("{s:?}")),
                view.shown_fps()
            ));
            if let Some(q) = quality {
                let via = if q.path == onair_engine::MediaPath::Relayed {
                    " · via TURN"
                } else {
                    ""
                };
                lines.push(format!(
                    "{:.0} kbps · delay {:.1} ms · lost {}{via}",
                    q.kbps, q.delay_ms, q.packets_lost
                ));
                // On a weak link: what smoothing costs and what repair saved.
                if q.playout_ms >= 1.0 || q.repaired > 0 || q.stutters > 0 {
                    lines.push(format!(
                        "buffer {:.0} ms · repaired {} · FEC {} · freezes {}",
                        q.playout_ms, q.repaired, q.fec_recovered, q.stutters
                    ));
                }
            } else if let Some(d) = view.delay_ms {
                lines.push(format!("delay {d:.1} ms"));
            }
        }
        None => {
            ui.painter()
                .rect_filled(rect, 0.0, egui::Color32::from_gray(20));
            lines.push("not playing".into());
        }
    }
    let phase = player_phase(player_state, error_code);
    let painter = ui.painter_at(rect);
    painter.circle_filled(
        rect.right_top() + egui::vec2(-10.0, 10.0),
        5.0,
        phase_color(phase),
    );
    super::overlay_text(&painter, rect.left_top(), &lines.join("\n"));
    if let Some(level) = level {
        super::level_meter(&painter, rect, level);
    }
    // Barrage: each message crosses the picture right to left in BARRAGE_SECONDS, one lane
    // each, newest at the bottom.
    for (lane, (age, text)) in barrage.iter().enumerate() {
        let galley = painter.layout_no_wrap(
            text.clone(),
            egui::FontId::proportional(14.0),
            egui::Color32::WHITE,
        );
        let travel = rect.width() + galley.size().x;
        let x = rect.right() - (*age / BARRAGE_SECONDS) as f32 * travel;
        let y = rect.bottom() - 24.0 - lane as f32 * 20.0;
        painter.text(
            egui::pos2(x + 1.0, y + 1.0),
            egui::Align2::LEFT_TOP,
            text,
            egui::FontId::proportional(14.0),
            egui::Color32::BLACK,
        );
        painter.galley(egui::pos2(x, y), galley, egui::Color32::WHITE);
    }
    // Moving text: the next frame, unless time stands still.
    if !barrage.is_empty() && !frozen {
        ui.ctx().request_repaint();
    }
    if response.double_clicked() {
        state.enlarged = match state.enlarged {
            Some(_) => None,
            None => Some(stream_id.to_string()),
        };
    }

    let playing = tile.playing();
    let mut muted = tile.muted;
    let mut volume = tile.volume;
    let mut action = None;
    ui.horizontal(|ui| {
        if ui
            .small_button(if playing { "Stop" } else { "Play" })
            .clicked()
        {
            action = Some(!playing);
        }
        if ui
            .small_button(if muted { "Muted" } else { "Sound on" })
            .on_hover_text("Hear this stream (one at a time is best)")
            .clicked()
        {
            muted = !muted;
        }
        ui.add(
            egui::DragValue::new(&mut volume)
                .range(0..=200)
                .suffix(" %")
                .speed(2.0),
        )
        .on_hover_text("Volume (0–200 %)");
        let enlarged = state.enlarged.as_deref() == Some(stream_id);
        if ui
            .small_button(if enlarged { "Shrink" } else { "Enlarge" })
            .clicked()
        {
            state.enlarged = if enlarged {
                None
            } else {
                Some(stream_id.to_string())
            };
        }
        if error_code != 0 {
            super::error_code_label(ui, error_code);
        }
    });
    let (was_muted, was_volume) = (tile.muted, tile.volume);
    if muted != was_muted {
        session.set_muted(stream_id, muted);
    }
    if volume != was_volume {
        session.set_volume(stream_id, volume);
    }
    match action {
        Some(true) => session.play(stream_id),
        Some(false) => session.stop_play(stream_id),
        None => {}
    }
    session.report_rendered(stream_id);
}
