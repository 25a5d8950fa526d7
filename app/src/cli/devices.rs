//! `onair devices`: the cameras (with their modes) and microphones this machine offers.

use onair_engine::media::capture::{camera, microphone};

/// Prints the devices; a missing kind prints its error code.
pub fn run() -> anyhow::Result<()> {
    match camera::list_cameras() {
        Ok(cams) if cams.is_empty() => println!(
            "cameras: none (error {} NoCamera; the test source works)",
            onair_engine::ErrorCode::NoCamera.code()
        ),
        Ok(cams) => {
            println!("cameras:");
            for c in cams {
                println!("  [{}] {} — {}", c.index, c.name, c.description);
                match camera::camera_modes(c.index) {
                    Ok(modes) => {
                        for m in modes {
                            println!(
                                "      {}x{} @ {} fps {}",
                                m.width, m.height, m.fps, m.format
                            );
                        }
                    }
                    Err(e) => println!("      (modes unavailable: {e})"),
                }
            }
        }
        Err(e) => println!("cameras: {e} (error {})", e.code().code()),
    }
    match microphone::list_microphones() {
        Ok(mics) if mics.is_empty() => println!(
            "microphones: none (error {} NoMicrophone; the tone works)",
            onair_engine::ErrorCode::NoMicrophone.code()
        ),
        Ok(mics) => {
            println!("microphones:");
            for m in mics {
                println!("  {} ({} Hz, {} ch)", m.name, m.sample_rate, m.channels);
            }
        }
        Err(e) => println!("microphones: {e} (error {})", e.code().code()),
    }
    Ok(())
}
