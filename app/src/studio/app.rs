//! The studio window: the session, the panels' state and the docking layout (egui_tiles), the
//! menu and status bars, shortcuts, the connect dialog, and when to repaint.

use std::time::Duration;

use eframe::egui;
use egui_tiles::{Tile, TileId, Tiles, Tree};

use super::panels;
use super::secrets;
use super::session::Session;
use super::settings::{STORAGE_KEY, Settings, VideoChoice};
use super::ui_state::UiState;
use super::video;

/// Key of the layout in eframe's storage.
/// Versioned: a layout stored before the Chat pane existed is replaced by the default once.
const LAYOUT_KEY: &str = "onair.layout.v2";

/// A docked panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pane {
    /// Host a broadcast.
    Broadcast,
    /// Rooms and their stream tiles.
    Monitor,
    /// Room users.
    Users,
    /// Stream list.
    Streams,
    /// Event log.
    EventLog,
    /// State timelines.
    Timelines,
    /// Quality plots.
    Quality,
    /// Room chat and extra info.
    Chat,
}

impl Pane {
    fn title(self) -> &'static str {
        match self {
            Pane::Broadcast => "Broadcast",
            Pane::Monitor => "Monitor",
            Pane::Users => "Users",
            Pane::Streams => "Streams",
            Pane::EventLog => "Event log",
            Pane::Timelines => "Timelines",
            Pane::Quality => "Quality",
            Pane::Chat => "Chat",
        }
    }
}

/// The default layout: broadcast and users on the left, the monitor with timelines and
/// quality below it in the middle, streams and the event log on the right.
pub fn default_layout() -> Tree<Pane> {
    let mut tiles = Tiles::default();
    let broadcast = tiles.insert_pane(Pane::Broadcast);
    let users = tiles.insert_pane(Pane::Users);
    let left = tiles.insert_vertical_tile(vec![broadcast, users]);
    let monitor = tiles.insert_pane(Pane::Monitor);
    let timelines = tiles.insert_pane(Pane::Timelines);
    let quality = tiles.insert_pane(Pane::Quality);
    let chat = tiles.insert_pane(Pane::Chat);
    let below = tiles.insert_tab_tile(vec![timelines, quality, chat]);
    let middle = tiles.insert_vertical_tile(vec![monitor, below]);
    let streams = tiles.insert_pane(Pane::Streams);
    let log = tiles.insert_pane(Pane::EventLog);
    let right = tiles.insert_vertical_tile(vec![streams, log]);
    let root = tiles.insert_horizontal_tile(vec![left, middle, right]);
    set_shares(
        &mut tiles,
        root,
        &[(left, 1.0), (middle, 2.0), (right, 1.3)],
    );
    set_shares(&mut tiles, middle, &[(monitor, 2.0), (below, 1.0)]);
    set_shares(&mut tiles, left, &[(broadcast, 2.0), (users, 1.0)]);
    set_shares(&mut tiles, right, &[(streams, 1.0), (log, 2.0)]);
    Tree::new(egui::Id::unique("onair_layout"), root, tiles)
}

fn set_shares(tiles: &mut Tiles<Pane>, container: TileId, shares: &[(TileId, f32)]) {
    if let Some(Tile::Container(egui_tiles::Container::Linear(linear))) = tiles.get_mut(container) {
        for &(id, share) in shares {
            linear.shares.set_share(id, share);
        }
    }
}

/// The studio.
pub struct StudioApp {
    /// The live session (None while reconnecting or when starting failed).
    pub session: Option<Session>,
    /// What is remembered.
    pub settings: Settings,
    /// The panels' state.
    pub ui: UiState,
    /// The layout.
    pub layout: Tree<Pane>,
    /// Why the session could not start.
    pub start_error: Option<String>,
    /// A screenshot to take of the window, then close (`onair studio --screenshot`).
    pub screenshot: Option<ScreenshotPlan>,
    /// First run: switch to the first camera once the device list arrives.
    pick_camera: bool,
    ctx: egui::Context,
}

/// Take a screenshot of the window at a time, save it as PNG, then close.
pub struct ScreenshotPlan {
    /// Where to save it.
    pub path: std::path::PathBuf,
    /// When to take it.
    pub at: std::time::Instant,
    requested: bool,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl ScreenshotPlan {
    /// A screenshot `after` from now, saved to `path`.
    pub fn new(path: std::path::PathBuf, after: Duration) -> ScreenshotPlan {
        ScreenshotPlan {
            path,
            at: std::time::Instant::now() + after,
            requested: false,
            done: Default::default(),
        }
    }
}

impl StudioApp {
    /// Makes the studio from eframe's creation context: installs the video pipeline, loads the
    /// settings and the layout, starts the session.
    pub fn new(cc: &eframe::CreationContext<'_>, override_settings: Option<Settings>) -> StudioApp {
        StudioApp::create(
            cc.egui_ctx.clone(),
            cc.wgpu_render_state.as_ref(),
            cc.storage,
            override_settings,
        )
    }

