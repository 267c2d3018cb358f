//! Throwaway PostgreSQL servers for integration tests.
//!
//! [`PgServer::start`] runs a real PostgreSQL from the machine's server binaries (Debian:
//! `/usr/lib/postgresql/<version>/bin`, highest version wins; `scripts/test` installs the
//! `postgresql` package when they are missing) in a fresh directory under `/tmp`:
//! superuser [`USER`] with trust authentication, listening on 127.0.0.1 and a free port
//! (a new port is tried when the bind loses a race), socket in the same directory,
//! durability off (`fsync`, `synchronous_commit`, `full_page_writes`) and
//! `max_connections = 200` so two app processes with their pools fit. Give each test its
//! own database with [`PgServer::create_database`].
//!
//! # As root
//! `initdb`, `pg_ctl` and `postgres` refuse to run as root, so when the tests run as root
//! they run as the `postgres` user (`runuser -u postgres --`) and the directory is chowned
//! to it. That is why it lives in `/tmp`: every parent must be traversable by `postgres`.
//!
//! # Clean-up, even when the test dies
//! Dropping a [`PgServer`] (also while a failed test unwinds) stops it with
//! `pg_ctl -m immediate stop` and removes its directory. A small watchdog process
//! (`sh`, in its own process group so a Ctrl-C or nextest's timeout kill of the test's
//! group does not reach it) holds the read end of a pipe whose write end only the test
//! process has: when the test process ends for any reason, even `SIGKILL` or `abort`, the
//! pipe closes and the watchdog stops the server and removes the directory. `Drop` uses
//! the same path (close the pipe, wait for the watchdog), so every test exercises it.
//!
//! # Per test or shared
//! - [`PgServer::start`]: one server per call, owned by the test, gone when dropped.
//! - [`PgServer::shared`]: one server per test process, started on first use, never
//!   dropped; the watchdog stops it after the process exits.
//!
//! `scripts/test` runs the suite with cargo-nextest, which runs every test in its own
//! process: there `shared()` costs exactly what `start()` costs, once per test. Under
//! `cargo test` the tests of one binary share a process, so `shared()` pays once per test
//! binary. Either way tests stay independent by using their own database, so prefer
//! `shared()` + `create_database(test name)` unless a test stops or breaks the server.
//!
//! # Cost (measured on the shared 2-core Debian 12 VM, PostgreSQL 15, ext4 `/tmp`)
//! `initdb` takes 0.75–1.5 s. So the first server on a machine runs `initdb` once into a
//! template (`/tmp/leadline-pg-template-<version>-f<format>-u<uid>`, 39 MB, kept for later
//! runs; moved into place with one rename, so concurrent first tests are safe) and every
//! server copies it with `cp -a` instead: 0.1–0.9 s, dominated by creating its ~970 files,
//! and the spread is the machine's load. `pg_ctl start -w` plus our first handshake take
//! ~0.13 s; stop and removal ~0.1 s. A test with its own server pays 0.3–1.1 s, the very
//! first on a fresh machine ~2.5 s (`initdb` plus the copy). The line
//! `PgServer: … ready in …` on stderr shows the figures of each start.

use super::{free_port, poll_blocking};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The superuser `initdb` creates. It connects without a password (trust).
pub const USER: &str = "leadline";

/// How long a started server may take to accept its first connection.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Ports tried before giving up, when another process takes the free port first.
const PORT_ATTEMPTS: u32 = 5;
/// Part of the template's name: bump it when the `initdb` arguments change.
const TEMPLATE_FORMAT: u32 = 1;
/// Server settings for a throwaway cluster (`postgres -c`).
const SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
];

/// A running throwaway PostgreSQL server. See the module documentation.
pub struct PgServer {
    install: &'static Install,
    dir: PathBuf,
    port: u16,
    log: PathBuf,
    watchdog: Option<Watchdog>,
}

struct Watchdog {
    child: Child,
    /// The test process's end of the pipe: closing it tells the watchdog to clean up.
    pipe: ChildStdin,
}

