//! The studio, rendered through egui-wgpu (lavapipe on machines without a GPU): snapshot
//! tests of every panel and the main window from a scripted event sequence, the WGSL colour
//! conversion checked on rendered pixels, and an end-to-end run with the real relay, a
//! publishing engine and the studio playing its stream.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{APP_ID, TestRelay};
use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use egui_kittest::wgpu::{WgpuTestRenderer, create_render_state, default_wgpu_setup};
use onair::studio::app::StudioApp;
use onair::studio::model::LogFilter;
use onair::studio::panels;
use onair::studio::session::Tile;
use onair::studio::settings::{AudioChoice, ConnectionSettings, HostSettings, Settings};
use onair::studio::video::{self, VideoView, next_key};
use onair_engine::media::frame_channel;
use onair_engine::media::{ColorMatrix, ColorSpace, VideoFrame};
use onair_engine::messages::{QualityLevel, StreamInfo, UpdateType, User};
use onair_engine::room::events::{Event, PlayerState, PublisherState, RoomStateChangedReason};
use onair_engine::{
    AudioSource, Engine, EngineProfile, PublishChannel, RoomConfig, VideoConfig, VideoPreset,
};

fn render_state() -> eframe::egui_wgpu::RenderState {
    create_render_state(
        default_wgpu_setup(),
        eframe::egui_wgpu::RendererOptions::PREDICTABLE,
    )
}

/// Settings for a studio on `server` that enters no room and runs no preview.
fn quiet_settings(server: String, sign: String, rooms: Vec<String>) -> Settings {
    Settings {
        connection: ConnectionSettings::Remote {
            server,
            app_id: APP_ID,
            app_sign: sign,
            token: String::new(),
        },
        user_id: "studio".into(),
        rooms,
        host: HostSettings {
            room: "live".into(),
            stream_id: "studio-main".into(),
            preset: "360p".into(),
            fps: 30,
            video: onair::studio::settings::VideoChoice::Test,
            audio: AudioChoice::None,
        },
        auto_play: true,
        preview: false,
        log_filter: LogFilter::default(),
        secrets_in_keyring: false,
    }
}

/// A solid-colour I420 frame.
fn solid_frame(w: u32, h: u32, (y, cb, cr): (u8, u8, u8), color: ColorSpace) -> VideoFrame {
    let mut f = VideoFrame::new_i420(w, h);
    let luma = (w * h) as usize;
    f.data[..luma].fill(y);
    let chroma = (w.div_ceil(2) * h.div_ceil(2)) as usize;
    f.data[luma..luma + chroma].fill(cb);
    f.data[luma + chroma..].fill(cr);
    f.color = color;
    f
}

/// Vertical colour bars, so a snapshot shows the picture's orientation and aspect.
fn bars_frame(w: u32, h: u32) -> VideoFrame {
    // BT.601 limited: white, yellow, cyan, green, magenta, red, blue, black.
    const BARS: [(u8, u8, u8); 8] = [
        (235, 128, 128),
        (210, 16, 146),
        (170, 166, 16),
        (145, 54, 34),
        (106, 202, 222),
        (81, 90, 240),
        (41, 240, 110),
        (16, 128, 128),
    ];
    let mut f = VideoFrame::new_i420(w, h);
    let (cw, ch) = (w.div_ceil(2) as usize, h.div_ceil(2) as usize);
    let [py, pu, pv] = f.planes;
    for row in 0..h as usize {
        for col in 0..w as usize {
            let bar = BARS[col * 8 / w as usize];
            f.data[py.offset + row * py.stride + col] = bar.0;
            if row < ch && col < cw {
                let bar = BARS[col * 2 * 8 / w as usize];
                f.data[pu.offset + row * pu.stride + col] = bar.1;
                f.data[pv.offset + row * pv.stride + col] = bar.2;
            }
        }
    }
    f
}

