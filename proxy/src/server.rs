//! Assembly: the one place every part is made and wired ([`Parts`]), and the Pingora server
//! around them: the proxy service on `listen`, the admin app on `admin.listen` (both with
//! their clients' request headers bounded by `header_guard`, their memory given back by
//! `relieve` and each connection served by the thread that waits for it, `home`), and as
//! background services the probe schedule, the access log writer, the status page's history
//! sampler and (with a config file) the reload triggers.
//!
//! Dependencies run one way: `config` → `table` (with `metrics`) → `selection`, `probe`,
//! `discovery` → `pool` → `admission`, `reload` → `service`, `admin` → `server`.

use crate::access_log::{self, AccessLog};
use crate::admin::AdminApp;
use crate::admission::Admission;
use crate::config::{Config, ConfigError};
use crate::discovery;
use crate::header_guard::{Guarded, HeaderLimits};
use crate::history::{History, Sampler};
use crate::home::{Accepted, Homed};
use crate::metrics::Metrics;
use crate::pool::{Pool, ProbeSchedule};
use crate::relieve::Relieved;
use crate::reload::{ReloadService, Reloader};
use crate::selection::Rng;
use crate::service::GridProxy;
use crate::status::Status;
use crate::table::Table;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::{DEFAULT_L4_WRITE_BUFFER_SIZE, L4BufferSettings, ListenerConfig};
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

/// gridlb's run-time parts, made once and shared by the services.
#[derive(Clone)]
pub struct Parts {
    pub table: Arc<Table>,
    pub pool: Arc<Pool>,
    pub admission: Arc<Admission>,
    pub reloader: Arc<Reloader>,
}

impl Parts {
    /// The parts for `config` (its substation addresses resolved now), reloading from
    /// `config_path` if given. `metrics` decides the registry (the default registry in the
    /// binary, a private one in tests that run several proxies in one process); `rng` makes
    /// selection reproducible in tests.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        metrics: Arc<Metrics>,
        rng: Rng,
    ) -> Result<Parts, ConfigError> {
        let addrs = discovery::resolve_all(&config)?;
        let table = Arc::new(Table::new(config, &addrs, metrics));
        let pool = Arc::new(Pool::new(Arc::clone(&table), rng));
        Ok(Parts {
            admission: Arc::new(Admission::new(Arc::clone(&pool))),
            reloader: Arc::new(Reloader::new(Arc::clone(&pool), config_path)),
            table,
            pool,
        })
    }

    /// The `/status` document.
    pub fn status(&self) -> Status {
        Status::of(&self.pool, self.reloader.status())
    }
}

/// Build the server and its parts.
pub fn build(
    config: Config,
    config_path: Option<PathBuf>,
    options: &Options,
    metrics: Arc<Metrics>,
) -> Result<(Server, Parts), ConfigError> {
    let listen = config.listen.to_string();
    let admin_listen = config.admin.listen.to_string();
    let port = config.listen.port();
    access_log::check(config.access_log.as_ref())?;
    let parts = Parts::new(config, config_path.clone(), metrics, Rng::from_entropy())?;
    let mut conf = ServerConf {
        threads: options.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
        // One runtime per thread, each connection on one of them: no task migrates between
        // threads, which costs more than the balance it buys for requests this short (about
        // 10 % less CPU per request, bench/RESULTS.md). Connections the old process of a
        // graceful upgrade accepted last are kept by `header_guard` (Pingora alone dropped
        // one in a few thousand then, more often on this runtime than on the stealing one).
        work_stealing: false,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let sock = options
        .upgrade_sock
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("gridlb-{port}.sock")));
    conf.upgrade_sock = sock.to_string_lossy().into_owned();
    conf.pid_file = sock.with_extension("pid").to_string_lossy().into_owned();
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let table = Arc::clone(&parts.table);
    let (log, log_writer) = AccessLog::new(Arc::clone(parts.table.metrics()), move || {
        table.config().access_log.clone()
    });
    let proxy = GridProxy::new(Arc::clone(&parts.admission)).with_access_log(log);
    let proxy = client_service("gridlb proxy", proxy, &listen, &parts.table);
    let history = Arc::new(History::default());
    let admin_app = AdminApp::new(Arc::clone(&parts.pool), Arc::clone(&parts.reloader))
        .with_history(Arc::clone(&history));
    let admin = client_service("gridlb admin", admin_app, &admin_listen, &parts.table);
    let probe = background_service(
        "gridlb probe",
        ProbeSchedule {
            pool: Arc::clone(&parts.pool),
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(probe);
    server.add_service(background_service("gridlb access log", log_writer));
    let sampler = Sampler {
        table: Arc::clone(&parts.table),
        history,
    };
    server.add_service(background_service("gridlb history", sampler));
    if let Some(path) = config_path {
        server.add_service(background_service(
            "gridlb reload",
            ReloadService {
                reloader: Arc::clone(&parts.reloader),
                path,
            },
        ));
    }
    Ok((server, parts))
}

/// A service for clients: `app` on `addr`, each connection served by the thread that waits
/// for it (`home`), its memory given back when it ends (`relieve`) and its request headers
/// bounded (`header_guard`).
fn client_service<A>(
    name: &str,
    app: A,
    addr: &str,
    table: &Arc<Table>,
) -> Service<Homed<Relieved<Guarded<A, impl Fn() -> HeaderLimits + Send + Sync + 'static>>>>
where
    A: ServerApp + Send + Sync + 'static,
{
    let app = Homed::new(Relieved::new(Guarded::new(app, header_limits(table))));
    let mut service = Service::new(name.to_string(), app);
    service.add_listener(client_listener(addr));
    service.set_connection_filter(Arc::new(Accepted));
    service
}

/// The header limits of a new connection, from the config in force when it is accepted.
fn header_limits(table: &Arc<Table>) -> impl Fn() -> HeaderLimits + Send + Sync + 'static {
    let table = Arc::clone(table);
    move || {
        let limits = &table.config().limits;
        HeaderLimits {
            timeout: limits.client_header_timeout,
            max_bytes: limits.max_header_bytes,
        }
    }
}

/// A listener whose connections read straight into the HTTP session's own buffer. Pingora's
/// default puts a 64 KiB read buffer under every connection, taken when it is accepted: 2,000
/// idle clients held 190 MiB that way, and a request that fits in one read is copied twice.
/// Writes keep Pingora's small buffer, so an answer's head and body go out in one write.
fn client_listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE))
}
