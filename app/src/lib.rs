//! The `onair` package's library: the studio (an eframe/egui app on wgpu) and the development
//! app's credentials, shared by the `onair` binary, its benchmarks and the end-to-end tests.

pub mod browser;
pub mod dev_app;
pub mod netlab;
pub mod studio;
