//! A relay as its own `onair serve` process, for benchmarks that measure it alone (its CPU,
//! memory, files and tasks from /proc and its `/metrics`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

/// A running relay process; killed and its files removed when dropped.
pub struct RelayProcess {
    child: Child,
    dir: PathBuf,
    /// Its signaling URL (`ws://127.0.0.1:PORT/ws`).
    pub url: String,
}

impl RelayProcess {
    /// Starts `onair serve` on an ephemeral loopback port with `config` (TOML) as its file.
    pub fn start(name: &str, config: &str) -> anyhow::Result<RelayProcess> {
        let dir = std::env::temp_dir().join(format!("onair-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("relay.toml");
        std::fs::write(&file, config)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut url = None;
        for line in lines.by_ref().take(5) {
            let line = line?;
            if let Some(rest) = line.strip_prefix("relay listening: signaling ") {
                url = rest.split(' ').next().map(String::from);
                break;
            }
        }
        // Keep reading what the relay prints, so it never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let mut process = RelayProcess {
            child,
            dir,
            url: String::new(),
        };
        // Dropped (killed, files removed) if it printed no address.
        process.url = url.context("the relay did not start")?;
        Ok(process)
    }

    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its HTTP base (`http://127.0.0.1:PORT`).
    pub fn http_base(&self) -> String {
        self.url
            .trim_end_matches("/ws")
            .replacen("ws://", "http://", 1)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU seconds (user + system) of a process, from /proc.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resident memory (KiB) and threads of a process, from /proc.
pub fn rss_kib_and_threads(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("Threads:")?))
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}
