//! The backup file: a public header, one key wrap per recipient and the encrypted
//! payload. Byte layout: `node/README.md`, "Backups".
//!
//! ```text
//! magic "QRBACKUP" (8) ‖ header_len (u32 BE) ‖ header (JSON, header_len bytes)
//! ‖ stanza × len(header.recipients):
//!       fingerprint (32) ‖ x25519 ephemeral (32) ‖ ML-KEM-768 ciphertext (1088)
//!       ‖ wrapped data key (48: ChaCha20-Poly1305, nonce 0¹², of the 32-byte data key)
//! ‖ payload nonce (12) ‖ payload_len (u32 BE) ‖ payload (ChaCha20-Poly1305 ciphertext ‖ tag)
//! ```
//!
//! `header_hash` = SHA-256(magic ‖ header_len ‖ header) is the associated data of
//! every key wrap (with the recipient's fingerprint) and of the payload, so nothing
//! in the header can change without every decryption failing.

use chacha20poly1305::{aead::AeadInPlace, ChaCha20Poly1305, KeyInit, Nonce};
use quorate_protocol::{KeyId, KeyShare, NodeId, NodeIdentity};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{
    hybrid::{self, Encapsulation, RecoveryPublicKey, RecoverySecretKey, ENCAPSULATION_LEN},
    BackupError,
};
use crate::keystore::{KeystoreId, StoredKey};

/// The first 8 bytes of every backup file.
pub const MAGIC: [u8; 8] = *b"QRBACKUP";
/// Version of the backup format written by this code (header `format`).
pub const FORMAT_VERSION: u32 = 1;
/// Version byte at the start of the payload plaintext.
pub const PAYLOAD_VERSION: u8 = 1;
/// Largest header accepted.
pub const MAX_HEADER_LEN: usize = 256 * 1024;
/// Most recipients of one backup.
pub const MAX_RECIPIENTS: usize = 16;
/// Most key shares in one backup.
pub const MAX_KEYS: usize = 4096;
/// Largest payload ciphertext accepted.
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024 * 1024;
/// Largest encoded key record in a payload (the keystore's record limit).
pub const MAX_KEY_RECORD: usize = 1 << 20;
/// Length of a wrapped data key: 32-byte key ‖ 16-byte tag.
pub const WRAPPED_KEY_LEN: usize = 32 + TAG_LEN;
/// Length of one recipient stanza.
pub const STANZA_LEN: usize = 32 + ENCAPSULATION_LEN + WRAPPED_KEY_LEN;
/// Largest backup file accepted (checked before it is read).
pub const MAX_BACKUP_FILE: u64 =
    (8 + 4 + MAX_HEADER_LEN + MAX_RECIPIENTS * STANZA_LEN + NONCE_LEN + 4 + MAX_PAYLOAD_LEN) as u64;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const IDENTITY_LEN: usize = 64;
const WRAP_AAD_DOMAIN: &[u8] = b"quorate/backup/wrap/v1\0";
const PAYLOAD_AAD_DOMAIN: &[u8] = b"quorate/backup/payload/v1\0";

/// The public header of a backup: readable without a recovery key, authenticated
/// by every decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHeader {
    /// The node whose identity and shares the backup holds.
    pub node_id: NodeId,
    /// The keystore it was taken from.
    pub keystore_id: KeystoreId,
    /// When it was taken, Unix milliseconds.
    pub created_at_ms: u64,
    /// The highest roster epoch that keystore had accepted (restored as a floor).
    pub roster_epoch: u64,
    /// The key shares in the payload, in payload order.
    pub key_ids: Vec<KeyId>,
    /// Each share's generation (0 from the DKG, + 1 per refresh or reshare), in
    /// the same order.
    pub generations: Vec<u64>,
    /// Fingerprints of the recovery keys it is encrypted to, in stanza order.
    pub recipients: Vec<[u8; 32]>,
}

/// The header as JSON (the file's header bytes, and what `backup-info` prints).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderJson {
    format: u32,
    node_id: String,
    keystore_id: String,
    created_at_ms: u64,
    roster_epoch: u64,
    key_ids: Vec<String>,
    #[serde(default)]
    generations: Vec<u64>,
    recipients: Vec<String>,
}

