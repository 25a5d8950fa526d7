//! `onair publish` and `onair play`: a broadcaster and a player without the studio.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use onair_engine::media::stamp;
use onair_engine::{
    AudioSource, Engine, Event, PlayerConfig, PublishChannel, RoomConfig, User, VideoConfig,
    VideoPreset, VideoSource,
};

use crate::cli::credentials::CredentialArgs;

/// Flags both commands share.
#[derive(Args, Debug)]
pub struct LiveArgs {
    /// The room to log into.
    #[arg(long)]
    room: String,
    /// The stream ID.
    #[arg(long)]
    stream: String,
    /// User ID (default: a name from the process ID).
    #[arg(long)]
    user: Option<String>,
    /// A login token instead of the app sign.
    #[arg(long, env = "ONAIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    #[command(flatten)]
    credentials: CredentialArgs,
}

/// `onair publish` flags.
#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    live: LiveArgs,
    /// `test`, `camera`, `camera:N` or `file:PATH`.
    #[arg(long, default_value = "test")]
    source: String,
    /// 180p, 270p, 360p, 540p, 720p or 1080p.
    #[arg(long, default_value = "720p")]
    preset: String,
    /// Frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Send three simulcast layers (the preset, half and quarter size); the relay gives each
    /// player the one its link carries.
    #[arg(long)]
    simulcast: bool,
    /// Send this text as SEI once a second (with a counter: `TEXT #1`, `TEXT #2`…); players
    /// print it with the frame it rode on.
    #[arg(long)]
    sei: Option<String>,
    /// Publish with the microphone muted (silence; the room sees it).
    #[arg(long)]
    mute_mic: bool,
    /// Publish with the camera muted (black pictures; the room sees it).
    #[arg(long)]
    mute_camera: bool,
    /// Send no FEC repair packets to the relay: its losses are repaired by NACK alone.
    #[arg(long)]
    no_fec: bool,
}

/// `onair play` flags.
#[derive(Args, Debug)]
pub struct PlayArgs {
    #[command(flatten)]
    live: LiveArgs,
    /// Print a stats line every second.
    #[arg(long)]
    stats: bool,
    /// Which layer of a simulcast stream: auto (the relay picks what the link carries), big,
    /// small, smallest, or off (no video).
    #[arg(long, default_value = "auto")]
    layer: String,
}

fn start(live: &LiveArgs, role: &str, publish_fec: bool) -> anyhow::Result<Engine> {
    let creds = live.credentials.resolve()?;
    let engine = creds.engine(publish_fec)?;
    let user = live
        .user
        .clone()
        .unwrap_or_else(|| format!("{role}-{}", std::process::id()));
    engine.login_room(
        &live.room,
        User::new(user),
        RoomConfig {
            token: live.token.clone(),
            is_user_status_notify: false,
        },
    );
    Ok(engine)
}

/// Prints events until Ctrl-C or the duration; returns false if something ended in failure.
fn pump(
    engine: &Engine,
    live: &LiveArgs,
    mut on_event: impl FnMut(&Event),
    mut each_second: impl FnMut(),
) -> bool {
    let stop = crate::cli::ctrl_c_flag();
    let started = Instant::now();
    let deadline = live.duration.map(|d| started + Duration::from_secs_f64(d));
    let mut next_tick = started + Duration::from_secs(1);
    let mut ok = true;
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        if let Ok(event) = engine.events().recv_timeout(Duration::from_millis(50)) {
            println!("{:>9.3} {event}", started.elapsed().as_secs_f64());
            on_event(&event);
            match &event {
                Event::RoomStateChanged { reason, .. }
                    if reason.code() == 2 || reason.code() == 5 || reason.code() == 6 =>
                {
                    ok = false;
                    break;
                }
                Event::PublisherStateUpdate {
                    state, error_code, ..
                } if *state == onair_engine::PublisherState::NoPublish && *error_code != 0 => {
                    ok = false;
                    break;
                }
                _ => {}
            }
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            each_second();
        }
    }
    ok
}

fn parse_source(text: &str) -> anyhow::Result<VideoSource> {
    Ok(match text {
        "test" => VideoSource::Test,
        "camera" => VideoSource::Camera { index: None },
        t if t.starts_with("camera:") => VideoSource::Camera {
            index: Some(t["camera:".len()..].parse()?),
        },
        t if t.starts_with("file:") => VideoSource::File(t["file:".len()..].into()),
        other => bail!("unknown source {other:?}: use test, camera, camera:N or file:PATH"),
    })
}