impl PgServer {
    /// Starts a new server; panics with the reason (and the server's log) when it cannot.
    pub fn start() -> PgServer {
        let install = Install::get();
        let begun = Instant::now();
        let dir = install.make_dir_in(Path::new("/tmp"), "leadline-pg-");
        // From here on `Drop` cleans up, also when start-up panics.
        let mut server = PgServer {
            install,
            log: dir.join("postgres.log"),
            port: 0,
            watchdog: None,
            dir,
        };
        match install.spawn_watchdog(&server.dir) {
            Ok(watchdog) => server.watchdog = Some(watchdog),
            // Still usable: `Drop` cleans up unless the process dies.
            Err(e) => eprintln!("PgServer: no watchdog ({e}); a killed test leaves its server"),
        }

        let how = install.init_data_dir(&server.dir, &server.data_dir());
        let initialised = begun.elapsed();

        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port();
            server.log = server.dir.join(format!("postgres-{}.log", server.port));
            match install.pg_ctl_start(&server) {
                Ok(()) => break,
                Err(PortTaken) if attempt < PORT_ATTEMPTS => continue,
                Err(PortTaken) => panic!(
                    "PostgreSQL found its port taken {PORT_ATTEMPTS} times; last log:\n{}",
                    server.log_text()
                ),
            }
        }
        let port = server.port;
        if let Err(last) = poll_blocking(READY_DEADLINE, || accepts_connection(port)) {
            panic!(
                "PostgreSQL on 127.0.0.1:{port} did not accept a connection within \
                 {READY_DEADLINE:?}: {last}\nserver log {}:\n{}",
                server.log.display(),
                server.log_text()
            );
        }
        eprintln!(
            "PgServer: {} ready in {:?} (data dir by {how} in {initialised:?})",
            server.url(),
            begun.elapsed()
        );
        server
    }

    /// The server of this test process, started on first use and stopped after the
    /// process exits. Under nextest that is one server per test; see the module docs.
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(PgServer::start)
    }

    /// URL of the `postgres` database, for administration and quick checks.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// URL of database `name` on this server (see [`PgServer::create_database`]).
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database and returns its URL. `name` must be a plain lower-case
    /// identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes), e.g. the test's name.
    pub async fn create_database(&self, name: &str) -> String {
        assert!(
            is_plain_identifier(name),
            "database name {name:?} is not a plain lower-case identifier"
        );
        let mut conn = PgConnection::connect(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()));
        // The name was checked above, so it cannot inject SQL.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        conn.close().await.ok();
        self.database_url(name)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own directory: data dir, socket, logs. Gone after the server is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log so far (empty if unreadable), for failure messages.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server as an operator would (`pg_ctl stop -m fast`: clients are
    /// disconnected); [`PgServer::restart`] starts it again on the same port and data.
    pub fn stop_fast(&self) {
        run(self
            .install
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "stop"]));
    }

    /// Starts a server [`PgServer::stop_fast`] stopped, on its port and data dir.
    pub fn restart(&self) {
        if self.install.pg_ctl_start(self).is_err() {
            panic!("port {} was taken while PostgreSQL was stopped", self.port);
        }
        let port = self.port;
        if let Err(last) = poll_blocking(READY_DEADLINE, || accepts_connection(port)) {
            panic!("PostgreSQL restarted on {port} accepts no connection: {last}");
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(Watchdog { mut child, pipe }) = self.watchdog.take() {
            drop(pipe);
            if let Err(e) = child.wait() {
                eprintln!("PgServer: waiting for the watchdog: {e}");
            }
        }
        if self.dir.exists() {
            // No watchdog, or it failed: clean up from here.
            let stop = self.install.pg_ctl_stop_command(&self.data_dir()).output();
            if let Err(e) = stop {
                eprintln!("PgServer: pg_ctl stop: {e}");
            }
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("PgServer: removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// `[a-z_][a-z0-9_]*`, at most 63 bytes: a name PostgreSQL takes as is, without quoting.
pub fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `pg_ctl start` failed because another process bound the port first.
struct PortTaken;

/// The PostgreSQL server binaries and who runs them.
struct Install {
    bin: PathBuf,
    /// `15.18`: names the template, so an upgrade does not reuse an old one.
    version: String,
    /// uid and gid of `postgres` when we are root (the server refuses root).
    run_as: Option<(u32, u32)>,
}

impl Install {
    fn get() -> &'static Install {
        static INSTALL: OnceLock<Install> = OnceLock::new();
        INSTALL.get_or_init(|| {
            let bin = find_bin_dir().unwrap_or_else(|| {
                panic!(
                    "PostgreSQL server binaries (initdb, pg_ctl) not found in \
                     /usr/lib/postgresql/*/bin or on PATH; scripts/test installs the \
                     Debian package `postgresql`"
                )
            });
            let out = run(Command::new(bin.join("postgres")).arg("--version"));
            // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
            let version = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(2)
                .unwrap_or("unknown")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                .collect();
            let root = fs::metadata("/proc/self").map(|m| m.uid() == 0);
            let run_as = root.unwrap_or(false).then(postgres_ids);
            Install {
                bin,
                version,
                run_as,
            }
        })
    }

    /// A command running a server binary, as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(_) => {
                let mut cmd = Command::new(runuser());
                cmd.args(["-u", "postgres", "--"]).arg(exe);
                cmd
            }
            None => Command::new(exe),
        };
        // `postgres` may not be allowed into the test's working directory.
        cmd.current_dir("/").stdin(Stdio::null());
        cmd
    }

    fn pg_ctl_stop_command(&self, data: &Path) -> Command {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"]);
        cmd
    }

    /// A fresh directory `parent/prefixXXXXXX` owned by whoever runs the server.
    fn make_dir_in(&self, parent: &Path, prefix: &str) -> PathBuf {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(parent)
            .unwrap_or_else(|e| panic!("create a directory in {}: {e}", parent.display()))
            .keep();
        self.hand_over(&dir);
        dir
    }

    fn hand_over(&self, path: &Path) {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
        }
    }

    /// Fills `data` with a fresh cluster, from the template when there is one (creating
    /// it first when there is not). Returns how, for the start-up line.
    fn init_data_dir(&self, dir: &Path, data: &Path) -> &'static str {
        let owner = self.run_as.map_or_else(current_uid, |(uid, _)| uid);
        let template = PathBuf::from(format!(
            "/tmp/leadline-pg-template-{}-f{TEMPLATE_FORMAT}-u{owner}",
            self.version
        ));
        let usable = |t: &Path| {
            t.join("data/PG_VERSION").exists() && fs::metadata(t).is_ok_and(|m| m.uid() == owner)
        };
        let mut how = "template copy";
        if !usable(&template) {
            // Build it inside our own directory (the watchdog removes a half-built one),
            // then move it into place in one rename.
            let scratch = dir.join("template");
            fs::create_dir(&scratch)
                .unwrap_or_else(|e| panic!("create {}: {e}", scratch.display()));
            self.hand_over(&scratch);
            self.initdb(&scratch.join("data"));
            how = "initdb (template created)";
            if fs::rename(&scratch, &template).is_err() {
                if usable(&template) {
                    // Another test process made it first: use theirs.
                    fs::remove_dir_all(&scratch).ok();
                } else {
                    rename_or_panic(&scratch.join("data"), data);
                    fs::remove_dir_all(&scratch).ok();
                    return "initdb (no template)";
                }
            }
        }
        let copy = Command::new("cp")
            .arg("-a")
            .arg(template.join("data"))
            .arg(data)
            .stdin(Stdio::null())
            .output();
        match copy {
            Ok(out) if out.status.success() => how,
            copy => {
                eprintln!(
                    "PgServer: copying template {} failed ({copy:?}); running initdb",
                    template.display()
                );
                fs::remove_dir_all(data).ok();
                self.initdb(data);
                "initdb"
            }
        }
    }

    fn initdb(&self, data: &Path) {
        run(self.command("initdb").arg("-D").arg(data).args([
            "-U",
            USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]));
    }

    fn pg_ctl_start(&self, server: &PgServer) -> Result<(), PortTaken> {
        let mut options = format!("-p {} -k {}", server.port, server.dir.display());
        for setting in SETTINGS {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let out = self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(server.data_dir())
            .arg("-l")
            .arg(&server.log)
            .arg("-o")
            .arg(&options)
            .output()
            .unwrap_or_else(|e| panic!("run pg_ctl: {e}"));
        if out.status.success() {
            return Ok(());
        }
        let log = server.log_text();
        if log.contains("Address already in use") {
            return Err(PortTaken);
        }
        panic!(
            "pg_ctl start failed ({}): {}{}\nserver log {}:\n{log}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log.display()
        );
    }

    /// Starts the process that stops the server and removes `dir` once the test process's
    /// end of its stdin pipe closes (see the module docs).
    fn spawn_watchdog(&self, dir: &Path) -> std::io::Result<Watchdog> {
        let stop = self.pg_ctl_stop_command(&dir.join("data"));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"dir=$1; shift; cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf -- "$dir""#)
            .arg("leadline-pg-watchdog")
            .arg(dir)
            .arg(stop.get_program())
            .args(stop.get_args())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child.stdin.take().expect("stdin was piped");
        Ok(Watchdog { child, pipe })
    }
}