/// A studio whose model holds a scripted, deterministic history: two rooms, users, streams,
/// a publisher, players with quality reports, a reconnect and a refused publish.
fn scripted_app(rs: &eframe::egui_wgpu::RenderState) -> StudioApp {
    let settings = quiet_settings("ws://127.0.0.1:9".into(), "ab".repeat(32), vec![]);
    let mut app = StudioApp::create(egui::Context::default(), Some(rs), None, Some(settings));
    let session = app.session.as_mut().expect("session");
    let room = |room: &str, reason, code| Event::RoomStateChanged {
        room_id: room.into(),
        reason,
        error_code: code,
        extended_data: String::new(),
    };
    let stream = |room: &str, id: &str, user: &str| Event::RoomStreamUpdate {
        room_id: room.into(),
        update_type: UpdateType::Add,
        streams: vec![StreamInfo {
            stream_id: id.into(),
            user: User::new(user),
            extra_info: String::new(),
            since_unix_ms: 0,
            audio_muted: false,
            video_muted: false,
        }],
    };
    let mut script: Vec<(f64, Event)> = vec![
        (0.0, room("live", RoomStateChangedReason::Logining, 0)),
        (0.2, room("live", RoomStateChangedReason::Logined, 0)),
        (0.3, room("backstage", RoomStateChangedReason::Logining, 0)),
        (0.5, room("backstage", RoomStateChangedReason::Logined, 0)),
        (
            1.0,
            Event::RoomUserUpdate {
                room_id: "live".into(),
                update_type: UpdateType::Add,
                users: vec![User::new("alice"), User::new("bob")],
            },
        ),
        (
            1.2,
            Event::RoomUserUpdate {
                room_id: "backstage".into(),
                update_type: UpdateType::Add,
                users: vec![User::new("carol")],
            },
        ),
        (1.5, stream("live", "alice-cam", "alice")),
        (1.6, stream("live", "bob-cam", "bob")),
        (1.7, stream("backstage", "carol-cam", "carol")),
        (
            2.0,
            Event::PublisherStateUpdate {
                stream_id: "studio-main".into(),
                state: PublisherState::PublishRequesting,
                error_code: 0,
                extended_data: String::new(),
            },
        ),
        (
            2.1,
            Event::PublisherStateUpdate {
                stream_id: "studio-main".into(),
                state: PublisherState::Publishing,
                error_code: 0,
                extended_data: String::new(),
            },
        ),
    ];
    for (t, id) in [(2.2, "alice-cam"), (2.3, "bob-cam"), (2.4, "carol-cam")] {
        script.push((
            t,
            Event::PlayerStateUpdate {
                stream_id: id.into(),
                state: PlayerState::PlayRequesting,
                error_code: 0,
                extended_data: String::new(),
            },
        ));
        script.push((
            t + 0.1,
            Event::PlayerStateUpdate {
                stream_id: id.into(),
                state: PlayerState::Playing,
                error_code: 0,
                extended_data: String::new(),
            },
        ));
    }
    for second in 3u32..40 {
        let t = f64::from(second);
        let stall = (20..23).contains(&second);
        script.push((
            t,
            Event::PlayerQualityUpdate {
                stream_id: "alice-cam".into(),
                decode_fps: if stall { 0.0 } else { 30.0 },
                video_kbps: if stall {
                    0.0
                } else {
                    1200.0 + f64::from(second % 7) * 40.0
                },
                packets_lost: if second > 30 { 3 } else { 0 },
                delay_ms: 4.0 + f64::from(second % 5) * 0.5,
                jitter_ms: 0.2,
                rtt_ms: 0.4,
                stutters: u64::from(second >= 20),
                stutter_ms: 0.0,
                keyframe_requests: u64::from(second >= 20),
                packets_repaired: u64::from(second) * 2,
                packets_fec_recovered: u64::from(second),
                playout_delay_ms: 0.5,
                audio_frames_played: u64::from(second) * 50,
                audio_frames_concealed: 0,
                audio_frames_lost: 0,
                path: onair_engine::MediaPath::Direct,
                keyframes_received: 0,
                video_layer: None,
                estimate_kbps: 0.0,
            },
        ));
        script.push((
            t + 0.01,
            Event::PublisherQualityUpdate {
                stream_id: "studio-main".into(),
                send_fps: 30.0,
                video_kbps: 1450.0,
                audio_kbps: 48.0,
                target_kbps: 1500,
                keyframe_requests: 1,
                rtt_ms: 0.4,
                packets_lost: 0,
                path: onair_engine::MediaPath::Direct,
            },
        ));
    }
    script.push((
        25.0,
        room("backstage", RoomStateChangedReason::Reconnecting, 0),
    ));
    script.push((
        27.0,
        room("backstage", RoomStateChangedReason::Reconnected, 0),
    ));
    script.push((
        30.0,
        Event::PlayerStateUpdate {
            stream_id: "bob-cam".into(),
            state: PlayerState::PlayRequesting,
            error_code: 1004002,
            extended_data: String::new(),
        },
    ));
    // Room data: extra info, a muted microphone, SEI, network quality, levels, a barrage.
    script.push((
        32.0,
        Event::RoomExtraInfoUpdate {
            room_id: "live".into(),
            infos: vec![onair_engine::messages::RoomExtraInfo {
                key: "poll".into(),
                value: "best camera?".into(),
                update_user: User::new("alice"),
                update_time: 0,
            }],
        },
    ));
    script.push((
        33.0,
        Event::RoomStreamExtraInfoUpdate {
            room_id: "live".into(),
            streams: vec![StreamInfo {
                stream_id: "alice-cam".into(),
                user: User::new("alice"),
                extra_info: "tonight: Q&A".into(),
                since_unix_ms: 0,
                audio_muted: false,
                video_muted: false,
            }],
        },
    ));
    script.push((
        34.0,
        Event::RemoteMicStateUpdate {
            stream_id: "bob-cam".into(),
            state: onair_engine::RemoteDeviceState::Mute,
        },
    ));
    script.push((
        35.0,
        Event::PlayerSyncRecvSEI {
            stream_id: "alice-cam".into(),
            data: b"lyric 12".to_vec(),
            pts_us: 35_000_000,
            capture_time_us: 0,
        },
    ));
    for (user, up, down) in [
        ("", QualityLevel::Excellent, QualityLevel::Good),
        ("alice", QualityLevel::Good, QualityLevel::Unknown),
        ("bob", QualityLevel::Bad, QualityLevel::Unknown),
    ] {
        script.push((
            36.0,
            Event::NetworkQuality {
                user_id: user.into(),
                upstream: up,
                downstream: down,
            },
        ));
    }
    script.push((
        37.0,
        Event::CapturedSoundLevelUpdate {
            level: 62.0,
            vad: true,
        },
    ));
    script.push((
        37.1,
        Event::RemoteSoundLevelUpdate {
            levels: [("alice-cam".to_string(), 75.0f32)].into_iter().collect(),
        },
    ));
    script.push((
        37.5,
        Event::IMRecvBarrageMessage {
            room_id: "live".into(),
            messages: vec![onair_engine::messages::RoomMessage {
                message_id: 9,
                text: "first!".into(),
                from_user: User::new("dave"),
                send_time: 0,
            }],
        },
    ));
    script.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (t, e) in &script {
        session
            .model
            .apply(*t, 1_764_000_000_000 + (*t * 1000.0) as u64, e);
    }
    session.freeze_clock(40.0);
    session.live_stream = Some("studio-main".into());
    // Tiles with fixed pictures instead of live decoders.
    for (id, room, frame) in [
        ("alice-cam", "live", bars_frame(640, 360)),
        ("bob-cam", "live", bars_frame(320, 240)),
        ("carol-cam", "backstage", bars_frame(640, 360)),
    ] {
        let (tx, rx) = frame_channel(2);
        tx.send(Arc::new(frame));
        let mut view = VideoView::new(next_key(), rx);
        view.poll();
        session.tiles.insert(
            id.into(),
            Tile {
                room: room.into(),
                view: Some(view),
                muted: true,
                volume: 100,
                layer: onair_engine::VideoLayer::Auto,
                render_reported: true,
                seen_at: None,
                video_hidden: false,
            },
        );
    }
    let (tx, rx) = frame_channel(2);
    tx.send(Arc::new(bars_frame(1280, 720)));
    session.preview = VideoView::new(next_key(), rx);
    session.preview.poll();
    session.previewing = true;
    app
}

