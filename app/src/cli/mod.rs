//! The command-line tools, one module per subcommand.

pub mod credentials;
pub mod devices;
pub mod errors;
pub mod live;
pub mod serve;
pub mod token;
pub mod watch;
