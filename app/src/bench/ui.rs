//! `onair bench ui`: the studio's UI frame CPU time with N remote 720p streams playing, and
//! the CPU spent uploading their frames. Publishers are real engines on an embedded relay
//! (test source, H.264, WebRTC); the studio is the real app state drawn headless through
//! egui-wgpu (lavapipe where there is no GPU), one frame per video frame interval.
//!
//! `ui_frame_ms` is the UI thread's CPU time per frame (update, layout, tessellation, uploads,
//! command encoding); `ui_frame_wall_ms` the same span on the wall clock, which also counts
//! time the thread waited for a core while the publishers' encoders ran. `ui_fps` is the UI
//! frames actually drawn per second against the `fps` asked for; `video_frames_offered_per_s`
//! what the decoders delivered to the tiles and `video_frames_shown_per_s` the distinct frames
//! the UI drew; `capture_to_texture_ms` is the capture clock (burned into the test pictures) to
//! the frame's planes written into its GPU texture. `goal_met` judges all of them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use eframe::egui;
use onair_engine::token::AppSign;
use onair_engine::{
    AudioSource, Engine, EngineProfile, PublishChannel, RoomConfig, User, VideoConfig, VideoPreset,
};
use onair_relay::{EmbeddedRelay, RelayConfig};
use serde_json::json;

use super::stats;
use onair::studio::app::StudioApp;
use onair::studio::headless::Headless;
use onair::studio::settings::{AudioChoice, ConnectionSettings, Settings};
use onair::studio::video;

/// `onair bench ui` flags.
#[derive(Args, Debug)]
pub struct UiArgs {
    /// Remote streams playing at once.
    #[arg(long, default_value_t = 16)]
    streams: usize,
    /// Their frame rate. 16 x264 encoders at 30 fps fill two cores by themselves (the
    /// publishers run in this process), so the default is 10; raise it on bigger machines.
    #[arg(long, default_value_t = 10)]
    fps: u32,
    /// Rooms they are spread over.
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// Seconds measured (after every stream shows pictures).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The publishers send three simulcast layers; the studio asks for the small one for
    /// small tiles (`received_kbps` shows what that saves).
    #[arg(long)]
    simulcast: bool,
}