/// Publishes until Ctrl-C.
pub fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let preset = VideoPreset::parse(&args.preset)
        .ok_or_else(|| anyhow::anyhow!("unknown preset {}", args.preset))?;
    let source = parse_source(&args.source)?;
    let engine = start(&args.live, "host", !args.no_fec)?;
    let ch = PublishChannel::Main;
    if let VideoSource::File(path) = &source {
        engine.set_audio_source(ch, AudioSource::File(path.clone()));
    }
    engine.set_video_source(ch, source);
    let layers = if args.simulcast { 3 } else { 1 };
    engine.set_video_config(
        ch,
        VideoConfig::preset(preset)
            .with_fps(args.fps)
            .simulcast(layers),
    );
    engine.mute_publish_stream_audio(ch, args.mute_mic);
    engine.mute_publish_stream_video(ch, args.mute_camera);
    engine.start_publishing_stream(&args.live.stream, ch);
    let mut sent = 0u64;
    let ok = pump(
        &engine,
        &args.live,
        |_| {},
        || {
            let Some(text) = &args.sei else {
                return;
            };
            sent += 1;
            let data = format!("{text} #{sent}");
            match engine.send_sei(ch, data.as_bytes()) {
                Ok(()) => println!("sei sent {data:?}"),
                // Before Publishing: refused with 1009022; said once a second until it works.
                Err(code) => println!("sei refused {} {code:?}", code.code()),
            }
        },
    );
    engine.stop_publishing_stream(ch);
    engine.logout_all_rooms();
    std::thread::sleep(Duration::from_millis(200));
    engine.destroy();
    if !ok {
        bail!("publishing failed");
    }
    Ok(())
}

/// One second of what a player drew, for its stats line.
#[derive(Default)]
struct SecondStats {
    frames: u32,
    /// Capture → drawn delay of each frame with a stamp, ms.
    delays: Vec<f64>,
    /// The newest stamped frame number.
    frame_number: Option<u32>,
    /// Stamped frames skipped so far.
    lost: u64,
    last_frame: Option<Instant>,
    /// The longest time without a frame this second, ms.
    longest_gap_ms: f64,
    /// The latest frame's size.
    size: Option<(u32, u32)>,
}

/// Plays until Ctrl-C, with a stats line a second when asked.
pub fn play(args: PlayArgs) -> anyhow::Result<()> {
    let video_layer = onair_engine::VideoLayer::parse(&args.layer)
        .ok_or_else(|| anyhow::anyhow!("--layer is auto, big, small, smallest or off"))?;
    let engine = start(&args.live, "viewer", true)?;
    let frames = engine.play_frames(&args.live.stream);
    engine.start_playing_stream(
        &args.live.stream,
        PlayerConfig {
            video_layer,
            ..Default::default()
        },
    );
    // A thread drains the frames (as a renderer would) and keeps the second's figures.
    let stats = Arc::new(parking_lot::Mutex::new(SecondStats::default()));
    let (sink, stop) = (stats.clone(), Arc::new(AtomicBool::new(false)));
    let stop_drain = stop.clone();
    let drain = std::thread::spawn(move || {
        while !stop_drain.load(Ordering::Relaxed) {
            let frame = frames.recv_timeout(Duration::from_millis(100));
            let now = Instant::now();
            let mut s = sink.lock();
            if let Some(last) = s.last_frame {
                let gap = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
                s.longest_gap_ms = s.longest_gap_ms.max(gap);
            }
            let Some(f) = frame else {
                continue;
            };
            s.frames += 1;
            s.last_frame = Some(now);
            s.size = Some((f.width, f.height));
            if let Some(st) = stamp::read(&f) {
                let wall = onair_engine::media::frame::wall_clock_us();
                s.delays
                    .push(wall.saturating_sub(st.capture_time_us) as f64 / 1000.0);
                if let Some(prev) = s.frame_number
                    && st.frame_number > prev + 1
                {
                    s.lost += u64::from(st.frame_number - prev - 1);
                }
                s.frame_number = Some(st.frame_number);
            }
        }
    });
    let show = args.stats;
    let layer = std::cell::Cell::new(None::<usize>);
    let on_event = |e: &Event| {
        if let Event::PlayerVideoLayerChanged { layer: l, .. } = e {
            layer.set(Some(*l));
        }
    };
    let ok = pump(&engine, &args.live, on_event, || {
        if !show {
            return;
        }
        let layer = layer
            .get()
            .map_or_else(|| "-".to_string(), |l| l.to_string());
        let mut s = stats.lock();
        let (fps, mut delays, lost, gap) = (
            s.frames,
            std::mem::take(&mut s.delays),
            s.lost,
            s.longest_gap_ms,
        );
        let size = s
            .size
            .map_or_else(|| "-".to_string(), |(w, h)| format!("{w}x{h}"));
        s.frames = 0;
        // The longest gap of a second counts from its first frame on (or from the last
        // frame before it, while frames do not come).
        s.longest_gap_ms = 0.0;
        drop(s);
        delays.sort_by(f64::total_cmp);
        let median = delays.get(delays.len() / 2).copied();
        match median {
            Some(d) => println!(
                "stats fps={fps} delay_ms={d:.1} (from the burned-in stamp) lost_frames={lost} layer={layer} longest_gap_ms={gap:.0} size={size}"
            ),
            None => {
                println!(
                    "stats fps={fps} lost_frames={lost} layer={layer} longest_gap_ms={gap:.0} size={size}"
                )
            }
        }
    });
    stop.store(true, Ordering::SeqCst);
    let _ = drain.join();
    engine.stop_playing_stream(&args.live.stream);
    engine.logout_all_rooms();
    std::thread::sleep(Duration::from_millis(200));
    engine.destroy();
    if !ok {
        bail!("playing failed");
    }
    Ok(())
}
