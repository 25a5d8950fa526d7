//! `onair errors`: the error-code table, as plain lines or as docs/ERRORS.md.

use onair_engine::ErrorCode;

/// Prints the table.
pub fn run(markdown: bool) {
    if markdown {
        print!("{}", onair_protocol::errors_markdown());
        return;
    }
    for c in ErrorCode::ALL {
        println!("{} {}: {} Fix: {}", c.code(), c.name(), c.cause(), c.fix());
    }
}
