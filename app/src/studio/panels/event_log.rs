//! The event log: every engine event with time, room, stream, kind and error code. Filter by
//! room, stream and kind, search, pause, copy, and export as JSON lines through a save dialog;
//! an error code shows its meaning (the table docs/ERRORS.md is generated from).

use eframe::egui;

use crate::studio::model::{EVENT_KINDS, LogEntry, LogFilter};
use crate::studio::panels::{error_code_label, error_meaning};
use crate::studio::session::Session;
use crate::studio::ui_state::UiState;

/// Rows drawn at most (the newest); the export has everything that matches.
const ROWS_SHOWN: usize = 2_000;

/// Draws the panel.
pub fn show(ui: &mut egui::Ui, session: &Session, state: &mut UiState) {
    let model = &session.model;
    ui.horizontal_wrapped(|ui| {
        combo(
            ui,
            "log_room",
            "room",
            &mut state.log_filter.room,
            model.rooms.keys().cloned(),
        );
        let mut streams: Vec<String> = model
            .publishers
            .keys()
            .chain(model.players.keys())
            .cloned()
            .collect();
        streams.sort();
        streams.dedup();
        combo(
            ui,
            "log_stream",
            "stream",
            &mut state.log_filter.stream,
            streams.into_iter(),
        );
        combo(
            ui,
            "log_kind",
            "kind",
            &mut state.log_filter.kind,
            EVENT_KINDS.iter().map(|k| k.to_string()),
        );
        let label = ui.label("search");
        let search = ui
            .add(
                egui::TextEdit::singleline(&mut state.log_filter.search)
                    .hint_text("Ctrl+F")
                    .desired_width(110.0),
            )
            .labelled_by(label.id);
        if state.focus_log_search {
            search.request_focus();
            state.focus_log_search = false;
        }
        ui.checkbox(&mut state.log_filter.hide_quality, "hide quality");
        ui.checkbox(&mut state.log_filter.errors_only, "errors only");
    });
    // One pass over the log per frame; the filter is copied so the buttons below can change
    // the panel's state while the rows borrow the session.
    let (filter, until) = (state.log_filter.clone(), state.log_paused_at);
    let shown: Vec<&LogEntry> = matching(session, &filter, until).collect();
    ui.horizontal(|ui| {
        let paused = state.log_paused_at.is_some();
        if ui
            .button(if paused { "Resume (F8)" } else { "Pause (F8)" })
            .clicked()
        {
            state.toggle_log_pause(session.now());
        }
        if ui
            .button("Copy")
            .on_hover_text("Copy the shown events as JSON lines")
            .clicked()
        {
            ui.ctx().copy_text(json_lines(shown.iter().copied()));
        }
        if ui
            .button("Export…")
            .on_hover_text("Save the shown events as JSON lines")
            .clicked()
        {
            state.export_log(json_lines(shown.iter().copied()));
        }
        ui.weak(format!(
            "{} of {} events{}",
            shown.len(),
            model.log.len(),
            if model.log_dropped > 0 {
                format!(" ({} oldest dropped)", model.log_dropped)
            } else {
                String::new()
            }
        ));
        if let Some(status) = &state.export_status {
            ui.weak(status);
        }
    });
    ui.separator();
    let start = shown.len().saturating_sub(ROWS_SHOWN);
    let rows = &shown[start..];
    let row_height = ui.text_style_height(&egui::TextStyle::Monospace) + 2.0;
    egui::ScrollArea::both()
        .auto_shrink(false)
        .stick_to_bottom(true)
        .show_rows(ui, row_height, rows.len(), |ui, range| {
            for entry in &rows[range] {
                ui.horizontal(|ui| {
                    // The detail comes first after the time: the event's text names its kind,
                    // room, stream, state and reason; nothing padded pushes it off-screen.
                    ui.monospace(format!("{:>8.3}", entry.t));
                    if entry.error_code != 0 {
                        error_code_label(ui, entry.error_code);
                    }
                    let text = ui.monospace(&entry.text);
                    if entry.error_code != 0 {
                        text.on_hover_text(error_meaning(entry.error_code));
                    }
                });
            }
        });
}

/// The entries the panel shows: matching the filter, up to the pause.
pub fn visible<'a>(session: &'a Session, state: &'a UiState) -> impl Iterator<Item = &'a LogEntry> {
    matching(session, &state.log_filter, state.log_paused_at)
}

fn matching<'a>(
    session: &'a Session,
    filter: &'a LogFilter,
    paused_at: Option<f64>,
) -> impl Iterator<Item = &'a LogEntry> {
    let until = paused_at.unwrap_or(f64::INFINITY);
    session
        .model
        .filtered_log(filter)
        .filter(move |e| e.t <= until)
}

/// Entries as JSON lines.
pub fn json_lines<'a>(entries: impl Iterator<Item = &'a LogEntry>) -> String {
    let mut out = String::new();
    for e in entries {
        out.push_str(&e.to_json().to_string());
        out.push('\n');
    }
    out
}

fn combo(
    ui: &mut egui::Ui,
    id: &str,
    what: &str,
    value: &mut String,
    options: impl Iterator<Item = String>,
) {
    let label = ui.label(what);
    let combo = egui::ComboBox::from_id_salt(id)
        .selected_text(if value.is_empty() {
            "any".to_string()
        } else {
            value.clone()
        })
        .show_ui(ui, |ui| {
            ui.selectable_value(value, String::new(), "any");
            for o in options {
                let label = o.clone();
                ui.selectable_value(value, o, label);
            }
        });
    combo.response.labelled_by(label.id);
}
