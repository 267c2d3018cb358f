//! Throwaway Dovecot 2.3 servers for integration tests and the IMAP bench.
//!
//! [`Dovecot::start`] runs the machine's Dovecot (Debian `dovecot-imapd` +
//! `dovecot-lmtpd`; `scripts/test` installs them) from a self-contained config in a fresh
//! directory under `/tmp`: passwd-file users with plaintext passwords, Maildir++ in the
//! directory, IMAP with STARTTLS and implicit TLS on free loopback ports, LMTP on a free
//! loopback port, `mail_fsync = never`. The certificate is made per server with the
//! `openssl` CLI: a test CA ([`Dovecot::ca_certificate_der`], for the client's extra
//! roots) that signed a leaf for `localhost` and `127.0.0.1`.
//!
//! # OAuth2
//! With [`Options::oauth2`] the server also takes OAuth2 access tokens (SASL XOAUTH2
//! and/or OAUTHBEARER): an `oauth2` passdb asks the test's introspection endpoint
//! (RFC 7662, `POST token=…`) whether a token is active and whose it is. The passwd-file
//! passdb keeps PLAIN and LOGIN, so the users' passwords work as before. The log names the
//! mechanism of each login (`Login: user=<alice>, method=XOAUTH2`).
//!
//! # Folders
//! By default the inbox namespace has `Sent`, `Junk` and `Trash` with RFC 6154
//! special-use attributes. With [`Options::special_use`] off they are `Sent Items`,
//! `Spam` and `Deleted Items` without attributes, for the client's name fallback.
//!
//! # As root (and why `/tmp`)
//! Login processes refuse root (`default_login_user = dovenull`) and mail is not accessed
//! as uid 0, so mail belongs to `nobody:nogroup` and every parent directory must be
//! traversable by `nobody`. Not as root, everything runs as the current user.
//!
//! # Ready, failing and stopping
//! Ready means the IMAP `* OK` greeting and the LMTP `220` arrived (the master binds the
//! ports even while a login process crash-loops); a `Fatal:` in the log fails the start at
//! once with the log. A port lost to another process between `free_port` and Dovecot's bind
//! is retried with new ports.
//!
//! Dropping a [`Dovecot`] closes the pipe of a small watchdog process (in its own
//! process group, so it also runs when the test process is killed), which runs
//! `doveadm -c FILE stop` and removes the directory. Drop does not wait for it: Dovecot's
//! master takes ~2.8 s to exit, which no test needs to pay.
//!
//! # Cost (measured on the shared 2-core VM)
//! Start to ready: 0.13–0.4 s including the certificate. An LMTP delivery takes a few
//! milliseconds. [`Dovecot::seed_maildir`] writes files directly: 0.35–0.6 s for 10,000
//! (seconds when other jobs load the disk); UIDs are assigned when a client first looks,
//! in directory order, not in the order given. IDLE notices new mail after ~0.5 s
//! (Dovecot coalesces inotify events). Stopping takes ~2.8 s, paid by the watchdog.

use super::{free_port, poll_blocking};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// The mail domain of the test users: LMTP recipients are `user@DOMAIN`.
pub const DOMAIN: &str = "leadline.test";

/// How long a started server may take to greet.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Ports tried before giving up, when another process takes a free port first.
const PORT_ATTEMPTS: u32 = 5;
/// Deadline for one LMTP step.
const LMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// What to start. `Options::default()`: users `alice` and `bob`, special-use folders.
#[derive(Clone, Debug)]
pub struct Options {
    /// `(name, password)`; passwords are stored in plain text (`{PLAIN}`).
    pub users: Vec<(String, String)>,
    /// Sent/Junk/Trash with RFC 6154 attributes (true) or only by name (false).
    pub special_use: bool,
    /// Also take OAuth2 access tokens (see the module documentation).
    pub oauth2: Option<OAuth2Passdb>,
    /// Dovecot's `imap_capability`: what the server announces after login instead of
    /// its defaults (e.g. without `CONDSTORE`/`QRESYNC`, to test a client's fallback).
    pub imap_capability: Option<String>,
}

