//! Video on the GPU: every stream (the local preview and each remote stream) is a set of
//! plane textures updated from its frame channel, converted YUV→RGB by the WGSL shader in
//! `shaders/yuv_to_rgb.wgsl` and drawn through an egui-wgpu paint callback.
//!
//! The UI thread never blocks on video: [`VideoView::poll`] takes the newest frame if there is
//! one (`FrameReceiver::latest`, lock-free) and hands it to the paint callback, which uploads
//! the planes as they are (`queue.write_texture` with the frame's own strides) only when the
//! frame changed (a generation number per view). [`YuvPipeline`] lives in egui-wgpu's callback resources, one set of
//! textures per view.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eframe::egui;
use eframe::egui_wgpu::{self, wgpu};
use onair_engine::media::{ColorMatrix, ColorSpace, FrameReceiver, PixelFormat, SharedVideoFrame};

/// The shader, kept in `shaders/` at the top of the repository.
pub const YUV_SHADER: &str = include_str!("../../../shaders/yuv_to_rgb.wgsl");

/// Textures not drawn for this long are freed (their tile went away).
const EVICT_AFTER: Duration = Duration::from_secs(5);
/// Upload timings kept for the figures.
const UPLOAD_SAMPLES: usize = 4096;

/// The render pipeline and every view's textures; one per renderer, in its callback resources.
pub struct YuvPipeline {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    linear_output: bool,
    textures: HashMap<u64, PlaneTextures>,
    last_evict: Instant,
    /// CPU time (of the render thread) of each upload, all planes of one frame, newest last.
    pub upload_us: std::collections::VecDeque<f64>,
    /// Frames uploaded since start.
    pub uploads: u64,
    /// Capture clock → texture written, µs, for each uploaded frame that carries a capture
    /// time (same-machine clocks), newest last.
    pub capture_to_texture_us: std::collections::VecDeque<f64>,
}

struct PlaneTextures {
    shape: (u32, u32, PixelFormat),
    color: ColorSpace,
    planes: Vec<wgpu::Texture>,
    params: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    touched: Instant,
    /// The view's frame generation the textures hold.
    generation: u64,
}

/// Puts the pipeline into a renderer's callback resources (once, at start-up).
pub fn install(render_state: &egui_wgpu::RenderState) {
    MAX_TEXTURE_SIDE.store(
        render_state.device.limits().max_texture_dimension_2d,
        std::sync::atomic::Ordering::Relaxed,
    );
    let pipeline = YuvPipeline::new(&render_state.device, render_state.target_format);
    render_state
        .renderer
        .write()
        .callback_resources
        .insert(pipeline);
}

/// Capture clock → texture written (the frame's planes handed to `write_texture`), µs, per
/// uploaded frame of the pipeline in `render_state` (for `onair bench ui`).
pub fn capture_to_texture_samples(render_state: &egui_wgpu::RenderState) -> Vec<f64> {
    render_state
        .renderer
        .read()
        .callback_resources
        .get::<YuvPipeline>()
        .map(|p| p.capture_to_texture_us.iter().copied().collect())
        .unwrap_or_default()
}

/// Upload timings of the pipeline in `render_state`, in microseconds (for `onair bench ui`).
pub fn upload_samples(render_state: &egui_wgpu::RenderState) -> Vec<f64> {
    render_state
        .renderer
        .read()
        .callback_resources
        .get::<YuvPipeline>()
        .map(|p| p.upload_us.iter().copied().collect())
        .unwrap_or_default()
}