    /// Makes the studio from its parts (the window's, a test harness's or a headless
    /// renderer's): installs the video pipeline into `render_state`, loads the settings and
    /// layout from `storage` unless `override_settings` is given, starts the session.
    pub fn create(
        ctx: egui::Context,
        render_state: Option<&eframe::egui_wgpu::RenderState>,
        storage: Option<&dyn eframe::Storage>,
        override_settings: Option<Settings>,
    ) -> StudioApp {
        if let Some(rs) = render_state {
            video::install(rs);
        }
        let mut stored: Option<Settings> = storage.and_then(|s| eframe::get_value(s, STORAGE_KEY));
        if let Some(s) = stored.as_mut() {
            secrets::restore(s);
        }
        secrets::probe_in_background();
        let first_run = stored.is_none() && override_settings.is_none();
        let settings = override_settings.or(stored).unwrap_or_default();
        let layout = storage
            .and_then(|s| eframe::get_value(s, LAYOUT_KEY))
            .unwrap_or_else(default_layout);
        let mut ui = UiState::default();
        // First run: a camera if there is one (picked when the listing thread answers), the
        // test source until then.
        let pick_camera = first_run && settings.host.video == VideoChoice::Test;
        if pick_camera {
            ui.devices.refresh();
        }
        ui.log_filter = settings.log_filter.clone();
        let mut app = StudioApp {
            session: None,
            settings,
            ui,
            layout,
            start_error: None,
            screenshot: None,
            pick_camera,
            ctx,
        };
        app.start_session();
        app
    }

    /// On first run, switches the host to the first camera once the device list arrives.
    fn pick_first_camera(&mut self, ctx: &egui::Context) {
        self.ui.devices.poll();
        if self.ui.devices.busy() {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
            return;
        }
        self.pick_camera = false;
        let Some((index, _)) = self.ui.devices.cameras.first() else {
            return;
        };
        let video = VideoChoice::Camera {
            index: Some(*index),
        };
        self.settings.host.video = video.clone();
        if let Some(session) = self.session.as_mut() {
            session.host.video = video;
            session.apply_host_settings();
        }
    }

    /// (Re)starts the session from the settings. The old one is shut down on its own thread
    /// (logging out waits for the relay), so the UI does not stall.
    pub fn start_session(&mut self) {
        if let Some(old) = self.session.take() {
            let _ = std::thread::Builder::new()
                .name("onair-shutdown".into())
                .spawn(move || old.shutdown());
        }
        let ctx = self.ctx.clone();
        match Session::start(&self.settings, move || ctx.request_repaint()) {
            Ok(s) => {
                self.session = Some(s);
                self.start_error = None;
            }
            Err(e) => self.start_error = Some(format!("{e:#}")),
        }
    }

    /// One frame's work outside drawing: events into the model, new video frames, shortcuts.
    pub fn update_state(&mut self, ctx: &egui::Context) {
        self.ui.poll_dialogs();
        self.take_screenshot(ctx);
        if self.pick_camera {
            self.pick_first_camera(ctx);
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.pump();
        session.poll_video();
        let (go_live, stop, pause, search) = ctx.input(|i| {
            (
                i.key_pressed(egui::Key::F5),
                i.key_pressed(egui::Key::F6),
                i.key_pressed(egui::Key::F8),
                i.modifiers.command && i.key_pressed(egui::Key::F),
            )
        });
        if go_live && !session.is_live() {
            session.go_live();
        }
        if stop && session.is_live() {
            session.stop_live();
        }
        if pause {
            let now = session.now();
            self.ui.toggle_log_pause(now);
        }
        if search {
            self.ui.focus_log_search = true;
        }
        // Repaint at the video's pace while video runs; otherwise only on events (the
        // engine's notifier wakes us) and once a second for the clocks.
        match session.video_rate() {
            Some(rate) => {
                let fps = if rate >= 1.0 { rate.min(120.0) } else { 30.0 };
                ctx.request_repaint_after(Duration::from_secs_f64(1.0 / fps));
            }
            None => ctx.request_repaint_after(Duration::from_secs(1)),
        }
    }

    fn take_screenshot(&mut self, ctx: &egui::Context) {
        let Some(plan) = self.screenshot.as_mut() else {
            return;
        };
        if plan.done.load(std::sync::atomic::Ordering::Acquire) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        let now = std::time::Instant::now();
        if plan.requested || now < plan.at {
            ctx.request_repaint_after(plan.at.saturating_duration_since(now));
            return;
        }
        plan.requested = true;
        let (path, done, wake) = (plan.path.clone(), plan.done.clone(), ctx.clone());
        ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(
            egui::ScreenshotCallback::new(move |image| {
                let [w, h] = image.size;
                let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
                match image::RgbaImage::from_raw(w as u32, h as u32, rgba) {
                    Some(img) => match img.save(&path) {
                        Ok(()) => println!("screenshot saved to {}", path.display()),
                        Err(e) => eprintln!("could not save {}: {e}", path.display()),
                    },
                    None => eprintln!("the screenshot had no pixels"),
                }
                done.store(true, std::sync::atomic::Ordering::Release);
                wake.request_repaint();
            }),
        ));
    }

