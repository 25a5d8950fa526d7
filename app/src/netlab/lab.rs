//! Test hosts: network namespaces on this machine, joined through a bridge in a switch
//! namespace, with addresses in 10.77.S.0/24 (S from the process ID, so parallel runs do not
//! meet). No multicast route anywhere, as on a minimal server. Everything is torn down on drop,
//! failed tests included; processes started in a namespace are killed first.
//!
//! [`Lab::routed`] builds two nets instead of one, an "outside" and an "inside" one joined by
//! a router namespace, and [`Lab::one_to_one_nat`] makes the router a 1:1 NAT in front of an
//! inside host (a cloud VM's public address), with iptables inside the router's namespace.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A set of test hosts.
pub struct Lab {
    prefix: String,
    subnet: u8,
    hosts: Vec<String>,
    /// Host `i`'s address (without the prefix length).
    addrs: Vec<String>,
    switch: String,
    /// The router of a [`Lab::routed`] lab.
    router: Option<Router>,
    children: Vec<Child>,
}

/// The namespace joining the two nets of a [`Lab::routed`] lab.
struct Router {
    ns: String,
    /// Its interface on the outside net, where public addresses are added.
    outside_iface: String,
    /// Public addresses handed out by [`Lab::one_to_one_nat`] so far.
    public: Vec<String>,
}

/// Hosts on the outside net of a [`Lab::routed`] lab use 10.77.S.1–, /25.
const OUTSIDE_FIRST: u8 = 1;
/// The router's own address on the outside net; public addresses count down from below it.
const ROUTER_OUTSIDE: u8 = 126;
/// Hosts on the inside net use 10.77.S.129–, /25.
const INSIDE_FIRST: u8 = 129;
/// The router's address on the inside net: the inside hosts' default gateway.
const ROUTER_INSIDE: u8 = 254;

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

