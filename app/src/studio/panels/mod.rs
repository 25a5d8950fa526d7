//! The studio's panels, one module each, and the small helpers they share (state colours,
//! error-code labels).

pub mod broadcast;
pub mod chat;
pub mod event_log;
pub mod monitor;
pub mod quality;
pub mod streams;
pub mod timeline;
pub mod users;

use eframe::egui;
use onair_engine::ErrorCode;
use onair_engine::room::events::{PlayerState, PublisherState};

use super::model::Phase;

/// The colour of a phase, the same everywhere (timelines, dots, overlays).
pub fn phase_color(phase: Phase) -> egui::Color32 {
    match phase {
        Phase::Idle => egui::Color32::from_gray(110),
        Phase::Connecting => egui::Color32::from_rgb(230, 180, 40),
        Phase::Active => egui::Color32::from_rgb(60, 180, 75),
        Phase::Reconnecting => egui::Color32::from_rgb(240, 120, 30),
        Phase::Stalled => egui::Color32::from_rgb(170, 90, 200),
        Phase::Failed => egui::Color32::from_rgb(220, 50, 50),
    }
}

/// A publisher state as a phase.
pub fn publisher_phase(state: Option<PublisherState>, error_code: u32) -> Phase {
    match state {
        Some(PublisherState::Publishing) => Phase::Active,
        Some(PublisherState::PublishRequesting) => Phase::Connecting,
        _ if error_code != 0 => Phase::Failed,
        _ => Phase::Idle,
    }
}

/// A player state as a phase.
pub fn player_phase(state: Option<PlayerState>, error_code: u32) -> Phase {
    match state {
        Some(PlayerState::Playing) => Phase::Active,
        Some(PlayerState::PlayRequesting) => Phase::Connecting,
        _ if error_code != 0 => Phase::Failed,
        _ => Phase::Idle,
    }
}

/// What an error code means, as in docs/ERRORS.md (both come from the same table).
pub fn error_meaning(code: u32) -> String {
    match ErrorCode::from_code(code) {
        Some(c) => format!(
            "{code} {}\nCause: {}\nFix: {}",
            c.name(),
            c.cause(),
            c.fix()
        ),
        None => format!("{code}: not an Onair error code"),
    }
}

/// An error code in red, its meaning on hover.
pub fn error_code_label(ui: &mut egui::Ui, code: u32) {
    let name = ErrorCode::from_code(code).map_or("unknown", |c| c.name());
    ui.colored_label(
        egui::Color32::from_rgb(220, 60, 60),
        format!("{code} {name}"),
    )
    .on_hover_text(error_meaning(code));
}

/// "12 s", "3 min", "2 h".
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.0} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// A small filled circle in `color` (a state light).
pub fn dot(ui: &mut egui::Ui, color: egui::Color32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 4.0, color);
}

/// A small filled square in `color` (a legend entry).
pub fn swatch(ui: &mut egui::Ui, color: egui::Color32) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
    ui.painter().rect_filled(rect.shrink(1.0), 0.0, color);
}

/// White monospace text on a dark box at `at` (video overlays).
pub fn overlay_text(painter: &egui::Painter, at: egui::Pos2, text: &str) {
    let galley = painter.layout_no_wrap(
        text.to_string(),
        egui::FontId::monospace(11.0),
        egui::Color32::WHITE,
    );
    let bg = egui::Rect::from_min_size(at, galley.size() + egui::vec2(8.0, 4.0));
    painter.rect_filled(bg, 2.0, egui::Color32::from_black_alpha(160));
    painter.galley(at + egui::vec2(4.0, 2.0), galley, egui::Color32::WHITE);
}

/// A sound-level bar (0–100) along the right edge of `rect`: green, yellow from 70, red from 90.
pub fn level_meter(painter: &egui::Painter, rect: egui::Rect, level: f32) {
    let bar = egui::Rect::from_min_max(
        egui::pos2(rect.right() - 8.0, rect.top() + 22.0),
        egui::pos2(rect.right() - 3.0, rect.bottom() - 4.0),
    );
    painter.rect_filled(bar, 1.0, egui::Color32::from_black_alpha(140));
    let fill = bar.height() * (level.clamp(0.0, 100.0) / 100.0);
    let color = if level >= 90.0 {
        egui::Color32::from_rgb(220, 60, 60)
    } else if level >= 70.0 {
        egui::Color32::from_rgb(220, 200, 60)
    } else {
        egui::Color32::from_rgb(70, 200, 90)
    };
    painter.rect_filled(
        egui::Rect::from_min_max(egui::pos2(bar.left(), bar.bottom() - fill), bar.max),
        1.0,
        color,
    );
}

/// A network quality badge: the level's name on its colour.
pub fn quality_badge(ui: &mut egui::Ui, label: &str, level: onair_engine::QualityLevel) {
    use onair_engine::QualityLevel as Q;
    let color = match level {
        Q::Excellent => egui::Color32::from_rgb(40, 150, 70),
        Q::Good => egui::Color32::from_rgb(90, 150, 40),
        Q::Medium => egui::Color32::from_rgb(190, 150, 30),
        Q::Bad => egui::Color32::from_rgb(200, 90, 30),
        Q::Die => egui::Color32::from_rgb(190, 40, 40),
        Q::Unknown => egui::Color32::from_gray(90),
    };
    ui.label(
        egui::RichText::new(format!("{label} {level}"))
            .small()
            .color(egui::Color32::WHITE)
            .background_color(color),
    );
}
