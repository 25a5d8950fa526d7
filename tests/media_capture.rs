//! Sources through the engine: the paced test source in the preview, media files at real-time
//! pace and looping, and missing devices reported with their codes while the engine keeps
//! working.

mod common;

use std::time::{Duration, Instant};

use common::brief;
use onair_engine::media::capture::camera::list_cameras;
use onair_engine::media::capture::file::write_test_clip;
use onair_engine::media::stamp;
use onair_engine::{
    AudioSource, Engine, EngineProfile, PublishChannel, VideoConfig, VideoPreset, VideoSource,
};

const MAIN: PublishChannel = PublishChannel::Main;

fn engine() -> Engine {
    Engine::create(EngineProfile::default()).expect("engine")
}

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("onair-{}-{name}", std::process::id()))
}

/// Waits for a device error event and returns its brief form.
fn device_error(engine: &Engine) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(e) = engine
        .events()
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        let b = brief(&e);
        if b.starts_with("device") {
            return b;
        }
    }
    panic!("no device error within 10 s");
}

#[test]
fn the_preview_delivers_stamped_frames_at_pace_and_stops_at_once() {
    let engine = engine();
    engine.set_video_config(MAIN, VideoConfig::preset(VideoPreset::P360).with_fps(30));
    let frames = engine.preview_frames(MAIN);
    engine.start_preview(MAIN);
    let t0 = Instant::now();
    let mut numbers = Vec::new();
    while t0.elapsed() < Duration::from_secs(1) {
        if let Some(f) = frames.recv_timeout(Duration::from_millis(100)) {
            assert_eq!((f.width, f.height), (640, 360));
            let age_ms = (onair_engine::media::frame::wall_clock_us()
                .saturating_sub(f.capture_time_us))
                / 1000;
            assert!(age_ms < 100, "a preview frame is fresh: {age_ms} ms old");
            numbers.push(stamp::read(&f).expect("stamp").frame_number);
        }
    }
    assert!(
        (24..=36).contains(&numbers.len()),
        "about 30 frames in a second: {}",
        numbers.len()
    );
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive: {numbers:?}"
    );
    engine.stop_preview(MAIN);
    let _ = frames.latest();
    assert!(
        frames.recv_timeout(Duration::from_millis(300)).is_none(),
        "capture stopped"
    );
    assert_eq!(
        frames.stats().dropped(),
        0,
        "a receiver that keeps up loses nothing"
    );
}

#[test]
fn a_missing_camera_is_reported_and_the_engine_keeps_working() {
    let engine = engine();
    let frames = engine.preview_frames(MAIN);
    engine.set_video_source(MAIN, VideoSource::Camera { index: None });
    engine.start_preview(MAIN);
    if list_cameras().map(|c| c.is_empty()).unwrap_or(true) {
        assert_eq!(device_error(&engine), "device Main Video 1006001");
    } else {
        assert!(
            frames.recv_timeout(Duration::from_secs(5)).is_some(),
            "this machine's camera delivers"
        );
    }
    // Fall back to the test source, as the studio does.
    engine.set_video_source(MAIN, VideoSource::Test);
    assert!(
        frames.recv_timeout(Duration::from_secs(2)).is_some(),
        "frames after the fallback"
    );
    // A camera index that does not exist is the same error.
    engine.set_video_source(PublishChannel::Aux, VideoSource::Camera { index: Some(97) });
    engine.start_preview(PublishChannel::Aux);
    assert_eq!(device_error(&engine), "device Aux Video 1006001");
}

#[test]
fn a_missing_microphone_is_reported_with_its_code() {
    let engine = engine();
    let mics = onair_engine::media::capture::microphone::list_microphones().unwrap_or_default();
    engine.set_audio_source(
        MAIN,
        AudioSource::Microphone {
            name: Some("no such microphone".into()),
        },
    );
    let audio = engine.local_audio_frames(MAIN);
    engine.start_preview(MAIN);
    assert_eq!(
        device_error(&engine),
        "device Main Audio 1006010",
        "microphones here: {mics:?}"
    );
    // The default microphone: on a machine with none, the same code.
    engine.set_audio_source(MAIN, AudioSource::Microphone { name: None });
    if mics.is_empty() {
        assert_eq!(device_error(&engine), "device Main Audio 1006010");
    } else {
        let got = audio.recv_timeout(Duration::from_secs(5));
        let ev: Vec<String> = engine.events().try_iter().map(|e| brief(&e)).collect();
        assert!(
            got.is_some(),
            "this machine's microphone delivers: {mics:?} {ev:?}"
        );
    }
    engine.set_audio_source(MAIN, AudioSource::Tone);
    assert!(
        audio.recv_timeout(Duration::from_secs(2)).is_some(),
        "the tone after the fallback"
    );
}

#[test]
fn a_generated_clip_plays_at_real_time_pace_and_loops() {
    let path = temp_path("clip.ts");
    let config = VideoConfig::preset(VideoPreset::P360).with_fps(30);
    write_test_clip(&path, config, 2.0, true).expect("write the clip with FFmpeg");
    let engine = engine();
    let video = engine.preview_frames(MAIN);
    let audio = engine.local_audio_frames(MAIN);
    engine.set_video_source(MAIN, VideoSource::File(path.clone()));
    engine.set_audio_source(MAIN, AudioSource::File(path.clone()));
    engine.start_preview(MAIN);
    let t0 = Instant::now();
    let mut seen: Vec<(f64, u32)> = Vec::new();
    let mut audio_ms = 0.0;
    while t0.elapsed() < Duration::from_millis(3000) {
        if let Some(f) = video.recv_timeout(Duration::from_millis(20)) {
            seen.push((
                t0.elapsed().as_secs_f64(),
                stamp::read(&f).expect("stamp").frame_number,
            ));
        }
        while let Some(a) = audio.try_recv() {
            audio_ms += a.duration_us() as f64 / 1000.0;
        }
    }
    engine.stop_preview(MAIN);
    let _ = std::fs::remove_file(&path);
    // Real-time pace: about 90 frames in 3 s, not a burst.
    assert!(
        (80..=100).contains(&seen.len()),
        "{} frames in 3 s",
        seen.len()
    );
    let in_first_second = seen.iter().filter(|(t, _)| *t < 1.0).count();
    assert!(
        (24..=36).contains(&in_first_second),
        "{in_first_second} frames in the first second"
    );
    // The clip's 60 frames in order, then again from 0.
    let numbers: Vec<u32> = seen.iter().map(|(_, n)| *n).collect();
    let wrap = numbers
        .iter()
        .position(|&n| n == 0 && numbers[0] != 0)
        .or_else(|| numbers.iter().skip(1).position(|&n| n == 0).map(|p| p + 1));
    let wrap = wrap.expect("the clip loops");
    assert!(
        numbers[..wrap].windows(2).all(|w| w[1] == w[0] + 1),
        "in order: {numbers:?}"
    );
    assert_eq!(
        numbers[wrap - 1],
        59,
        "all 60 frames before looping: {numbers:?}"
    );
    assert!(
        (2700.0..=3300.0).contains(&audio_ms),
        "about 3 s of audio at pace: {audio_ms} ms"
    );
}

#[test]
fn an_unreadable_file_is_reported_with_its_code() {
    let engine = engine();
    engine.set_video_source(MAIN, VideoSource::File("/nonexistent/clip.mp4".into()));
    engine.start_preview(MAIN);
    assert_eq!(device_error(&engine), "device Main Video 1006020");
}
