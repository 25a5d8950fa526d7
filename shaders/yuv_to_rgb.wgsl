// YUV 4:2:0 → RGB for the studio's video tiles.
//
// The planes are uploaded as they arrive from the decoder or the capture (no conversion on
// the CPU): I420 as three R8 textures (Y, U, V), NV12 as an R8 luma texture and an RG8 chroma
// texture (bound at `plane_u`; `plane_v` is then unused). The matrix (BT.601 or BT.709) and
// the range (limited 16–235/16–240 or full 0–255) come in the uniform. egui-wgpu sets the
// render pass viewport to the tile's letterboxed rectangle, so one triangle covering clip
// space fills exactly that rectangle.

struct Params {
    // Rows of the 3×3 YUV→RGB matrix for Y, Cb, Cr already offset (w unused).
    row_r: vec4<f32>,
    row_g: vec4<f32>,
    row_b: vec4<f32>,
    // x: luma offset, y: luma scale, z: chroma scale, w: 1 when chroma is interleaved (NV12).
    range: vec4<f32>,
    // x: 1 when the target is an sRGB framebuffer (write linear values), yzw unused.
    output: vec4<f32>,
};

@group(0) @binding(0) var plane_y: texture_2d<f32>;
@group(0) @binding(1) var plane_u: texture_2d<f32>;
@group(0) @binding(2) var plane_v: texture_2d<f32>;
@group(0) @binding(3) var plane_sampler: sampler;
@group(0) @binding(4) var<uniform> params: Params;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

// One triangle that covers clip space; uv runs 0..1 across the viewport, top-left origin.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    let x = f32((index << 1u) & 2u);
    let y = f32(index & 2u);
    var out: VertexOut;
    out.position = vec4<f32>(x * 2.0 - 1.0, 1.0 - y * 2.0, 0.0, 1.0);
    out.uv = vec2<f32>(x, y);
    return out;
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let low = c / 12.92;
    let high = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(high, low, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let y_raw = textureSample(plane_y, plane_sampler, in.uv).r;
    var cb_raw: f32;
    var cr_raw: f32;
    if (params.range.w > 0.5) {
        let uv = textureSample(plane_u, plane_sampler, in.uv).rg;
        cb_raw = uv.x;
        cr_raw = uv.y;
    } else {
        cb_raw = textureSample(plane_u, plane_sampler, in.uv).r;
        cr_raw = textureSample(plane_v, plane_sampler, in.uv).r;
    }
    // Normalise: luma to 0..1, chroma to -0.5..0.5, per the range.
    let y = (y_raw - params.range.x) * params.range.y;
    let cb = (cb_raw - 128.0 / 255.0) * params.range.z;
    let cr = (cr_raw - 128.0 / 255.0) * params.range.z;
    let yuv = vec3<f32>(y, cb, cr);
    var rgb = clamp(
        vec3<f32>(dot(params.row_r.xyz, yuv), dot(params.row_g.xyz, yuv), dot(params.row_b.xyz, yuv)),
        vec3<f32>(0.0),
        vec3<f32>(1.0),
    );
    if (params.output.x > 0.5) {
        rgb = srgb_to_linear(rgb);
    }
    return vec4<f32>(rgb, 1.0);
}
