//! A user-space netem: delay, jitter, reordering, duplication and loss on one
//! member's link, for kernels without `sch_netem` (this project's machines
//! have none, nor NFQUEUE or nftables `dup`).
//!
//! Every member reaches the hub's bridge through a veth pair whose hub end
//! (`h<k>`) is a bridge port. To impair member k, the hub end leaves the
//! bridge and a tap device (`w<k>`) takes its place; a thread in the hub
//! namespace then carries every frame between the two: frames read from
//! `h<k>` with a packet socket (what the member sent) go through the
//! impairment and are written into the tap, which hands them to the bridge;
//! frames the bridge sends to the tap are written back out of `h<k>` to the
//! member unchanged. Nothing about the member changes: its address, MAC,
//! routes and sockets stay, only the path of its frames runs through this
//! process. Both ends carry a virtio-net header, so the kernel's segmentation
//! and checksum offloads (TCP super-packets, partial checksums) pass through
//! intact.
//!
//! The impairment of the member's outgoing frames is netem's: each frame is
//! lost with `loss` %, else held `delay` ± `jitter` (uniform) — frames whose
//! holds cross leave out of order — except `reorder` % that leave at once
//! (ahead of the held ones), and `duplicate` % are sent twice.
//!
//! Healing stops the thread, closes the tap (the device goes with it) and
//! puts `h<k>` back on the bridge.
//!
//! Tests: `tests` below (needs root: namespaces, a tap, a packet socket).

use std::collections::BinaryHeap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// What happens to a member's outgoing frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub delay_ms: u32,
    pub jitter_ms: u32,
    pub reorder_pct: u32,
    pub duplicate_pct: u32,
    pub loss_pct: u32,
    pub seed: u64,
}

/// Frames counted by a running wire.
#[derive(Debug, Default)]
pub struct Counts {
    pub out_frames: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    pub lost: AtomicU64,
    pub in_frames: AtomicU64,
}

/// A running wire; `stop` (or drop) ends it and restores the bridge port.
pub struct Wire {
    hub_ns: String,
    hub_end: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub counts: Arc<Counts>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wire({} in {})", self.hub_end, self.hub_ns)
    }
}

// Linux ABI values (linux/if_tun.h, linux/if_packet.h, linux/if_ether.h).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;
const TUN_F_TSO6: libc::c_ulong = 0x04;
const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: libc::c_int = 263;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_OUTGOING: u8 = 4;
/// A virtio-net header and the largest GSO frame behind it.
const BUF: usize = 10 + 65_550;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter_ns(ns: &str) -> Result<(), String> {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns on a valid namespace fd only changes this thread's
    // network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(os_err(&format!("setns {path}")))
    }
}

/// `ip -n ns args`.
fn ip(ns: &str, args: &[&str]) -> Result<String, String> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    crate::net::sh("ip", &all)
}

/// A tap device named `name` in the calling thread's namespace, with
/// virtio-net headers and the offloads a veth produces.
fn open_tap(name: &str) -> Result<OwnedFd, String> {
    // SAFETY: plain open(2) of a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_err("/dev/net/tun"));
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    // SAFETY: TUNSETIFF reads and writes an ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(os_err(&format!("TUNSETIFF {name}")));
    }
    let offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    // SAFETY: TUNSETOFFLOAD takes an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, offload) } < 0 {
        return Err(os_err(&format!("TUNSETOFFLOAD {name}")));
    }
    Ok(fd)
}

/// A raw packet socket bound to interface `dev` of the calling thread's
/// namespace, with virtio-net headers, not seeing its own sends.
fn open_packet(dev: &str) -> Result<OwnedFd, String> {
    let proto = ETH_P_ALL.to_be();
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto as libc::c_int,
        )
    };
    if fd < 0 {
        return Err(os_err("packet socket"));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING] {
        // SAFETY: an int option by pointer and size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                SOL_PACKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os_err(&format!("packet socket option {opt}")));
        }
    }
    let cname = std::ffi::CString::new(dev).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(os_err(&format!("interface {dev}")));
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: binds to an address we own, with its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os_err(&format!("bind packet socket to {dev}")));
    }
    Ok(fd)
}

/// Reads one frame (with its header); None when nothing is waiting. A
/// packet socket's frames carry their packet type, and outgoing ones are
/// skipped (the kernel should not deliver them with IGNORE_OUTGOING).
fn read_frame(fd: &OwnedFd, buf: &mut [u8], packet: bool) -> Option<usize> {
    // SAFETY: sockaddr_ll is plain data.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: reads into a buffer we own, with its length.
    let n = unsafe {
        if packet {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        } else {
            libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
        }
    };
    if n <= 0 {
        return None;
    }
    if packet && from.sll_pkttype == PACKET_OUTGOING {
        return Some(0);
    }
    Some(n as usize)
}

/// Writes one frame; a full queue or any other error loses it, as a link
/// would.
fn write_frame(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: writes from a buffer we own, with its length.
    unsafe {
        libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len());
    }
}