fn harness_for<'a>(
    size: egui::Vec2,
    draw: impl FnMut(&mut egui::Ui, &mut StudioApp) + 'a,
) -> Harness<'a, StudioApp> {
    let rs = render_state();
    let app = scripted_app(&rs);
    Harness::builder()
        .with_size(size)
        .renderer(WgpuTestRenderer::from_render_state(rs))
        .build_ui_state(draw, app)
}

#[test]
fn snapshot_main_window() {
    let mut h = harness_for(egui::vec2(1600.0, 920.0), |ui, app| app.draw(ui));
    h.run();
    h.snapshot("studio_main_window");
}

#[test]
fn snapshot_panels() {
    type Panel = fn(&mut egui::Ui, &mut StudioApp);
    let panels: [(&str, egui::Vec2, Panel); 7] = [
        ("panel_broadcast", egui::vec2(420.0, 560.0), |ui, app| {
            let (s, u) = (app.session.as_mut().expect("session"), &mut app.ui);
            panels::broadcast::show(ui, s, u);
        }),
        ("panel_monitor", egui::vec2(900.0, 620.0), |ui, app| {
            let (s, u) = (app.session.as_mut().expect("session"), &mut app.ui);
            panels::monitor::show(ui, s, u);
        }),
        ("panel_users", egui::vec2(360.0, 260.0), |ui, app| {
            let (s, u) = (app.session.as_mut().expect("session"), &mut app.ui);
            panels::users::show(ui, s, u);
        }),
        ("panel_streams", egui::vec2(480.0, 260.0), |ui, app| {
            panels::streams::show(ui, app.session.as_mut().expect("session"));
        }),
        ("panel_event_log", egui::vec2(1000.0, 420.0), |ui, app| {
            let (s, u) = (app.session.as_ref().expect("session"), &mut app.ui);
            panels::event_log::show(ui, s, u);
        }),
        ("panel_timelines", egui::vec2(900.0, 220.0), |ui, app| {
            let (s, u) = (app.session.as_ref().expect("session"), &mut app.ui);
            panels::timeline::show(ui, s, u);
        }),
        ("panel_quality", egui::vec2(700.0, 520.0), |ui, app| {
            let (s, u) = (app.session.as_ref().expect("session"), &mut app.ui);
            u.quality_stream = Some("alice-cam".into());
            panels::quality::show(ui, s, u);
        }),
    ];
    let mut results = Vec::new();
    for (name, size, draw) in panels {
        let mut h = harness_for(size, draw);
        h.run();
        results.push((name, h.try_snapshot(name)));
    }
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|(n, r)| r.err().map(|e| format!("{n}: {e}")))
        .collect();
    assert!(failed.is_empty(), "snapshots differ: {failed:#?}");
}