/// How the server checks OAuth2 access tokens.
#[derive(Clone, Debug)]
pub struct OAuth2Passdb {
    /// RFC 7662 introspection, e.g. `http://127.0.0.1:PORT/introspect`: answers
    /// `{"active": true, "username": "alice"}` for a good token.
    pub introspection_url: String,
    /// The SASL mechanisms offered for tokens: `"xoauth2"`, `"oauthbearer"` or both.
    pub mechanisms: Vec<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            users: vec![
                ("alice".to_owned(), "alice-secret".to_owned()),
                ("bob".to_owned(), "bob-secret".to_owned()),
            ],
            special_use: true,
            oauth2: None,
            imap_capability: None,
        }
    }
}

/// A running throwaway Dovecot. See the module documentation.
pub struct Dovecot {
    dir: PathBuf,
    config: PathBuf,
    imap_port: u16,
    imaps_port: u16,
    lmtp_port: u16,
    ca_der: Vec<u8>,
    options: Options,
    /// uid and gid that own the mail (`nobody:nogroup` as root).
    mail_owner: (u32, u32),
    watchdog: Option<Watchdog>,
}

struct Watchdog {
    _child: Child,
    /// The test process's end of the pipe: closing it tells the watchdog to clean up.
    _pipe: ChildStdin,
}

impl Dovecot {
    /// A server with [`Options::default`]; panics with the reason (and the log) when it
    /// cannot start.
    pub fn start() -> Dovecot {
        Dovecot::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Dovecot {
        let begun = Instant::now();
        let dir = make_dir_in(Path::new("/tmp"), "leadline-dovecot-");
        let config = dir.join("dovecot.conf");
        let identity = Identity::current();
        let mut server = Dovecot {
            config,
            imap_port: 0,
            imaps_port: 0,
            lmtp_port: 0,
            ca_der: Vec::new(),
            options,
            mail_owner: identity.mail_owner,
            watchdog: None,
            dir,
        };
        match spawn_watchdog(&server.dir, &server.config) {
            Ok(watchdog) => server.watchdog = Some(watchdog),
            Err(e) => eprintln!("Dovecot: no watchdog ({e}); a killed test leaves its server"),
        }
        server.ca_der = make_certificates(&server.dir);
        server.write_users();
        if let Some(oauth2) = &server.options.oauth2 {
            server.write_oauth2_config(oauth2);
        }
        let home = server.dir.join("home");
        fs::create_dir(&home).expect("create the home directory");
        chown(&home, server.mail_owner);

        for attempt in 1..=PORT_ATTEMPTS {
            server.imap_port = free_port();
            server.imaps_port = distinct_free_port(&[server.imap_port]);
            server.lmtp_port = distinct_free_port(&[server.imap_port, server.imaps_port]);
            server.write_config(&identity);
            match server.launch() {
                Ok(()) => break,
                Err(PortTaken) if attempt < PORT_ATTEMPTS => continue,
                Err(PortTaken) => panic!(
                    "Dovecot found a port taken {PORT_ATTEMPTS} times; log:\n{}",
                    server.log_text()
                ),
            }
        }
        server.wait_ready();
        eprintln!(
            "Dovecot: imap 127.0.0.1:{} imaps :{} lmtp :{} ready in {:?} ({})",
            server.imap_port,
            server.imaps_port,
            server.lmtp_port,
            begun.elapsed(),
            server.dir.display()
        );
        server
    }

    /// Plain IMAP with STARTTLS offered (and plaintext LOGIN allowed).
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// IMAP over implicit TLS.
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }

    pub fn lmtp_port(&self) -> u16 {
        self.lmtp_port
    }

    /// DER of the CA that signed the server's certificate (for `localhost`, `127.0.0.1`).
    pub fn ca_certificate_der(&self) -> Vec<u8> {
        self.ca_der.clone()
    }

