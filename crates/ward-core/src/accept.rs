//! The accept loop every protocol listener runs.
//!
//! Each adapter (PostgreSQL, SSH, …) takes TCP connections the same way: one task per
//! connection, Nagle off (ward relays small interactive messages), a brief back-off when
//! accepting fails (out of descriptors) instead of a spinning loop, and an end when ward
//! shuts down.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long to wait after a failed accept (EMFILE and friends) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `shutdown` fires and runs `handle` for each in its own task.
/// `protocol` names the listener in the log.
pub async fn accept_until<F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    protocol: &'static str,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(handle(tcp, peer));
            }
            Err(e) => {
                tracing::warn!(protocol, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