#[test]
fn the_chat_panel_shows_messages_commands_and_extra_info_and_sends() {
    use onair_engine::messages::{RoomExtraInfo, RoomMessage};
    let mut h = harness_for(egui::vec2(520.0, 420.0), |ui, app| {
        let (s, u) = (app.session.as_mut().expect("session"), &mut app.ui);
        u.chat.room = Some("live".into());
        panels::chat::show(ui, s, u);
    });
    let message = |id: u64, from: &str, text: &str| RoomMessage {
        message_id: id,
        text: text.into(),
        from_user: User::new(from),
        send_time: 0,
    };
    let events = [
        Event::RoomExtraInfoUpdate {
            room_id: "live".into(),
            infos: vec![RoomExtraInfo {
                key: "product".into(),
                value: "sneakers, 20% off".into(),
                update_user: User::new("alice"),
                update_time: 0,
            }],
        },
        Event::IMRecvBroadcastMessage {
            room_id: "live".into(),
            messages: vec![
                message(1, "alice", "welcome everyone"),
                message(2, "bob", "hi!"),
            ],
        },
        Event::IMRecvBarrageMessage {
            room_id: "live".into(),
            messages: vec![message(3, "bob", "666")],
        },
        Event::IMRecvCustomCommand {
            room_id: "live".into(),
            from_user: User::new("alice"),
            command: "raise-hand".into(),
        },
        // Another room's message stays there.
        Event::IMRecvBroadcastMessage {
            room_id: "backstage".into(),
            messages: vec![message(1, "carol", "backstage only")],
        },
    ];
    {
        let session = h.state_mut().session.as_mut().expect("session");
        for (i, e) in events.iter().enumerate() {
            session.model.apply(40.0 + i as f64, 0, e);
        }
        session.send_chat("live", "thanks!", false);
        let live = &session.model.rooms["live"];
        let lines: Vec<String> = live
            .chat
            .iter()
            .map(|l| format!("{:?} {}: {}", l.kind, l.from, l.text))
            .collect();
        assert_eq!(
            lines,
            [
                // From the scripted history.
                "Barrage dave: first!",
                "Broadcast alice: welcome everyone",
                "Broadcast bob: hi!",
                "Barrage bob: 666",
                "Command alice: raise-hand",
                "Broadcast studio: thanks!",
            ]
        );
        assert_eq!(
            live.extra_info.get("product"),
            Some(&("sneakers, 20% off".to_string(), "alice".to_string()))
        );
        assert_eq!(session.model.rooms["backstage"].chat.len(), 1);
    }
    h.run();
    h.snapshot("panel_chat");
}