/// Runs the benchmark.
pub fn run(args: UiArgs) -> anyhow::Result<()> {
    let sign = AppSign::random();
    let relay = EmbeddedRelay::start(
        RelayConfig::single_app(1, sign.clone()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )?;
    let rooms: Vec<String> = (0..args.rooms.max(1))
        .map(|i| format!("room-{i}"))
        .collect();
    let config = VideoConfig::preset(VideoPreset::P720)
        .with_fps(args.fps)
        .simulcast(if args.simulcast { 3 } else { 1 });
    let mut publishers = Vec::new();
    for i in 0..args.streams {
        let engine = Engine::create(EngineProfile {
            app_id: 1,
            app_sign: sign.to_hex(),
            server: relay.url(),
            ..Default::default()
        })?;
        let room = &rooms[i % rooms.len()];
        engine.login_room(room, User::new(format!("host-{i}")), RoomConfig::default());
        engine.set_video_config(PublishChannel::Main, config);
        engine.set_audio_source(PublishChannel::Main, AudioSource::None);
        engine.start_publishing_stream(&format!("cam-{i}"), PublishChannel::Main);
        publishers.push(engine);
    }

    let mut headless = Headless::new(egui::vec2(1600.0, 920.0))?;
    let defaults = Settings::default();
    let settings = Settings {
        connection: ConnectionSettings::Remote {
            server: relay.url(),
            app_id: 1,
            app_sign: sign.to_hex(),
            token: String::new(),
        },
        user_id: "bench-studio".into(),
        rooms: rooms.clone(),
        auto_play: true,
        // Remote streams only: the studio's own preview would add a capture of its own.
        preview: false,
        host: onair::studio::settings::HostSettings {
            audio: AudioChoice::None,
            ..defaults.host.clone()
        },
        ..defaults
    };
    let mut app = StudioApp::create(
        headless.ctx.clone(),
        Some(&headless.render_state),
        None,
        Some(settings),
    );
    if app.session.is_none() {
        anyhow::bail!(
            "the studio session did not start: {}",
            app.start_error.clone().unwrap_or_default()
        );
    }

    let interval = Duration::from_secs_f64(1.0 / f64::from(args.fps.max(1)));
    let draw = |app: &mut StudioApp, headless: &mut Headless| {
        headless.frame(|ui| {
            app.update_state(ui.ctx());
            app.draw(ui);
        })
    };
    // Until every stream shows pictures.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        draw(&mut app, &mut headless);
        let showing = app.session.as_ref().map_or(0, |s| {
            s.tiles
                .values()
                .filter(|t| t.view.as_ref().is_some_and(|v| v.frames_uploaded > 0))
                .count()
        });
        if showing >= args.streams {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {showing} of {} streams showed pictures within 60 s",
                args.streams
            );
        }
        std::thread::sleep(interval);
    }
    let uploads_before = video::upload_samples(&headless.render_state).len();
    let delays_before = video::capture_to_texture_samples(&headless.render_state).len();
    let frames_before: u64 = uploaded(&app);
    let offered_before: u64 = offered(&app);
    let mut ui_ms = Vec::new();
    let mut frame_ms = Vec::new();
    let mut wall_ms = Vec::new();
    let started = Instant::now();
    // The video the studio receives, summed over its players, once a second.
    let mut received_kbps = Vec::new();
    let mut next_sample = started + Duration::from_secs(1);
    while started.elapsed().as_secs_f64() < args.seconds {
        let t = Instant::now();
        if t >= next_sample {
            next_sample += Duration::from_secs(1);
            received_kbps.push(received(&app));
        }
        let timing = draw(&mut app, &mut headless);
        ui_ms.push(timing.ui_ms);
        frame_ms.push(timing.cpu_ms);
        wall_ms.push(timing.ui_ms + timing.render_ms);
        if let Some(rest) = interval.checked_sub(t.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let uploads = video::upload_samples(&headless.render_state);
    let new_uploads: Vec<f64> = uploads
        .iter()
        .skip(uploads_before.min(uploads.len()))
        .map(|us| us / 1000.0)
        .collect();
    let frames_shown = uploaded(&app) - frames_before;
    let frames_offered = offered(&app) - offered_before;
    let delays = video::capture_to_texture_samples(&headless.render_state);
    let texture_ms: Vec<f64> = delays
        .iter()
        .skip(delays_before.min(delays.len()))
        .map(|us| us / 1000.0)
        .collect();
    let ui_frames = frame_ms.len();
    let ui_fps = ui_frames as f64 / elapsed;
    let shown_per_s = frames_shown as f64 / elapsed;
    let offered_per_s = frames_offered as f64 / elapsed;
    let cpu_p99 = stats::summary(frame_ms.clone())["p99"]
        .as_f64()
        .unwrap_or(f64::MAX);
    // Goals: the UI thread's CPU per frame, the UI keeping the pace asked for, and the UI
    // showing (nearly) every frame the decoders offered.
    let goal_ui_fps = f64::from(args.fps) * 0.9;
    let goal_shown_share = 0.9;
    let shown_share = if offered_per_s > 0.0 {
        shown_per_s / offered_per_s
    } else {
        0.0
    };
    let report = json!({
        "bench": "ui",
        "cores": stats::cores(),
        "adapter": headless.adapter_name(),
        "streams": args.streams,
        "resolution": "1280x720",
        "fps": args.fps,
        "ui_frames": ui_frames,
        "ui_fps": (ui_fps * 10.0).round() / 10.0,
        "ui_frame_ms": stats::summary(frame_ms),
        "ui_frame_wall_ms": stats::summary(wall_ms),
        "ui_pass_wall_ms": stats::summary(ui_ms),
        "upload_ms_per_frame": stats::summary(new_uploads),
        "video_frames_offered_per_s": (offered_per_s * 10.0).round() / 10.0,
        "video_frames_shown_per_s": (shown_per_s * 10.0).round() / 10.0,
        "shown_share": (shown_share * 1000.0).round() / 1000.0,
        "capture_to_texture_ms": stats::summary(texture_ms),
        "simulcast": args.simulcast,
        "received_kbps": stats::summary(received_kbps),
        "players_per_layer": players_per_layer(&app),
        "tiles_asking": tiles_asking(&app),
        "goal": {
            "ui_frame_ms_p99": 8.0,
            "ui_fps": goal_ui_fps,
            "shown_share": goal_shown_share,
        },
        "goal_met": {
            "ui_frame_ms_p99": cpu_p99 <= 8.0,
            "ui_fps": ui_fps >= goal_ui_fps,
            "shown_share": shown_share >= goal_shown_share,
        },
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if let Some(s) = app.session.take() {
        s.shutdown();
    }
    for p in publishers {
        p.destroy();
    }
    relay.stop();
    Ok(())
}

/// Video kbit/s the studio's players received in their latest quality reports, summed.
fn received(app: &StudioApp) -> f64 {
    app.session.as_ref().map_or(0.0, |s| {
        s.model
            .players
            .values()
            .filter_map(|p| p.quality.as_ref())
            .map(|q| q.kbps)
            .sum()
    })
}

/// How many of the studio's players get each simulcast layer (as the relay last said; "-"
/// for none said).
fn players_per_layer(app: &StudioApp) -> serde_json::Value {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    if let Some(s) = app.session.as_ref() {
        for p in s.model.players.values() {
            let key = p.layer.map_or_else(|| "-".to_string(), |l| l.to_string());
            *counts.entry(key).or_default() += 1;
        }
    }
    json!(counts)
}

/// What the studio's tiles ask of their streams (auto, big, small, smallest), counted.
fn tiles_asking(app: &StudioApp) -> serde_json::Value {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    if let Some(s) = app.session.as_ref() {
        for t in s.tiles.values() {
            *counts
                .entry(format!("{:?}", t.layer).to_lowercase())
                .or_default() += 1;
        }
    }
    json!(counts)
}

fn offered(app: &StudioApp) -> u64 {
    app.session.as_ref().map_or(0, |s| {
        s.tiles
            .values()
            .filter_map(|t| t.view.as_ref())
            .map(|v| v.frames_offered())
            .sum()
    })
}

fn uploaded(app: &StudioApp) -> u64 {
    app.session.as_ref().map_or(0, |s| {
        s.tiles
            .values()
            .filter_map(|t| t.view.as_ref())
            .map(|v| v.frames_uploaded)
            .sum()
    })
}
