//! The network: one namespace per member, one for the clients, one hub
//! namespace holding a bridge; each member and the clients join the bridge
//! through a veth pair. Addresses exist only inside these namespaces
//! (10.213.0.0/24; members .1–.5, clients .100), so nothing on the host's own
//! network changes. Faults on it:
//! - partitions: nftables rules in a member's namespace dropping packets from
//!   given peers (both directions: a rule on each side; one-way: one side);
//! - loss: nftables dropping a random share of peer packets;
//! - slow links: `tc netem` delay with jitter, reordering and duplication
//!   where the kernel has it, else the same impairments in user space: the
//!   member's bridge port replaced by a tap this process feeds (`wire`).
//! Client traffic is never partitioned: the faults are between members.
//!
//! Tests: `tests` below (names and addresses); the namespaces themselves in
//! the smoke run (`jepsen/smoke.sh`).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::wire::{Impairment, Wire};

/// Runs a command; the error carries its stderr.
pub fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `program args` inside namespace `ns`.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    sh("ip", &all)
}

/// The names and addresses of one run's network.
#[derive(Debug, Clone)]
pub struct Net {
    /// Prefix of every name this run creates (unique per harness process).
    pub prefix: String,
    pub members: usize,
    /// Members whose link runs through a user-space wire, by index.
    wires: Arc<Mutex<BTreeMap<usize, Wire>>>,
}

pub const SUBNET: &str = "10.213.0";

/// The hub's end of member (or client) link `k`'s veth pair.
fn hub_end(k: usize) -> String {
    format!("h{k}")
}

impl Net {
    pub fn new(members: usize) -> Net {
        Net {
            prefix: format!("cj{}", std::process::id()),
            members,
            wires: Arc::default(),
        }
    }

    /// Member `i` (0-based): its namespace.
    pub fn member_ns(&self, i: usize) -> String {
        format!("{}-n{}", self.prefix, i + 1)
    }

    pub fn member_ip(&self, i: usize) -> String {
        format!("{SUBNET}.{}", i + 1)
    }

    pub fn client_ns(&self) -> String {
        format!("{}-c", self.prefix)
    }

