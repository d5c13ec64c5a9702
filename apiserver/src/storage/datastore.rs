//! The `--datastore` URL: which backend holds the cluster's state, and opening it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::etcd::DEFAULT_PREFIX;
use super::{Codec, EtcdStore, Result, SqliteStore, Store, StoreError, parse_etcd_url};

/// Where the API server keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datastore {
    /// `sqlite://PATH`: the embedded default.
    Sqlite(PathBuf),
    /// `etcd://HOST:PORT[,HOST:PORT...]`: an existing etcd cluster, keys under `prefix`.
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

impl Datastore {
    /// The default: `sqlite://DIR/state.db`.
    pub fn default_in(data_dir: &Path) -> Self {
        Self::Sqlite(data_dir.join("state.db"))
    }

    /// Parses `sqlite://PATH` or `etcd://HOST:PORT[,HOST:PORT...]`.
    pub fn parse(url: &str) -> Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "datastore {url:?} names no database file: write sqlite://PATH, e.g. sqlite:///var/lib/skiff/state.db"
                )));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("etcd://") {
            return Ok(Self::Etcd {
                endpoints: parse_etcd_url(url)?,
                prefix: DEFAULT_PREFIX.to_owned(),
            });
        }
        Err(StoreError::Invalid(format!(
            "datastore {url:?} is not supported: use sqlite://PATH or etcd://HOST:PORT[,HOST:PORT...]"
        )))
    }

    /// Opens the store: creates or migrates the SQLite file, or connects to etcd.
    pub async fn open(&self, codec: Codec) -> Result<Arc<dyn Store>> {
        match self {
            Self::Sqlite(path) => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, codec))
                    .await
                    .map_err(|e| StoreError::Backend(format!("opening the SQLite store: {e}")))??;
                Ok(Arc::new(store))
            }
            Self::Etcd { endpoints, prefix } => Ok(Arc::new(
                EtcdStore::connect(endpoints, prefix, codec).await?,
            )),
        }
    }
}

impl fmt::Display for Datastore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Etcd { endpoints, .. } => {
                let hosts: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.strip_prefix("http://").unwrap_or(e))
                    .collect();
                write!(f, "etcd://{}", hosts.join(","))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_round_trips() {
        let d = Datastore::parse("sqlite:///var/lib/skiff/state.db").unwrap();
        assert_eq!(d, Datastore::Sqlite("/var/lib/skiff/state.db".into()));
        assert_eq!(d.to_string(), "sqlite:///var/lib/skiff/state.db");
        let d = Datastore::parse("etcd://127.0.0.1:2379,[::1]:2379").unwrap();
        assert_eq!(d.to_string(), "etcd://127.0.0.1:2379,[::1]:2379");
        assert_eq!(
            Datastore::default_in(Path::new(".skiff/skiff")),
            Datastore::Sqlite(".skiff/skiff/state.db".into())
        );
    }

    #[test]
    fn bad_urls_name_the_problem() {
        for (url, needle) in [
            ("sqlite://", "names no database file"),
            ("postgres://x", "not supported"),
            ("etcd://", "names no etcd endpoint"),
            ("etcd://host", "has no :PORT"),
        ] {
            let err = Datastore::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn opens_a_sqlite_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Datastore::default_in(dir.path())
            .open(Codec::new(None))
            .await
            .unwrap();
        assert_eq!(store.current_revision().await.unwrap(), 0);
        assert!(dir.path().join("state.db").exists());
    }
}