    /// The password of `user` (one of [`Options::users`]).
    pub fn password(&self, user: &str) -> &str {
        self.options
            .users
            .iter()
            .find(|(name, _)| name == user)
            .map(|(_, password)| password.as_str())
            .unwrap_or_else(|| panic!("no test user {user:?}"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The server's log so far (empty if unreadable), for failure messages.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Delivers `raw` (an RFC 5322 message; bare LF line ends are fine) to `user`'s
    /// INBOX over LMTP, as a mail server would. Panics when Dovecot does not accept it.
    pub async fn deliver(&self, user: &str, raw: &[u8]) {
        if let Err(e) = tokio::time::timeout(LMTP_TIMEOUT, self.lmtp_deliver(user, raw))
            .await
            .unwrap_or_else(|_| Err(format!("no LMTP answer within {LMTP_TIMEOUT:?}")))
        {
            panic!(
                "LMTP delivery to {user} failed: {e}\nlog:\n{}",
                self.log_text()
            );
        }
    }

    async fn lmtp_deliver(&self, user: &str, raw: &[u8]) -> Result<(), String> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.lmtp_port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (read, mut write) = stream.into_split();
        let mut read = tokio::io::BufReader::new(read);
        expect_reply(&mut read, 220, "greeting").await?;
        // RFC 2033: LHLO, then one reply per recipient after the data.
        for (command, code) in [
            (format!("LHLO {DOMAIN}\r\n"), 250),
            (format!("MAIL FROM:<sender@{DOMAIN}>\r\n"), 250),
            (format!("RCPT TO:<{user}@{DOMAIN}>\r\n"), 250),
            ("DATA\r\n".to_owned(), 354),
        ] {
            write
                .write_all(command.as_bytes())
                .await
                .map_err(|e| format!("send {command:?}: {e}"))?;
            expect_reply(&mut read, code, command.trim_end()).await?;
        }
        write
            .write_all(&dot_stuffed(raw))
            .await
            .map_err(|e| format!("send the message: {e}"))?;
        expect_reply(&mut read, 250, "end of data").await?;
        write.write_all(b"QUIT\r\n").await.ok();
        Ok(())
    }

    /// Writes `messages` straight into `user`'s Maildir `folder` (`"INBOX"` or a
    /// top-level folder such as `"Sent"`), unseen, received now. Fast: for bulk (10,000
    /// messages in about a second). UIDs are assigned when a client first looks.
    pub fn seed_maildir<M: AsRef<[u8]>>(&self, user: &str, folder: &str, messages: &[M]) {
        self.seed_maildir_at(user, folder, messages, SystemTime::now());
    }

    /// [`Dovecot::seed_maildir`] with the INTERNALDATE `received` (the file's mtime).
    pub fn seed_maildir_at<M: AsRef<[u8]>>(
        &self,
        user: &str,
        folder: &str,
        messages: &[M],
        received: SystemTime,
    ) {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let home = self.dir.join("home").join(user);
        let maildir = home.join("Maildir");
        let folder_dir = if folder.eq_ignore_ascii_case("INBOX") {
            maildir.clone()
        } else {
            assert!(
                !folder.contains(['.', '/']),
                "seed_maildir writes top-level folders only, not {folder:?}"
            );
            // Maildir++: a folder is a dot-directory inside the Maildir.
            maildir.join(format!(".{folder}"))
        };
        for dir in [&home, &maildir, &folder_dir] {
            if !dir.exists() {
                fs::create_dir(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
                chown(dir, self.mail_owner);
            }
        }
        for sub in ["cur", "new", "tmp"] {
            let dir = folder_dir.join(sub);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
                chown(&dir, self.mail_owner);
            }
        }
        let secs = received
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("a time after 1970")
            .as_secs();
        let cur = folder_dir.join("cur");
        for message in messages {
            let raw = crlf(message.as_ref());
            let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
            // Maildir file name: unique part, size (S=) for Dovecot, ":2," = no flags.
            let name = format!(
                "{secs}.P{}Q{n}.leadline,S={}:2,",
                std::process::id(),
                raw.len()
            );
            let path = cur.join(name);
            let mut file = fs::File::create(&path)
                .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            file.write_all(&raw)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            file.set_modified(received)
                .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", path.display()));
            drop(file);
            chown(&path, self.mail_owner);
        }
    }

    /// Runs `doveadm -c CONFIG ARGS…` and returns its standard output; panics on failure.
    pub fn doveadm(&self, args: &[&str]) -> String {
        let out = run(Command::new(doveadm_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `doveconf -c CONFIG -n`: the settings in effect; panics when Dovecot rejects them.
    pub fn doveconf(&self) -> String {
        let out = run(Command::new(sbin_or_path("doveconf"))
            .arg("-c")
            .arg(&self.config)
            .arg("-n"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds `flag` (`\Seen`, `\Deleted` …) to message `uid` of `folder`, as another client.
    pub fn add_flag(&self, user: &str, folder: &str, uid: u32, flag: &str) {
        let uid = uid.to_string();
        self.doveadm(&[
            "flags", "add", "-u", user, flag, "mailbox", folder, "uid", &uid,
        ]);
    }

    pub fn remove_flag(&self, user: &str, folder: &str, uid: u32, flag: &str) {
        let uid = uid.to_string();
        self.doveadm(&[
            "flags", "remove", "-u", user, flag, "mailbox", folder, "uid", &uid,
        ]);
    }

    /// Removes message `uid` of `folder` for good (flag `\Deleted` and expunge).
    pub fn expunge(&self, user: &str, folder: &str, uid: u32) {
        let uid = uid.to_string();
        self.doveadm(&["expunge", "-u", user, "mailbox", folder, "uid", &uid]);
    }

    /// Flags of `folder`'s messages as `doveadm` sees them: `(uid, "\Seen \Deleted")`.
    pub fn flags(&self, user: &str, folder: &str) -> Vec<(u32, String)> {
        let out = self.doveadm(&[
            "-f",
            "tab",
            "fetch",
            "-u",
            user,
            "uid flags",
            "mailbox",
            folder,
            "all",
        ]);
        out.lines()
            .skip(1) // the header line
            .filter_map(|line| {
                let (uid, flags) = line.split_once('\t')?;
                Some((uid.trim().parse().ok()?, flags.trim().to_owned()))
            })
            .collect()
    }

    /// Creates `folder` (top level).
    pub fn create_folder(&self, user: &str, folder: &str) {
        self.doveadm(&["mailbox", "create", "-u", user, folder]);
    }

    /// Deletes `folder` with its mail and creates it again: it gets a new UIDVALIDITY.
    pub fn recreate_folder(&self, user: &str, folder: &str) {
        self.doveadm(&["mailbox", "delete", "-u", user, "-r", folder]);
        self.create_folder(user, folder);
    }

    /// Stores `raw` in `folder` directly (`doveadm save`), e.g. for folders LMTP does not
    /// deliver to.
    pub fn save(&self, user: &str, folder: &str, raw: &[u8]) {
        let mut child = Command::new(doveadm_bin())
            .arg("-c")
            .arg(&self.config)
            .args(["save", "-u", user, "-m", folder])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run doveadm save: {e}"));
        child
            .stdin
            .take()
            .expect("stdin was piped")
            .write_all(&crlf(raw))
            .expect("write the message to doveadm save");
        let out = child.wait_with_output().expect("wait for doveadm save");
        assert!(
            out.status.success(),
            "doveadm save failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `oauth2` passdb's settings file (Dovecot 2.3's `dovecot-oauth2.conf.ext`).
    fn write_oauth2_config(&self, oauth2: &OAuth2Passdb) {
        write_file(
            &self.dir.join("dovecot-oauth2.conf.ext"),
            &format!(
                "introspection_mode = post\n\
                 introspection_url = {}\n\
                 force_introspection = yes\n\
                 username_attribute = username\n\
                 active_attribute = active\n\
                 active_value = true\n\
                 timeout_msecs = 10000\n",
                oauth2.introspection_url
            ),
        );
    }

    fn write_users(&self) {
        let mut users = String::new();
        for (name, password) in &self.options.users {
            assert!(
                !name.contains([':', '\n']) && !password.contains([':', '\n']),
                "test user names and passwords cannot contain ':' or line breaks"
            );
            users.push_str(&format!("{name}:{{PLAIN}}{password}::::::\n"));
        }
        write_file(&self.dir.join("users"), &users);
    }

    fn write_config(&self, identity: &Identity) {
        let dir = self.dir.display();
        let (uid, gid) = self.mail_owner;
        let folders = if self.options.special_use {
            [("Sent", "\\Sent"), ("Junk", "\\Junk"), ("Trash", "\\Trash")]
                .iter()
                .map(|(name, usage)| {
                    format!(
                        "  mailbox {name} {{\n    special_use = {usage}\n    auto = subscribe\n  }}\n"
                    )
                })
                .collect::<String>()
        } else {
            ["Sent Items", "Spam", "Deleted Items"]
                .iter()
                .map(|name| format!("  mailbox \"{name}\" {{\n    auto = subscribe\n  }}\n"))
                .collect::<String>()
        };
        // With OAuth2, the token passdb comes first and takes only the token mechanisms;
        // the passwords keep PLAIN and LOGIN.
        let (mechanisms, oauth2_passdb, password_mechanisms) = match &self.options.oauth2 {
            Some(oauth2) => (
                format!("plain login {}", oauth2.mechanisms.join(" ")),
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = {}\n  args = {dir}/dovecot-oauth2.conf.ext\n}}\n",
                    oauth2.mechanisms.join(" ")
                ),
                "  mechanisms = plain login\n",
            ),
            None => ("plain login".to_owned(), String::new(), ""),
        };
        let config = format!(
            r#"# Written by tests/common/dovecot.rs: a throwaway test server.
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = leadline-test-{imap}
log_path = {dir}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <{dir}/server.pem
ssl_key = <{dir}/server.key
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
default_login_user = {login_user}
default_internal_user = {internal_user}
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 200
first_valid_uid = {uid}
first_valid_gid = {gid}
{oauth2_passdb}passdb {{
  driver = passwd-file
{password_mechanisms}  args = scheme=PLAIN username_format=%n {dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {dir}/users
  default_fields = uid={uid} gid={gid} home={dir}/home/%n
}}
namespace inbox {{
  inbox = yes
{folders}}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {lmtp}
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@{DOMAIN}
}}
{capability}"#,
            imap = self.imap_port,
            imaps = self.imaps_port,
            lmtp = self.lmtp_port,
            login_user = identity.login_user,
            internal_user = identity.internal_user,
            capability = match &self.options.imap_capability {
                Some(list) => format!("protocol imap {{\n  imap_capability = {list}\n}}\n"),
                None => String::new(),
            },
        );
        write_file(&self.config, &config);
    }

    /// Starts the master (it daemonises once its listeners are bound).
    fn launch(&self) -> Result<(), PortTaken> {
        fs::remove_file(self.dir.join("dovecot.log")).ok();
        // To a file, not a pipe: the daemonised master keeps its stdout and stderr open,
        // so reading a pipe to its end would wait for the server to stop.
        let start_log = self.dir.join("dovecot-start.log");
        let output = fs::File::create(&start_log)
            .unwrap_or_else(|e| panic!("create {}: {e}", start_log.display()));
        let status = Command::new(dovecot_bin())
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("duplicate a file handle"))
            .stderr(output)
            .status()
            .unwrap_or_else(|e| panic!("run dovecot (is dovecot-imapd installed?): {e}"));
        if status.success() {
            return Ok(());
        }
        let said = format!(
            "{}{}",
            fs::read_to_string(&start_log).unwrap_or_default(),
            self.log_text()
        );
        if said.contains("Address already in use") {
            return Err(PortTaken);
        }
        let checked = Command::new("doveconf")
            .arg("-c")
            .arg(&self.config)
            .arg("-n")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        panic!(
            "dovecot -c {} failed ({status}): {said}\ndoveconf: {checked}",
            self.config.display(),
        );
    }

    fn wait_ready(&self) {
        let (imap, lmtp) = (self.imap_port, self.lmtp_port);
        let ready = poll_blocking(READY_DEADLINE, || {
            let log = self.log_text();
            if let Some(fatal) = log.lines().find(|l| l.contains("Fatal:")) {
                return Err(format!("FATAL {fatal}"));
            }
            greets(imap, "* OK")?;
            greets(lmtp, "220 ")
        });
        match ready {
            Ok(()) => {}
            Err(last) => panic!(
                "Dovecot did not become ready within {READY_DEADLINE:?}: {last}\nlog {}:\n{}",
                self.dir.join("dovecot.log").display(),
                self.log_text()
            ),
        }
        if let Some(fatal) = self.log_text().lines().find(|l| l.contains("Fatal:")) {
            panic!("Dovecot logged a fatal error: {fatal}\n{}", self.log_text());
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if self.watchdog.take().is_some() {
            // Closing the pipe starts the watchdog's `doveadm stop` + `rm -rf`.
            return;
        }
        let _ = Command::new(doveadm_bin())
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .output();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("Dovecot: removing {}: {e}", self.dir.display());
        }
    }
}

struct PortTaken;

/// Who runs what, which depends on whether we are root.
struct Identity {
    login_user: String,
    internal_user: String,
    mail_owner: (u32, u32),
}

impl Identity {
    fn current() -> Identity {
        let uid = fs::metadata("/proc/self").expect("stat /proc/self").uid();
        if uid == 0 {
            let (nobody, _) = passwd_ids("nobody");
            let nogroup = group_id("nogroup").unwrap_or(nobody);
            passwd_ids("dovenull"); // panics with the reason when missing
            Identity {
                login_user: "dovenull".to_owned(),
                internal_user: "dovecot".to_owned(),
                mail_owner: (nobody, nogroup),
            }
        } else {
            let gid = fs::metadata("/proc/self").expect("stat /proc/self").gid();
            let name = passwd_name(uid);
            Identity {
                login_user: name.clone(),
                internal_user: name,
                mail_owner: (uid, gid),
            }
        }
    }
}

/// Reads one SMTP/LMTP reply (maybe multi-line) and checks its code.
async fn expect_reply<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    code: u16,
    after: &str,
) -> Result<(), String> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        let n = read
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read the reply to {after}: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed; reply to {after} so far: {text}"
            ));
        }
        text.push_str(&line);
        // "250-..." continues, "250 ..." ends (RFC 5321 4.2.1).
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    if text.starts_with(&code.to_string()) {
        Ok(())
    } else {
        Err(format!(
            "expected {code} after {after}, got: {}",
            text.trim_end()
        ))
    }
}

/// CRLF line ends, dot-stuffing (RFC 5321 4.5.2) and the final `.` line.
fn dot_stuffed(raw: &[u8]) -> Vec<u8> {
    let raw = crlf(raw);
    let mut out = Vec::with_capacity(raw.len() + 16);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Bare LF → CRLF (what a mail server stores and IMAP serves).
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut previous = 0u8;
    for &b in raw {
        if b == b'\n' && previous != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        previous = b;
    }
    out
}

/// Does `port` answer with a line starting with `prefix`? Blocking, bounded.
fn greets(port: u16, prefix: &str) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect to {port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("no greeting on {port}: {e}"))?;
    if line.starts_with(prefix) {
        Ok(())
    } else {
        Err(format!("port {port} greeted with {line:?}"))
    }
}

