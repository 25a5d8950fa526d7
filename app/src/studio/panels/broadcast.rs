//! The broadcast panel: source pickers (camera with its formats, microphone, test source,
//! media file), video preset and frame rate, the local preview, Go live / Stop, and the
//! publisher's state and quality beside the preview.

use eframe::egui;
use onair_engine::VideoPreset;
use onair_engine::media::capture::{camera, microphone};
use onair_engine::room::events::PublisherState;

use crate::studio::panels::{phase_color, publisher_phase};
use crate::studio::session::Session;
use crate::studio::settings::{AudioChoice, VideoChoice};
use crate::studio::ui_state::UiState;

/// Devices found the last time we looked. Listing can take a while (a camera driver may
/// stall), so it runs on its own thread and the result is picked up by [`DeviceList::poll`];
/// the UI thread never waits for it.
#[derive(Default)]
pub struct DeviceList {
    /// Cameras: (index, name).
    pub cameras: Vec<(u32, String)>,
    /// The selected camera's formats: (width, height, fps).
    pub camera_modes: Vec<(u32, u32, u32)>,
    /// Microphones by name.
    pub microphones: Vec<String>,
    /// Whether we have looked (or are looking).
    pub listed: bool,
    /// Listings under way.
    pending: Vec<crossbeam_channel::Receiver<Listing>>,
}

/// What a listing thread found.
enum Listing {
    Devices {
        cameras: Vec<(u32, String)>,
        microphones: Vec<String>,
    },
    Modes(Vec<(u32, u32, u32)>),
}

impl DeviceList {
    /// Starts listing cameras and microphones (errors count as none).
    pub fn refresh(&mut self) {
        self.listed = true;
        self.spawn(|| Listing::Devices {
            cameras: camera::list_cameras()
                .map(|c| c.into_iter().map(|c| (c.index, c.name)).collect())
                .unwrap_or_default(),
            microphones: microphone::list_microphones()
                .map(|m| m.into_iter().map(|m| m.name).collect())
                .unwrap_or_default(),
        });
    }

    /// Starts listing the formats of one camera.
    pub fn refresh_modes(&mut self, index: u32) {
        self.spawn(move || {
            Listing::Modes(
                camera::camera_modes(index)
                    .map(|m| m.into_iter().map(|m| (m.width, m.height, m.fps)).collect())
                    .unwrap_or_default(),
            )
        });
    }

    /// Whether a listing is still under way.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the results that arrived (never blocks). True when the devices changed.
    pub fn poll(&mut self) -> bool {
        let mut devices_changed = false;
        let mut results = Vec::new();
        self.pending.retain(|rx| match rx.try_recv() {
            Ok(listing) => {
                results.push(listing);
                false
            }
            Err(crossbeam_channel::TryRecvError::Empty) => true,
            Err(crossbeam_channel::TryRecvError::Disconnected) => false,
        });
        for listing in results {
            match listing {
                Listing::Devices {
                    cameras,
                    microphones,
                } => {
                    self.cameras = cameras;
                    self.microphones = microphones;
                    devices_changed = true;
                }
                Listing::Modes(modes) => self.camera_modes = modes,
            }
        }
        devices_changed
    }

    fn spawn(&mut self, list: impl FnOnce() -> Listing + Send + 'static) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("onair-devices".into())
            .spawn(move || {
                let _ = tx.send(list());
            });
        if spawned.is_ok() {
            self.pending.push(rx);
        }
    }
}