#[test]
fn the_event_log_filters_and_the_export_is_json_lines() {
    let mut h = harness_for(egui::vec2(1000.0, 400.0), |ui, app| {
        let (s, u) = (app.session.as_ref().expect("session"), &mut app.ui);
        panels::event_log::show(ui, s, u);
    });
    h.run();
    let app = h.state_mut();
    app.ui.log_filter = LogFilter {
        stream: "bob-cam".into(),
        ..Default::default()
    };
    let session = app.session.as_ref().expect("session");
    let lines = panels::event_log::json_lines(panels::event_log::visible(session, &app.ui));
    let kinds: Vec<String> = lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            format!(
                "{} {}",
                v["kind"].as_str().unwrap_or(""),
                v["error_code"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "room_stream 0",
            "player_state 0",
            "player_state 0",
            "player_state 1004002",
            "remote_mic_state 0"
        ]
    );
    // The error's meaning is there too, from the same table as docs/ERRORS.md.
    assert!(
        lines.contains("\"error_name\":\"StreamNotFound\""),
        "{lines}"
    );
    // Paused at t=10, later events are held back.
    app.ui.log_filter = LogFilter::default();
    app.ui.log_paused_at = Some(10.0);
    let session = app.session.as_ref().expect("session");
    assert!(panels::event_log::visible(session, &app.ui).all(|e| e.t <= 10.0));
}

/// Renders one solid frame through the WGSL shader and returns the pixel at the centre.
fn rendered_centre(frame: VideoFrame) -> [u8; 3] {
    let rs = render_state();
    video::install(&rs);
    let (tx, rx) = frame_channel(2);
    tx.send(Arc::new(frame));
    let mut view = VideoView::new(next_key(), rx);
    let mut h = Harness::builder()
        .with_size(egui::vec2(64.0, 64.0))
        .renderer(WgpuTestRenderer::from_render_state(rs))
        .build_ui(move |ui| {
            view.poll();
            let rect = ui.max_rect();
            view.paint(ui, rect);
        });
    h.run();
    let image = h.render().expect("render");
    let p = image.get_pixel(image.width() / 2, image.height() / 2).0;
    [p[0], p[1], p[2]]
}

#[test]
fn the_shader_converts_each_matrix_and_range() {
    let limited601 = ColorSpace::default();
    let full709 = ColorSpace {
        matrix: ColorMatrix::Bt709,
        full_range: true,
    };
    let limited709 = ColorSpace {
        matrix: ColorMatrix::Bt709,
        full_range: false,
    };
    // (Y, Cb, Cr) of pure colours in each space, and what must come out.
    let cases = [
        (limited601, (81, 90, 240), [255, 0, 0]),
        (limited601, (145, 54, 34), [0, 255, 0]),
        (limited601, (16, 128, 128), [0, 0, 0]),
        (limited709, (63, 102, 240), [255, 0, 0]),
        (full709, (54, 99, 255), [255, 0, 0]),
        (full709, (255, 128, 128), [255, 255, 255]),
    ];
    for (color, yuv, want) in cases {
        let got = rendered_centre(solid_frame(64, 64, yuv, color));
        for c in 0..3 {
            assert!(
                got[c].abs_diff(want[c]) <= 6,
                "{color:?} {yuv:?}: rendered {got:?}, want {want:?}"
            );
        }
    }
    // The wrong matrix is visibly wrong: BT.709 red read as BT.601.
    let wrong = rendered_centre(solid_frame(64, 64, (63, 102, 240), limited601));
    assert!(
        wrong[1].abs_diff(0) > 8 || wrong[0].abs_diff(255) > 8,
        "{wrong:?}"
    );
}