/// A frame held until `due`; `seq` keeps equal times in arrival order.
struct Held {
    due: Instant,
    seq: u64,
    frame: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    // The earliest due first out of a max-heap.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// What the impairment does with one frame: the holds (from now) of the
/// copies to send, empty when lost. A hold of zero leaves at once.
fn impair(imp: &Impairment, rng: &mut SmallRng) -> (Vec<Duration>, bool) {
    if imp.loss_pct > 0 && rng.random_range(0..100) < imp.loss_pct {
        return (Vec::new(), false);
    }
    let copies = if imp.duplicate_pct > 0 && rng.random_range(0..100) < imp.duplicate_pct {
        2
    } else {
        1
    };
    let mut holds = Vec::with_capacity(copies);
    let mut jumped = false;
    for _ in 0..copies {
        if imp.reorder_pct > 0 && rng.random_range(0..100) < imp.reorder_pct {
            holds.push(Duration::ZERO);
            jumped = true;
            continue;
        }
        let j = i64::from(imp.jitter_ms);
        let off = if j > 0 { rng.random_range(-j..=j) } else { 0 };
        let ms = (i64::from(imp.delay_ms) + off).max(0) as u64;
        holds.push(Duration::from_millis(ms));
    }
    (holds, jumped)
}

impl Wire {
    /// Puts member link `hub_end` (a port of `br0` in namespace `hub_ns`)
    /// behind a tap named `tap` and this process.
    pub fn start(hub_ns: &str, hub_end: &str, tap: &str, imp: Impairment) -> Result<Wire, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (ns, end, tap_name) = (hub_ns.to_string(), hub_end.to_string(), tap.to_string());
        let (stop2, counts2) = (stop.clone(), counts.clone());
        let thread = std::thread::Builder::new()
            .name(format!("wire-{hub_end}"))
            .spawn(move || {
                let fds = (|| {
                    enter_ns(&ns)?;
                    let tapfd = open_tap(&tap_name)?;
                    let pkt = open_packet(&end)?;
                    ip(&ns, &["link", "set", &end, "nomaster"])?;
                    ip(&ns, &["link", "set", &tap_name, "master", "br0", "up"])?;
                    Ok::<_, String>((tapfd, pkt))
                })();
                let (tapfd, pkt) = match fds {
                    Ok(f) => {
                        let _ = ready_tx.send(Ok(()));
                        f
                    }
                    Err(e) => {
                        let _ = ip(&ns, &["link", "set", &end, "master", "br0"]);
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                carry(&pkt, &tapfd, imp, &stop2, &counts2);
                // The tap goes with its descriptor; the port comes back after.
                drop(tapfd);
                drop(pkt);
                let _ = ip(&ns, &["link", "set", &end, "master", "br0"]);
            })
            .map_err(|e| e.to_string())?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Wire {
                hub_ns: hub_ns.to_string(),
                hub_end: hub_end.to_string(),
                stop,
                thread: Some(thread),
                counts,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err("wire thread ended before it was ready".into()),
        }
    }

    /// Ends the wire: frames still held are lost, the member's port goes
    /// back on the bridge.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The wire's loop: both directions, held frames sent when due.
fn carry(pkt: &OwnedFd, tap: &OwnedFd, imp: Impairment, stop: &AtomicBool, counts: &Counts) {
    let mut rng = SmallRng::seed_from_u64(imp.seed);
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; BUF];
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.due <= now) {
            let h = held.pop().expect("peeked");
            write_frame(tap, &h.frame);
        }
        let wait_ms = held
            .peek()
            .map(|h| h.due.saturating_duration_since(now).as_millis() as i32 + 1)
            .unwrap_or(50)
            .min(50);
        let mut fds = [
            libc::pollfd {
                fd: pkt.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: tap.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polls two descriptors we own.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
        if rc <= 0 {
            continue;
        }
        // From the member: impaired, into the bridge.
        for _ in 0..64 {
            let Some(n) = read_frame(pkt, &mut buf, true) else {
                break;
            };
            if n == 0 {
                continue;
            }
            counts.out_frames.fetch_add(1, Ordering::Relaxed);
            let (holds, jumped) = impair(&imp, &mut rng);
            if holds.is_empty() {
                counts.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if holds.len() > 1 {
                counts.duplicated.fetch_add(1, Ordering::Relaxed);
            }
            if jumped && !held.is_empty() {
                counts.reordered.fetch_add(1, Ordering::Relaxed);
            }
            let now = Instant::now();
            for hold in holds {
                if hold.is_zero() {
                    write_frame(tap, &buf[..n]);
                } else {
                    seq += 1;
                    held.push(Held {
                        due: now + hold,
                        seq,
                        frame: buf[..n].to_vec(),
                    });
                }
            }
        }
        // From the bridge: straight to the member.
        for _ in 0..64 {
            let Some(n) = read_frame(tap, &mut buf, false) else {
                break;
            };
            counts.in_frames.fetch_add(1, Ordering::Relaxed);
            write_frame(pkt, &buf[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Net;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};

    /// Runs `f` on a thread inside namespace `ns`.
    fn in_thread<T: Send + 'static>(
        ns: String,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        std::thread::spawn(move || {
            enter_ns(&ns).expect("enter namespace");
            f()
        })
    }

    /// Sends `n` numbered datagrams from member 0 to member 1; what member 1
    /// received, in arrival order.
    fn datagrams(net: &Net, n: u32, port: u16) -> Vec<u32> {
        let to = format!("{}:{port}", net.member_ip(1));
        let bind = to.clone();
        let rx = in_thread(net.member_ns(1), move || {
            let s = UdpSocket::bind(&bind).expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(1500)))
                .expect("timeout");
            let mut got = Vec::new();
            let mut b = [0u8; 4];
            while let Ok(k) = s.recv(&mut b) {
                if k == 4 {
                    got.push(u32::from_be_bytes(b));
                }
            }
            got
        });
        std::thread::sleep(Duration::from_millis(200));
        in_thread(net.member_ns(0), move || {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            for i in 0..n {
                s.send_to(&i.to_be_bytes(), &to).expect("send");
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .join()
        .expect("sender");
        rx.join().expect("receiver")
    }

    #[test]
    fn a_wire_delays_duplicates_and_reorders_a_members_packets_and_tcp_still_delivers() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("needs root and /dev/net/tun; the smoke run covers it too");
            return;
        }
        let net = Net::new(2);
        struct Down<'a>(&'a Net);
        impl Drop for Down<'_> {
            fn drop(&mut self) {
                self.0.teardown();
            }
        }
        let _down = Down(&net);
        net.setup().expect("namespaces");
        // Straight through the bridge: everything once, in order.
        let plain = datagrams(&net, 200, 7000);
        assert_eq!(plain, (0..200).collect::<Vec<_>>());

        let imp = Impairment {
            delay_ms: 20,
            jitter_ms: 15,
            reorder_pct: 25,
            duplicate_pct: 20,
            loss_pct: 0,
            seed: 1,
        };
        let wire = Wire::start(&net.hub_ns(), "h0", "w0", imp).expect("wire");
        let got = datagrams(&net, 400, 7001);
        let mut distinct = got.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct,
            (0..400).collect::<Vec<_>>(),
            "every datagram arrives"
        );
        let dups = got.len() - distinct.len();
        assert!((30..130).contains(&dups), "about 80 duplicates, got {dups}");
        let inversions = got.windows(2).filter(|w| w[1] < w[0]).count();
        eprintln!(
            "400 datagrams through the wire: {} arrived, {dups} duplicates, {inversions} out of order",
            got.len()
        );
        assert!(inversions > 20, "out of order: {inversions}");
        assert!(wire.counts.duplicated.load(Ordering::Relaxed) >= dups as u64);

        // TCP over the same wire: 4 MiB arrive intact (offloaded segments and
        // partial checksums pass through the virtio-net headers).
        let addr = format!("{}:7002", net.member_ip(1));
        let bind = addr.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let server = in_thread(net.member_ns(1), move || {
            let l = TcpListener::bind(&bind).expect("listen");
            tx.send(()).expect("ready");
            let (mut c, _) = l.accept().expect("accept");
            let mut all = Vec::new();
            c.read_to_end(&mut all).expect("read");
            all
        });
        rx.recv().expect("listening");
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        in_thread(net.member_ns(0), move || {
            let mut c = TcpStream::connect(&addr).expect("connect");
            c.write_all(&sent).expect("write");
        })
        .join()
        .expect("client");
        assert!(server.join().expect("server") == data, "TCP stream intact");
        assert!(
            wire.counts.in_frames.load(Ordering::Relaxed) > 0,
            "acks came back"
        );

        // Healed: straight through the bridge again.
        wire.stop();
        let after = datagrams(&net, 200, 7003);
        assert_eq!(after, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn impairment_loses_duplicates_and_reorders_at_its_rates() {
        let imp = Impairment {
            delay_ms: 100,
            jitter_ms: 50,
            reorder_pct: 10,
            duplicate_pct: 20,
            loss_pct: 5,
            seed: 7,
        };
        let mut rng = SmallRng::seed_from_u64(imp.seed);
        let (mut lost, mut dup, mut now, mut held) = (0, 0, 0, 0);
        for _ in 0..100_000 {
            let (holds, _) = impair(&imp, &mut rng);
            match holds.len() {
                0 => lost += 1,
                2 => dup += 1,
                _ => {}
            }
            for h in holds {
                if h.is_zero() {
                    now += 1;
                } else {
                    assert!(h >= Duration::from_millis(50) && h <= Duration::from_millis(150));
                    held += 1;
                }
            }
        }
        let near = |x: i32, pct: f64, of: i32| ((x as f64) / (of as f64) * 100.0 - pct).abs() < 1.0;
        assert!(near(lost, 5.0, 100_000), "lost {lost}");
        assert!(near(dup, 19.0, 100_000), "duplicated {dup}");
        assert!(
            near(now, 10.0, now + held),
            "sent at once {now} of {}",
            now + held
        );
    }
}
