//! Room users: per room, who is in it and for how long, updated live as users join and leave.

use eframe::egui;

use crate::studio::panels::format_duration;
use crate::studio::session::Session;

/// Draws the panel.
pub fn show(ui: &mut egui::Ui, session: &Session) {
    if session.model.rooms.is_empty() {
        ui.weak("Not in any room.");
        return;
    }
    let now = session.now();
    egui::ScrollArea::vertical()
        .auto_shrink(false)
        .show(ui, |ui| {
            for (room_id, room) in &session.model.rooms {
                egui::CollapsingHeader::new(format!("{room_id} ({} + you)", room.users.len()))
                    .id_salt(("users", room_id))
                    .default_open(true)
                    .show(ui, |ui| {
                        egui::Grid::new(("users_grid", room_id))
                            .num_columns(2)
                            .striped(true)
                            .show(ui, |ui| {
                                ui.strong(format!("{} (you)", session.user_id));
                                ui.weak(room.reason.name());
                                ui.end_row();
                                for (user_id, user) in &room.users {
                                    let label = if user.user_name.is_empty()
                                        || user.user_name == *user_id
                                    {
                                        user_id.clone()
                                    } else {
                                        format!("{user_id} ({})", user.user_name)
                                    };
                                    ui.label(label);
                                    ui.weak(format!("for {}", format_duration(now - user.since)));
                                    ui.end_row();
                                }
                            });
                    });
            }
        });
}
