//! systemd's notification protocol (`sd_notify`): `READY=1` once serving,
//! `WATCHDOG=1` while the loop makes progress (see `watchdog`), `STOPPING=1` on shutdown.
//! A datagram to `$NOTIFY_SOCKET`; nothing at all when it is unset.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification; errors are ignored (systemd may be absent).
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path, state);
    }
}

/// Sends `state` to the socket at `path` (`@name` for an abstract socket).
pub fn notify_to(path: &std::ffi::OsStr, state: &str) {
    let Ok(socket) = UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|address| socket.send_to_addr(state.as_bytes(), &address))
    } else {
        socket.send_to(state.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(error) = sent {
        tracing::debug!(%error, "sd_notify failed");
    }
}

/// `$WATCHDOG_USEC`, if the service has a watchdog: the longest the
/// daemon may go without a ping.
pub fn watchdog_limit() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.as_os_str(), "READY=1");
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).expect("datagram");
        assert_eq!(&buffer[..n], b"READY=1");
    }
}
