//! Assembly of the Pingora server: the proxy service on `listen`, the admin app on
//! `admin.listen`, the probe schedule and (with a config file) the reload triggers as
//! background services.

use crate::admin::AdminApp;
use crate::config::Config;
use crate::grid::Grid;
use crate::metrics::Metrics;
use crate::probe::ProbeService;
use crate::reload::ReloadService;
use crate::selection::Rng;
use crate::service::GridProxy;
use pingora_core::server::Server;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use std::path::PathBuf;
use std::sync::Arc;

/// How to run the server, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Take over the listening sockets of a running gridlb (Pingora's graceful upgrade).
    pub upgrade: bool,
    /// Worker threads of the proxy service; default: one per CPU.
    pub threads: Option<usize>,
    /// Where the upgrade socket lives; default `/tmp/gridlb-<port>.sock`.
    pub upgrade_sock: Option<PathBuf>,
}

/// Build the server and its grid. `metrics` decides the registry (the default registry in
/// the binary, a private one in tests that run several proxies in one process).
pub fn build(
    config: Config,
    config_path: Option<PathBuf>,
    options: &Options,
    metrics: Arc<Metrics>,
) -> (Server, Arc<Grid>) {
    let mut conf = ServerConf {
        threads: options.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let sock = options.upgrade_sock.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("gridlb-{}.sock", config.listen.port()))
    });
    conf.upgrade_sock = sock.to_string_lossy().into_owned();
    conf.pid_file = sock.with_extension("pid").to_string_lossy().into_owned();
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let listen = config.listen.to_string();
    let admin_listen = config.admin.listen.to_string();
    let grid = Grid::new(config, config_path.clone(), metrics, Rng::from_entropy());

    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        GridProxy::new(Arc::clone(&grid)),
        "gridlb proxy",
    );
    proxy.add_tcp(&listen);
    let mut admin = Service::new("gridlb admin".to_string(), AdminApp::new(Arc::clone(&grid)));
    admin.add_tcp(&admin_listen);
    let probe = background_service(
        "gridlb probe",
        ProbeService {
            grid: Arc::clone(&grid),
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(probe);
    if let Some(path) = config_path {
        server.add_service(background_service(
            "gridlb reload",
            ReloadService {
                grid: Arc::clone(&grid),
                path,
            },
        ));
    }
    (server, grid)
}
