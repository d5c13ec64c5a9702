//! How objects become stored bytes: JSON for every kind, and Secrets sealed with AES-256-GCM.
//!
//! A sealed value is `k8s:enc:aesgcm:v1:<key id>:` followed by a 12-byte random nonce and the
//! ciphertext with its tag. The storage key is the additional authenticated data, so a sealed
//! value copied under another key does not decrypt. The key id (first 8 hex digits of the
//! SHA-256 of the key) lets a wrong key fail with a clear message instead of a tag mismatch.

use std::fmt;
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use super::{ObjectKey, StoreError, meta};

const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";
const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// The resources whose values are encrypted at rest.
const SEALED_RESOURCES: &[&str] = &["secrets"];

/// A 256-bit AES-GCM key for encryption at rest.
pub struct EncryptionKey {
    key: LessSafeKey,
    id: String,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl EncryptionKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        if bytes.len() != KEY_LEN {
            return Err(StoreError::Crypto(format!(
                "an encryption key is {KEY_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| StoreError::Crypto("AES-256-GCM rejected the key".into()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let id = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            key: LessSafeKey::new(unbound),
            id,
        })
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StoreError::Crypto("the system random source failed".into()))?;
        Self::from_bytes(&bytes)
    }

    /// Reads a key file: 32 bytes, base64-encoded (whitespace around it ignored).
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        use base64::Engine as _;
        let text = std::fs::read_to_string(path).map_err(|e| {
            StoreError::Crypto(format!(
                "cannot read encryption key file {}: {e}",
                path.display()
            ))
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| {
                StoreError::Crypto(format!(
                    "encryption key file {} is not base64 ({e}); it must hold 32 random bytes in base64, e.g. from `head -c 32 /dev/urandom | base64`",
                    path.display()
                ))
            })?;
        Self::from_bytes(&bytes).map_err(|e| StoreError::Crypto(format!("{}: {e}", path.display())))
    }

    /// Loads the key at `path`, or generates one and writes it there (mode 0600) if the file
    /// does not exist yet. Used for the data dir's key on first start. The new file is written
    /// beside the target, fsynced, renamed into place and its directory fsynced, so after a
    /// crash the key is either wholly there or absent — never lost while data it sealed
    /// survives, never half-written.
    pub fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        use base64::Engine as _;
        use std::io::Write as _;
        if path.exists() {
            return Self::load(path);
        }
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StoreError::Crypto("the system random source failed".into()))?;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            // A leftover from a crash before the rename holds no key anyone used.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut file = opts.open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            StoreError::Crypto(format!(
                "cannot write encryption key file {}: {e}",
                path.display()
            ))
        })?;
        Self::from_bytes(&bytes)
    }

    /// The key's short public identifier (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Turns objects into stored bytes and back. Shared by every backend.
#[derive(Debug)]
pub struct Codec {
    key: Option<EncryptionKey>,
    random: SystemRandom,
}

impl Codec {
    /// A codec that seals Secrets with `key`. Without a key Secrets cannot be stored.
    pub fn new(key: Option<EncryptionKey>) -> Self {
        Self {
            key,
            random: SystemRandom::new(),
        }
    }

    fn sealed(key: &ObjectKey) -> bool {
        SEALED_RESOURCES.contains(&key.resource.as_str())
    }

