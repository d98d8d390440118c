//! The HTTP/1.1 server around one [`Substation`]: the accept loop, one task per connection,
//! the expiry reaper, and a bounded graceful stop.
//!
//! Stop, after hyper-util's `server_graceful.rs`: [`Server::shutdown`] closes the listener
//! (the port refuses new connections at once), asks every connection to finish its in-flight
//! request and close (`graceful_shutdown`), waits up to [`DRAIN_TIMEOUT`] for them, then
//! aborts the rest and logs which way it ended. Dropping a [`Server`] (or [`Server::abort`])
//! instead aborts everything at once, like a killed process.

use crate::config::Config;
use crate::grid::Substation;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How long a graceful stop waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A running substation server.
pub struct Server {
    /// The address it listens on (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// The substation it serves.
    pub state: Arc<Substation>,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    reaper: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `config.listen` (port 0 allowed), spawns the accept loop and the expiry reaper on
    /// the current tokio runtime. An invalid config is an `InvalidInput` error.
    pub async fn start(config: Config) -> io::Result<Server> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = Substation::new(&config.id, config.capacity_kw, config.time_scale);
        state.set_orca_form(config.orca_form);
        state.set_session_bounds(config.max_session_kw, config.max_duration_s);
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&state), stopped));
        let reaper = tokio::spawn(Arc::clone(&state).expire_sessions());
        log::info!(
            "substation {} serving on {addr} (capacity {} kW, time scale {})",
            config.id,
            config.capacity_kw,
            config.time_scale
        );
        Ok(Server {
            addr,
            state,
            stop,
            accept: Some(accept),
            reaper: Some(reaper),
        })
    }

    /// Graceful stop: stop accepting, wait (at most [`DRAIN_TIMEOUT`]) for in-flight
    /// requests, then return. Sessions stop expiring.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(accept) = self.accept.take() {
            if let Err(e) = accept.await {
                log::warn!("substation {}: accept loop failed: {e}", self.state.id());
            }
        }
        self.stop_reaper().await;
    }

    /// Hard stop, like a killed process: drop the listener and every connection now. Returns
    /// once the port is closed.
    pub async fn abort(mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
        self.stop_reaper().await;
    }

    async fn stop_reaper(&mut self) {
        if let Some(reaper) = self.reaper.take() {
            reaper.abort();
            let _ = reaper.await;
        }
    }
}

impl Drop for Server {
    /// Aborts the accept loop (closing the port and every connection) and the reaper. The
    /// tasks end as soon as the runtime runs them next; use [`Server::abort`] to wait for it.
    fn drop(&mut self) {
        for task in [self.accept.take(), self.reaper.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<Substation>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stop_requested(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let serve = serve_connection(stream, Arc::clone(&state), stopped.clone());
                    connections.spawn(serve);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    log::warn!("substation {}: accept failed: {e}", state.id());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    drain(state.id(), connections).await;
}

/// Resolves once a stop is asked for, or the [`Server`] is gone.
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn drain(id: &str, mut connections: JoinSet<()>) {
    let open = connections.len();
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, all_done).await.is_ok() {
        log::info!("substation {id}: stopped; {open} connection(s) drained");
    } else {
        log::warn!(
            "substation {id}: stopped; {} of {open} connection(s) still busy after {:?}, closed",
            connections.len(),
            DRAIN_TIMEOUT
        );
        connections.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    state: Arc<Substation>,
    mut stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(crate::http::handle(&state, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop_requested(&mut stopped) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        log::debug!("connection ended with an error: {e}");
    }
}
