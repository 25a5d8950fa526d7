//! Running the studio without a window: an egui context and an egui-wgpu renderer drawing into
//! an offscreen texture on whatever adapter wgpu finds (lavapipe/llvmpipe on machines with no
//! GPU). `onair bench ui` measures frames with it; it can also read a frame back as an image.

use std::time::{Duration, Instant};

use eframe::egui;
use eframe::egui_wgpu::{self, wgpu};

/// How long one frame took.
#[derive(Clone, Copy, Debug)]
pub struct FrameTiming {
    /// The UI pass, wall clock: our update and drawing code plus egui's layout.
    pub ui_ms: f64,
    /// Tessellation, buffer and texture uploads (video planes included) and command
    /// encoding, wall clock.
    pub render_ms: f64,
    /// CPU time the calling thread spent on the whole frame (both of the above), which
    /// leaves out time the thread waited for a core.
    pub cpu_ms: f64,
    /// When the frame asked to be drawn again (what a window's event loop would wait for;
    /// `Duration::MAX` when only input or an event should wake it).
    pub repaint_after: Duration,
}

/// A headless renderer.
pub struct Headless {
    /// The render state (its callback resources hold the video pipeline).
    pub render_state: egui_wgpu::RenderState,
    /// The egui context.
    pub ctx: egui::Context,
    size: egui::Vec2,
    target: wgpu::Texture,
    start: Instant,
}

impl Headless {
    /// A renderer drawing `size` points at 1 pixel per point.
    pub fn new(size: egui::Vec2) -> anyhow::Result<Headless> {
        let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
        setup
            .instance_descriptor
            .backends
            .remove(wgpu::Backends::BROWSER_WEBGPU);
        let setup = egui_wgpu::WgpuSetup::CreateNew(setup);
        let instance = pollster::block_on(setup.new_instance());
        let render_state = pollster::block_on(egui_wgpu::RenderState::create(
            &egui_wgpu::WgpuConfiguration {
                wgpu_setup: setup,
                ..Default::default()
            },
            &instance,
            None,
            egui_wgpu::RendererOptions::default(),
        ))
        .map_err(|e| anyhow::anyhow!("no wgpu adapter: {e}"))?;
        let target = render_state
            .device
            .create_texture(&wgpu::TextureDescriptor {
                label: Some("onair_headless_target"),
                size: wgpu::Extent3d {
                    width: size.x as u32,
                    height: size.y as u32,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: render_state.target_format,
                usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
                view_formats: &[],
            });
        let ctx = egui::Context::default();
        ctx.set_pixels_per_point(1.0);
        Ok(Headless {
            render_state,
            ctx,
            size,
            target,
            start: Instant::now(),
        })
    }

    /// The adapter in use, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)".
    pub fn adapter_name(&self) -> String {
        let info = self.render_state.adapter.get_info();
        format!("{} ({:?})", info.name, info.backend)
    }

    /// Runs and renders one frame, waiting for the GPU before returning (not counted).
    pub fn frame(&mut self, mut draw: impl FnMut(&mut egui::Ui)) -> FrameTiming {
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, self.size)),
            time: Some(self.start.elapsed().as_secs_f64()),
            ..Default::default()
        };
        let cpu0 = cpu_time::ThreadTime::now();
        let t0 = Instant::now();
        let output = self.ctx.run_ui(input, |ui| draw(ui));
        let ui_ms = t0.elapsed().as_secs_f64() * 1e3;
        let repaint_after = output
            .viewport_output
            .get(&egui::ViewportId::ROOT)
            .map_or(Duration::MAX, |v| v.repaint_delay);

        let t1 = Instant::now();
        let rs = &self.render_state;
        let screen = egui_wgpu::ScreenDescriptor {
            size_in_pixels: [self.size.x as u32, self.size.y as u32],
            pixels_per_point: 1.0,
        };
        let jobs = self.ctx.tessellate(output.shapes, 1.0);
        let mut renderer = rs.renderer.write();
        for (id, deltas) in &output.textures_delta.set {
            for delta in deltas {
                renderer.update_texture(&rs.device, &rs.queue, *id, delta);
            }
        }
        let mut encoder = rs
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        let user_buffers =
            renderer.update_buffers(&rs.device, &rs.queue, &mut encoder, &jobs, &screen);
        let view = self
            .target
            .create_view(&wgpu::TextureViewDescriptor::default());
        {
            let mut pass = encoder
                .begin_render_pass(&wgpu::RenderPassDescriptor {
                    label: Some("onair_headless_pass"),
                    color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                        view: &view,
                        resolve_target: None,
                        ops: wgpu::Operations {
                            load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                            store: wgpu::StoreOp::Store,
                        },
                        depth_slice: None,
                    })],
                    ..Default::default()
                })
                .forget_lifetime();
            renderer.render(&mut pass, &jobs, &screen);
        }
        rs.queue.submit(
            user_buffers
                .into_iter()
                .chain(std::iter::once(encoder.finish())),
        );
        for id in &output.textures_delta.free {
            renderer.free_texture(id);
        }
        let mut applied = output.textures_delta;
        applied.clear();
        drop(renderer);
        let render_ms = t1.elapsed().as_secs_f64() * 1e3;
        let cpu_ms = cpu0.elapsed().as_secs_f64() * 1e3;
        let _ = rs.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(Duration::from_secs(10)),
        });
        FrameTiming {
            ui_ms,
            render_ms,
            cpu_ms,
            repaint_after,
        }
    }

    /// Reads the last frame back as RGBA rows (width × height × 4 bytes).
    pub fn read_rgba(&self) -> anyhow::Result<(u32, u32, Vec<u8>)> {
        let rs = &self.render_state;
        let (w, h) = (self.size.x as u32, self.size.y as u32);
        let padded = (w * 4).div_ceil(256) * 256;
        let buffer = rs.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("onair_readback"),
            size: u64::from(padded * h),
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });
        let mut encoder = rs
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        encoder.copy_texture_to_buffer(
            self.target.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &buffer,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(padded),
                    rows_per_image: Some(h),
                },
            },
            self.target.size(),
        );
        rs.queue.submit(std::iter::once(encoder.finish()));
        let slice = buffer.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let _ = rs.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(Duration::from_secs(10)),
        });
        rx.recv()??;
        let data = slice.get_mapped_range()?;
        let bgra = matches!(
            rs.target_format,
            wgpu::TextureFormat::Bgra8Unorm | wgpu::TextureFormat::Bgra8UnormSrgb
        );
        let mut out = Vec::with_capacity((w * h * 4) as usize);
        for row in data.chunks(padded as usize).take(h as usize) {
            for px in row[..(w * 4) as usize].chunks_exact(4) {
                if bgra {
                    out.extend_from_slice(&[px[2], px[1], px[0], px[3]]);
                } else {
                    out.extend_from_slice(px);
                }
            }
        }
        Ok((w, h, out))
    }
}