/// Draws the panel.
pub fn show(ui: &mut egui::Ui, session: &mut Session, state: &mut UiState) {
    if !state.devices.listed {
        state.devices.refresh();
    }
    state.devices.poll();
    if state.devices.busy() {
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(100));
    }
    let mut changed = false;
    egui::Grid::new("broadcast_sources")
        .num_columns(2)
        .spacing([8.0, 4.0])
        .show(ui, |ui| {
            let label = ui.label("Video");
            changed |= video_picker(ui, session, state, label.id);
            ui.end_row();
            if let VideoChoice::Camera { index } = session.host.video {
                let label = ui.label("Format");
                changed |= camera_format_picker(ui, session, state, index.unwrap_or(0), label.id);
                ui.end_row();
            }
            let label = ui.label("Audio");
            changed |= audio_picker(ui, session, state, label.id);
            ui.end_row();
            let label = ui.label("Preset");
            let combo = egui::ComboBox::from_id_salt("preset")
                .selected_text(session.host.preset.clone())
                .show_ui(ui, |ui| {
                    for p in VideoPreset::ALL {
                        changed |= ui
                            .selectable_value(
                                &mut session.host.preset,
                                p.name().to_string(),
                                p.name(),
                            )
                            .changed();
                    }
                });
            combo.response.labelled_by(label.id);
            ui.end_row();
            let label = ui.label("FPS");
            changed |= ui
                .add(egui::DragValue::new(&mut session.host.fps).range(1..=60))
                .labelled_by(label.id)
                .changed();
            ui.end_row();
            let label = ui.label("Room");
            ui.add_enabled(
                !session.is_live(),
                egui::TextEdit::singleline(&mut session.host.room).desired_width(140.0),
            )
            .labelled_by(label.id);
            ui.end_row();
            let label = ui.label("Stream ID");
            ui.add_enabled(
                !session.is_live(),
                egui::TextEdit::singleline(&mut session.host.stream_id).desired_width(140.0),
            )
            .labelled_by(label.id);
            ui.end_row();
        });
    if changed {
        session.apply_host_settings();
    }
    if let Some(path) = state.take_picked_file() {
        session.host.video = VideoChoice::File { path };
        session.apply_host_settings();
    }

    ui.horizontal(|ui| {
        let live = session.is_live();
        let button = if live {
            egui::Button::new(egui::RichText::new("Stop (F6)").strong())
        } else {
            egui::Button::new(egui::RichText::new("Go live (F5)").strong())
                .fill(egui::Color32::from_rgb(170, 30, 30))
        };
        if ui.add(button).clicked() {
            if live {
                session.stop_live();
            } else {
                session.go_live();
            }
        }
        let mut previewing = session.previewing;
        if ui.checkbox(&mut previewing, "Preview").changed() {
            if previewing {
                session.start_preview();
            } else {
                session.stop_preview();
            }
        }
    });
    ui.horizontal(|ui| {
        let mut mic = session.mic_muted;
        let mic_label = if mic { "Mic muted" } else { "Mic on" };
        if ui
            .toggle_value(&mut mic, mic_label)
            .on_hover_text("Mute the microphone in what we publish (the room sees it)")
            .changed()
        {
            session.set_mic_muted(mic);
        }
        let mut camera = session.camera_muted;
        let camera_label = if camera { "Camera off" } else { "Camera on" };
        if ui
            .toggle_value(&mut camera, camera_label)
            .on_hover_text("Send black instead of the camera (the room sees it)")
            .changed()
        {
            session.set_camera_muted(camera);
        }
        if let Some(level) = session.model.captured_level {
            ui.add(
                egui::ProgressBar::new(level / 100.0)
                    .desired_width(90.0)
                    .text(format!("mic {level:.0}")),
            );
        }
        if session.is_live()
            && let Some((up, _)) = session.model.network.get("")
        {
            super::quality_badge(ui, "net", *up);
        }
    });
    publisher_status(ui, session);

    // The preview fills the rest, 16:9 at most.
    let width = ui.available_width();
    let height = (width * 9.0 / 16.0).min(ui.available_height().max(60.0));
    let (rect, _) = ui.allocate_exact_size(egui::vec2(width, height), egui::Sense::hover());
    session.preview.paint(ui, rect);
    if !session.preview.has_picture() {
        ui.painter().text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            if session.previewing {
                "starting preview…"
            } else {
                "preview off"
            },
            egui::FontId::proportional(14.0),
            egui::Color32::GRAY,
        );
    } else if let Some((w, h)) = session.preview.size {
        super::overlay_text(
            &ui.painter_at(rect),
            rect.left_top(),
            &format!("preview {w}×{h} {:.0} fps", session.preview.fps()),
        );
        if let Some(level) = session.model.captured_level {
            super::level_meter(&ui.painter_at(rect), rect, level);
        }
    }
}

