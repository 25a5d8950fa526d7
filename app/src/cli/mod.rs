//! The command-line tools, one module per subcommand.

pub mod credentials;
pub mod devices;
pub mod errors;
pub mod live;
pub mod message;
pub mod serve;
pub mod token;
pub mod watch;

/// A flag that turns true on Ctrl-C (watched from a small thread of its own).
pub fn ctrl_c_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = rt.block_on(tokio::signal::ctrl_c());
            flag.store(true, Ordering::SeqCst);
        }
    });
    stop
}
