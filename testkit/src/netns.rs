//! [`Netns`]: a network namespace joined to the host by a veth pair on a private /30 of
//! `10.231.0.0/16`, for fault tests that cut one process off from one service.
//!
//! A process started with [`Netns::command`] (`nsenter --net`) lives in the namespace; the services it talks to
//! listen on [`Netns::host_addr`] (the host side of the pair). [`Netns::cut`] adds an iptables
//! `DROP` rule inside the namespace for TCP to one host port, so packets of established and new
//! connections vanish silently, as in a real partition, while everything else (a witness, the
//! other service) stays reachable; [`Netns::heal`] deletes the rule. The rules live in the
//! namespace, so deleting it (on drop, also when a test fails) removes them with the veth pair:
//! nothing is left on the host.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

/// A network namespace and its veth pair, deleted on drop.
pub struct Netns {
    pub name: String,
    host_if: String,
    pub host_addr: Ipv4Addr,
    pub ns_addr: Ipv4Addr,
    cuts: Vec<u16>,
}

/// Runs a command, failing with its stderr.
fn run(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} (apt-get install iproute2 iptables)", args[0]))?;
    if !out.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when some interface already holds an address in `10.231.{a}.{b..b+4}`.
fn subnet_taken(a: u8, b: u8) -> bool {
    let Ok(addrs) = run(&["ip", "-o", "-4", "addr", "show"]) else { return true };
    (0..4).any(|i| {
        addrs.contains(&format!("10.231.{a}.{} ", u16::from(b) + i))
            || addrs.contains(&format!("10.231.{a}.{}/", u16::from(b) + i))
    })
}

impl Netns {
    /// Creates the namespace and its veth pair, up and addressed. Fails (never skips) without
    /// root or `ip`.
    pub fn create() -> anyhow::Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        for attempt in 0..64u32 {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            // 64 /30 subnets per third octet; spread processes by pid.
            let slot = (pid.wrapping_mul(31).wrapping_add(n).wrapping_add(attempt * 7)) % (256 * 64);
            let (a, b) = ((slot / 64) as u8, ((slot % 64) * 4) as u8);
            if subnet_taken(a, b) {
                continue;
            }
            let tag = format!("{:x}", (pid << 8) ^ n);
            let tag = &tag[tag.len().saturating_sub(9)..];
            let ns = Self {
                name: format!("corral-ft-{tag}"),
                host_if: format!("cfh{tag}"),
                host_addr: Ipv4Addr::new(10, 231, a, b + 1),
                ns_addr: Ipv4Addr::new(10, 231, a, b + 2),
                cuts: Vec::new(),
            };
            ns.set_up().with_context(|| format!("creating network namespace {}", ns.name))?;
            return Ok(ns);
        }
        bail!("no free /30 in 10.231.0.0/16 for a test network namespace")
    }

    fn set_up(&self) -> anyhow::Result<()> {
        let ns_if = self.host_if.replacen("cfh", "cfn", 1);
        let host_cidr = format!("{}/30", self.host_addr);
        let ns_cidr = format!("{}/30", self.ns_addr);
        run(&["ip", "netns", "add", &self.name])?;
        run(&["ip", "link", "add", &self.host_if, "type", "veth", "peer", "name", &ns_if])?;
        run(&["ip", "link", "set", &ns_if, "netns", &self.name])?;
        run(&["ip", "addr", "add", &host_cidr, "dev", &self.host_if])?;
        run(&["ip", "link", "set", &self.host_if, "up"])?;
        run(&["ip", "-n", &self.name, "addr", "add", &ns_cidr, "dev", &ns_if])?;
        run(&["ip", "-n", &self.name, "link", "set", &ns_if, "up"])?;
        run(&["ip", "-n", &self.name, "link", "set", "lo", "up"])?;
        // iptables must work in here before a test relies on it to cut.
        run(&["ip", "netns", "exec", &self.name, "iptables", "-S", "OUTPUT"])?;
        Ok(())
    }

    /// A command that runs `program` inside the namespace. `nsenter --net` changes only the
    /// network namespace and execs the program (so the child's PID is the program's); `ip
    /// netns exec` would also remount `/sys` in a new mount namespace, hiding the cgroup
    /// mounts an agent needs for its sandboxes' limits and its watchdog.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name)).arg("--").arg(program);
        cmd
    }

    fn rule(&self, op: &str, port: u16) -> anyhow::Result<()> {
        let (dest, port) = (self.host_addr.to_string(), port.to_string());
        let args = ["-p", "tcp", "-d", &dest, "--dport", &port, "-j", "DROP"];
        let mut all = vec!["ip", "netns", "exec", &self.name, "iptables", op, "OUTPUT"];
        all.extend(args);
        run(&all).map(|_| ())
    }

    /// Drops every packet from the namespace to `host_addr:port` (existing connections included).
    pub fn cut(&mut self, port: u16) -> anyhow::Result<()> {
        if !self.cuts.contains(&port) {
            self.rule("-A", port)?;
            self.cuts.push(port);
        }
        Ok(())
    }

    /// Undoes [`Netns::cut`] for `port`.
    pub fn heal(&mut self, port: u16) -> anyhow::Result<()> {
        if let Some(i) = self.cuts.iter().position(|p| *p == port) {
            self.rule("-D", port)?;
            self.cuts.remove(i);
        }
        Ok(())
    }

    /// Ports cut now.
    pub fn cuts(&self) -> &[u16] {
        &self.cuts
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its rules and its end of the pair, which takes the
        // host end with it; deleting the host end as well makes that immediate.
        let _ = run(&["ip", "netns", "del", &self.name]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}
