//! Migrations whose opening comments were reworded after release: a database that
//! applied the old texts still starts, on both databases.

use sha2::{Digest, Sha384};
use sqlx::AnyPool;

use leadline::store::Store;

use crate::common::postgres::PgServer;

/// The checksums sqlx stored for migrations 6–10 before their comments were reworded.
const OLD_CHECKSUMS: &[(i64, &str)] = &[
    (
        6,
        "0d4782f09841cd7f5e243bd1b6149744b5d3ad0a1df487a631ab9d6cc1666d0f9c57bb8b454c4fe1929a17f77db7645a",
    ),
    (
        7,
        "5f3cf165509fcf0c27ed0118b152f6021263676aa6f411709dbd3bf24ccee5e9534521461e525d10ae38a19ff8a01f69",
    ),
    (
        8,
        "3baa86756b2cc1acadc01ab85db1dfbfa90fd2f487c023fa3f3c76f9fe7b740cdf9717bfb73533715a9d3015e92555e2",
    ),
    (
        9,
        "99da106594020214db0d8724413b19e501f7bdb3a67176c4904b66d997cc984fe3faef45f2cd02280af4d133065cfb1a",
    ),
    (
        10,
        "5df9aff4fc8fc9c23be8e8d4c7c1a9954c58c99aeae80fdaf8a0111a9f4c665a05b4d6c2e40f46f03b1666772151e40a",
    ),
];

fn current_checksum(version: i64) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let prefix = format!("{version:04}_");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&prefix))
        })
        .unwrap_or_else(|| panic!("migration {version} in {}", dir.display()));
    Sha384::digest(std::fs::read(file).unwrap()).to_vec()
}

async fn raw_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await.unwrap()
}

async fn stored_checksum(pool: &AnyPool, version: i64) -> Vec<u8> {
    let (checksum,): (Vec<u8>,) =
        sqlx::query_as("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
            .bind(version)
            .fetch_one(pool)
            .await
            .unwrap();
    checksum
}

/// Migrates `url`, then puts back the checksums the old texts had, as a database
/// migrated before the rewording holds them (the schema is the same: only comments
/// changed).
async fn database_migrated_with_the_old_texts(url: &str) -> AnyPool {
    let store = Store::connect(url).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    let pool = raw_pool(url).await;
    for (version, old) in OLD_CHECKSUMS {
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
            .bind(hex::decode(old).unwrap())
            .bind(*version)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool
}

async fn old_checksums_are_moved_and_others_left_to_sqlx(url_old: &str, url_other: &str) {
    let pool = database_migrated_with_the_old_texts(url_old).await;
    let store = Store::connect(url_old).await.unwrap();
    store
        .migrate()
        .await
        .expect("a database migrated with the old texts starts");
    for (version, _) in OLD_CHECKSUMS {
        assert_eq!(
            stored_checksum(&pool, *version).await,
            current_checksum(*version),
            "migration {version}"
        );
    }
    // Starting again changes nothing.
    store.migrate().await.unwrap();
    store.close().await;

    // A checksum that is neither the old nor the new one is not ours to change.
    let pool = database_migrated_with_the_old_texts(url_other).await;
    let edited = b"edited by hand".to_vec();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 7")
        .bind(edited.clone())
        .execute(&pool)
        .await
        .unwrap();
    let store = Store::connect(url_other).await.unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(err.to_string().contains("migration"), "{err}");
    assert_eq!(stored_checksum(&pool, 7).await, edited);
}

#[tokio::test]
async fn reworded_migrations_start_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    old_checksums_are_moved_and_others_left_to_sqlx(&url("old.db"), &url("other.db")).await;
}

#[tokio::test]
async fn reworded_migrations_start_on_postgres() {
    let server = PgServer::shared();
    let old = server.create_database("reworded_old").await;
    let other = server.create_database("reworded_other").await;
    old_checksums_are_moved_and_others_left_to_sqlx(&old, &other).await;
}
