//! The crate boundaries hold: an SDK user compiles no HTTP server, and the relay links no
//! capture, codec or UI library (checked on the resolved dependency graph, not the manifests).

use std::process::Command;

/// Every package in `package`'s normal (non-dev) dependency graph.
fn dependency_names(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(names.len() > 10, "a real graph: {names:?}");
    names
}

#[test]
fn the_sdk_links_no_http_server() {
    let deps = dependency_names("onair-engine");
    assert!(deps.iter().any(|d| d == "onair-media"), "{deps:?}");
    for banned in ["axum", "tower", "tower-http", "hyper", "onair-relay"] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "onair-engine depends on {banned}"
        );
    }
}

#[test]
fn the_relay_links_no_capture_codec_or_ui() {
    let deps = dependency_names("onair-relay");
    assert!(deps.iter().any(|d| d == "axum"), "{deps:?}");
    for banned in [
        "nokhwa",
        "cpal",
        "ffmpeg-next",
        "ffmpeg-sys-next",
        "eframe",
        "egui",
        "wgpu",
        "onair-media",
        "onair-engine",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "onair-relay depends on {banned}"
        );
    }
}

#[test]
fn the_protocol_has_no_runtime() {
    let deps = dependency_names("onair-protocol");
    for banned in ["tokio", "webrtc", "axum", "ffmpeg-next"] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "onair-protocol depends on {banned}"
        );
    }
}