/// Runs `program args` inside namespace `ns`; the error names the command and its stderr.
fn ns_exec(ns: &str, program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .map_err(|e| format!("{program} {} in {ns}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} in {ns}: {}",
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
        Lab::try_new(tag, n).unwrap_or_else(|e| panic!("building test hosts: {e}"))
    }

    /// [`Self::new`], with the failing command as an error instead of a panic.
    pub fn try_new(tag: &str, n: usize) -> Result<Lab, String> {
        let mut lab = Lab::empty(tag, n);
        lab.addrs = (0..n)
            .map(|i| format!("10.77.{}.{}", lab.subnet, i + 1))
            .collect();
        lab.build()?;
        Ok(lab)
    }

    /// `outside + inside` hosts on two nets joined by a router namespace that forwards
    /// between them: hosts `0..outside` on the outside net (10.77.S.1–/25, and no route
    /// anywhere else, as a client on the internet has none to a private net), hosts
    /// `outside..` on the inside net (10.77.S.129–/25, their default route via the router
    /// at 10.77.S.254). Nothing outside reaches an inside host until
    /// [`Self::one_to_one_nat`] gives it a public address. Panics like [`Self::new`].
    pub fn routed(tag: &str, outside: usize, inside: usize) -> Lab {
        assert!(
            outside <= 100 && inside <= 100,
            "a routed lab has at most 100 hosts a side"
        );
        let mut lab = Lab::empty(tag, outside + inside);
        let s = lab.subnet;
        lab.addrs = (0..outside)
            .map(|i| format!("10.77.{s}.{}", OUTSIDE_FIRST as usize + i))
            .chain((0..inside).map(|j| format!("10.77.{s}.{}", INSIDE_FIRST as usize + j)))
            .collect();
        lab.router = Some(Router {
            ns: format!("{}r", lab.prefix),
            outside_iface: format!("{}ro", lab.prefix),
            public: Vec::new(),
        });
        lab.build_routed(outside)
            .unwrap_or_else(|e| panic!("building routed test hosts: {e}"));
        lab
    }

    fn empty(tag: &str, n: usize) -> Lab {
        let pid = std::process::id();
        let subnet = (pid % 200 + 20) as u8;
        let prefix = format!("oa{tag}{subnet}");
        Lab {
            switch: format!("{prefix}sw"),
            hosts: (0..n).map(|i| format!("{prefix}h{i}")).collect(),
            addrs: Vec::new(),
            prefix,
            subnet,
            router: None,
            children: Vec::new(),
        }
    }

    /// Every namespace of the lab: hosts, switch, router.
    fn namespaces(&self) -> Vec<String> {
        let mut all = self.hosts.clone();
        all.push(self.switch.clone());
        all.extend(self.router.as_ref().map(|r| r.ns.clone()));
        all
    }

    fn build(&mut self) -> Result<(), String> {
        self.clear_leftovers();
        ip(&["netns", "add", &self.switch])?;
        self.add_bridge("br0")?;
        for i in 0..self.hosts.len() {
            self.add_host(i, "br0", 24, None)?;
        }
        Ok(())
    }

    fn build_routed(&mut self, outside: usize) -> Result<(), String> {
        self.clear_leftovers();
        let s = self.subnet;
        ip(&["netns", "add", &self.switch])?;
        // Two bridges in the one switch namespace: two separate segments (the bridges carry
        // no address, so nothing crosses between them but through the router).
        self.add_bridge("br0")?;
        self.add_bridge("br1")?;
        let router = self.router.as_ref().expect("a routed lab").ns.clone();
        ip(&["netns", "add", &router])?;
        ip(&["-n", &router, "link", "set", "lo", "up"])?;
        for (side, bridge, addr) in [
            ("o", "br0", format!("10.77.{s}.{ROUTER_OUTSIDE}/25")),
            ("i", "br1", format!("10.77.{s}.{ROUTER_INSIDE}/25")),
        ] {
            let (r, q) = (
                format!("{}r{side}", self.prefix),
                format!("{}q{side}", self.prefix),
            );
            self.add_veth(&router, &r, &q, bridge, &addr)?;
        }
        ns_exec(&router, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        let gateway = format!("10.77.{s}.{ROUTER_INSIDE}");
        for i in 0..self.hosts.len() {
            if i < outside {
                self.add_host(i, "br0", 25, None)?;
            } else {
                self.add_host(i, "br1", 25, Some(&gateway))?;
            }
        }
        Ok(())
    }

    /// Leftovers of a killed earlier run with the same names.
    fn clear_leftovers(&self) {
        for ns in self.namespaces() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }

    fn add_bridge(&self, name: &str) -> Result<(), String> {
        ip(&["-n", &self.switch, "link", "add", name, "type", "bridge"])?;
        ip(&["-n", &self.switch, "link", "set", name, "up"])
    }

    /// A veth pair from `ns` (named `inner`, with `addr`) to the switch's `bridge`.
    fn add_veth(
        &self,
        ns: &str,
        inner: &str,
        outer: &str,
        bridge: &str,
        addr: &str,
    ) -> Result<(), String> {
        ip(&[
            "link",
            "add",
            inner,
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            outer,
            "netns",
            &self.switch,
        ])?;
        ip(&["-n", ns, "addr", "add", addr, "dev", inner])?;
        ip(&["-n", ns, "link", "set", inner, "up"])?;
        ip(&["-n", &self.switch, "link", "set", outer, "master", bridge])?;
        ip(&["-n", &self.switch, "link", "set", outer, "up"])
    }

    fn add_host(
        &self,
        i: usize,
        bridge: &str,
        prefix_len: u8,
        gateway: Option<&str>,
    ) -> Result<(), String> {
        let ns = &self.hosts[i];
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        let (h, s) = (
            format!("{}e{i}", self.prefix),
            format!("{}p{i}", self.prefix),
        );
        let addr = format!("{}/{prefix_len}", self.addrs[i]);
        self.add_veth(ns, &h, &s, bridge, &addr)?;
        if let Some(gw) = gateway {
            ip(&["-n", ns, "route", "add", "default", "via", gw])?;
        }
        Ok(())
    }

    /// Makes the router of a [`Self::routed`] lab a 1:1 NAT for inside host `i`, as a cloud
    /// provider fronts a VM: a new public address on the router's outside interface,
    /// DNAT from it to the host's inside address for `tcp_ports` and for all UDP, and SNAT
    /// of everything the host sends out (so its UDP from any port leaves from the public
    /// address, with the port kept). Returns the public address.
    pub fn one_to_one_nat(&mut self, i: usize, tcp_ports: &[u16]) -> Result<String, String> {
        let inside = self.addrs[i].clone();
        let subnet = self.subnet;
        let router = self
            .router
            .as_mut()
            .ok_or("one_to_one_nat needs a Lab::routed lab")?;
        let public = format!(
            "10.77.{subnet}.{}",
            usize::from(ROUTER_OUTSIDE) - 1 - router.public.len()
        );
        ip(&[
            "-n",
            &router.ns,
            "addr",
            "add",
            &format!("{public}/25"),
            "dev",
            &router.outside_iface,
        ])?;
        let ipt = |args: &[&str]| ns_exec(&router.ns, "iptables", args);
        for port in tcp_ports {
            ipt(&[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                &public,
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-j",
                "DNAT",
                "--to-destination",
                &inside,
            ])?;
        }
        ipt(&[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            &public,
            "-p",
            "udp",
            "-j",
            "DNAT",
            "--to-destination",
            &inside,
        ])?;
        ipt(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            &inside,
            "-o",
            &router.outside_iface,
            "-j",
            "SNAT",
            "--to-source",
            &public,
        ])?;
        router.public.push(public.clone());
        Ok(public)
    }

    /// The router's NAT rules with their counters (`iptables -t nat -L PREROUTING -v -n -x`):
    /// whether anything was sent to a public address at all (a DNAT rule counts each new flow).
    pub fn router_nat_counters(&self) -> String {
        let Some(router) = &self.router else {
            return "no router".into();
        };
        Command::new("ip")
            .args(["netns", "exec", &router.ns, "iptables", "-t", "nat"])
            .args(["-L", "PREROUTING", "-v", "-n", "-x"])
            .output()
            .map_or_else(
                |e| format!("iptables: {e}"),
                |o| String::from_utf8_lossy(&o.stdout).into_owned(),
            )
    }

    /// Makes host `i` take in only replies to what it sent (a stateful firewall, as every home
    /// router is): packets opening a flow towards it are dropped, so a peer can reach it only
    /// where it reached the peer first.
    pub fn replies_only(&self, i: usize) -> Result<(), String> {
        let iface = self.iface(i);
        #[rustfmt::skip]
        let accept = ["-A", "INPUT", "-i", &iface, "-m", "conntrack", "--ctstate",
            "ESTABLISHED,RELATED", "-j", "ACCEPT"];
        self.iptables(i, &accept)?;
        self.iptables(i, &["-A", "INPUT", "-i", &iface, "-j", "DROP"])
    }

    /// Runs `iptables args` inside host `i` (e.g. `-A INPUT -j DROP` to cut what reaches it).
    pub fn iptables(&self, i: usize, args: &[&str]) -> Result<(), String> {
        ns_exec(&self.hosts[i], "iptables", args)
    }

    /// Impairs what host `to` receives from host `from`: loss, bursts, delay and jitter as
    /// `link` says, applied by `onair impair` (the binary at `onair`) on NFQUEUE `queue` inside
    /// `to`'s namespace. UDP only — the media; signaling's TCP is left as it is. To impair both
    /// directions of a link, call it for each (each receiving side holds its own rule).
    pub fn impair(
        &mut self,
        onair: &std::path::Path,
        to: usize,
        from: usize,
        link: &crate::netlab::impair::LinkSpec,
        queue: u16,
        seed: u64,
    ) -> Result<(), String> {
        if link.is_clean() {
            return Ok(());
        }
        let mut cmd = self.command(to, &onair.to_string_lossy());
        cmd.args([
            "impair",
            "--queue",
            &queue.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args([
            "--loss",
            &link.loss.to_string(),
            "--burst",
            &link.burst.to_string(),
        ])
        .args(["--delay-ms", &link.delay_ms.to_string()])
        .args(["--jitter-ms", &link.jitter_ms.to_string()]);
        let rx = self.spawn(cmd);
        wait_line(&rx, "impair ready", Duration::from_secs(10))
            .map_err(|seen| format!("onair impair did not start: {seen:?}"))?;
        let from_addr = self.addr(from);
        #[rustfmt::skip]
        let rule = ["-A", "INPUT", "-s", &from_addr, "-p", "udp", "-j", "NFQUEUE",
            "--queue-num", &queue.to_string()];
        self.iptables(to, &rule)
    }

    /// Caps what host `to` receives at `kbit` kbit/s, with a queue holding at most
    /// `queue_ms` of traffic (a token bucket on the switch's port towards it; what overflows
    /// is dropped, as a thin access link does).
    pub fn rate_cap(&self, to: usize, kbit: u32, queue_ms: u32) -> Result<(), String> {
        let port = format!("{}p{to}", self.prefix);
        let burst = (kbit as usize * 1000 / 8 / 100).max(3_000);
        ns_exec(
            &self.switch,
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &port,
                "root",
                "tbf",
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                &burst.to_string(),
                "latency",
                &format!("{queue_ms}ms"),
            ],
        )
    }

    /// Lifts the cap [`Self::rate_cap`] put on what host `to` receives.
    pub fn clear_rate_cap(&self, to: usize) -> Result<(), String> {
        let port = format!("{}p{to}", self.prefix);
        ns_exec(&self.switch, "tc", &["qdisc", "del", "dev", &port, "root"])
    }

    /// Kills every process started so far with [`Self::spawn`] (the namespaces stay).
    pub fn kill_all(&mut self) {
        for c in &mut self.children {
            // What the child started (a browser) goes with it rather than living on in a
            // deleted namespace.
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &c.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        self.addrs[i].clone()
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
    pub fn spawn(&mut self, cmd: Command) -> mpsc::Receiver<String> {
        self.spawn_logged(cmd, None)
    }

    /// [`Self::spawn`], with the child's stderr written to `log` (when given) instead of
    /// thrown away.
    pub fn spawn_logged(
        &mut self,
        mut cmd: Command,
        log: Option<&std::path::Path>,
    ) -> mpsc::Receiver<String> {
        let stderr = log
            .and_then(|p| std::fs::File::create(p).ok())
            .map_or_else(Stdio::null, Stdio::from);
        cmd.stdout(Stdio::piped()).stderr(stderr);
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
        self.kill_all();
        for ns in self.namespaces() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// Whether `iptables` runs here (the NAT and cut tests need it; Debian's `iptables` package).
pub fn iptables_available() -> bool {
    Command::new("iptables")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}
