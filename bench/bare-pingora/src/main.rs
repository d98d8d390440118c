//! `bare-pingora`: the smallest Pingora proxy that does gridlb's job without gridlb's work, so
//! the throughput bench (`bench/scripts/throughput`) can tell what the framework costs from
//! what gridlb adds on top of it.
//!
//! It is Pingora 0.9's own `ProxyHttp` with `pingora-load-balancing`'s `RoundRobin` over the
//! substations given on the command line, as in Pingora's `load_balancer` example: no body
//! read, no admission, no load reports, no health checks, no metrics, no logging. Upstream
//! connections are kept alive in Pingora's pool (idle up to 60 s, as gridlb's are); client
//! connections are kept alive as Pingora does by default. Worker threads: `--threads`
//! (2, gridlb's in the bench).
//!
//! With `--answer` it proxies nothing: every request's body is read and answered with a fixed
//! `201`, in a loop over the connection's requests on Pingora's HTTP/1 session, the shape of
//! gridlb's own service (`proxy/src/service/serve.rs`). That is the floor of a Pingora
//! service: its listener, runtime and client HTTP/1 session, with no upstream at all.
//! `--answer-proxy` answers the same way from pingora-proxy's `ProxyHttp::request_filter`,
//! the shape gridlb had before (`bench/scripts/floor` compares the two).
//!
//! ```sh
//! bare-pingora --listen 127.0.0.1:8080 --threads 2 127.0.0.1:9001 127.0.0.1:9002
//! bare-pingora --listen 127.0.0.1:8081 --threads 2 --answer
//! ```

use async_trait::async_trait;
use bytes::Bytes;
use clap::Parser;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_load_balancing::LoadBalancer;
use pingora_load_balancing::selection::RoundRobin;
use pingora_proxy::{ProxyHttp, Session};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "A Pingora proxy doing round robin and nothing else (gridlb's throughput floor)")]
struct Cli {
    /// Address to listen on (host:port).
    #[arg(long)]
    listen: String,
    /// Worker threads of the proxy service.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Proxy nothing: answer every request with a fixed `201` on Pingora's HTTP/1 session,
    /// in a loop over each connection's requests (the framework's floor; gridlb's shape).
    #[arg(long, conflicts_with_all = ["upstreams", "answer_proxy"])]
    answer: bool,
    /// Like `--answer`, from pingora-proxy's `ProxyHttp::request_filter` instead.
    #[arg(long, conflicts_with = "upstreams")]
    answer_proxy: bool,
    /// Upstream addresses (host:port), taken in turn.
    #[arg(required_unless_present_any = ["answer", "answer_proxy"])]
    upstreams: Vec<String>,
}

/// The fixed answer of `--answer`: the shape and size of a substation's `201`.
const BOOKED: &[u8] = br#"{"session_id":"s1-00000000000000000000000000000001","substation":"s1","power_kw":11.0,"duration_s":1.0}"#;

/// The fixed answer's head.
fn booked_head() -> pingora_core::Result<Box<ResponseHeader>> {
    let mut head = ResponseHeader::build(201, Some(3))?;
    head.insert_header("content-type", "application/json")?;
    head.insert_header("content-length", BOOKED.len().to_string())?;
    head.insert_header("location", "/charge/s1-00000000000000000000000000000001")?;
    Ok(Box::new(head))
}

/// `--answer`: reads each request's body and answers it itself, one request after another
/// on the connection's HTTP/1 session; never reaches an upstream.
struct Answer;

#[async_trait]
impl ServerApp for Answer {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(Some(60));
        loop {
            if !session.read_request().await.ok()? {
                return None;
            }
            while session.read_request_body().await.ok()?.is_some() {}
            session
                .write_response_header(booked_head().ok()?)
                .await
                .ok()?;
            session
                .write_response_body(Bytes::from_static(BOOKED), true)
                .await
                .ok()?;
            let (stream, _) = session.finish().await.ok()??.into_parts();
            session = ServerSession::new_http1(stream);
            session.set_keepalive(Some(60));
        }
    }
}

/// `--answer-proxy`: the same answer from pingora-proxy's `request_filter`.
struct AnswerProxy;

#[async_trait]
impl ProxyHttp for AnswerProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<bool> {
        while session.read_request_body().await?.is_some() {}
        session.write_response_header(booked_head()?, false).await?;
        session
            .write_response_body(Some(Bytes::from_static(BOOKED)), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        pingora_core::Error::e_explain(
            pingora_core::ErrorType::InternalError,
            "answers every request itself",
        )
    }

    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}
}

/// Round robin over the upstreams; nothing per request beyond choosing the next one.
struct Bare(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        let backend = self.0.select(b"", 256).ok_or_else(|| {
            pingora_core::Error::explain(pingora_core::ConnectNoRoute, "no upstream")
        })?;
        let mut peer = HttpPeer::new(backend, false, String::new());
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let conf = ServerConf {
        threads: cli.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    if cli.answer {
        let mut service = Service::new("bare-pingora".to_string(), Answer);
        service.add_tcp(&cli.listen);
        server.add_service(service);
    } else if cli.answer_proxy {
        let mut service = pingora_proxy::http_proxy_service_with_name(
            &server.configuration,
            AnswerProxy,
            "bare-pingora",
        );
        service.add_tcp(&cli.listen);
        server.add_service(service);
    } else {
        let upstreams = LoadBalancer::try_from_iter(cli.upstreams.iter().map(String::as_str))?;
        let mut proxy = pingora_proxy::http_proxy_service_with_name(
            &server.configuration,
            Bare(Arc::new(upstreams)),
            "bare-pingora",
        );
        proxy.add_tcp(&cli.listen);
        server.add_service(proxy);
    }
    server.run_forever()
}