    /// Draws the whole window into `ui`.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        let frame = egui::Frame::central_panel(ui.style());
        egui::CentralPanel::default()
            .frame(frame)
            .show(ui, |ui| match self.session.as_mut() {
                Some(session) => {
                    let mut behavior = Behavior {
                        session,
                        state: &mut self.ui,
                    };
                    self.layout.ui(&mut behavior, ui);
                }
                None => {
                    ui.heading("The studio could not start");
                    if let Some(e) = &self.start_error {
                        ui.colored_label(egui::Color32::from_rgb(220, 60, 60), e);
                    }
                    if ui.button("Connect…").clicked() {
                        self.ui
                            .connect
                            .open_with(&self.settings.connection, &self.settings.user_id);
                    }
                }
            });
        self.connect_dialog(ui.ctx());
        // Tiles nobody can see stop receiving video (audio goes on).
        if let Some(session) = self.session.as_mut() {
            let minimized = ui.ctx().input(|i| i.viewport().minimized.unwrap_or(false));
            session.apply_visibility(std::time::Instant::now(), minimized);
        }
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.strong("Onair studio");
            ui.separator();
            if let Some(s) = &self.session {
                let live = s.is_live();
                ui.label(format!(
                    "{} relay {} · app {} · user {}",
                    if s.embedded { "embedded" } else { "remote" },
                    s.server,
                    s.app_id,
                    s.user_id
                ));
                if live {
                    ui.colored_label(egui::Color32::from_rgb(220, 40, 40), "LIVE");
                }
            }
            if ui.button("Connect…").clicked() {
                self.ui
                    .connect
                    .open_with(&self.settings.connection, &self.settings.user_id);
            }
            ui.menu_button("View", |ui| {
                if ui.button("Reset layout").clicked() {
                    self.layout = default_layout();
                    ui.close();
                }
                ui.separator();
                ui.weak("F5 go live · F6 stop · F8 pause the log · Ctrl+F search the log");
            });
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let Some(s) = &self.session else {
                ui.weak("no session");
                return;
            };
            let playing = s.tiles.values().filter(|t| t.playing()).count();
            ui.weak(format!(
                "{} rooms · {} streams playing · {} events · preview {:.0} fps",
                s.model.rooms.len(),
                playing,
                s.events_seen,
                s.preview.fps()
            ));
            if let Some(speaker) = s.speaker_status() {
                ui.weak(format!("· speaker: {speaker}"));
            }
            if s.engine().dropped_events() > 0 {
                ui.colored_label(
                    egui::Color32::YELLOW,
                    format!("{} events dropped", s.engine().dropped_events()),
                );
            }
        });
    }

    fn connect_dialog(&mut self, ctx: &egui::Context) {
        if !self.ui.connect.open {
            return;
        }
        let mut open = true;
        let mut connect = false;
        egui::Window::new("Connect")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                let d = &mut self.ui.connect;
                ui.radio_value(
                    &mut d.embedded,
                    true,
                    "Embedded relay (this machine, development app)",
                );
                ui.radio_value(&mut d.embedded, false, "Remote relay");
                ui.add_enabled_ui(!d.embedded, |ui| {
                    egui::Grid::new("connect_grid")
                        .num_columns(2)
                        .show(ui, |ui| {
                            let l = ui.label("Relay URL");
                            ui.text_edit_singleline(&mut d.server).labelled_by(l.id);
                            ui.end_row();
                            let l = ui.label("App ID");
                            ui.text_edit_singleline(&mut d.app_id).labelled_by(l.id);
                            ui.end_row();
                            let l = ui.label("App sign");
                            ui.add(egui::TextEdit::singleline(&mut d.app_sign).password(true))
                                .labelled_by(l.id);
                            ui.end_row();
                            let l = ui.label("or token");
                            ui.add(egui::TextEdit::singleline(&mut d.token).password(true))
                                .labelled_by(l.id);
                            ui.end_row();
                        });
                    let has_secret = !d.app_sign.trim().is_empty() || !d.token.trim().is_empty();
                    if !d.embedded && has_secret {
                        // Say where the secret is kept, where it is typed.
                        match secrets::available() {
                            Some(true) => {
                                ui.weak("Kept in the OS keyring.");
                            }
                            _ => {
                                ui.colored_label(
                                    egui::Color32::from_rgb(220, 170, 60),
                                    "No OS keyring: kept in plain text in the studio's settings \
                                     on this machine. The app sign lets anyone log in as anyone: \
                                     prefer a token.",
                                );
                            }
                        }
                    }
                });
                ui.horizontal(|ui| {
                    let l = ui.label("User ID");
                    ui.text_edit_singleline(&mut d.user_id).labelled_by(l.id);
                });
                if let Some(e) = &d.error {
                    ui.colored_label(egui::Color32::from_rgb(220, 60, 60), e);
                }
                connect = ui.button("Connect").clicked();
            });
        if connect {
            match self.ui.connect.connection() {
                Ok(connection) => {
                    let user = self.ui.connect.user_id.trim();
                    if onair_engine::ids::check_user_id(user).is_err() {
                        self.ui.connect.error =
                            Some("the user ID is 1–64 of a-z A-Z 0-9 - _ .".into());
                    } else {
                        self.settings.connection = connection;
                        self.settings.user_id = user.to_string();
                        self.start_session();
                        match &self.start_error {
                            Some(e) => self.ui.connect.error = Some(e.clone()),
                            None => self.ui.connect.open = false,
                        }
                    }
                }
                Err(e) => self.ui.connect.error = Some(e),
            }
        }
        if !open {
            self.ui.connect.open = false;
        }
    }

    /// The settings as they stand now (rooms we are in, the broadcast, the log filter).
    pub fn current_settings(&self) -> Settings {
        let mut settings = self.settings.clone();
        if let Some(s) = &self.session {
            settings.host = s.host.clone();
            settings.auto_play = s.auto_play;
            settings.preview = s.previewing;
            let rooms: Vec<String> = s
                .model
                .rooms
                .iter()
                .filter(|(_, r)| {
                    r.reason.state() != onair_engine::room::events::RoomState::Disconnected
                })
                .map(|(id, _)| id.clone())
                .collect();
            if !rooms.is_empty() {
                settings.rooms = rooms;
            }
        }
        settings.log_filter = self.ui.log_filter.clone();
        settings
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.update_state(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.draw(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(
            storage,
            STORAGE_KEY,
            &secrets::for_storage(self.current_settings()),
        );
        eframe::set_value(storage, LAYOUT_KEY, &self.layout);
    }

    fn on_exit(&mut self) {
        if let Some(s) = self.session.take() {
            s.shutdown();
        }
    }
}

/// How egui_tiles draws our panes.
struct Behavior<'a> {
    session: &'a mut Session,
    state: &'a mut UiState,
}

