//! The database schema, its version table and migrations, and how connections are opened.
//!
//! An existing file is first opened read-only and its schema version read: a file written by a
//! newer skiff (or a file that is not a skiff database) is refused before anything in it —
//! not even the journal mode — is changed.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior};

use crate::storage::StoreError;

/// One schema step. Steps run in order, each at most once, in one transaction.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every schema step this build knows, oldest first. Append only: never edit a released step.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "objects, change history and store metadata",
    sql: "
        -- The current state: one row per live object. namespace is '' for cluster-scoped kinds.
        CREATE TABLE objects (
            resource  TEXT    NOT NULL,
            namespace TEXT    NOT NULL,
            name      TEXT    NOT NULL,
            revision  INTEGER NOT NULL,
            value     BLOB    NOT NULL,
            PRIMARY KEY (resource, namespace, name)
        ) WITHOUT ROWID;
        -- Every change since the compacted revision, for watches that resume from a revision.
        -- event: 0 added, 1 modified, 2 deleted (value = the last state).
        CREATE TABLE history (
            revision  INTEGER PRIMARY KEY,
            resource  TEXT    NOT NULL,
            namespace TEXT    NOT NULL,
            name      TEXT    NOT NULL,
            event     INTEGER NOT NULL,
            value     BLOB    NOT NULL
        );
        CREATE INDEX history_by_resource ON history (resource, revision);
        -- 'revision': the newest revision written; 'compacted': history is dropped up to it.
        CREATE TABLE meta (
            key   TEXT    PRIMARY KEY,
            value INTEGER NOT NULL
        ) WITHOUT ROWID;
        INSERT INTO meta (key, value) VALUES ('revision', 0), ('compacted', 0);
    ",
}];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

pub(crate) fn backend(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{}: {e}", path.display()))
}

/// The schema version recorded in an existing database, read without changing the file.
/// `Ok(None)` for an empty file (a new database).
pub fn read_version(path: &Path) -> Result<Option<u32>, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| backend(path, e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| backend(path, e))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            // Only a file that is not a database at all is "incompatible"; anything else (busy,
            // I/O, a hot journal a read-only connection cannot recover) is retryable, and must
            // never be answered with advice to move the user's data away.
            Some(rusqlite::ErrorCode::NotADatabase) => StoreError::Incompatible(format!(
                "{} is not a SQLite database skiff can read ({e}); move it away or point skiff at another data directory",
                path.display()
            )),
            _ => backend(path, e),
        })?;
    if tables == 0 {
        return Ok(None);
    }
    let has_version_table = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |_| Ok(()),
        )
        .optional()
        .map_err(|e| backend(path, e))?
        .is_some();
    if !has_version_table {
        return Err(StoreError::Incompatible(format!(
            "{} is a SQLite database but not a skiff store (it has no schema_version table); move it away or point skiff at another data directory",
            path.display()
        )));
    }
    let version: Option<u32> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .map_err(|e| backend(path, e))?;
    Ok(Some(version.unwrap_or(0)))
}

/// Refuses a database whose schema is newer than this build.
pub fn check_version(path: &Path, found: u32) -> Result<(), StoreError> {
    let known = latest_version();
    if found > known {
        return Err(StoreError::Incompatible(format!(
            "{} has schema version {found}, but this skiff build only knows schema versions up to {known}: \
             it was written by a newer skiff. Run that newer skiff (upgrade this one), or restore a backup \
             taken before the upgrade. The file was not modified.",
            path.display()
        )));
    }
    Ok(())
}

/// Sets the per-connection options every connection uses.
fn configure(path: &Path, conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| backend(path, e))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Opens the write connection: WAL, fsync on every commit, the schema migrated to the latest.
/// Returns the connection and the schema version it was at before migrating.
pub fn open_writer(path: &Path) -> Result<(Connection, u32), StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| backend(path, e))?;
    configure(path, &conn)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| backend(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(backend(
            path,
            format!("cannot switch to WAL mode (journal_mode is {mode})"),
        ));
    }
    // In WAL mode, FULL syncs the WAL on every commit: a committed write survives a crash.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| backend(path, e))?;
    let before = migrate(path, &mut conn)?;
    Ok((conn, before))
}

/// Applies the missing migrations in one transaction. Returns the version found.
fn migrate(path: &Path, conn: &mut Connection) -> Result<u32, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| backend(path, e))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version    INTEGER PRIMARY KEY,
            description TEXT   NOT NULL,
            applied_at TEXT    NOT NULL
        )",
    )
    .map_err(|e| backend(path, e))?;
    // Checked again under the write lock: another process may have upgraded the file meanwhile.
    let found: u32 = tx
        .query_row(
            "SELECT coalesce(max(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(|e| backend(path, e))?;
    check_version(path, found)?;
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.execute_batch(m.sql).map_err(|e| {
            backend(
                path,
                format!(
                    "migration to schema version {} ({}) failed: {e}",
                    m.version, m.description
                ),
            )
        })?;
        tx.execute(
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![
                m.version,
                m.description,
                crate::storage::meta::now_rfc3339()
            ],
        )
        .map_err(|e| backend(path, e))?;
        tracing::info!(path = %path.display(), version = m.version, description = m.description, "applied storage schema migration");
    }
    tx.commit().map_err(|e| backend(path, e))?;
    Ok(found)
}

/// Opens a read connection (the file exists and is migrated by then).
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| backend(path, e))?;
    configure(path, &conn)?;
    Ok(conn)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_unique() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration {} is out of order", m.version);
            last = m.version;
        }
        assert_eq!(latest_version(), last);
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (conn, before) = open_writer(&path).unwrap();
        assert_eq!(before, 0);
        drop(conn);
        let (_conn, before) = open_writer(&path).unwrap();
        assert_eq!(before, latest_version());
        assert_eq!(read_version(&path).unwrap(), Some(latest_version()));
    }

    #[test]
    fn writer_is_durable_on_commit() {
        // kill -9 cannot catch a missing fsync (the page cache survives it): assert the setting.
        let dir = tempfile::tempdir().unwrap();
        let (conn, _) = open_writer(&dir.path().join("db")).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous must be FULL (2)");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_incompatible() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        assert!(matches!(
            read_version(&path),
            Err(StoreError::Incompatible(_))
        ));
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_message() {
        let err = check_version(Path::new("/data/skiff.db"), latest_version() + 1).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Incompatible(_)));
        assert!(
            msg.contains("/data/skiff.db") && msg.contains("newer skiff") && msg.contains("backup"),
            "{msg}"
        );
    }
}