/// Does PostgreSQL on `port` complete a start-up handshake as [`USER`] (protocol 3.0,
/// trust authentication) up to `ReadyForQuery`? Plain std, so it works before any runtime.
fn accepts_connection(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    let timeout = Some(Duration::from_secs(2));
    stream
        .set_read_timeout(timeout)
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(timeout)
        .map_err(|e| e.to_string())?;

    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for field in ["user", USER, "database", "postgres", ""] {
        body.extend_from_slice(field.as_bytes());
        body.push(0);
    }
    let len = u32::try_from(body.len() + 4).expect("a short start-up message");
    let mut startup = len.to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    stream.write_all(&startup).map_err(|e| e.to_string())?;

    loop {
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).map_err(|e| e.to_string())?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=1 << 20).contains(&len) {
            return Err(format!("bad message length {len}"));
        }
        let mut payload = vec![0u8; len - 4];
        stream.read_exact(&mut payload).map_err(|e| e.to_string())?;
        match head[0] {
            b'Z' => {
                stream.write_all(&[b'X', 0, 0, 0, 4]).ok(); // Terminate
                return Ok(());
            }
            b'E' => return Err(format!("server says: {}", error_message(&payload))),
            b'R' if payload.get(..4) != Some(&[0, 0, 0, 0]) => {
                return Err("server asks for a password instead of trusting".to_owned());
            }
            _ => {} // AuthenticationOk, ParameterStatus, BackendKeyData
        }
    }
}

/// The `M` (message) field of an ErrorResponse body.
fn error_message(payload: &[u8]) -> String {
    payload
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(b"M"))
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| "(error without a message)".to_owned())
}

/// `/usr/lib/postgresql/<highest version>/bin`, else the directory of `initdb` on PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let has_server = |bin: &Path| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file();
    let versioned = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            // "15", or "9.6" in old installations.
            let version = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin);
    versioned
        .or_else(|| std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_server(dir)))
}

/// uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_ids() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != "postgres" {
                return None;
            }
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .expect(
            "running as root needs the `postgres` user (the Debian `postgresql` package \
             creates it): initdb and postgres refuse to run as root",
        )
}

fn current_uid() -> u32 {
    fs::metadata("/proc/self").expect("stat /proc/self").uid()
}

fn runuser() -> &'static str {
    if Path::new("/usr/sbin/runuser").exists() {
        "/usr/sbin/runuser"
    } else {
        "runuser"
    }
}

fn rename_or_panic(from: &Path, to: &Path) {
    fs::rename(from, to)
        .unwrap_or_else(|e| panic!("move {} to {}: {e}", from.display(), to.display()));
}

/// Runs `cmd` to completion; panics with its output when it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