impl YuvPipeline {
    fn new(device: &wgpu::Device, target: wgpu::TextureFormat) -> YuvPipeline {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("onair_yuv_to_rgb"),
            source: wgpu::ShaderSource::Wgsl(YUV_SHADER.into()),
        });
        let texture_entry = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                multisampled: false,
                sample_type: wgpu::TextureSampleType::Float { filterable: true },
                view_dimension: wgpu::TextureViewDimension::D2,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("onair_yuv_layout"),
            entries: &[
                texture_entry(0),
                texture_entry(1),
                texture_entry(2),
                wgpu::BindGroupLayoutEntry {
                    binding: 3,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 4,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: std::num::NonZeroU64::new(PARAMS_BYTES as u64),
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("onair_yuv_pipeline_layout"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("onair_yuv_pipeline"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                targets: &[Some(wgpu::ColorTargetState {
                    format: target,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            multiview_mask: None,
            cache: None,
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("onair_yuv_sampler"),
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        YuvPipeline {
            pipeline,
            layout,
            sampler,
            linear_output: target.is_srgb(),
            textures: HashMap::new(),
            last_evict: Instant::now(),
            upload_us: Default::default(),
            uploads: 0,
            capture_to_texture_us: Default::default(),
        }
    }

    /// Uploads one frame's planes for view `key`, (re)making its textures when the size or
    /// layout changed.
    fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        key: u64,
        frame: &SharedVideoFrame,
        generation: u64,
    ) {
        if self
            .textures
            .get(&key)
            .is_some_and(|t| t.generation == generation)
        {
            return;
        }
        let max = device.limits().max_texture_dimension_2d;
        if frame.width > max || frame.height > max || frame.width == 0 || frame.height == 0 {
            // Never reached through `VideoView::paint`, which refuses such frames; a guard
            // against a texture wgpu would reject.
            return;
        }
        let started = cpu_time::ThreadTime::now();
        let shape = (frame.width, frame.height, frame.format);
        let stale = self
            .textures
            .get(&key)
            .is_none_or(|t| t.shape != shape || t.color != frame.color);
        if stale {
            let textures = self.make_textures(device, queue, shape, frame.color);
            self.textures.insert(key, textures);
        }
        let Some(textures) = self.textures.get_mut(&key) else {
            return;
        };
        textures.touched = Instant::now();
        textures.generation = generation;
        for (i, texture) in textures.planes.iter().enumerate() {
            let plane = frame.planes[i];
            let size = texture.size();
            let row_bytes =
                size.width as usize * texture.format().block_copy_size(None).unwrap_or(1) as usize;
            let needed = plane.offset + plane.stride * (plane.rows.max(1) - 1) + row_bytes;
            if plane.stride < row_bytes || frame.data.len() < needed {
                // A malformed frame: keep the previous picture rather than read past the end.
                return;
            }
            queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                &frame.data[plane.offset..needed],
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(plane.stride as u32),
                    rows_per_image: Some(size.height),
                },
                size,
            );
        }
        self.uploads += 1;
        if frame.capture_time_us > 0 {
            let now = onair_engine::media::frame::wall_clock_us();
            if self.capture_to_texture_us.len() == UPLOAD_SAMPLES {
                self.capture_to_texture_us.pop_front();
            }
            self.capture_to_texture_us
                .push_back(now.saturating_sub(frame.capture_time_us) as f64);
        }
        if self.upload_us.len() == UPLOAD_SAMPLES {
            self.upload_us.pop_front();
        }
        self.upload_us
            .push_back(started.elapsed().as_secs_f64() * 1e6);
    }

    fn make_textures(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        (width, height, format): (u32, u32, PixelFormat),
        color: ColorSpace,
    ) -> PlaneTextures {
        let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
        let specs: Vec<(u32, u32, wgpu::TextureFormat)> = match format {
            PixelFormat::I420 => vec![
                (width, height, wgpu::TextureFormat::R8Unorm),
                (cw, ch, wgpu::TextureFormat::R8Unorm),
                (cw, ch, wgpu::TextureFormat::R8Unorm),
            ],
            PixelFormat::Nv12 => vec![
                (width, height, wgpu::TextureFormat::R8Unorm),
                (cw, ch, wgpu::TextureFormat::Rg8Unorm),
            ],
        };
        let planes: Vec<wgpu::Texture> = specs
            .iter()
            .map(|&(w, h, f)| {
                device.create_texture(&wgpu::TextureDescriptor {
                    label: Some("onair_video_plane"),
                    size: wgpu::Extent3d {
                        width: w.max(1),
                        height: h.max(1),
                        depth_or_array_layers: 1,
                    },
                    mip_level_count: 1,
                    sample_count: 1,
                    dimension: wgpu::TextureDimension::D2,
                    format: f,
                    usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                    view_formats: &[],
                })
            })
            .collect();
        let views: Vec<wgpu::TextureView> = planes
            .iter()
            .map(|t| t.create_view(&wgpu::TextureViewDescriptor::default()))
            .collect();
        // NV12 has no third plane; the shader does not read binding 2 then.
        let v_view = views.get(2).unwrap_or(&views[1]);
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("onair_yuv_params"),
            size: PARAMS_BYTES as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(
            &params,
            0,
            &shader_params(color, format == PixelFormat::Nv12, self.linear_output),
        );
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("onair_yuv_bind_group"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&views[0]),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&views[1]),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(v_view),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: wgpu::BindingResource::Sampler(&self.sampler),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: params.as_entire_binding(),
                },
            ],
        });
        PlaneTextures {
            shape: (width, height, format),
            color,
            planes,
            params,
            bind_group,
            touched: Instant::now(),
            generation: 0,
        }
    }

    fn evict_unused(&mut self) {
        if self.last_evict.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_evict = Instant::now();
        self.textures.retain(|_, t| {
            let keep = t.touched.elapsed() < EVICT_AFTER;
            if !keep {
                for p in &t.planes {
                    p.destroy();
                }
                t.params.destroy();
            }
            keep
        });
    }

    /// Views with textures on the GPU.
    pub fn texture_count(&self) -> usize {
        self.textures.len()
    }
}