    /// The bytes to store for `object` (its resourceVersion removed).
    pub fn encode(&self, key: &ObjectKey, object: &Value) -> Result<Vec<u8>, StoreError> {
        let mut object = object.clone();
        meta::strip_revision(&mut object);
        let plain = serde_json::to_vec(&object)
            .map_err(|e| StoreError::Invalid(format!("{key}: cannot encode: {e}")))?;
        if !Self::sealed(key) {
            return Ok(plain);
        }
        let Some(enc) = &self.key else {
            return Err(StoreError::Crypto(format!(
                "{key}: no encryption key is configured, and Secrets are only stored encrypted"
            )));
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| StoreError::Crypto("the system random source failed".into()))?;
        let mut sealed = plain;
        enc.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(key)),
                &mut sealed,
            )
            .map_err(|_| StoreError::Crypto(format!("{key}: encryption failed")))?;
        let mut out = Vec::with_capacity(PREFIX.len() + 9 + NONCE_LEN + sealed.len());
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(enc.id.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The object stored as `bytes` under `key` (without a resourceVersion).
    pub fn decode(&self, key: &ObjectKey, bytes: &[u8]) -> Result<Value, StoreError> {
        let plain;
        let json: &[u8] = if let Some(rest) = bytes.strip_prefix(PREFIX) {
            plain = self.open(key, rest)?;
            &plain
        } else {
            bytes
        };
        Self::parse(key, json)
    }

    /// The plain JSON stored as `bytes` under `key`: sealed values opened, others as they are.
    pub fn plain_json(&self, key: &ObjectKey, bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match bytes.strip_prefix(PREFIX) {
            Some(rest) => self.open(key, rest),
            None => Ok(bytes),
        }
    }

    fn parse(key: &ObjectKey, json: &[u8]) -> Result<Value, StoreError> {
        serde_json::from_slice(json).map_err(|e| {
            StoreError::Incompatible(format!("{key}: stored value is not valid JSON: {e}"))
        })
    }

    fn open(&self, key: &ObjectKey, rest: &[u8]) -> Result<Vec<u8>, StoreError> {
        let Some(enc) = &self.key else {
            return Err(StoreError::Crypto(format!(
                "{key} is encrypted, and no encryption key is configured: pass the key it was written with (--encryption-key-file)"
            )));
        };
        let (id, rest) = rest
            .split_at_checked(8)
            .ok_or_else(|| StoreError::Crypto(format!("{key}: sealed value is truncated")))?;
        let rest = rest
            .strip_prefix(b":")
            .ok_or_else(|| StoreError::Crypto(format!("{key}: sealed value is malformed")))?;
        if id != enc.id.as_bytes() {
            return Err(StoreError::Crypto(format!(
                "{key} was encrypted with key {}, but the configured key is {}: pass the key it was written with (--encryption-key-file)",
                String::from_utf8_lossy(id),
                enc.id
            )));
        }
        let (nonce, sealed) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or_else(|| StoreError::Crypto(format!("{key}: sealed value is truncated")))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| StoreError::Crypto(format!("{key}: bad nonce")))?;
        let mut buf = sealed.to_vec();
        let plain = enc
            .key
            .open_in_place(nonce, Aad::from(aad(key)), &mut buf)
            .map_err(|_| {
                StoreError::Crypto(format!(
                    "{key}: decryption failed: the value is corrupted or was moved from another key"
                ))
            })?;
        Ok(plain.to_vec())
    }
}

/// The additional authenticated data that binds a sealed value to its key.
fn aad(key: &ObjectKey) -> Vec<u8> {
    format!(
        "{}/{}/{}",
        key.resource,
        key.namespace.as_deref().unwrap_or(""),
        key.name
    )
    .into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::ResourceName;
    use serde_json::json;

    fn secret_key(name: &str) -> ObjectKey {
        ObjectKey::new(ResourceName::new("secrets").unwrap(), Some("default"), name)
    }

    #[test]
    fn secrets_are_sealed_and_round_trip() {
        let codec = Codec::new(Some(EncryptionKey::generate().unwrap()));
        let obj = json!({"kind": "Secret", "metadata": {"name": "s", "resourceVersion": "4"}, "data": {"password": "aHVudGVyMg=="}});
        let bytes = codec.encode(&secret_key("s"), &obj).unwrap();
        assert!(bytes.starts_with(PREFIX));
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains("aHVudGVyMg") && !hay.contains("password"));
        let back = codec.decode(&secret_key("s"), &bytes).unwrap();
        assert_eq!(back["data"]["password"], "aHVudGVyMg==");
        assert!(back["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn sealed_value_is_bound_to_its_key_and_its_encryption_key() {
        let codec = Codec::new(Some(EncryptionKey::generate().unwrap()));
        let bytes = codec
            .encode(&secret_key("a"), &json!({"metadata": {}}))
            .unwrap();
        let err = codec
            .decode(&secret_key("b"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("moved from another key"), "{err}");
        let other = Codec::new(Some(EncryptionKey::generate().unwrap()));
        let err = other
            .decode(&secret_key("a"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--encryption-key-file"), "{err}");
        let none = Codec::new(None);
        assert!(none.decode(&secret_key("a"), &bytes).is_err());
        assert!(
            none.encode(&secret_key("a"), &json!({"metadata": {}}))
                .is_err()
        );
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(codec.decode(&secret_key("a"), &flipped).is_err());
        assert!(
            codec
                .decode(&secret_key("a"), &bytes[..PREFIX.len() + 3])
                .is_err()
        );
    }

    #[test]
    fn other_kinds_are_plain_json() {
        let codec = Codec::new(None);
        let key = ObjectKey::new(ResourceName::new("configmaps").unwrap(), Some("d"), "c");
        let bytes = codec.encode(&key, &json!({"data": {"k": "v"}})).unwrap();
        assert_eq!(bytes, br#"{"data":{"k":"v"}}"#);
    }

    #[test]
    fn key_file_is_created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("encryption.key");
        let a = EncryptionKey::load_or_create(&path).unwrap();
        let b = EncryptionKey::load_or_create(&path).unwrap();
        assert_eq!(a.id(), b.id());
        std::fs::write(dir.path().join("bad.key"), "not base64!").unwrap();
        let err = EncryptionKey::load(&dir.path().join("bad.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("base64"), "{err}");
    }
}
