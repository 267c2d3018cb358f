//! `leadline backup` and `leadline restore`: one `tar.gz` archive of everything a
//! gateway keeps, taken while it runs, and put back into an empty data dir.
//!
//! The archive holds `database/leadline.db` (SQLite only: an online-consistent copy made
//! with `VACUUM INTO`, never the live file and its WAL), `data/…` (every other file of the
//! data dir: recordings, voicemail, greetings, music on hold, the call journal) and, last,
//! `manifest.json` (versions, creation time, and each file's size and SHA-256, checked on
//! restore). The database is copied before the files are walked: a recording the copy
//! names was finished before the copy, so it is in the archive too.
//!
//! Left out: the live SQLite file and its `-wal`/`-shm`/`-journal` companions (the copy
//! stands for them), and the call journal's checkpoint `journal/calls.offset`. The journal
//! exists only with PostgreSQL, whose dump is taken separately and maybe earlier or later
//! than the archive; without the checkpoint a restored node replays every journaled
//! record, which is safe because applying a record twice changes nothing, whereas a
//! checkpoint newer than the dump would skip records the dump does not hold.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::Connection as _;

use crate::config::Config;

/// The archive's table of contents, written as its last entry.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// Where the SQLite copy sits in the archive.
pub const DATABASE_ENTRY: &str = "database/leadline.db";
/// Prefix of the data dir's files in the archive.
const DATA_PREFIX: &str = "data/";
/// Layout of the archive; a restore refuses layouts it does not know.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the data dir {0} does not exist")]
    NoDataDir(PathBuf),
    #[error("copying the SQLite database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0} changed size while it was archived; run the backup again")]
    FileChanged(String),
    #[error(
        "the data dir {dir} is not empty ({example} and maybe more): restore only into an empty or missing directory"
    )]
    NotEmpty { dir: PathBuf, example: String },
    #[error("the database file {0} already exists: move it away before restoring")]
    DatabaseExists(PathBuf),
    #[error("the archive holds a SQLite database but the configured database is PostgreSQL")]
    SqliteIntoPostgres,
    #[error("the archive is not a Leadline backup: {0}")]
    NotABackup(String),
    #[error("the archive does not match its manifest:\n{}", .0.join("\n"))]
    Mismatch(Vec<String>),
}

type Result<T> = std::result::Result<T, BackupError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The Leadline version that wrote the archive.
    pub leadline_version: String,
    /// The newest migration applied to the copied database (SQLite), `None` with
    /// PostgreSQL, whose schema travels in its dump.
    pub schema_version: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub database: DatabaseKind,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The entry's name in the archive (`database/leadline.db`, `data/recordings/…`).
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// What a backup or restore did, for the command's output.
#[derive(Debug)]
pub struct Outcome {
    pub manifest: Manifest,
    /// With PostgreSQL: the `pg_dump` command the operator must run as well.
    pub pg_dump: Option<String>,
}

/// Whether a data dir file (path relative to the data dir) goes into the archive.
/// `database` is the live SQLite file's path relative to the data dir, when it lies in it.
pub fn belongs_in_backup(relative: &Path, database: Option<&Path>) -> bool {
    if relative == Path::new("journal/calls.offset") {
        return false;
    }
    let Some(database) = database else {
        return true;
    };
    let (Some(name), Some(db_name)) = (relative.to_str(), database.to_str()) else {
        return true;
    };
    !["", "-wal", "-shm", "-journal"]
        .iter()
        .any(|suffix| name == format!("{db_name}{suffix}"))
}

/// Where an archive entry goes, relative to the data dir; `None` for any name that could
/// leave it (absolute, `..`) or that is not a data dir file.
pub fn data_entry_target(name: &str) -> Option<PathBuf> {
    let relative = Path::new(name.strip_prefix(DATA_PREFIX)?);
    let normal = relative
        .components()
        .all(|part| matches!(part, Component::Normal(_)));
    (normal && relative.components().next().is_some()).then(|| relative.to_owned())
}

/// Every difference between the manifest and the entries read (name → size, SHA-256).
pub fn mismatches(manifest: &Manifest, read: &BTreeMap<String, (u64, String)>) -> Vec<String> {
    let mut problems = Vec::new();
    for file in &manifest.files {
        match read.get(&file.path) {
            None => problems.push(format!("{}: missing from the archive", file.path)),
            Some((size, sha)) if *size != file.size || *sha != file.sha256 => problems.push(
                format!("{}: size or SHA-256 differs from the manifest", file.path),
            ),
            Some(_) => {}
        }
    }
    for name in read.keys() {
        if !manifest.files.iter().any(|f| &f.path == name) {
            problems.push(format!("{name}: not in the manifest"));
        }
    }
    problems
}

