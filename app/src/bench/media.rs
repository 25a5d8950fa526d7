//! `onair bench media`: per-frame encode+decode latency through our H.264 pipeline at 720p30 and
//! 1080p30, the 1080p rate it sustains, and the cost of a frame-channel hand-off. Beside each,
//! the same measured on raw FFmpeg (libx264 ultrafast/zerolatency, no B-frames, and the H.264
//! decoder with slice threads) in the same run, so the pipeline's overhead is a ratio. And the
//! encode cost of simulcast: 720p + 360p + 180p per frame beside 720p alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use onair_engine::media::codec::ffmpeg;
use onair_engine::media::codec::h264::{H264Decoder, H264Encoder};
use onair_engine::media::testsrc::TestPattern;
use onair_engine::media::{VideoConfig, VideoFrame, VideoPreset, frame_channel};
use serde_json::json;

use super::stats;

/// `onair bench media` flags.
#[derive(Args, Debug)]
pub struct MediaArgs {
    /// Frames per measurement.
    #[arg(long, default_value_t = 300)]
    frames: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn frames_for(config: &VideoConfig, n: usize) -> Vec<VideoFrame> {
    let pattern = TestPattern::new(config.width, config.height);
    (0..n as u64)
        .map(|i| pattern.render(i, (i * 33_333) as i64, i))
        .collect()
}

/// Encode+decode time of each frame through our pipeline, in ms, and the total seconds.
fn pipeline(config: VideoConfig, frames: &[VideoFrame]) -> anyhow::Result<(Vec<f64>, f64)> {
    let mut enc = H264Encoder::new(config)?;
    let mut dec = H264Decoder::new()?;
    let mut ms = Vec::with_capacity(frames.len());
    let t_all = Instant::now();
    for f in frames {
        let t0 = Instant::now();
        let p = enc
            .encode(f)?
            .ok_or_else(|| anyhow::anyhow!("no packet for a frame"))?;
        let out = dec.decode(&p.data, p.pts_us, p.capture_time_us)?;
        anyhow::ensure!(out.is_some(), "no frame for a packet");
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((ms, t_all.elapsed().as_secs_f64()))
}

/// Encode time of each frame through every layer of `config` (one encoder per layer, in turn,
/// as the publisher's encode thread does), in ms, and the total seconds.
fn encode_layers(config: VideoConfig, frames: &[VideoFrame]) -> anyhow::Result<(Vec<f64>, f64)> {
    let mut encoders = config
        .layers()
        .into_iter()
        .map(H264Encoder::new)
        .collect::<Result<Vec<_>, _>>()?;
    let mut ms = Vec::with_capacity(frames.len());
    let t_all = Instant::now();
    for f in frames {
        let t0 = Instant::now();
        for i in 0..encoders.len() {
            let (done, rest) = encoders.split_at_mut(i);
            if let Some(e) = rest.first_mut() {
                e.encode_from(done.last(), f)?;
            }
        }
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((ms, t_all.elapsed().as_secs_f64()))
}

/// The same on bare FFmpeg: frames already in FFmpeg's buffers, no copies, no mapping.
fn raw_ffmpeg(config: VideoConfig, frames: &[VideoFrame]) -> anyhow::Result<(Vec<f64>, f64)> {
    use ffmpeg::codec::threading;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    let codec =
        ffmpeg::encoder::find_by_name("libx264").ok_or_else(|| anyhow::anyhow!("no libx264"))?;
    let mut ctx = ffmpeg::codec::context::Context::new_with_codec(codec);
    ctx.set_threading(threading::Config {
        kind: threading::Type::Slice,
        count: threads,
        ..Default::default()
    });
    let mut enc = ctx.encoder().video()?;
    enc.set_width(config.width);
    enc.set_height(config.height);
    enc.set_format(ffmpeg::format::Pixel::YUV420P);
    enc.set_time_base((1, config.fps as i32));
    enc.set_frame_rate(Some((config.fps as i32, 1)));
    enc.set_max_b_frames(0);
    enc.set_bit_rate(config.bitrate_kbps as usize * 1000);
    let mut opts = ffmpeg::Dictionary::new();
    opts.set("preset", "ultrafast");
    opts.set("tune", "zerolatency");
    let mut enc = enc.open_with(opts)?;
    let dcodec = ffmpeg::decoder::find(ffmpeg::codec::Id::H264)
        .ok_or_else(|| anyhow::anyhow!("no h264 decoder"))?;
    let mut dctx = ffmpeg::codec::context::Context::new_with_codec(dcodec);
    dctx.set_threading(threading::Config {
        kind: threading::Type::Slice,
        count: threads,
        ..Default::default()
    });
    let mut dec = dctx.decoder().video()?;
    let inputs: Vec<ffmpeg::frame::Video> = frames
        .iter()
        .map(|f| {
            let mut v = ffmpeg::frame::Video::new(
                ffmpeg::format::Pixel::YUV420P,
                config.width,
                config.height,
            );
            onair_engine::media::codec::convert::copy_into_ffmpeg(f, &mut v);
            v
        })
        .collect();
    let mut packet = ffmpeg::Packet::empty();
    let mut out = ffmpeg::frame::Video::empty();
    let mut ms = Vec::with_capacity(inputs.len());
    let t_all = Instant::now();
    for (i, mut f) in inputs.into_iter().enumerate() {
        let t0 = Instant::now();
        f.set_pts(Some(i as i64));
        enc.send_frame(&f)?;
        enc.receive_packet(&mut packet)?;
        dec.send_packet(&packet)?;
        dec.receive_frame(&mut out)?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((ms, t_all.elapsed().as_secs_f64()))
}

fn p(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    stats::percentile(&s, q)
}

/// Same-thread send+receive of a shared frame, per operation, from batches of 1,000.
fn channel_handoff() -> (Vec<f64>, Vec<f64>) {
    let frame = Arc::new(VideoFrame::new_i420(1280, 720));
    let (tx, rx) = frame_channel(2);
    let mut per_op = Vec::new();
    for _ in 0..500 {
        let t0 = Instant::now();
        for _ in 0..1000 {
            tx.send(frame.clone());
            std::hint::black_box(rx.try_recv());
        }
        per_op.push(t0.elapsed().as_nanos() as f64 / 1000.0);
    }
    // Across threads: the delay from send to a blocked receiver waking with the frame.
    let (tx, rx) = frame_channel::<(Instant, Arc<VideoFrame>)>(2);
    let consumer = std::thread::spawn(move || {
        let mut ns = Vec::new();
        while let Some((sent, _f)) = rx.recv_timeout(Duration::from_secs(1)) {
            ns.push(sent.elapsed().as_nanos() as f64);
        }
        ns
    });
    for _ in 0..2000 {
        tx.send((Instant::now(), frame.clone()));
        std::thread::sleep(Duration::from_micros(200));
    }
    drop(tx);
    let cross = consumer.join().unwrap_or_default();
    (per_op, cross)
}

/// Runs the benchmark.
pub fn run(args: MediaArgs) -> anyhow::Result<()> {
    onair_engine::media::codec::init();
    let c720 = VideoConfig::preset(VideoPreset::P720)
        .with_fps(30)
        .with_bitrate_kbps(2000);
    let c1080 = VideoConfig::preset(VideoPreset::P1080)
        .with_fps(30)
        .with_bitrate_kbps(4000);
    let f720 = frames_for(&c720, args.frames);
    let f1080 = frames_for(&c1080, args.frames);
    // Interleave ours and raw so both see the same machine load.
    let (raw720, _) = raw_ffmpeg(c720, &f720)?;
    let (ours720, _) = pipeline(c720, &f720)?;
    let (raw1080, raw1080_s) = raw_ffmpeg(c1080, &f1080)?;
    let (ours1080, ours1080_s) = pipeline(c1080, &f1080)?;
    // Simulcast: 720p + 360p + 180p from each 720p frame, beside 720p alone.
    let (one_layer, one_s) = encode_layers(c720, &f720)?;
    let (three_layers, three_s) = encode_layers(c720.simulcast(3), &f720)?;
    let (handoff, cross) = channel_handoff();
    let fps_1080 = f1080.len() as f64 / ours1080_s;
    let raw_fps_1080 = f1080.len() as f64 / raw1080_s;
    let report = json!({
        "bench": "media",
        "cores": stats::cores(),
        "frames": args.frames,
        "encode_decode_720p_ms": stats::summary(ours720.clone()),
        "encode_decode_1080p_ms": stats::summary(ours1080.clone()),
        "fps_1080p": (fps_1080 * 10.0).round() / 10.0,
        "encode_720p_ms": stats::summary(one_layer.clone()),
        "encode_simulcast_720p_360p_180p_ms": stats::summary(three_layers.clone()),
        "fps_720p_encode": (f720.len() as f64 / one_s * 10.0).round() / 10.0,
        "fps_simulcast_encode": (f720.len() as f64 / three_s * 10.0).round() / 10.0,
        "channel_handoff_ns": stats::summary(handoff),
        "channel_cross_thread_ns": stats::summary(cross),
        "raw_ffmpeg": {
            "encode_decode_720p_ms": stats::summary(raw720.clone()),
            "encode_decode_1080p_ms": stats::summary(raw1080),
            "fps_1080p": (raw_fps_1080 * 10.0).round() / 10.0,
        },
        "ratios": {
            "p50_720p": ((p(&ours720, 50.0) / p(&raw720, 50.0)) * 1000.0).round() / 1000.0,
            "p99_720p": ((p(&ours720, 99.0) / p(&raw720, 99.0)) * 1000.0).round() / 1000.0,
            "fps_1080p": ((fps_1080 / raw_fps_1080) * 1000.0).round() / 1000.0,
            "simulcast_encode_p50_vs_720p": ((p(&three_layers, 50.0) / p(&one_layer, 50.0)) * 1000.0).round() / 1000.0,
        },
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
