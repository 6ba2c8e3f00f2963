//! Serving a loopback HTTP endpoint (the daemon's, the executor's) without
//! letting clients starve it:
//! a connection must send its request head within [`HEADER_TIMEOUT`],
//! lives at most [`CONNECTION_TIMEOUT`], and past [`MAX_CONNECTIONS`] at
//! once new ones are closed at once. Slow or half-sent requests therefore
//! cannot keep `/healthz` from answering.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may last, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds `listen` and serves `app` until `shutdown` is cancelled; with
/// `allow` not empty, a connection from any other address is closed at
/// once (before a byte is read).
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    listen: &str,
    allow: &[ipnet::IpNet],
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let allow = allow.to_vec();
    Ok(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) if allowed(&allow, peer.ip()) => stream,
                    Ok((_, peer)) => {
                        // Debug: scanners on the internet would flood the log.
                        tracing::debug!(%peer, "A connection from outside the allowed ranges was closed.");
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Cannot accept a connection.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::warn!(max = MAX_CONNECTIONS, "Too many connections; one was closed.");
                continue;
            };
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
                drop(slot);
            });
        }
    }))
}

/// Whether `peer` may connect: anyone when `allow` is empty.
fn allowed(allow: &[ipnet::IpNet], peer: std::net::IpAddr) -> bool {
    // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
    let peer = match peer {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, std::net::IpAddr::V4),
        v4 => v4,
    };
    allow.is_empty() || allow.iter().any(|net| net.contains(&peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allowed_ranges_connect_when_some_are_given() {
        let forge: Vec<ipnet::IpNet> = vec!["140.82.112.0/20".parse().expect("cidr")];
        let peer = |text: &str| text.parse::<std::net::IpAddr>().expect("address");
        assert!(allowed(&forge, peer("140.82.115.4")));
        assert!(allowed(&forge, peer("::ffff:140.82.115.4")), "an IPv4 peer on a v6 socket");
        assert!(!allowed(&forge, peer("203.0.113.9")));
        assert!(allowed(&[], peer("203.0.113.9")), "no ranges: anyone (the loopback API)");
    }
}