fn video_picker(
    ui: &mut egui::Ui,
    session: &mut Session,
    state: &mut UiState,
    label: egui::Id,
) -> bool {
    let mut changed = false;
    let current = match &session.host.video {
        VideoChoice::Test => "Test source".to_string(),
        VideoChoice::Camera { index } => {
            let i = index.unwrap_or(0);
            state
                .devices
                .cameras
                .iter()
                .find(|(n, _)| *n == i)
                .map_or_else(|| format!("Camera {i}"), |(_, name)| name.clone())
        }
        VideoChoice::File { path } => format!(
            "File: {}",
            std::path::Path::new(path)
                .file_name()
                .map_or_else(|| path.clone(), |n| n.to_string_lossy().into_owned())
        ),
    };
    ui.horizontal(|ui| {
        let combo = egui::ComboBox::from_id_salt("video_source")
            .selected_text(current)
            .width(150.0)
            .show_ui(ui, |ui| {
                changed |= ui
                    .selectable_value(&mut session.host.video, VideoChoice::Test, "Test source")
                    .changed();
                for (index, name) in state.devices.cameras.clone() {
                    if ui
                        .selectable_value(
                            &mut session.host.video,
                            VideoChoice::Camera { index: Some(index) },
                            name,
                        )
                        .changed()
                    {
                        changed = true;
                        state.devices.refresh_modes(index);
                    }
                }
                if state.devices.cameras.is_empty() {
                    ui.weak("no camera found");
                }
            });
        combo.response.labelled_by(label);
        if ui
            .button("File…")
            .on_hover_text("Play a media file as the source")
            .clicked()
        {
            state.pick_media_file();
        }
        if ui
            .small_button("Refresh")
            .on_hover_text("Look for devices again")
            .clicked()
        {
            state.devices.refresh();
        }
    });
    changed
}

fn camera_format_picker(
    ui: &mut egui::Ui,
    session: &mut Session,
    state: &mut UiState,
    index: u32,
    label: egui::Id,
) -> bool {
    if state.devices.camera_modes.is_empty() {
        if ui.small_button("list formats").clicked() {
            state.devices.refresh_modes(index);
        }
        return false;
    }
    let mut changed = false;
    let combo = egui::ComboBox::from_id_salt("camera_format")
        .selected_text(format!(
            "{} @ {} fps",
            session.host.preset, session.host.fps
        ))
        .show_ui(ui, |ui| {
            for &(w, h, fps) in &state.devices.camera_modes {
                if ui
                    .selectable_label(false, format!("{w}×{h} @ {fps}"))
                    .clicked()
                {
                    // The closest preset at or under the camera's height, at its rate.
                    let preset = VideoPreset::ALL
                        .into_iter()
                        .rev()
                        .find(|p| onair_engine::VideoConfig::preset(*p).height <= h)
                        .unwrap_or(VideoPreset::P180);
                    session.host.preset = preset.name().to_string();
                    session.host.fps = fps.clamp(1, 60);
                    changed = true;
                }
            }
        });
    combo.response.labelled_by(label);
    changed
}

fn audio_picker(
    ui: &mut egui::Ui,
    session: &mut Session,
    state: &mut UiState,
    label: egui::Id,
) -> bool {
    let mut changed = false;
    let current = match &session.host.audio {
        AudioChoice::None => "None".to_string(),
        AudioChoice::Tone => "Test tone".to_string(),
        AudioChoice::Microphone { name } => {
            name.clone().unwrap_or_else(|| "Default microphone".into())
        }
    };
    let combo = egui::ComboBox::from_id_salt("audio_source")
        .selected_text(current)
        .width(150.0)
        .show_ui(ui, |ui| {
            changed |= ui
                .selectable_value(&mut session.host.audio, AudioChoice::None, "None")
                .changed();
            changed |= ui
                .selectable_value(&mut session.host.audio, AudioChoice::Tone, "Test tone")
                .changed();
            for name in state.devices.microphones.clone() {
                changed |= ui
                    .selectable_value(
                        &mut session.host.audio,
                        AudioChoice::Microphone {
                            name: Some(name.clone()),
                        },
                        name,
                    )
                    .changed();
            }
            if state.devices.microphones.is_empty() {
                ui.weak("no microphone found");
            }
        });
    combo.response.labelled_by(label);
    changed
}

fn publisher_status(ui: &mut egui::Ui, session: &Session) {
    let stream = session
        .live_stream
        .clone()
        .unwrap_or_else(|| session.host.stream_id.clone());
    let publisher = session.model.publishers.get(&stream);
    let state = publisher.and_then(|p| p.state);
    let code = publisher.map_or(0, |p| p.error_code);
    ui.horizontal(|ui| {
        let phase = publisher_phase(state, code);
        super::dot(ui, phase_color(phase));
        ui.label(format!(
            "{stream}: {}",
            state.map_or("NoPublish".to_string(), |s| format!("{s:?}"))
        ));
        if code != 0 {
            super::error_code_label(ui, code);
        }
    });
    if let (Some(q), Some(PublisherState::Publishing)) = (publisher.and_then(|p| p.quality), state)
    {
        ui.monospace(format!(
            "{:.0} fps · {:.0}/{} kbps · audio {:.0} kbps · rtt {:.1} ms · lost {}/s",
            q.fps, q.video_kbps, q.target_kbps, q.audio_kbps, q.rtt_ms, q.packets_lost
        ));
    }
}
