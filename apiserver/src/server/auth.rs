//! Bearer-token authentication: the tokens file in the data dir (admin token made on first start).
//!
//! The file is upstream's static token file format, one `token,user,uid,"group1,group2"` line
//! per identity, mode 0600. `skiff token create` appends to it; the server re-reads it when it
//! changes, so new tokens work without a restart. There is no authorization yet: every valid
//! token may do everything (node and component tokens get restricted with RBAC later).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use ring::rand::SecureRandom;

use super::tls::{TlsError, write_file};

/// The tokens file in the data dir.
pub const TOKENS_FILE: &str = "tokens";
/// The admin identity written on first start.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_GROUP: &str = "system:masters";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("token name {0:?} is invalid: use letters, digits, '-', '.', ':' and '_'")]
    BadName(String),
    #[error("a token named {0:?} already exists")]
    Exists(String),
    #[error("no random numbers available")]
    Random,
    #[error(transparent)]
    Write(#[from] TlsError),
}

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    token: String,
    user: User,
}

fn random_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_' | b'@'))
}

fn parse(path: &Path, text: &str) -> Result<Vec<Entry>, AuthError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: &str| AuthError::Parse {
            path: path.to_owned(),
            line: i + 1,
            message: message.to_owned(),
        };
        let mut parts = line.splitn(4, ',');
        let token = parts.next().unwrap_or_default();
        let user = parts.next().ok_or_else(|| err("expected token,user,uid"))?;
        let uid = parts.next().ok_or_else(|| err("expected token,user,uid"))?;
        let groups = parts.next().unwrap_or("").trim_matches('"');
        if token.is_empty() || user.is_empty() {
            return Err(err("empty token or user"));
        }
        out.push(Entry {
            token: token.to_owned(),
            user: User {
                name: user.to_owned(),
                uid: uid.to_owned(),
                groups: groups
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect(),
            },
        });
    }
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<Entry>, AuthError> {
    match fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(AuthError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn append(path: &Path, entries: &[Entry], new: &Entry) -> Result<(), AuthError> {
    let mut text = String::new();
    for e in entries.iter().chain(std::iter::once(new)) {
        text.push_str(&format!(
            "{},{},{},\"{}\"\n",
            e.token,
            e.user.name,
            e.user.uid,
            e.user.groups.join(",")
        ));
    }
    write_file(path, text.as_bytes(), true)?;
    Ok(())
}

/// Creates a token for `name` with `groups` in `data_dir`'s tokens file and returns it
/// (`skiff token create`). Works whether or not the server is running.
pub fn create_token(data_dir: &Path, name: &str, groups: &[String]) -> Result<String, AuthError> {
    if !valid_name(name) {
        return Err(AuthError::BadName(name.to_owned()));
    }
    for g in groups {
        if !valid_name(g) {
            return Err(AuthError::BadName(g.clone()));
        }
    }
    fs::create_dir_all(data_dir).map_err(|source| AuthError::Io {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(TOKENS_FILE);
    let entries = read(&path)?;
    if entries.iter().any(|e| e.user.name == name) {
        return Err(AuthError::Exists(name.to_owned()));
    }
    let entry = Entry {
        token: random_token()?,
        user: User {
            name: name.to_owned(),
            uid: uuid::Uuid::new_v4().to_string(),
            groups: groups.to_vec(),
        },
    };
    append(&path, &entries, &entry)?;
    Ok(entry.token)
}

/// The admin token, created on first start.
pub fn ensure_admin_token(data_dir: &Path) -> Result<String, AuthError> {
    let path = data_dir.join(TOKENS_FILE);
    let entries = read(&path)?;
    if let Some(e) = entries.iter().find(|e| e.user.name == ADMIN_USER) {
        return Ok(e.token.clone());
    }
    create_token(data_dir, ADMIN_USER, &[ADMIN_GROUP.to_owned()])
}

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks bearer tokens against the tokens file, re-reading it when its mtime changes.
#[derive(Debug)]
pub struct Authenticator {
    path: PathBuf,
    state: RwLock<(Option<SystemTime>, Vec<Entry>)>,
}

impl Authenticator {
    pub fn load(data_dir: &Path) -> Result<Self, AuthError> {
        let path = data_dir.join(TOKENS_FILE);
        let mtime = fs::metadata(&path).and_then(|m| m.modified()).ok();
        let entries = read(&path)?;
        Ok(Self {
            path,
            state: RwLock::new((mtime, entries)),
        })
    }

    fn lookup(&self, token: &str) -> Option<User> {
        let state = self.state.read().ok()?;
        let mut found = None;
        // Compare against every entry so timing does not reveal which one matched.
        for e in &state.1 {
            if constant_time_eq(e.token.as_bytes(), token.as_bytes()) {
                found = Some(e.user.clone());
            }
        }
        found
    }

    /// The user a request's `Authorization` header value authenticates, if any.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<User> {
        let value = authorization?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let token = token.trim();
        if token.is_empty() {
            return None;
        }
        if let Some(user) = self.lookup(token) {
            return Some(user);
        }
        // Unknown: maybe `skiff token create` added it since we last read the file.
        let mtime = fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let stale = self.state.read().map(|s| s.0 != mtime).unwrap_or(false);
        if stale {
            match read(&self.path) {
                Ok(entries) => {
                    if let Ok(mut state) = self.state.write() {
                        *state = (mtime, entries);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "re-reading the tokens file"),
            }
            return self.lookup(token);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_is_stable_and_new_tokens_are_seen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let admin = ensure_admin_token(dir.path())?;
        assert_eq!(admin, ensure_admin_token(dir.path())?);
        let auth = Authenticator::load(dir.path())?;
        let user = auth.authenticate(Some(&format!("Bearer {admin}")));
        assert_eq!(user.map(|u| u.groups), Some(vec![ADMIN_GROUP.to_owned()]));
        assert!(auth.authenticate(Some("Bearer nope")).is_none());
        assert!(auth.authenticate(None).is_none());
        // Make sure the mtime moves even on coarse-grained file systems.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let node = create_token(dir.path(), "node-1", &["system:nodes".to_owned()])?;
        let user = auth.authenticate(Some(&format!("bearer {node}")));
        assert_eq!(user.map(|u| u.name), Some("node-1".to_owned()));
        assert!(matches!(
            create_token(dir.path(), "node-1", &[]),
            Err(AuthError::Exists(_))
        ));
        Ok(())
    }
}
