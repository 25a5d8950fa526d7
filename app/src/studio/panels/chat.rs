//! Room chat: a room's broadcast messages, barrage and custom commands as they arrive (ours
//! too), a box to send, and the room's extra info, shown and editable.

use eframe::egui;

use crate::studio::model::ChatKind;
use crate::studio::session::Session;
use crate::studio::ui_state::UiState;

/// Draws the panel.
pub fn show(ui: &mut egui::Ui, session: &mut Session, state: &mut UiState) {
    if session.model.rooms.is_empty() {
        ui.weak("Not in any room.");
        return;
    }
    let chat = &mut state.chat;
    let room_id = chat
        .room
        .clone()
        .filter(|r| session.model.rooms.contains_key(r))
        .or_else(|| session.model.rooms.keys().next().cloned())
        .unwrap_or_default();
    egui::ComboBox::from_label("Room")
        .selected_text(&room_id)
        .show_ui(ui, |ui| {
            for id in session.model.rooms.keys() {
                if ui.selectable_label(*id == room_id, id).clicked() {
                    chat.room = Some(id.clone());
                }
            }
        });
    let Some(room) = session.model.rooms.get(&room_id) else {
        return;
    };
    // Extra info: what the room says about itself (a product on sale, a poll...).
    egui::CollapsingHeader::new(format!("Extra info ({})", room.extra_info.len()))
        .id_salt(("chat_extra", &room_id))
        .default_open(true)
        .show(ui, |ui| {
            egui::Grid::new(("extra_grid", &room_id))
                .num_columns(3)
                .striped(true)
                .show(ui, |ui| {
                    for (key, (value, by)) in &room.extra_info {
                        ui.strong(key);
                        ui.label(value);
                        ui.weak(format!("by {by}"));
                        ui.end_row();
                    }
                });
        });
    let mut set = false;
    ui.horizontal(|ui| {
        let k = ui.label("Key");
        ui.add(egui::TextEdit::singleline(&mut chat.key).desired_width(80.0))
            .labelled_by(k.id);
        let v = ui.label("Value");
        ui.add(egui::TextEdit::singleline(&mut chat.value).desired_width(140.0))
            .labelled_by(v.id);
        set = ui.button("Set").clicked() && !chat.key.trim().is_empty();
    });
    ui.separator();
    let input_height = 28.0;
    egui::ScrollArea::vertical()
        .id_salt(("chat_lines", &room_id))
        .max_height((ui.available_height() - input_height).max(40.0))
        .stick_to_bottom(true)
        .auto_shrink(false)
        .show(ui, |ui| {
            if room.chat.is_empty() {
                ui.weak("No messages yet.");
            }
            for line in &room.chat {
                ui.horizontal_wrapped(|ui| {
                    let (tag, color) = match line.kind {
                        ChatKind::Broadcast => ("", ui.visuals().text_color()),
                        ChatKind::Barrage => ("barrage ", egui::Color32::from_rgb(120, 180, 240)),
                        ChatKind::Command => ("command ", egui::Color32::from_rgb(220, 170, 60)),
                    };
                    let me = line.from == session.user_id;
                    let from = if me {
                        "you".to_string()
                    } else {
                        line.from.clone()
                    };
                    ui.weak(format!("{tag}{from}:"));
                    ui.colored_label(color, &line.text);
                });
            }
        });
    let mut send = false;
    ui.horizontal(|ui| {
        let input = ui.add(
            egui::TextEdit::singleline(&mut chat.input)
                .hint_text("Message")
                .desired_width(ui.available_width() - 150.0),
        );
        send |= input.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        ui.checkbox(&mut chat.barrage, "Barrage");
        send |= ui.button("Send").clicked();
    });
    if send && !chat.input.trim().is_empty() {
        let text = std::mem::take(&mut chat.input);
        session.send_chat(&room_id, &text, chat.barrage);
    }
    if set {
        let (key, value) = (chat.key.trim().to_string(), chat.value.clone());
        session.set_room_extra_info(&room_id, &key, &value);
    }
}