    pub fn hub_ns(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    fn client_ip(&self) -> String {
        format!("{SUBNET}.100")
    }

    /// Every namespace, hub last.
    fn namespaces(&self) -> Vec<String> {
        let mut all: Vec<String> = (0..self.members).map(|i| self.member_ns(i)).collect();
        all.push(self.client_ns());
        all.push(self.hub_ns());
        all
    }

    /// Creates everything; on an error the caller still runs `teardown`.
    pub fn setup(&self) -> Result<(), String> {
        let hub = self.hub_ns();
        sh("ip", &["netns", "add", &hub])?;
        in_ns(&hub, "ip", &["link", "set", "lo", "up"])?;
        in_ns(&hub, "ip", &["link", "add", "br0", "type", "bridge"])?;
        in_ns(&hub, "ip", &["link", "set", "br0", "up"])?;
        let mut ends: Vec<(String, String)> = (0..self.members)
            .map(|i| (self.member_ns(i), self.member_ip(i)))
            .collect();
        ends.push((self.client_ns(), self.client_ip()));
        for (k, (ns, ip)) in ends.iter().enumerate() {
            sh("ip", &["netns", "add", ns])?;
            in_ns(ns, "ip", &["link", "set", "lo", "up"])?;
            // Created inside the member's namespace, the hub end moved out.
            let hub_end = hub_end(k);
            in_ns(
                ns,
                "ip",
                &[
                    "link", "add", "eth0", "type", "veth", "peer", "name", &hub_end,
                ],
            )?;
            in_ns(ns, "ip", &["link", "set", &hub_end, "netns", &hub])?;
            in_ns(&hub, "ip", &["link", "set", &hub_end, "master", "br0"])?;
            in_ns(&hub, "ip", &["link", "set", &hub_end, "up"])?;
            in_ns(
                ns,
                "ip",
                &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            in_ns(ns, "ip", &["link", "set", "eth0", "up"])?;
            if ns != &self.client_ns() {
                in_ns(ns, "nft", &["add", "table", "inet", "cj"])?;
                in_ns(
                    ns,
                    "nft",
                    &[
                        "add chain inet cj input { type filter hook input priority 0 ; policy accept ; }",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Deletes every namespace this run made (their veths and rules go with
    /// them, wires stop first); returns what could not be removed.
    pub fn teardown(&self) -> Vec<String> {
        if let Ok(mut wires) = self.wires.lock() {
            std::mem::take(&mut *wires)
                .into_values()
                .for_each(Wire::stop);
        }
        let existing = sh("ip", &["netns", "list"]).unwrap_or_default();
        self.namespaces()
            .into_iter()
            .filter(|ns| existing.split_whitespace().any(|w| w == ns))
            .filter_map(|ns| sh("ip", &["netns", "del", &ns]).err())
            .collect()
    }

    /// Member `at` drops every packet from member `from`.
    pub fn drop_from(&self, at: usize, from: usize) -> Result<(), String> {
        let rule = format!(
            "add rule inet cj input ip saddr {} drop",
            self.member_ip(from)
        );
        in_ns(&self.member_ns(at), "nft", &[&rule]).map(drop)
    }

    /// Member `at` drops `percent` % of the packets from the other members.
    pub fn lossy(&self, at: usize, percent: u32) -> Result<(), String> {
        let rule = format!(
            "add rule inet cj input ip saddr {SUBNET}.1-{SUBNET}.{} numgen random mod 100 < {percent} drop",
            self.members
        );
        in_ns(&self.member_ns(at), "nft", &[&rule]).map(drop)
    }

    /// Removes every partition and loss rule.
    pub fn heal(&self) -> Result<(), String> {
        for i in 0..self.members {
            in_ns(&self.member_ns(i), "nft", &["flush chain inet cj input"])?;
        }
        Ok(())
    }

    /// Slows member `at`'s outgoing packets: delay ± half of it, 10 %
    /// reordered, 5 % duplicated, 2 % lost — netem if the kernel has it,
    /// else the user-space wire, else (no tap device) a tbf rate limit.
    /// Returns which one was used.
    pub fn slow(&self, at: usize, delay_ms: u32, seed: u64) -> Result<&'static str, String> {
        let ns = self.member_ns(at);
        let imp = Impairment {
            delay_ms,
            jitter_ms: delay_ms / 2,
            reorder_pct: 10,
            duplicate_pct: 5,
            loss_pct: 2,
            seed,
        };
        let (delay, jitter) = (format!("{delay_ms}ms"), format!("{}ms", imp.jitter_ms));
        let (reorder, duplicate) = (
            format!("{}%", imp.reorder_pct),
            format!("{}%", imp.duplicate_pct),
        );
        let loss = format!("{}%", imp.loss_pct);
        let netem = in_ns(
            &ns,
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                &delay,
                &jitter,
                "reorder",
                &reorder,
                "duplicate",
                &duplicate,
                "loss",
                &loss,
            ],
        );
        if netem.is_ok() {
            return Ok("netem");
        }
        let mut wires = self.wires.lock().expect("wires");
        if let Some(old) = wires.remove(&at) {
            old.stop();
        }
        match Wire::start(&self.hub_ns(), &hub_end(at), &format!("w{at}"), imp) {
            Ok(wire) => {
                wires.insert(at, wire);
                Ok("wire")
            }
            // No tap or packet socket here (no /dev/net/tun?): queueing
            // delay and tail drops at least, from a rate limit.
            Err(e) => {
                eprintln!("user-space wire unavailable ({e}); a tbf rate limit instead");
                in_ns(
                    &ns,
                    "tc",
                    &[
                        "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "256kbit",
                        "burst", "4kb", "latency", &delay,
                    ],
                )
                .map(|_| "tbf")
            }
        }
    }

    /// Undoes `slow`: the member's frames go straight to the bridge again.
    /// For a wire, says what it did to them.
    pub fn unslow(&self, at: usize) -> Result<Option<String>, String> {
        if let Some(w) = self.wires.lock().expect("wires").remove(&at) {
            let c = &w.counts;
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            let said = format!(
                "n{} wire: {} frames out, {} duplicated, {} sent ahead of held ones, {} lost",
                at + 1,
                load(&c.out_frames),
                load(&c.duplicated),
                load(&c.reordered),
                load(&c.lost)
            );
            w.stop();
            return Ok(Some(said));
        }
        let out = in_ns(
            &self.member_ns(at),
            "tc",
            &["qdisc", "del", "dev", "eth0", "root"],
        );
        match out {
            Err(e) if !e.contains("No such file") && !e.contains("Cannot delete") => Err(e),
            _ => Ok(None),
        }
    }

    /// Moves the calling thread into the clients' namespace: threads and
    /// processes it starts afterwards are there too.
    pub fn enter_client_ns(&self) -> Result<(), String> {
        crate::wire::enter_ns(&self.client_ns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_to_the_run_and_addresses_distinct() {
        let n = Net::new(5);
        let mut all = n.namespaces();
        assert!(all.iter().all(|ns| ns.starts_with(&n.prefix)));
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 7);
        let ips: std::collections::BTreeSet<String> = (0..5).map(|i| n.member_ip(i)).collect();
        assert_eq!(ips.len(), 5);
        assert!(!ips.contains(&n.client_ip()));
    }
}
