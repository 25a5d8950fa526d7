//! Quality plots per stream (egui_plot): frames per second, kbps, delay, the playout buffer and
//! loss over the last minutes, from the once-a-second quality reports of our publishers and
//! players, and a played stream's freezes, repairs and concealment in one line.

use eframe::egui;
use egui_plot::{Line, Plot, PlotPoints};

use crate::studio::model::QualitySample;
use crate::studio::session::Session;
use crate::studio::ui_state::UiState;

/// Draws the panel.
pub fn show(ui: &mut egui::Ui, session: &Session, state: &mut UiState) {
    let streams: Vec<String> = session.model.quality.keys().cloned().collect();
    if streams.is_empty() {
        ui.weak("No quality reports yet: go live or play a stream.");
        return;
    }
    if state
        .quality_stream
        .as_ref()
        .is_none_or(|s| !streams.contains(s))
    {
        state.quality_stream = streams.first().cloned();
    }
    ui.horizontal(|ui| {
        let label = ui.label("Stream");
        let combo = egui::ComboBox::from_id_salt("quality_stream")
            .selected_text(state.quality_stream.clone().unwrap_or_default())
            .show_ui(ui, |ui| {
                for s in &streams {
                    ui.selectable_value(&mut state.quality_stream, Some(s.clone()), s);
                }
            });
        combo.response.labelled_by(label.id);
        let is_publisher = state
            .quality_stream
            .as_ref()
            .is_some_and(|s| session.model.publishers.contains_key(s));
        ui.weak(if is_publisher {
            "ours: delay is the round trip"
        } else {
            "played: delay is capture to decode, on two machines' clocks"
        });
    });
    let Some(history) = state
        .quality_stream
        .as_ref()
        .and_then(|s| session.model.quality.get(s))
    else {
        return;
    };
    // A played stream's weak-link story in one line: freezes, what smoothing adds, what NACK
    // repair saved, keyframes asked for, audio concealed.
    if let Some(q) = state
        .quality_stream
        .as_ref()
        .and_then(|s| session.model.players.get(s))
        .and_then(|p| p.quality)
    {
        ui.label(format!(
            "freezes {} ({:.1} s) · buffer {:.0} ms · jitter {:.1} ms · repaired {} · FEC rebuilt {} · keyframes asked {} · audio concealed {} lost {}",
            q.stutters,
            q.stutter_ms / 1000.0,
            q.playout_ms,
            q.jitter_ms,
            q.repaired,
            q.fec_recovered,
            q.keyframe_requests,
            q.audio_concealed,
            q.audio_lost
        ));
    }
    let samples: Vec<QualitySample> = history.iter().copied().collect();
    let height = ((ui.available_height() - 8.0) / 5.0).max(50.0);
    let link = egui::Id::unique("quality_x");
    type Series = (&'static str, fn(&QualitySample) -> f64);
    let series: [Series; 5] = [
        ("fps", |s| s.fps),
        ("kbps", |s| s.kbps),
        ("delay ms", |s| s.delay_ms),
        ("buffer ms", |s| s.playout_ms),
        ("lost packets", |s| s.lost),
    ];
    for (name, value) in series {
        let points: PlotPoints<'_> = samples.iter().map(|s| [s.t, value(s)]).collect();
        Plot::new(("quality_plot", name))
            .height(height)
            .link_axis(link, [true, false])
            .include_y(0.0)
            .allow_drag(false)
            .allow_zoom(false)
            .allow_scroll(false)
            .y_axis_label(name)
            .show(ui, |plot| {
                plot.line(Line::new(name, points));
            });
    }
}
