//! Room users: per room, who is in it and for how long, each publisher's network quality (and
//! ours), updated live; select users to send them a custom command.

use eframe::egui;

use crate::studio::panels::{format_duration, quality_badge};
use crate::studio::session::Session;
use crate::studio::ui_state::UiState;

/// Draws the panel.
pub fn show(ui: &mut egui::Ui, session: &mut Session, state: &mut UiState) {
    if session.model.rooms.is_empty() {
        ui.weak("Not in any room.");
        return;
    }
    let now = session.now();
    let users = &mut state.users;
    let mut send: Option<(String, String, Vec<String>)> = None;
    egui::ScrollArea::vertical()
        .auto_shrink(false)
        .show(ui, |ui| {
            for (room_id, room) in &session.model.rooms {
                egui::CollapsingHeader::new(format!("{room_id} ({} + you)", room.users.len()))
                    .id_salt(("users", room_id))
                    .default_open(true)
                    .show(ui, |ui| {
                        egui::Grid::new(("users_grid", room_id))
                            .num_columns(3)
                            .striped(true)
                            .show(ui, |ui| {
                                ui.strong(format!("{} (you)", session.user_id));
                                ui.weak(room.reason.name());
                                ui.horizontal(|ui| {
                                    if let Some((up, down)) = session.model.network.get("") {
                                        quality_badge(ui, "up", *up);
                                        quality_badge(ui, "down", *down);
                                    }
                                });
                                ui.end_row();
                                for (user_id, user) in &room.users {
                                    let label = if user.user_name.is_empty()
                                        || user.user_name == *user_id
                                    {
                                        user_id.clone()
                                    } else {
                                        format!("{user_id} ({})", user.user_name)
                                    };
                                    let key = (room_id.clone(), user_id.clone());
                                    let mut picked = users.selected.contains(&key);
                                    if ui.checkbox(&mut picked, label).changed() {
                                        if picked {
                                            users.selected.insert(key);
                                        } else {
                                            users.selected.remove(&key);
                                        }
                                    }
                                    ui.weak(format!("for {}", format_duration(now - user.since)));
                                    match session.model.network.get(user_id) {
                                        Some((up, _)) => quality_badge(ui, "up", *up),
                                        None => {
                                            ui.label("");
                                        }
                                    }
                                    ui.end_row();
                                }
                            });
                        // A custom command to the selected users (or everyone).
                        let to: Vec<String> = users
                            .selected
                            .iter()
                            .filter(|(r, u)| r == room_id && room.users.contains_key(u))
                            .map(|(_, u)| u.clone())
                            .collect();
                        let text = users.command.entry(room_id.clone()).or_default();
                        ui.horizontal(|ui| {
                            ui.add(
                                egui::TextEdit::singleline(text)
                                    .hint_text("Custom command")
                                    .desired_width(160.0),
                            );
                            let target = if to.is_empty() {
                                "Send to everyone".to_string()
                            } else {
                                format!("Send to {}", to.len())
                            };
                            if ui.button(target).clicked() && !text.trim().is_empty() {
                                send = Some((room_id.clone(), std::mem::take(text), to));
                            }
                        });
                    });
            }
        });
    if let Some((room, text, to)) = send {
        session.send_command(&room, &text, &to);
    }
}
