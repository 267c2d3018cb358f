//! The `leadline` command: serve, migrate, check-config, mailbox authorize, backup,
//! restore.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use leadline::config::{Config, ConfigLayer, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "leadline",
    version,
    about = "Turns phone calls and e-mails into CRM records"
)]
struct Cli {
    /// Optional TOML file; environment variables and flags override it.
    #[arg(long, global = true, env = "LEADLINE_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address.
    #[arg(long, global = true, env = "LEADLINE_HTTP")]
    http: Option<String>,
    /// sqlite://PATH or postgres://… (default: SQLite in the data dir).
    #[arg(long, global = true, env = "LEADLINE_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory for the embedded database and other local data.
    #[arg(long, global = true, env = "LEADLINE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// SIP listen address (UDP and TCP).
    #[arg(long, global = true, env = "LEADLINE_SIP")]
    sip: Option<String>,
    /// SIP over TLS listen address (default: the SIP address's IP, port 5061, when
    /// --tls-cert and --tls-key are set).
    #[arg(long, global = true, env = "LEADLINE_SIP_TLS")]
    sip_tls: Option<String>,
    /// PEM certificate chain of the TLS listeners; replacing the file takes effect within
    /// seconds.
    #[arg(long, global = true, env = "LEADLINE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "LEADLINE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// HTTPS listen address of the API and console (needs --tls-cert and --tls-key);
    /// plain HTTP keeps running on --http.
    #[arg(long, global = true, env = "LEADLINE_HTTPS")]
    https: Option<String>,
    /// PEM bundle of CA certificates trusted for carrier trunks over TLS, besides the
    /// public roots.
    #[arg(long, global = true, env = "LEADLINE_SIP_TLS_CA")]
    sip_tls_ca: Option<PathBuf>,
    /// Directory with extra SIP profiles (TOML).
    #[arg(long, global = true, env = "LEADLINE_SIP_PROFILES")]
    sip_profiles: Option<PathBuf>,
    /// The SIP proxy (IP:PORT) in front of several nodes; every request this node starts
    /// goes through it.
    #[arg(long, global = true, env = "LEADLINE_SIP_PROXY")]
    sip_proxy: Option<String>,
    /// SIP domain (and digest realm) agents register under.
    #[arg(long, global = true, env = "LEADLINE_SIP_DOMAIN")]
    sip_domain: Option<String>,
    /// Digest algorithms offered to phones, preferred first: `sha256,md5` (default) or
    /// `md5,sha256` for phones that only read the first challenge.
    #[arg(long, global = true, env = "LEADLINE_SIP_DIGEST")]
    sip_digest: Option<String>,
    /// Largest SIP message accepted over TCP, in bytes (default 262144).
    #[arg(long, global = true, env = "LEADLINE_SIP_TCP_MAX_MESSAGE")]
    sip_tcp_max_message: Option<usize>,
    /// SIP transactions one source address may have in progress (default 1000).
    #[arg(long, global = true, env = "LEADLINE_SIP_MAX_TRANSACTIONS_PER_SOURCE")]
    sip_max_transactions_per_source: Option<usize>,
    /// Calls in set-up at once, INVITE admitted to the caller's final answer; past it
    /// 503 with Retry-After before any lookup (default 1000).
    #[arg(long, global = true, env = "LEADLINE_MAX_CALLS_IN_SETUP")]
    max_calls_in_setup: Option<usize>,
    /// Milliseconds of runtime lag past which new calls get 503 with Retry-After in the
    /// receive loop, before they are queued; 0 turns it off (default 100).
    #[arg(long, global = true, env = "LEADLINE_SIP_SHED_LAG_MS")]
    sip_shed_lag_ms: Option<u64>,
    /// REGISTERs handled at once; past it 503 with Retry-After (default 128).
    #[arg(long, global = true, env = "LEADLINE_MAX_REGISTERS_IN_PROGRESS")]
    max_registers_in_progress: Option<usize>,
    /// Milliseconds the CRM lookup may delay routing a call (default 200).
    #[arg(long, global = true, env = "LEADLINE_CALL_LOOKUP_BUDGET_MS")]
    call_lookup_budget_ms: Option<u64>,
    /// Public base URL of the API, for links in SIP messages (Call-Info); default the
    /// HTTPS address when HTTPS is on, else the HTTP address.
    #[arg(long, global = true, env = "LEADLINE_PUBLIC_URL")]
    public_url: Option<String>,
    /// SMTP/LMTP listener of the forward/BCC address (default 0.0.0.0:2525).
    #[arg(long, global = true, env = "LEADLINE_SMTP")]
    smtp: Option<String>,
    /// Domain of the forward address crm-<secret>@<domain> (default the SIP domain).
    #[arg(long, global = true, env = "LEADLINE_MAIL_DOMAIN")]
    mail_domain: Option<String>,
    /// Largest e-mail taken in, in bytes (default 26214400).
    #[arg(long, global = true, env = "LEADLINE_MAIL_MAX_MESSAGE")]
    mail_max_message: Option<usize>,
    /// UDP port range for RTP/RTCP pairs, e.g. 20000-30000 (the default).
    #[arg(long, global = true, env = "LEADLINE_RTP_PORTS")]
    rtp_ports: Option<String>,
    /// Address parties send media to, written in SDP (default: the SIP address, or the
    /// address of the interface with the default route).
    #[arg(long, global = true, env = "LEADLINE_MEDIA_ADDRESS")]
    media_address: Option<String>,
    /// Seconds without RTP or RTCP after which a talking call is ended (default 60).
    #[arg(long, global = true, env = "LEADLINE_MEDIA_TIMEOUT_S")]
    media_timeout_s: Option<u64>,
    /// Days recordings and voicemail messages are kept; 0 keeps them (default 90).
    #[arg(long, global = true, env = "LEADLINE_RECORDING_RETENTION_DAYS")]
    recording_retention_days: Option<u32>,
    /// Days audit log entries are kept; 0 keeps them (default 365).
    #[arg(long, global = true, env = "LEADLINE_AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<u32>,
    /// Let webhooks call loopback, private and link-local addresses (default false: an
    /// agent's webhook must not reach the gateway's internal network).
    #[arg(long, global = true, env = "LEADLINE_WEBHOOK_PRIVATE_TARGETS")]
    webhook_private_targets: Option<bool>,
    /// Log lines as `text` or `json`.
    #[arg(long, global = true, env = "LEADLINE_LOG_FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration, print it (without secrets) and exit.
    CheckConfig,
    /// Archive the data dir (an online copy of the SQLite database, recordings, greetings,
    /// music, the call journal) into FILE (tar.gz) while the gateway runs.
    Backup { file: PathBuf },
    /// Unpack a backup into an empty or missing data dir, checking every file's SHA-256.
    Restore { file: PathBuf },
    /// Mailbox tasks that need a person at a terminal.
    Mailbox {
        #[command(subcommand)]
        command: MailboxCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MailboxCommand {
    /// Sign an OAuth2 mailbox in (RFC 8628 device flow): shows a code to enter in a
    /// browser, waits for the sign-in and stores the refresh token. Uses the same database
    /// as `serve`; a running gateway picks the token up within seconds.
    Authorize {
        /// The mailbox id (`GET /api/v1/mailboxes`).
        id: String,
        /// Tests only: milliseconds one second of the device flow's polling lasts
        /// (interval, `slow_down`, expiry), so a test against its own server need not
        /// wait RFC 8628's 5 s between polls. Default: a real second.
        #[arg(long, hide = true, env = "LEADLINE_TEST_DEVICE_POLL_SECOND_MS")]
        poll_second_ms: Option<u64>,
    },
}

impl Cli {
    fn config(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => ConfigLayer::from_file(path)?,
            None => ConfigLayer::default(),
        };
        let overrides = ConfigLayer {
            http: self.http.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            // Secrets come from the environment only, never from a flag (visible in `ps`).
            admin_token: std::env::var("LEADLINE_ADMIN_TOKEN").ok(),
            sip: self.sip.clone(),
            sip_profiles: self.sip_profiles.clone(),
            sip_proxy: self.sip_proxy.clone(),
            sip_tls: self.sip_tls.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            https: self.https.clone(),
            sip_tls_ca: self.sip_tls_ca.clone(),
            sip_domain: self.sip_domain.clone(),
            sip_digest: self.sip_digest.clone(),
            sip_tcp_max_message: self.sip_tcp_max_message,
            call_lookup_budget_ms: self.call_lookup_budget_ms,
            sip_max_transactions_per_source: self.sip_max_transactions_per_source,
            max_calls_in_setup: self.max_calls_in_setup,
            sip_shed_lag_ms: self.sip_shed_lag_ms,
            max_registers_in_progress: self.max_registers_in_progress,
            public_url: self.public_url.clone(),
            smtp: self.smtp.clone(),
            mail_domain: self.mail_domain.clone(),
            mail_max_message: self.mail_max_message,
            rtp_ports: self.rtp_ports.clone(),
            media_address: self.media_address.clone(),
            media_timeout_s: self.media_timeout_s,
            recording_retention_days: self.recording_retention_days,
            log_format: self.log_format.clone(),
            webhook_private_targets: self.webhook_private_targets,
            audit_retention_days: self.audit_retention_days,
        };
        Ok(file.merge(overrides).resolve()?)
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEADLINE_LOG")
        // rsipstack logs every message it sends, in full, at INFO: too much for production.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rsipstack=warn"));
    // Logs go to stderr (stdout is for command output); colour only on a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("leadline: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The chain of causes, one line, without a backtrace: this is for operators.
            eprintln!("leadline: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config()?;
    init_logging(config.log_format);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            let store = leadline::app::open_store(&config)
                .await
                .context("migrating the database")?;
            store.close().await;
            println!("database is up to date");
            Ok(())
        }
        Command::Mailbox {
            command: MailboxCommand::Authorize { id, poll_second_ms },
        } => authorize_mailbox(&config, &id, poll_second_ms).await,
        Command::Backup { file } => {
            let done = leadline::backup::backup(&config, &file, chrono::Utc::now())
                .await
                .with_context(|| format!("backing up into {}", file.display()))?;
            print_backup(&done, &file, "written");
            if let Some(pg_dump) = &done.pg_dump {
                println!(
                    "The database is PostgreSQL: this archive holds the data dir's files only.\n\
                     Dump the database now as well (password from PGPASSWORD or ~/.pgpass):\n  {pg_dump}\n\
                     Restore it with pg_restore --clean --if-exists --dbname=URL FILE.pgdump."
                );
            }
            Ok(())
        }
        Command::Restore { file } => {
            let done = leadline::backup::restore(&config, &file)
                .await
                .with_context(|| format!("restoring {}", file.display()))?;
            print_backup(&done, &file, "restored");
            if done.manifest.database == leadline::backup::DatabaseKind::Postgres {
                println!(
                    "The archive came from a gateway on PostgreSQL: restore the database from \
                     its pg_dump file (pg_restore) before starting the gateway."
                );
            }
            Ok(())
        }
        Command::CheckConfig => {
            println!("configuration is valid");
            println!("  http          {}", config.http);
            println!("  data_dir      {}", config.data_dir.display());
            println!(
                "  database      {}",
                if config.database_url.starts_with("sqlite:") {
                    config.database_url.clone()
                } else {
                    "postgres (URL not shown)".to_owned()
                }
            );
            println!("  sip           {} (udp, tcp)", config.sip);
            println!("  sip_domain    {}", config.sip_domain);
            println!(
                "  sip_tcp_max   {} bytes per message",
                config.sip_tcp_max_message
            );
            println!(
                "  admin_token   {}",
                if config.admin_token.is_some() {
                    "from LEADLINE_ADMIN_TOKEN"
                } else {
                    "generated on first start"
                }
            );
            Ok(())
        }
    }
}

fn print_backup(done: &leadline::backup::Outcome, file: &std::path::Path, what: &str) {
    let bytes: u64 = done.manifest.files.iter().map(|f| f.size).sum();
    println!(
        "{} {what}: {} files, {bytes} bytes, schema version {}",
        file.display(),
        done.manifest.files.len(),
        done.manifest
            .schema_version
            .map_or_else(|| "in the PostgreSQL dump".to_owned(), |v| v.to_string()),
    );
}

async fn authorize_mailbox(
    config: &Config,
    id: &str,
    poll_second_ms: Option<u64>,
) -> anyhow::Result<()> {
    let store = leadline::app::open_store(config)
        .await
        .context("opening the database")?;
    let second = std::time::Duration::from_millis(poll_second_ms.unwrap_or(1000).max(1));
    let outcome = leadline::mail::credentials::authorize(&store, id, second, |mailbox, device| {
        println!(
            "Sign in to let Leadline read {} (mailbox {}):",
            mailbox.address, mailbox.id
        );
        println!("  open:       {}", device.verification_uri);
        println!("  enter code: {}", device.user_code);
        if let Some(complete) = &device.verification_uri_complete {
            println!("  or open:    {complete}");
        }
        println!(
            "The code is valid for {} minutes. Waiting for the sign-in...",
            device.expires_in.as_secs().div_ceil(60)
        );
    })
    .await;
    store.close().await;
    let mailbox = outcome.with_context(|| format!("authorizing mailbox {id}"))?;
    println!(
        "Signed in: the refresh token of {} (mailbox {}) is stored; the gateway logs in with          it at its next attempt.",
        mailbox.address, mailbox.id
    );
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = leadline::App::start(config)
        .await
        .context("starting leadline")?;
    let stop = app.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop.send(true);
    });
    app.wait().await.context("leadline stopped with an error")?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