/// Bytes of the shader's `Params` uniform: five vec4<f32>.
const PARAMS_BYTES: usize = 5 * 16;

/// The shader's uniform for a colour space: matrix rows, range scaling, output encoding.
pub fn shader_params(color: ColorSpace, interleaved: bool, linear_output: bool) -> Vec<u8> {
    let (kr, kb) = match color.matrix {
        ColorMatrix::Bt601 => (0.299f32, 0.114f32),
        ColorMatrix::Bt709 => (0.2126f32, 0.0722f32),
    };
    let kg = 1.0 - kr - kb;
    // R = Y + 2(1-kr) Cr;  B = Y + 2(1-kb) Cb;  G = Y - (2 kb (1-kb)/kg) Cb - (2 kr (1-kr)/kg) Cr
    let rows = [
        [1.0, 0.0, 2.0 * (1.0 - kr), 0.0],
        [
            1.0,
            -2.0 * kb * (1.0 - kb) / kg,
            -2.0 * kr * (1.0 - kr) / kg,
            0.0,
        ],
        [1.0, 2.0 * (1.0 - kb), 0.0, 0.0],
    ];
    let range = if color.full_range {
        [0.0, 1.0, 1.0, 0.0]
    } else {
        [16.0 / 255.0, 255.0 / 219.0, 255.0 / 224.0, 0.0]
    };
    let range = [
        range[0],
        range[1],
        range[2],
        f32::from(u8::from(interleaved)),
    ];
    let output = [f32::from(u8::from(linear_output)), 0.0, 0.0, 0.0];
    rows.iter()
        .chain([&range, &output])
        .flat_map(|v| v.iter().flat_map(|x| x.to_le_bytes()))
        .collect()
}

/// The same conversion on the CPU, for tests: 8-bit Y, Cb, Cr to 8-bit sRGB.
pub fn yuv_to_rgb_reference(color: ColorSpace, y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let bytes = shader_params(color, false, false);
    let f: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let yn = (f32::from(y) / 255.0 - f[12]) * f[13];
    let cbn = (f32::from(cb) - 128.0) / 255.0 * f[14];
    let crn = (f32::from(cr) - 128.0) / 255.0 * f[14];
    let mut out = [0u8; 3];
    for (i, o) in out.iter_mut().enumerate() {
        let r = &f[i * 4..i * 4 + 3];
        let v = r[0] * yn + r[1] * cbn + r[2] * crn;
        *o = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    }
    out
}

/// Draws (and, when it changed, uploads) one view's frame in a paint callback. Every callback
/// carries the view's newest frame and its generation; the pipeline uploads only when the
/// generation differs from what its textures hold, so a pass egui discards loses nothing.
struct PaintVideo {
    key: u64,
    frame: SharedVideoFrame,
    generation: u64,
}

impl egui_wgpu::CallbackTrait for PaintVideo {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(pipeline) = resources.get_mut::<YuvPipeline>() {
            pipeline.upload(device, queue, self.key, &self.frame, self.generation);
            if let Some(t) = pipeline.textures.get_mut(&self.key) {
                t.touched = Instant::now();
            }
            pipeline.evict_unused();
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(pipeline) = resources.get::<YuvPipeline>() else {
            return;
        };
        let Some(textures) = pipeline.textures.get(&self.key) else {
            return;
        };
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &textures.bind_group, &[]);
        pass.draw(0..3, 0..1);
    }
}