/// The `pg_dump` command that goes with a PostgreSQL backup; the password is left out
/// (it belongs in `PGPASSWORD` or `~/.pgpass`, not in a shell history).
pub fn pg_dump_command(database_url: &str, archive: &Path) -> String {
    let url = match reqwest::Url::parse(database_url) {
        Ok(mut url) => {
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => "postgres://USER@HOST/DATABASE".to_owned(),
    };
    format!(
        "pg_dump --format=custom --file='{}.pgdump' '{url}'",
        archive.display()
    )
}

/// The live SQLite file of `config`, when it uses SQLite.
fn sqlite_file(config: &Config) -> Result<Option<PathBuf>> {
    if !config.database_url.starts_with("sqlite:") {
        return Ok(None);
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&config.database_url)?;
    Ok(Some(options.get_filename().to_owned()))
}

/// Archives `config`'s data dir (and SQLite database) into `file` while the gateway may
/// be running. The archive is written under a temporary name and renamed at the end, so
/// `file` is either whole or absent.
pub async fn backup(config: &Config, file: &Path, now: DateTime<Utc>) -> Result<Outcome> {
    if !config.data_dir.is_dir() {
        return Err(BackupError::NoDataDir(config.data_dir.clone()));
    }
    let partial = with_suffix(file, ".partial");
    let snapshot = with_suffix(file, ".db-snapshot");
    let database = sqlite_file(config)?;
    let schema_version = match &database {
        Some(live) => Some(copy_sqlite(live, &snapshot).await?),
        None => None,
    };
    let data_dir = config.data_dir.clone();
    let task_partial = partial.clone();
    let task_snapshot = snapshot.clone();
    let written = tokio::task::spawn_blocking(move || {
        write_archive(
            &data_dir,
            database.as_deref(),
            &task_snapshot,
            &task_partial,
        )
    })
    .await
    .map_err(|join| io(file)(std::io::Error::other(join)))?;
    let _ = std::fs::remove_file(&snapshot);
    let (files, mut archive) = match written {
        Ok(done) => done,
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            return Err(err);
        }
    };
    let manifest = Manifest {
        format: FORMAT,
        leadline_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        created_at: now,
        database: if schema_version.is_some() {
            DatabaseKind::Sqlite
        } else {
            DatabaseKind::Postgres
        },
        files,
    };
    let finished = (|| -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
        let mut header = entry_header(json.len() as u64, now);
        archive.append_data(&mut header, MANIFEST_ENTRY, json.as_slice())?;
        let gz = archive.into_inner()?;
        let out = gz.finish()?;
        out.sync_all()
    })();
    if let Err(source) = finished.and_then(|()| std::fs::rename(&partial, file)) {
        let _ = std::fs::remove_file(&partial);
        return Err(io(file)(source));
    }
    let pg_dump = (manifest.database == DatabaseKind::Postgres)
        .then(|| pg_dump_command(&config.database_url, file));
    Ok(Outcome { manifest, pg_dump })
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn entry_header(size: u64, now: DateTime<Utc>) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o640);
    header.set_mtime(u64::try_from(now.timestamp()).unwrap_or(0));
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// `VACUUM INTO` a consistent copy of the live database (a read transaction of its own:
/// the gateway's writers go on); the copy's newest migration.
async fn copy_sqlite(live: &Path, copy: &Path) -> Result<i64> {
    let _ = std::fs::remove_file(copy);
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(live)
        .create_if_missing(false);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    // Migrations run only when a gateway starts, never during the copy.
    let version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await?;
    let target = copy
        .to_str()
        .ok_or_else(|| io(copy)(std::io::Error::other("the backup file's path is not UTF-8")))?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(version.unwrap_or(0))
}

type Archive = tar::Builder<flate2::write::GzEncoder<std::fs::File>>;