fn malformed(reason: impl Into<String>) -> BackupError {
    BackupError::Malformed(format!("backup file: {}", reason.into()))
}

impl BackupHeader {
    /// The header's JSON encoding, as written in the file.
    pub fn to_json(&self) -> String {
        let h = HeaderJson {
            format: FORMAT_VERSION,
            node_id: self.node_id.to_string(),
            keystore_id: self.keystore_id.to_string(),
            created_at_ms: self.created_at_ms,
            roster_epoch: self.roster_epoch,
            key_ids: self.key_ids.iter().map(ToString::to_string).collect(),
            generations: self.generations.clone(),
            recipients: self.recipients.iter().map(hex::encode).collect(),
        };
        // Strings and integers only: encoding cannot fail.
        serde_json::to_string(&h).unwrap_or_default()
    }

    fn from_json(bytes: &[u8]) -> Result<Self, BackupError> {
        let h: HeaderJson = serde_json::from_slice(bytes)
            .map_err(|e| malformed(format!("header does not decode: {e}")))?;
        if h.format != FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion {
                what: "backup file",
                version: h.format,
            });
        }
        let node_id = NodeId::from_hex(&h.node_id)
            .map_err(|_| malformed("header node_id is not 32 bytes of hex"))?;
        let mut ks = [0u8; 16];
        hex::decode_to_slice(&h.keystore_id, &mut ks)
            .map_err(|_| malformed("header keystore_id is not 16 bytes of hex"))?;
        if h.key_ids.len() > MAX_KEYS {
            return Err(malformed(format!("more than {MAX_KEYS} key ids")));
        }
        let key_ids = h
            .key_ids
            .iter()
            .map(|k| {
                KeyId::from_hex(k)
                    .map_err(|_| malformed(format!("key id {k:?} is not 16 bytes of hex")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Absent (no lifecycle operation had run): every share is generation 0.
        let generations = if h.generations.is_empty() {
            vec![0; key_ids.len()]
        } else if h.generations.len() == key_ids.len() {
            h.generations
        } else {
            return Err(malformed("generations and key_ids differ in length"));
        };
        if h.recipients.is_empty() || h.recipients.len() > MAX_RECIPIENTS {
            return Err(malformed(format!(
                "{} recipients (1 to {MAX_RECIPIENTS} allowed)",
                h.recipients.len()
            )));
        }
        let recipients = h
            .recipients
            .iter()
            .map(|r| {
                let mut fp = [0u8; 32];
                hex::decode_to_slice(r, &mut fp)
                    .map_err(|_| malformed("recipient fingerprint is not 32 bytes of hex"))?;
                Ok(fp)
            })
            .collect::<Result<Vec<_>, BackupError>>()?;
        Ok(Self {
            node_id,
            keystore_id: KeystoreId(ks),
            created_at_ms: h.created_at_ms,
            roster_epoch: h.roster_epoch,
            key_ids,
            generations,
            recipients,
        })
    }
}

/// One recipient's key wrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// The recovery key's fingerprint.
    pub fingerprint: [u8; 32],
    /// The hybrid KEM encapsulation to that key.
    pub encapsulation: Encapsulation,
    /// The data key sealed under the encapsulated key-encryption key.
    pub wrapped_key: [u8; WRAPPED_KEY_LEN],
}

/// A backup file, decoded but not decrypted.
#[derive(Debug, Clone)]
pub struct BackupFile {
    /// The parsed header.
    pub header: BackupHeader,
    /// SHA-256(magic ‖ header_len ‖ header bytes).
    pub header_hash: [u8; 32],
    /// Key wraps, one per recipient, in header order.
    pub stanzas: Vec<Stanza>,
    payload_nonce: [u8; NONCE_LEN],
    payload: Vec<u8>,
}

fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], BackupError> {
    if bytes.len() < n {
        return Err(malformed(format!("truncated in {what}")));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn take_u32(bytes: &mut &[u8], what: &str) -> Result<usize, BackupError> {
    let b = take(bytes, 4, what)?;
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    usize::try_from(v).map_err(|_| malformed(format!("{what} does not fit")))
}

impl BackupFile {
    /// Decodes a backup file's structure. Every length is checked against its limit
    /// before anything is allocated; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, BackupError> {
        let mut rest = bytes;
        if take(&mut rest, MAGIC.len(), "magic").ok() != Some(&MAGIC[..]) {
            return Err(malformed("not a quorate backup (bad magic)"));
        }
        let header_len = take_u32(&mut rest, "header length")?;
        if header_len > MAX_HEADER_LEN {
            return Err(malformed(format!(
                "header of {header_len} bytes exceeds {MAX_HEADER_LEN}"
            )));
        }
        let header_bytes = take(&mut rest, header_len, "header")?;
        let header_hash: [u8; 32] = Sha256::digest(&bytes[..MAGIC.len() + 4 + header_len]).into();
        let header = BackupHeader::from_json(header_bytes)?;
        let mut stanzas = Vec::with_capacity(header.recipients.len());
        for (i, fp) in header.recipients.iter().enumerate() {
            let s = take(&mut rest, STANZA_LEN, "recipient stanzas")?;
            let fingerprint: [u8; 32] = s[..32]
                .try_into()
                .map_err(|_| BackupError::Internal("slice length"))?;
            if fingerprint != *fp {
                return Err(malformed(format!(
                    "stanza {i} names recipient {} but the header lists {}",
                    hex::encode(fingerprint),
                    hex::encode(fp)
                )));
            }
            let encapsulation = Encapsulation::from_bytes(&s[32..32 + ENCAPSULATION_LEN])?;
            let wrapped_key = s[32 + ENCAPSULATION_LEN..]
                .try_into()
                .map_err(|_| BackupError::Internal("slice length"))?;
            stanzas.push(Stanza {
                fingerprint,
                encapsulation,
                wrapped_key,
            });
        }
        let payload_nonce = take(&mut rest, NONCE_LEN, "payload nonce")?
            .try_into()
            .map_err(|_| BackupError::Internal("slice length"))?;
        let payload_len = take_u32(&mut rest, "payload length")?;
        if !(TAG_LEN..=MAX_PAYLOAD_LEN).contains(&payload_len) {
            return Err(malformed(format!(
                "payload of {payload_len} bytes (at most {MAX_PAYLOAD_LEN})"
            )));
        }
        let payload = take(&mut rest, payload_len, "payload")?.to_vec();
        if !rest.is_empty() {
            return Err(malformed(format!("{} bytes after the payload", rest.len())));
        }
        Ok(Self {
            header,
            header_hash,
            stanzas,
            payload_nonce,
            payload,
        })
    }

    /// Decrypts the payload with `secret`: finds its stanza, decapsulates, unwraps the
    /// data key and authenticates the payload against the header.
    ///
    /// # Security
    /// Returns the secret payload plaintext in a zeroizing buffer.
    pub(crate) fn open(
        &self,
        secret: &RecoverySecretKey,
    ) -> Result<Zeroizing<Vec<u8>>, BackupError> {
        let fingerprint = secret.public().fingerprint();
        let stanza = self
            .stanzas
            .iter()
            .find(|s| s.fingerprint == fingerprint)
            .ok_or_else(|| BackupError::NotARecipient {
                fingerprint: hex::encode(fingerprint),
                recipients: self.header.recipients.iter().map(hex::encode).collect(),
            })?;
        let kek = hybrid::decapsulate(secret, &stanza.encapsulation)?;
        let mut data_key = Zeroizing::new(stanza.wrapped_key.to_vec());
        ChaCha20Poly1305::new((&*kek).into())
            .decrypt_in_place(
                Nonce::from_slice(&[0u8; NONCE_LEN]),
                &wrap_aad(&self.header_hash, &fingerprint),
                &mut *data_key,
            )
            .map_err(|_| BackupError::WrapDoesNotOpen {
                fingerprint: hex::encode(fingerprint),
            })?;
        let mut plain = Zeroizing::new(self.payload.clone());
        ChaCha20Poly1305::new_from_slice(&data_key)
            .map_err(|_| BackupError::Internal("data key length"))?
            .decrypt_in_place(
                Nonce::from_slice(&self.payload_nonce),
                &payload_aad(&self.header_hash),
                &mut *plain,
            )
            .map_err(|_| BackupError::PayloadCorrupt)?;
        Ok(plain)
    }
}

fn wrap_aad(header_hash: &[u8; 32], fingerprint: &[u8; 32]) -> Vec<u8> {
    [WRAP_AAD_DOMAIN, header_hash, fingerprint].concat()
}

fn payload_aad(header_hash: &[u8; 32]) -> Vec<u8> {
    [PAYLOAD_AAD_DOMAIN, header_hash].concat()
}

/// Encrypts `payload` (from [`encode_payload`]) to every recipient under `header`
/// (whose `recipients` are replaced by the recipients' fingerprints) and returns the
/// file's bytes.
///
/// # Security
/// A fresh random data key encrypts the payload once and is wrapped to each
/// recipient under a fresh hybrid-KEM key (so the all-zero wrap nonce is never
/// reused under one key); the data key and every key-encryption key are zeroized.
/// `rng` must be cryptographically secure.
pub(crate) fn seal(
    header: &mut BackupHeader,
    mut payload: Zeroizing<Vec<u8>>,
    recipients: &[RecoveryPublicKey],
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, BackupError> {
    if recipients.is_empty() {
        return Err(BackupError::NoRecipients);
    }
    if recipients.len() > MAX_RECIPIENTS {
        return Err(BackupError::TooLarge {
            what: "recipient list",
            len: recipients.len() as u64,
            max: MAX_RECIPIENTS as u64,
        });
    }
    header.recipients = recipients
        .iter()
        .map(RecoveryPublicKey::fingerprint)
        .collect();
    for (i, fp) in header.recipients.iter().enumerate() {
        if header.recipients[..i].contains(fp) {
            return Err(BackupError::DuplicateRecipient {
                fingerprint: hex::encode(fp),
            });
        }
    }
    if payload.len() + TAG_LEN > MAX_PAYLOAD_LEN {
        return Err(BackupError::TooLarge {
            what: "backup payload",
            len: payload.len() as u64,
            max: (MAX_PAYLOAD_LEN - TAG_LEN) as u64,
        });
    }
    let header_json = header.to_json();
    let header_len = u32::try_from(header_json.len())
        .ok()
        .filter(|l| *l as usize <= MAX_HEADER_LEN)
        .ok_or(BackupError::TooLarge {
            what: "backup header",
            len: header_json.len() as u64,
            max: MAX_HEADER_LEN as u64,
        })?;
    let mut out = Vec::with_capacity(
        8 + 4
            + header_json.len()
            + recipients.len() * STANZA_LEN
            + NONCE_LEN
            + 4
            + payload.len()
            + TAG_LEN,
    );
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(header_json.as_bytes());
    let header_hash: [u8; 32] = Sha256::digest(&out).into();

    let mut data_key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(data_key.as_mut());
    for (recipient, fp) in recipients.iter().zip(&header.recipients) {
        let (enc, kek) = hybrid::encapsulate(recipient, rng)?;
        let mut wrapped = Zeroizing::new(Vec::with_capacity(WRAPPED_KEY_LEN));
        wrapped.extend_from_slice(data_key.as_ref());
        ChaCha20Poly1305::new((&*kek).into())
            .encrypt_in_place(
                Nonce::from_slice(&[0u8; NONCE_LEN]),
                &wrap_aad(&header_hash, fp),
                &mut *wrapped,
            )
            .map_err(|_| BackupError::Internal("key wrap failed"))?;
        out.extend_from_slice(fp);
        out.extend_from_slice(&enc.to_bytes());
        out.extend_from_slice(&wrapped);
    }
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    ChaCha20Poly1305::new((&*data_key).into())
        .encrypt_in_place(
            Nonce::from_slice(&nonce),
            &payload_aad(&header_hash),
            &mut *payload,
        )
        .map_err(|_| BackupError::Internal("payload encryption failed"))?;
    out.extend_from_slice(&nonce);
    let len = u32::try_from(payload.len()).map_err(|_| BackupError::Internal("payload length"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// A key record as written (borrowing the stored key).
#[derive(Serialize)]
struct KeyRecordRef<'a> {
    share: &'a KeyShare,
    created_at_ms: u64,
    allowed_segments: &'a [String],
}

/// A key record as read. Same postcard encoding as [`KeyRecordRef`].
#[derive(Deserialize)]
struct KeyRecord {
    share: KeyShare,
    created_at_ms: u64,
    allowed_segments: Vec<String>,
}

fn record_of(key: &StoredKey) -> KeyRecordRef<'_> {
    KeyRecordRef {
        share: &key.share,
        created_at_ms: key.created_at_ms,
        allowed_segments: &key.allowed_segments,
    }
}

/// The one place a backup's key record becomes a keystore record.
fn stored_of(record: KeyRecord) -> StoredKey {
    StoredKey {
        share: record.share,
        created_at_ms: record.created_at_ms,
        allowed_segments: record.allowed_segments,
    }
}

/// The payload plaintext: `0x01 ‖ identity (64) ‖ key count (u32 BE) ‖ per key:
/// record length (u32 BE) ‖ postcard { share, created_at_ms, allowed_segments }`.
///
/// # Security
/// Secret (the identity and every signing share), in one pre-sized zeroizing
/// buffer so encoding leaves no stray copies.
pub(crate) fn encode_payload(
    identity: &NodeIdentity,
    keys: &[StoredKey],
) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    if keys.len() > MAX_KEYS {
        return Err(BackupError::TooLarge {
            what: "key count",
            len: keys.len() as u64,
            max: MAX_KEYS as u64,
        });
    }
    let mut sizes = Vec::with_capacity(keys.len());
    for k in keys {
        let len = postcard::experimental::serialized_size(&record_of(k))
            .map_err(|_| BackupError::Internal("key does not encode"))?;
        if len > MAX_KEY_RECORD {
            return Err(BackupError::TooLarge {
                what: "key record",
                len: len as u64,
                max: MAX_KEY_RECORD as u64,
            });
        }
        sizes.push(len);
    }
    let total = 1 + IDENTITY_LEN + 4 + sizes.iter().map(|l| 4 + l).sum::<usize>();
    let mut buf = Vec::with_capacity(total + TAG_LEN);
    buf.push(PAYLOAD_VERSION);
    buf.extend_from_slice(identity.to_secret_bytes().as_ref());
    buf.extend_from_slice(&(keys.len() as u32).to_be_bytes());
    for (k, len) in keys.iter().zip(sizes) {
        buf.extend_from_slice(&(len as u32).to_be_bytes());
        buf = postcard::to_extend(&record_of(k), buf)
            .map_err(|_| BackupError::Internal("key does not encode"))?;
    }
    if buf.len() != total {
        return Err(BackupError::Internal("payload size"));
    }
    Ok(Zeroizing::new(buf))
}

/// Decodes [`encode_payload`]'s output.
///
/// # Security
/// Returns the identity and the shares (both zeroize on drop).
pub(crate) fn decode_payload(plain: &[u8]) -> Result<(NodeIdentity, Vec<StoredKey>), BackupError> {
    let bad = |r: &str| BackupError::Inconsistent(format!("payload: {r}"));
    let mut rest = plain;
    let version = take(&mut rest, 1, "payload version").map_err(|_| bad("empty"))?[0];
    if version != PAYLOAD_VERSION {
        return Err(BackupError::UnsupportedVersion {
            what: "backup payload",
            version: u32::from(version),
        });
    }
    let mut id = Zeroizing::new([0u8; IDENTITY_LEN]);
    id.copy_from_slice(
        take(&mut rest, IDENTITY_LEN, "identity").map_err(|_| bad("truncated identity"))?,
    );
    let identity = NodeIdentity::from_secret_bytes(&id);
    let count = take_u32(&mut rest, "key count").map_err(|_| bad("truncated key count"))?;
    if count > MAX_KEYS {
        return Err(bad(&format!("{count} keys (at most {MAX_KEYS})")));
    }
    let mut keys = Vec::with_capacity(count);
    for i in 0..count {
        let len =
            take_u32(&mut rest, "key record length").map_err(|_| bad("truncated key record"))?;
        if len > MAX_KEY_RECORD {
            return Err(bad(&format!("key record {i} of {len} bytes")));
        }
        let rec = take(&mut rest, len, "key record").map_err(|_| bad("truncated key record"))?;
        let (record, extra): (KeyRecord, _) = postcard::take_from_bytes(rec)
            .map_err(|_| bad(&format!("key record {i} does not decode")))?;
        if !extra.is_empty() {
            return Err(bad(&format!("key record {i} has trailing bytes")));
        }
        keys.push(stored_of(record));
    }
    if !rest.is_empty() {
        return Err(bad("bytes after the last key record"));
    }
    Ok((identity, keys))
}
