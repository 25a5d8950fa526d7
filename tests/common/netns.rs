//! Test hosts: network namespaces on this machine, joined through a bridge in a switch
//! namespace, with addresses in 10.77.S.0/24 (S from the process ID, so parallel runs do not
//! meet). No multicast route anywhere, as on a minimal server. Everything is torn down on drop,
//! failed tests included; processes started in a namespace are killed first.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A set of test hosts.
pub struct Lab {
    prefix: String,
    subnet: u8,
    hosts: Vec<String>,
    switch: String,
    children: Vec<Child>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process may build namespaces (root with `ip`). CI runs as root.
pub fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && Command::new("ip").arg("-V").output().is_ok()
}

impl Lab {
    /// `n` hosts, host `i` at 10.77.S.(i+1). Panics with the failing command if the kernel
    /// refuses (a test that needs hosts must not pass without them).
    pub fn new(tag: &str, n: usize) -> Lab {
        let pid = std::process::id();
        let subnet = (pid % 200 + 20) as u8;
        let prefix = format!("oa{tag}{subnet}");
        let mut lab = Lab {
            switch: format!("{prefix}sw"),
            hosts: (0..n).map(|i| format!("{prefix}h{i}")).collect(),
            prefix,
            subnet,
            children: Vec::new(),
        };
        lab.build()
            .unwrap_or_else(|e| panic!("building test hosts: {e}"));
        lab
    }

    fn build(&mut self) -> Result<(), String> {
        // Leftovers of a killed earlier run with the same names.
        for ns in self.hosts.iter().chain([&self.switch]) {
            let _ = ip(&["netns", "del", ns]);
        }
        ip(&["netns", "add", &self.switch])?;
        ip(&["-n", &self.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &self.switch, "link", "set", "br0", "up"])?;
        for (i, ns) in self.hosts.iter().enumerate() {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let (h, s) = (
                format!("{}e{i}", self.prefix),
                format!("{}p{i}", self.prefix),
            );
            ip(&[
                "link",
                "add",
                &h,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                &s,
                "netns",
                &self.switch,
            ])?;
            let addr = format!("{}/24", self.addr(i));
            ip(&["-n", ns, "addr", "add", &addr, "dev", &h])?;
            ip(&["-n", ns, "link", "set", &h, "up"])?;
            ip(&["-n", &self.switch, "link", "set", &s, "master", "br0"])?;
            ip(&["-n", &self.switch, "link", "set", &s, "up"])?;
        }
        Ok(())
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.subnet, i + 1)
    }

    /// Host `i`'s namespace name.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// Host `i`'s interface name (for iptables rules on it).
    pub fn iface(&self, i: usize) -> String {
        format!("{}e{i}", self.prefix)
    }

    /// A command run inside host `i`.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i], program]);
        c
    }

    /// Starts `cmd` (from [`Self::command`]) and keeps it to kill on drop; its stdout lines
    /// arrive on the returned channel.
    pub fn spawn(&mut self, mut cmd: Command) -> mpsc::Receiver<String> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn in a test host");
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        self.children.push(child);
        rx
    }
}

/// Waits for a line containing `needle`; returns every line seen so far.
pub fn wait_line(
    rx: &mpsc::Receiver<String>,
    needle: &str,
    within: Duration,
) -> Result<Vec<String>, Vec<String>> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return Ok(seen);
                }
            }
            Err(_) => break,
        }
    }
    Err(seen)
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.hosts.iter().chain([&self.switch]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