fn distinct_free_port(taken: &[u16]) -> u16 {
    loop {
        let port = free_port();
        if !taken.contains(&port) {
            return port;
        }
    }
}

/// The watchdog: waits for EOF on its stdin, then stops Dovecot and removes `dir`.
fn spawn_watchdog(dir: &Path, config: &Path) -> std::io::Result<Watchdog> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"cat >/dev/null; "$3" -c "$2" stop >/dev/null 2>&1; rm -rf -- "$1""#)
        .arg("leadline-dovecot-watchdog")
        .arg(dir)
        .arg(config)
        .arg(doveadm_bin())
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let pipe = child.stdin.take().expect("stdin was piped");
    Ok(Watchdog {
        _child: child,
        _pipe: pipe,
    })
}

/// A CA and a leaf for `localhost`/`127.0.0.1` signed by it, made with the `openssl`
/// CLI; returns the CA's DER. (A self-signed leaf used as its own root is refused by
/// webpki as a CA used as an end entity.)
fn make_certificates(dir: &Path) -> Vec<u8> {
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=Leadline test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    let mut csr = vec!["req", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&csr);
    write_file(
        &dir.join("server.ext"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\n",
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    openssl(&["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"]);
    fs::read(dir.join("ca.der")).expect("read ca.der")
}

/// A new directory `PREFIX<random>` in `parent`, traversable by `nobody` (mode 0755).
fn make_dir_in(parent: &Path, prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .unwrap_or_else(|e| panic!("create a temp dir in {}: {e}", parent.display()))
        .keep();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
    dir
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// uid and gid of `user` from /etc/passwd.
fn passwd_ids(user: &str) -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != user {
                return None;
            }
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .unwrap_or_else(|| {
            panic!(
                "Dovecot as root needs the user {user:?} (the Debian dovecot-core package \
                 creates dovenull; nobody is standard)"
            )
        })
}

fn passwd_name(uid: u32) -> String {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
        })
        .unwrap_or_else(|| panic!("uid {uid} has no name in /etc/passwd"))
}

fn group_id(group: &str) -> Option<u32> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != group {
            return None;
        }
        fields.nth(1)?.parse().ok()
    })
}

/// `/usr/sbin/dovecot`, which a non-root PATH often lacks.
fn dovecot_bin() -> PathBuf {
    sbin_or_path("dovecot")
}

fn doveadm_bin() -> PathBuf {
    sbin_or_path("doveadm")
}

fn sbin_or_path(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
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