impl egui_tiles::Behavior<Pane> for Behavior<'_> {
    fn tab_title_for_pane(&mut self, pane: &Pane) -> egui::WidgetText {
        pane.title().into()
    }

    fn pane_ui(
        &mut self,
        ui: &mut egui::Ui,
        _tile_id: TileId,
        pane: &mut Pane,
    ) -> egui_tiles::UiResponse {
        let frame = egui::Frame::new().inner_margin(6.0);
        frame.show(ui, |ui| {
            ui.set_min_size(ui.available_size());
            match pane {
                Pane::Broadcast => panels::broadcast::show(ui, self.session, self.state),
                Pane::Monitor => panels::monitor::show(ui, self.session, self.state),
                Pane::Users => panels::users::show(ui, self.session, self.state),
                Pane::Streams => panels::streams::show(ui, self.session),
                Pane::EventLog => panels::event_log::show(ui, self.session, self.state),
                Pane::Timelines => panels::timeline::show(ui, self.session, self.state),
                Pane::Quality => panels::quality::show(ui, self.session, self.state),
                Pane::Chat => panels::chat::show(ui, self.session, self.state),
            }
        });
        egui_tiles::UiResponse::None
    }

    fn simplification_options(&self) -> egui_tiles::SimplificationOptions {
        egui_tiles::SimplificationOptions {
            all_panes_must_have_tabs: true,
            ..Default::default()
        }
    }
}
