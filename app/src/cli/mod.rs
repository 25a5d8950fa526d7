//! The command-line tools, one module per subcommand.

pub mod credentials;
pub mod errors;
pub mod serve;
pub mod token;
pub mod watch;