/// The database copy and the data dir's files, in a name order; the manifest is added by
/// the caller once every file is hashed.
fn write_archive(
    data_dir: &Path,
    database: Option<&Path>,
    snapshot: &Path,
    partial: &Path,
) -> Result<(Vec<FileEntry>, Archive)> {
    let out = std::fs::File::create(partial).map_err(io(partial))?;
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        out,
        flate2::Compression::default(),
    ));
    let now = Utc::now();
    let mut files = Vec::new();
    if database.is_some() {
        files.push(append_file(&mut archive, snapshot, DATABASE_ENTRY, now)?);
    }
    let root = data_dir.canonicalize().map_err(io(data_dir))?;
    let relative_db = database
        .and_then(|db| db.canonicalize().ok())
        .and_then(|db| db.strip_prefix(&root).ok().map(Path::to_owned));
    // The archive being written must not archive itself when it is put in the data dir.
    let own = [partial, snapshot].map(|p| p.canonicalize().ok());
    for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
        let entry = entry.map_err(|err| io(data_dir)(err.into()))?;
        if !entry.file_type().is_file() || own.contains(&Some(entry.path().to_owned())) {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(&root) else {
            continue;
        };
        if !belongs_in_backup(relative, relative_db.as_deref()) {
            continue;
        }
        let Some(relative_text) = relative.to_str() else {
            tracing::warn!(path = %entry.path().display(), "left out: the name is not UTF-8");
            continue;
        };
        let name = format!("{DATA_PREFIX}{relative_text}");
        match append_file(&mut archive, entry.path(), &name, now) {
            Ok(file) => files.push(file),
            // Deleted since the walk saw it (retention, an erasure): nothing to keep.
            Err(BackupError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok((files, archive))
}

/// Appends `path` as `name` with the size it has now; a file still being written (a
/// recording) is taken up to that size.
fn append_file(
    archive: &mut Archive,
    path: &Path,
    name: &str,
    now: DateTime<Utc>,
) -> Result<FileEntry> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let size = file.metadata().map_err(io(path))?.len();
    let mut reader = Hashing::new(file.take(size));
    let mut header = entry_header(size, now);
    archive
        .append_data(&mut header, name, &mut reader)
        .map_err(io(path))?;
    if reader.count != size {
        return Err(BackupError::FileChanged(name.to_owned()));
    }
    Ok(FileEntry {
        path: name.to_owned(),
        size,
        sha256: hex::encode(reader.hasher.finalize()),
    })
}

struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Unpacks `file` into `config`'s data dir, which must be empty or missing, and the
/// SQLite database to its configured path. Every entry is checked against the manifest;
/// on any problem what was unpacked is removed again.
pub async fn restore(config: &Config, file: &Path) -> Result<Outcome> {
    let data_dir = config.data_dir.clone();
    if data_dir.exists() {
        let mut entries = std::fs::read_dir(&data_dir).map_err(io(&data_dir))?;
        if let Some(entry) = entries.next() {
            let entry = entry.map_err(io(&data_dir))?;
            return Err(BackupError::NotEmpty {
                dir: data_dir,
                example: entry.file_name().to_string_lossy().into_owned(),
            });
        }
    }
    let database = sqlite_file(config)?;
    if let Some(db) = &database
        && db.exists()
    {
        return Err(BackupError::DatabaseExists(db.clone()));
    }
    std::fs::create_dir_all(&data_dir).map_err(io(&data_dir))?;
    let file = file.to_owned();
    let task_dir = data_dir.clone();
    let task_db = database.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut written = Vec::new();
        let result = unpack(&file, &task_dir, task_db.as_deref(), &mut written);
        if result.is_err() {
            for path in written.iter().rev() {
                let _ = std::fs::remove_file(path);
            }
            if let Ok(walk) = std::fs::read_dir(&task_dir) {
                // Only the directories the restore made, all empty now.
                for entry in walk.flatten() {
                    let _ = remove_empty_dirs(&entry.path());
                }
            }
        }
        result
    })
    .await
    .map_err(|join| io(&data_dir)(std::io::Error::other(join)))?;
    let manifest = outcome?;
    Ok(Outcome {
        manifest,
        pg_dump: None,
    })
}

fn remove_empty_dirs(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            remove_empty_dirs(&entry?.path())?;
        }
        std::fs::remove_dir(path)?;
    }
    Ok(())
}

