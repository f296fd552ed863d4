//! Readiness for a service manager (systemd's `Type=notify`): once the
//! member has published itself through Raft and its listeners serve clients,
//! it sends the datagram `READY=1` to the unix socket named by
//! `$NOTIFY_SOCKET` — the moment etcd notifies too, so a unit ordered after
//! `cairn.service` starts against a member that answers.
//!
//! - `$NOTIFY_SOCKET` unset or empty: nothing happens (no task, no timer, so
//!   the simulation, which never sets it, runs exactly as before).
//! - A path (`/run/...`) or an abstract socket name (`@name`, Linux).
//! - Failing to notify never stops the member: it logs a warning and serves
//!   on (systemd will time the start out if it never hears).
//!
//! Tests: the unit tests below (real datagram sockets, a path and an
//! abstract name); `tests/deploy.rs` starts the real binary under a socket
//! the test bound and checks `READY=1` comes only once the member serves.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use crate::server::Server;

/// The variable a service manager sets to the socket it listens on.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The state a member reports once it serves clients.
pub const READY: &str = "READY=1";

/// How often the waiting task looks whether the member has published.
const POLL: Duration = Duration::from_millis(50);

/// Where `$NOTIFY_SOCKET` points, or `None` when nobody listens.
pub fn notify_socket() -> Option<OsString> {
    std::env::var_os(NOTIFY_SOCKET).filter(|s| !s.is_empty())
}

/// Sends `READY=1` once `server` has published itself (its name and client
/// URLs applied through Raft) — called after the client listeners are
/// bound. Does nothing without `$NOTIFY_SOCKET`; gives up if the member
/// stops first.
pub fn ready_when_published(server: &Server) {
    let Some(socket) = notify_socket() else {
        return;
    };
    let server = server.clone();
    tokio::spawn(async move {
        while !server.is_published() {
            if server.is_stopped() {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        match send(&socket, READY) {
            Ok(()) => {
                tracing::info!(socket = %socket.to_string_lossy(), "notified the service manager: {READY}")
            }
            Err(e) => {
                tracing::warn!(socket = %socket.to_string_lossy(), error = %e, "cannot notify the service manager; serving anyway")
            }
        }
    });
}

/// Sends one datagram holding `state` to the notify socket `socket`: an
/// absolute path, or `@name` for a Linux abstract socket. Never blocks.
pub fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let bytes = socket.as_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        send_abstract(&sock, name, state.as_bytes())?
    } else if bytes.starts_with(b"/") {
        sock.send_to(state.as_bytes(), Path::new(socket))?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an abstract socket (@name)",
        ));
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], data: &[u8]) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(data, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _data: &[u8]) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_path_socket_receives_the_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        send(path.as_os_str(), READY).expect("send");
        assert_eq!(receive(&sock), "READY=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_receives_the_state() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("cairn-notify-unit-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let sock = UnixDatagram::bind_addr(&addr).expect("bind");
        send(OsStr::new(&format!("@{name}")), READY).expect("send");
        assert_eq!(receive(&sock), "READY=1");
    }

    #[test]
    fn nobody_listening_or_a_bad_name_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nobody.sock");
        assert!(send(missing.as_os_str(), READY).is_err());
        let e = send(OsStr::new("relative.sock"), READY).expect_err("relative");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
