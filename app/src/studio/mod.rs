//! The studio: an eframe/egui window on the wgpu renderer to host a live broadcast, watch
//! several rooms' streams at once and see every room's, publisher's and player's state.
//!
//! `session` owns the engine (and the embedded relay), `model` is what the events said,
//! `video` puts frames on the GPU, `panels` draws them, `app` is the window and its layout.

pub mod app;
pub mod audio_out;
pub mod headless;
pub mod model;
pub mod panels;
pub mod secrets;
pub mod session;
pub mod settings;
pub mod ui_state;
pub mod video;

use clap::Args;

/// Flags of `onair studio` (and of `onair` with no command).
#[derive(Args, Debug, Default)]
pub struct StudioArgs {
    /// Start from the default settings and layout instead of the saved ones.
    #[arg(long)]
    pub reset: bool,
    /// Rooms to enter at start (repeat or comma-separate), instead of the saved ones.
    #[arg(long, value_delimiter = ',')]
    pub room: Vec<String>,
    /// Go live as soon as the studio starts.
    #[arg(long)]
    pub go_live: bool,
    /// Save a PNG screenshot of the window to this path, then close.
    #[arg(long)]
    pub screenshot: Option<std::path::PathBuf>,
    /// Seconds after start to take the screenshot.
    #[arg(long, default_value_t = 5.0)]
    pub screenshot_after: f64,
}

/// Opens the studio window and runs until it is closed.
pub fn run(args: StudioArgs) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("Onair studio")
            .with_app_id("onair")
            .with_inner_size([1600.0, 920.0])
            .with_min_inner_size([800.0, 500.0]),
        ..Default::default()
    };
    let override_settings = if args.reset || !args.room.is_empty() {
        let mut s = settings::Settings::default();
        if !args.room.is_empty() {
            s.rooms = args.room.clone();
            if let Some(first) = args.room.first() {
                s.host.room = first.clone();
            }
        }
        Some(s)
    } else {
        None
    };
    let reset = args.reset;
    let go_live = args.go_live;
    let screenshot = args.screenshot.clone().map(|p| {
        app::ScreenshotPlan::new(
            p,
            std::time::Duration::from_secs_f64(args.screenshot_after.clamp(0.0, 3600.0)),
        )
    });
    eframe::run_native(
        "onair",
        options,
        Box::new(move |cc| {
            let mut app = app::StudioApp::new(cc, override_settings);
            if reset {
                app.layout = app::default_layout();
            }
            app.screenshot = screenshot;
            if go_live && let Some(s) = app.session.as_mut() {
                s.go_live();
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the studio window failed: {e}"))
}