/// One stream's picture in the UI: its frame channel, the newest frame not yet uploaded and
/// what the overlay shows about it.
pub struct VideoView {
    key: u64,
    frames: FrameReceiver<SharedVideoFrame>,
    current: Option<SharedVideoFrame>,
    generation: u64,
    painted_generation: u64,
    /// Size of the last frame seen.
    pub size: Option<(u32, u32)>,
    /// Frames seen (taken from the channel) so far.
    pub frames_seen: u64,
    /// Distinct frames handed to the renderer so far.
    pub frames_uploaded: u64,
    /// Capture-to-display delay of the newest frame (same-machine clocks), ms.
    pub delay_ms: Option<f64>,
    /// Frames the producer (decoder or capture) put in the channel: the video's own pace.
    source_rate: RateMeter,
    /// Frames the UI took from the channel.
    shown_rate: RateMeter,
}

impl VideoView {
    /// A view over a frame channel; `key` must be unique among live views.
    pub fn new(key: u64, frames: FrameReceiver<SharedVideoFrame>) -> VideoView {
        VideoView {
            key,
            frames,
            current: None,
            generation: 0,
            painted_generation: 0,
            size: None,
            frames_seen: 0,
            frames_uploaded: 0,
            delay_ms: None,
            source_rate: RateMeter::default(),
            shown_rate: RateMeter::default(),
        }
    }

    /// Takes the newest frame if one arrived (never blocks). True when the picture changed.
    pub fn poll(&mut self) -> bool {
        self.source_rate.observe(self.frames.stats().sent());
        let Some(frame) = self.frames.latest() else {
            return false;
        };
        self.frames_seen += 1;
        self.size = Some((frame.width, frame.height));
        self.shown_rate.observe(self.frames_seen);
        if frame.capture_time_us > 0 {
            let now = onair_engine::media::frame::wall_clock_us();
            self.delay_ms = Some(now.saturating_sub(frame.capture_time_us) as f64 / 1000.0);
        }
        self.current = Some(frame);
        self.generation += 1;
        true
    }

    /// The video's frame rate (what its producer delivers), over the last second or so.
    pub fn fps(&self) -> f64 {
        self.source_rate.per_second()
    }

    /// New pictures the UI showed per second (at most [`Self::fps`]).
    pub fn shown_fps(&self) -> f64 {
        self.shown_rate.per_second()
    }

    /// Frames the producer has put in this view's channel so far (offered to the UI).
    pub fn frames_offered(&self) -> u64 {
        self.frames.stats().sent()
    }

    /// Whether a picture has arrived yet.
    pub fn has_picture(&self) -> bool {
        self.size.is_some()
    }

    /// Fills `rect` black and draws the picture in it, aspect kept and letterboxed.
    pub fn paint(&mut self, ui: &egui::Ui, rect: egui::Rect) {
        ui.painter().rect_filled(rect, 0.0, egui::Color32::BLACK);
        let Some(frame) = self.current.clone() else {
            return;
        };
        if !fits_gpu(frame.width, frame.height) {
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                format!(
                    "{}x{} video is larger than this GPU's textures ({} px a side): not shown",
                    frame.width,
                    frame.height,
                    MAX_TEXTURE_SIDE.load(std::sync::atomic::Ordering::Relaxed)
                ),
                egui::FontId::proportional(13.0),
                egui::Color32::from_rgb(230, 120, 100),
            );
            return;
        }
        let inner = letterbox(rect, frame.width, frame.height);
        if self.painted_generation != self.generation {
            self.painted_generation = self.generation;
            self.frames_uploaded += 1;
        }
        ui.painter().add(egui_wgpu::Callback::new_paint_callback(
            inner,
            PaintVideo {
                key: self.key,
                frame,
                generation: self.generation,
            },
        ));
    }
}

/// The GPU's largest texture side, learnt at [`install`] (wgpu's default limit until then).
static MAX_TEXTURE_SIDE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(8192);