#[test]
fn a_picture_larger_than_the_gpu_allows_shows_a_message_not_a_panic() {
    let rs = render_state();
    video::install(&rs);
    let max = rs.device.limits().max_texture_dimension_2d;
    assert!(!video::fits_gpu(max + 2, 16));
    // A stream announcing a picture wider than any texture this GPU makes.
    let (tx, rx) = frame_channel(2);
    tx.send(Arc::new(VideoFrame::new_i420(max + 2, 16)));
    let mut view = VideoView::new(next_key(), rx);
    let mut h = Harness::builder()
        .with_size(egui::vec2(640.0, 120.0))
        .renderer(WgpuTestRenderer::from_render_state(rs))
        .build_ui(move |ui| {
            view.poll();
            let rect = ui.max_rect();
            view.paint(ui, rect);
        });
    h.run();
    let image = h.render().expect("renders without a panic");
    // The message is drawn (reddish text on black) where the picture would be.
    let reddish = image
        .pixels()
        .filter(|p| p.0[0] > 150 && p.0[0] > p.0[2] + 50)
        .count();
    assert!(reddish > 50, "no message drawn ({reddish} reddish pixels)");
}

fn drain_until(app: &mut StudioApp, what: &str, done: impl Fn(&StudioApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(app) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if let Some(s) = app.session.as_mut() {
            s.pump();
            s.poll_video();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn end_to_end_the_studio_plays_a_published_stream_and_shows_its_states() {
    let relay = TestRelay::start();
    let rs = render_state();
    let settings = quiet_settings(relay.url(), relay.sign.to_hex(), vec!["live".into()]);
    let app = StudioApp::create(egui::Context::default(), Some(&rs), None, Some(settings));
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 720.0))
        .renderer(WgpuTestRenderer::from_render_state(rs.clone()))
        .build_ui_state(
            |ui, app: &mut StudioApp| {
                let (s, u) = (app.session.as_mut().expect("session"), &mut app.ui);
                ui.columns(2, |cols| {
                    panels::monitor::show(&mut cols[0], s, u);
                    let half = egui::vec2(cols[1].available_width(), 300.0);
                    cols[1].allocate_ui_with_layout(
                        half,
                        egui::Layout::top_down(egui::Align::Min),
                        |ui| {
                            ui.push_id("users", |ui| panels::users::show(ui, s, u));
                        },
                    );
                    cols[1].separator();
                    cols[1].push_id("streams", |ui| panels::streams::show(ui, s));
                });
            },
            app,
        );
    drain_until(h.state_mut(), "login", |a| {
        a.session.as_ref().is_some_and(|s| {
            s.model
                .rooms
                .get("live")
                .is_some_and(|r| r.reason == RoomStateChangedReason::Logined)
        })
    });

    // A second engine publishes the test source into the room.
    let host = Engine::create(EngineProfile {
        app_id: APP_ID,
        app_sign: relay.sign.to_hex(),
        server: relay.url(),
        ..Default::default()
    })
    .expect("engine");
    host.login_room("live", User::new("host"), RoomConfig::default());
    host.set_video_config(PublishChannel::Main, VideoConfig::preset(VideoPreset::P360));
    host.set_audio_source(PublishChannel::Main, AudioSource::Tone);
    host.start_publishing_stream("host-cam", PublishChannel::Main);

    drain_until(h.state_mut(), "the stream's first frames", |a| {
        a.session.as_ref().is_some_and(|s| {
            s.tiles
                .get("host-cam")
                .and_then(|t| t.view.as_ref())
                .is_some_and(|v| v.frames_seen >= 3)
        })
    });
    // Draw: the frame goes up to the GPU and the first render is reported.
    h.run();
    let image = h.render().expect("render");
    {
        let app = h.state_mut();
        let s = app.session.as_mut().expect("session");
        let view = s.tiles["host-cam"].view.as_ref().expect("playing");
        assert!(view.frames_uploaded >= 1, "the texture received frames");
        assert!(
            !video::upload_samples(&rs).is_empty(),
            "the GPU textures were written"
        );
        assert_eq!(view.size, Some((640, 360)));
    }
    // The tile is not black: the picture went through the shader.
    let bright = image
        .pixels()
        .filter(|p| p.0[0] > 60 || p.0[1] > 60 || p.0[2] > 60)
        .count();
    assert!(
        bright > 10_000,
        "the tile shows the picture ({bright} bright pixels)"
    );

    drain_until(h.state_mut(), "the render report", |a| {
        a.session.as_ref().is_some_and(|s| {
            s.model
                .log
                .iter()
                .any(|e| e.kind == "player_render_first_frame")
        })
    });
    // What the panels show: the host in the users panel and as the stream's publisher, the
    // stream in the stream list (and on its tile), playing.
    h.run();
    assert!(
        h.query_all_by_label("host").count() >= 2,
        "users and streams panels list the host"
    );
    assert!(
        h.query_by_label("host-cam").is_some(),
        "the stream list shows the stream"
    );
    assert!(
        h.query_by_label("Playing").is_some(),
        "the player state is shown"
    );
    let app = h.state_mut();
    let s = app.session.as_ref().expect("session");
    // The model behind them: the host is in the room; the stream is the host's.
    let room = &s.model.rooms["live"];
    assert!(room.users.contains_key("host"), "{:?}", room.users);
    assert_eq!(room.streams["host-cam"].user_id, "host");
    // The event log in order.
    let kinds: Vec<String> = s
        .model
        .log
        .iter()
        .filter(|e| !e.kind.ends_with("_quality") && e.kind != "player_audio_first_frame")
        .map(|e| {
            let tail = e.text.split_whitespace().nth(2).unwrap_or("");
            format!("{} {}", e.kind, tail)
        })
        .collect();
    let expected_order = [
        "room_state reason=LOGINING(0)",
        "room_state reason=LOGINED(1)",
        "room_user ADD",
        "room_stream ADD",
        "player_state state=PlayRequesting",
        "player_state state=Playing",
        "player_video_first_frame after",
        "player_render_first_frame ",
    ];
    let mut at = 0;
    for k in &kinds {
        if at < expected_order.len() && k.starts_with(expected_order[at].trim_end()) {
            at += 1;
        }
    }
    assert_eq!(at, expected_order.len(), "event order: {kinds:#?}");

    // A tile nobody can see (not drawn for a second) pauses its video: the relay sends none.
    // Drawn again, it resumes from the next keyframe.
    let seen = |a: &StudioApp| {
        a.session.as_ref().map_or(0, |s| {
            s.tiles["host-cam"]
                .view
                .as_ref()
                .map_or(0, |v| v.frames_seen)
        })
    };
    {
        let s = h.state_mut().session.as_mut().expect("session");
        s.apply_visibility(Instant::now() + Duration::from_secs(2), false);
        assert!(s.tiles["host-cam"].video_hidden);
    }
    let pump_for = |app: &mut StudioApp, d: Duration| {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Some(s) = app.session.as_mut() {
                s.pump();
                s.poll_video();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    pump_for(h.state_mut(), Duration::from_millis(800));
    let paused_at = seen(h.state_mut());
    pump_for(h.state_mut(), Duration::from_secs(1));
    let while_hidden = seen(h.state_mut()) - paused_at;
    assert!(while_hidden <= 1, "{while_hidden} frames while hidden");
    h.run();
    {
        let s = h.state_mut().session.as_mut().expect("session");
        s.apply_visibility(Instant::now(), false);
        assert!(!s.tiles["host-cam"].video_hidden, "drawn: shown again");
    }
    let resumed_at = seen(h.state_mut());
    drain_until(h.state_mut(), "the picture back", |a| {
        seen(a) >= resumed_at + 5
    });

    // The host stops and leaves: the tile goes, the stream and user leave the panels.
    host.stop_publishing_stream(PublishChannel::Main);
    drain_until(h.state_mut(), "the stream to end", |a| {
        a.session.as_ref().is_some_and(|s| {
            !s.tiles.contains_key("host-cam") && s.model.rooms["live"].streams.is_empty()
        })
    });
    host.logout_room("live");
    drain_until(h.state_mut(), "the host to leave", |a| {
        a.session
            .as_ref()
            .is_some_and(|s| s.model.rooms["live"].users.is_empty())
    });
    h.run();
    assert!(
        h.query_by_label("host-cam").is_none(),
        "the stream left the list"
    );
    assert!(
        h.query_by_label("host").is_none(),
        "the host left the users panel"
    );
    host.destroy();
    if let Some(s) = h.state_mut().session.take() {
        s.shutdown();
    }
}

#[test]
fn the_studio_window_opens_under_xvfb_and_draws() {
    let dir = std::env::temp_dir().join(format!("onair-xvfb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let shot = dir.join("studio.png");
    let status = std::process::Command::new("xvfb-run")
        .args(["-a", "-s", "-screen 0 1280x800x24"])
        .arg(env!("CARGO_BIN_EXE_onair"))
        .args(["studio", "--reset", "--room", "xvfb-room", "--screenshot"])
        .arg(&shot)
        .args(["--screenshot-after", "3"])
        .env("HOME", &dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .status()
        .expect("xvfb-run runs (make test installs xvfb)");
    assert!(status.success(), "the studio exited with {status}");
    let image = image::open(&shot).expect("a PNG screenshot").to_rgba8();
    assert_eq!((image.width(), image.height()), (1280, 800));
    // A drawn window, not a blank one: many distinct colours (text, panels, the preview).
    let distinct: std::collections::HashSet<[u8; 4]> = image.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 200, "only {} colours", distinct.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_studio_idles_when_nothing_changes_and_repaints_at_the_videos_pace() {
    use onair::studio::headless::Headless;
    let relay = TestRelay::start();
    let mut headless = Headless::new(egui::vec2(1280.0, 720.0)).expect("a wgpu adapter");
    let settings = quiet_settings(relay.url(), relay.sign.to_hex(), vec!["live".into()]);
    let mut app = StudioApp::create(
        headless.ctx.clone(),
        Some(&headless.render_state),
        None,
        Some(settings),
    );
    let frame = |app: &mut StudioApp, headless: &mut Headless| {
        headless
            .frame(|ui| {
                app.update_state(ui.ctx());
                app.draw(ui);
            })
            .repaint_after
    };
    drain_until(&mut app, "login", |a| {
        a.session.as_ref().is_some_and(|s| {
            s.model
                .rooms
                .get("live")
                .is_some_and(|r| r.reason == RoomStateChangedReason::Logined)
        })
    });
    // Logged in, no preview, no streams: once the start-up events have been drawn (a second
    // at most), it only asks to be woken for the once-a-second clocks.
    let mut idle = Duration::ZERO;
    for _ in 0..20 {
        idle = frame(&mut app, &mut headless);
        if idle >= Duration::from_millis(500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        idle >= Duration::from_millis(500),
        "idle asks for a repaint in {idle:?}"
    );
    // And stays idle.
    std::thread::sleep(Duration::from_millis(300));
    let idle = frame(&mut app, &mut headless);
    assert!(
        idle >= Duration::from_millis(500),
        "idle asks for a repaint in {idle:?} after settling"
    );

    // A 30 fps stream playing: it asks again within a frame interval or so.
    let host = Engine::create(EngineProfile {
        app_id: APP_ID,
        app_sign: relay.sign.to_hex(),
        server: relay.url(),
        ..Default::default()
    })
    .expect("engine");
    host.login_room("live", User::new("host"), RoomConfig::default());
    host.set_video_config(
        PublishChannel::Main,
        VideoConfig::preset(VideoPreset::P180).with_fps(30),
    );
    host.set_audio_source(PublishChannel::Main, AudioSource::None);
    host.start_publishing_stream("host-cam", PublishChannel::Main);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut delays = Vec::new();
    while Instant::now() < deadline && delays.len() < 30 {
        let d = frame(&mut app, &mut headless);
        let shown = app.session.as_ref().is_some_and(|s| {
            s.tiles
                .get("host-cam")
                .and_then(|t| t.view.as_ref())
                .is_some_and(|v| v.frames_uploaded > 10)
        });
        if shown {
            delays.push(d);
        }
        std::thread::sleep(Duration::from_millis(33));
    }
    assert!(delays.len() >= 30, "the stream played");
    delays.sort();
    let median = delays[delays.len() / 2];
    assert!(
        median <= Duration::from_millis(60),
        "with video it repaints at the video's pace: median {median:?}"
    );
    host.destroy();
    if let Some(s) = app.session.take() {
        s.shutdown();
    }
}
