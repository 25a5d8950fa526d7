//! State timelines: every room's, publisher's and player's state over time as coloured bars
//! (idle, connecting, active, reconnecting, stalled, failed), so a reconnect or a stall shows
//! at a glance. Hover a bar for its state and how long it lasted.

use eframe::egui;

use crate::studio::model::{Phase, TimelineKind};
use crate::studio::panels::phase_color;
use crate::studio::session::Session;
use crate::studio::ui_state::UiState;

const LABEL_WIDTH: f32 = 150.0;
const ROW_HEIGHT: f32 = 16.0;

/// Draws the panel.
pub fn show(ui: &mut egui::Ui, session: &Session, state: &mut UiState) {
    let now = session.now();
    ui.horizontal(|ui| {
        ui.label("Window");
        for (label, seconds) in [("30 s", 30.0), ("2 min", 120.0), ("10 min", 600.0)] {
            ui.selectable_value(&mut state.timeline_window_s, seconds, label);
        }
        ui.separator();
        for phase in [
            Phase::Idle,
            Phase::Connecting,
            Phase::Active,
            Phase::Reconnecting,
            Phase::Stalled,
            Phase::Failed,
        ] {
            super::swatch(ui, phase_color(phase));
            ui.weak(phase.label());
        }
    });
    let window = state.timeline_window_s;
    let start = (now - window).max(0.0);
    egui::ScrollArea::vertical()
        .auto_shrink(false)
        .show(ui, |ui| {
            for ((kind, id), timeline) in &session.model.timelines {
                ui.horizontal(|ui| {
                    let kind_name = match kind {
                        TimelineKind::Room => "room",
                        TimelineKind::Publisher => "publish",
                        TimelineKind::Player => "play",
                    };
                    let (label_rect, _) = ui.allocate_exact_size(
                        egui::vec2(LABEL_WIDTH, ROW_HEIGHT),
                        egui::Sense::hover(),
                    );
                    ui.painter().text(
                        label_rect.left_center(),
                        egui::Align2::LEFT_CENTER,
                        format!("{kind_name} {id}"),
                        egui::FontId::monospace(11.0),
                        ui.visuals().text_color(),
                    );
                    let width = ui.available_width().max(50.0);
                    let (rect, response) =
                        ui.allocate_exact_size(egui::vec2(width, ROW_HEIGHT), egui::Sense::hover());
                    ui.painter()
                        .rect_filled(rect, 0.0, ui.visuals().extreme_bg_color);
                    let x_of = |t: f64| {
                        rect.left() + ((t - start) / (now - start).max(1e-3)) as f32 * rect.width()
                    };
                    let mut hovered = None;
                    for seg in &timeline.segments {
                        let end = seg.end.unwrap_or(now);
                        if end < start {
                            continue;
                        }
                        let bar = egui::Rect::from_x_y_ranges(
                            x_of(seg.start.max(start))
                                ..=x_of(end).max(x_of(seg.start.max(start)) + 1.0),
                            rect.y_range(),
                        );
                        ui.painter().rect_filled(
                            bar.shrink2(egui::vec2(0.0, 2.0)),
                            0.0,
                            phase_color(seg.phase),
                        );
                        if response
                            .hover_pos()
                            .is_some_and(|p| bar.x_range().contains(p.x))
                        {
                            hovered = Some(format!(
                                "{} ({}) for {:.1} s, from {:.1} s",
                                seg.detail,
                                seg.phase.label(),
                                end - seg.start,
                                seg.start
                            ));
                        }
                    }
                    if let Some(text) = hovered {
                        response.on_hover_text(text);
                    }
                });
            }
            if session.model.timelines.is_empty() {
                ui.weak("No states yet.");
            }
        });
}