/// Whether a `width`×`height` picture fits this GPU's textures. A stream announcing a larger
/// size is refused with a message instead of a texture (wgpu would fail, and its default
/// error handler panics).
pub fn fits_gpu(width: u32, height: u32) -> bool {
    let max = MAX_TEXTURE_SIDE.load(std::sync::atomic::Ordering::Relaxed);
    width <= max && height <= max
}

/// The largest rectangle of a `w`×`h` picture's aspect centred in `rect`.
pub fn letterbox(rect: egui::Rect, w: u32, h: u32) -> egui::Rect {
    if w == 0 || h == 0 || rect.width() <= 0.0 || rect.height() <= 0.0 {
        return rect;
    }
    let aspect = w as f32 / h as f32;
    let size = if rect.width() / rect.height() > aspect {
        egui::vec2(rect.height() * aspect, rect.height())
    } else {
        egui::vec2(rect.width(), rect.width() / aspect)
    };
    egui::Rect::from_center_size(rect.center(), size)
}

/// The rate of a growing counter over a sliding window of about a second.
#[derive(Default)]
pub struct RateMeter {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// Records the counter's value now.
    pub fn observe(&mut self, count: u64) {
        self.observe_at(Instant::now(), count);
    }

    /// Records the counter's value at `now`.
    pub fn observe_at(&mut self, now: Instant, count: u64) {
        self.samples.push_back((now, count));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_millis(1500))
        {
            self.samples.pop_front();
        }
    }

    /// Counts per second over the window.
    pub fn per_second(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, c0)), Some((t1, c1))) => {
                let span = t1.duration_since(*t0).as_secs_f64();
                if span > 0.0 {
                    c1.saturating_sub(*c0) as f64 / span
                } else {
                    0.0
                }
            }
            _ => 0.0,
        }
    }
}

/// A unique key for a view.
pub fn next_key() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_and_full_range_map_black_white_and_primaries() {
        for matrix in [ColorMatrix::Bt601, ColorMatrix::Bt709] {
            let limited = ColorSpace {
                matrix,
                full_range: false,
            };
            let full = ColorSpace {
                matrix,
                full_range: true,
            };
            assert_eq!(yuv_to_rgb_reference(limited, 16, 128, 128), [0, 0, 0]);
            assert_eq!(
                yuv_to_rgb_reference(limited, 235, 128, 128),
                [255, 255, 255]
            );
            assert_eq!(yuv_to_rgb_reference(full, 0, 128, 128), [0, 0, 0]);
            assert_eq!(yuv_to_rgb_reference(full, 255, 128, 128), [255, 255, 255]);
        }
        // Pure red in BT.601 limited range is Y=81, Cb=90, Cr=240; in BT.709 Y=63, Cb=102, Cr=240.
        let red601 = yuv_to_rgb_reference(ColorSpace::default(), 81, 90, 240);
        assert!(
            red601[0] >= 250 && red601[1] <= 3 && red601[2] <= 3,
            "{red601:?}"
        );
        let bt709 = ColorSpace {
            matrix: ColorMatrix::Bt709,
            full_range: false,
        };
        let red709 = yuv_to_rgb_reference(bt709, 63, 102, 240);
        assert!(
            red709[0] >= 250 && red709[1] <= 3 && red709[2] <= 3,
            "{red709:?}"
        );
        // The wrong matrix gives a visibly different colour: the choice matters.
        let wrong = yuv_to_rgb_reference(ColorSpace::default(), 63, 102, 240);
        assert!(wrong[1].abs_diff(red709[1]) > 10 || wrong[0].abs_diff(red709[0]) > 10);
    }

    #[test]
    fn the_rate_follows_the_counter_not_the_polling() {
        let mut m = RateMeter::default();
        let t = Instant::now();
        // Polled 5 times a second while the producer makes 30 frames a second.
        for i in 0..10u64 {
            m.observe_at(t + Duration::from_millis(200 * i), 6 * i);
        }
        assert!((m.per_second() - 30.0).abs() < 0.5, "{}", m.per_second());
    }

    #[test]
    fn letterbox_keeps_the_aspect() {
        let r = egui::Rect::from_min_size(egui::pos2(0.0, 0.0), egui::vec2(400.0, 400.0));
        let inner = letterbox(r, 1280, 720);
        assert_eq!(inner.width(), 400.0);
        assert!((inner.height() - 225.0).abs() < 0.01);
        assert_eq!(inner.center(), r.center());
    }
}