fn unpack(
    file: &Path,
    data_dir: &Path,
    database: Option<&Path>,
    written: &mut Vec<PathBuf>,
) -> Result<Manifest> {
    let input = std::fs::File::open(file).map_err(io(file))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(input));
    let mut read = BTreeMap::new();
    let mut manifest = None;
    let not_a_backup = |what: String| BackupError::NotABackup(what);
    for entry in archive.entries().map_err(io(file))? {
        let mut entry = entry.map_err(io(file))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(io(file))?
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| not_a_backup("an entry's name is not UTF-8".to_owned()))?;
        if name == MANIFEST_ENTRY {
            let mut json = Vec::new();
            entry.read_to_end(&mut json).map_err(io(file))?;
            let parsed: Manifest = serde_json::from_slice(&json)
                .map_err(|err| not_a_backup(format!("manifest.json: {err}")))?;
            if parsed.format != FORMAT {
                return Err(not_a_backup(format!(
                    "archive format {} (this version reads {FORMAT})",
                    parsed.format
                )));
            }
            manifest = Some(parsed);
            continue;
        }
        let target = if name == DATABASE_ENTRY {
            database.ok_or(BackupError::SqliteIntoPostgres)?.to_owned()
        } else {
            data_dir.join(
                data_entry_target(&name)
                    .ok_or_else(|| not_a_backup(format!("unexpected entry {name}")))?,
            )
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut out = std::fs::File::create_new(&target).map_err(io(&target))?;
        written.push(target.clone());
        let mut reader = Hashing::new(&mut entry);
        std::io::copy(&mut reader, &mut out).map_err(io(&target))?;
        out.flush().map_err(io(&target))?;
        out.sync_all().map_err(io(&target))?;
        let sha = hex::encode(reader.hasher.finalize());
        read.insert(name, (reader.count, sha));
    }
    let manifest = manifest.ok_or_else(|| not_a_backup("no manifest.json".to_owned()))?;
    let problems = mismatches(&manifest, &read);
    if !problems.is_empty() {
        return Err(BackupError::Mismatch(problems));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &[(&str, u64, &str)]) -> Manifest {
        Manifest {
            format: FORMAT,
            leadline_version: "0.1.0".to_owned(),
            schema_version: Some(26),
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            database: DatabaseKind::Sqlite,
            files: files
                .iter()
                .map(|(path, size, sha)| FileEntry {
                    path: (*path).to_owned(),
                    size: *size,
                    sha256: (*sha).to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_live_database_and_the_journal_checkpoint_stay_out() {
        let db = Some(Path::new("leadline.db"));
        for left_out in [
            "leadline.db",
            "leadline.db-wal",
            "leadline.db-shm",
            "leadline.db-journal",
            "journal/calls.offset",
        ] {
            assert!(!belongs_in_backup(Path::new(left_out), db), "{left_out}");
        }
        for kept in [
            "recordings/call.wav",
            "greetings/welcome.wav",
            "music/hold.wav",
            "journal/calls.jsonl",
            "journal/rejected.jsonl",
            "leadline.db.old",
        ] {
            assert!(belongs_in_backup(Path::new(kept), db), "{kept}");
        }
        // PostgreSQL: no live file to leave out.
        assert!(belongs_in_backup(Path::new("leadline.db"), None));
    }

    #[test]
    fn entries_cannot_leave_the_data_dir() {
        assert_eq!(
            data_entry_target("data/recordings/a.wav"),
            Some(PathBuf::from("recordings/a.wav"))
        );
        for bad in [
            "data/../etc/passwd",
            "data//etc/passwd",
            "data/",
            "data/./x",
            "recordings/a.wav",
            "database/leadline.db",
        ] {
            assert_eq!(data_entry_target(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_difference_from_the_manifest_is_reported() {
        let m = manifest(&[
            ("data/a", 3, "aa"),
            ("data/b", 4, "bb"),
            ("data/c", 1, "cc"),
        ]);
        let mut read = BTreeMap::new();
        read.insert("data/a".to_owned(), (3, "aa".to_owned()));
        read.insert("data/b".to_owned(), (4, "xx".to_owned()));
        read.insert("data/d".to_owned(), (1, "dd".to_owned()));
        let problems = mismatches(&m, &read);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("data/b"), "{problems:?}");
        assert!(problems[1].starts_with("data/c: missing"), "{problems:?}");
        assert!(problems[2].starts_with("data/d: not in"), "{problems:?}");
        read.insert("data/b".to_owned(), (4, "bb".to_owned()));
        read.insert("data/c".to_owned(), (1, "cc".to_owned()));
        read.remove("data/d");
        assert!(mismatches(&m, &read).is_empty());
    }

    #[test]
    fn the_pg_dump_command_leaves_the_password_out() {
        let command = pg_dump_command(
            "postgres://leadline:s3cret@db.example:5432/crm",
            Path::new("/var/backups/leadline.tar.gz"),
        );
        assert_eq!(
            command,
            "pg_dump --format=custom --file='/var/backups/leadline.tar.gz.pgdump' \
             'postgres://leadline@db.example:5432/crm'"
        );
    }

    #[test]
    fn the_manifest_reads_back_as_written() {
        let m = manifest(&[("database/leadline.db", 4096, "ab")]);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"database\":\"sqlite\""), "{json}");
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
    }
}
