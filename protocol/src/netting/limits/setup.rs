//! Key setup for one run: pairwise keys from X25519 between node sealing keys (no
//! messages), and PRSS set keys chosen by each set's lowest position and sent to
//! the other members under the pairwise keys (step 0).
//!
//! Pairwise key of positions `i < j`: HKDF-SHA256 (see `NodeIdentity::pairwise_key`)
//! with context `"quorate/netting/limits/pair/v1\0" ‖ session`; from it
//! `box key = SHA-256("quorate/netting/limits/box/v1\0" ‖ pair key)` and
//! `mask key = SHA-256("quorate/netting/limits/mask/v1\0" ‖ pair key)`.
//! Set key: 32 bytes the lowest member draws from its cryptographic generator at
//! every start (never derived again: a re-run, even of the same attempt after a
//! restart, never repeats a mask). Box: ChaCha20-Poly1305 under the box key, nonce =
//! mask (u64 LE) ‖ 4 zero bytes, associated data `session ‖ mask (u64 BE) ‖ from
//! (u16 BE) ‖ to (u16 BE)`, plaintext the 32-byte set key.

use chacha20poly1305::{aead::Aead, aead::Payload, ChaCha20Poly1305, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{prss, step::SetKeyBox, Params};
use crate::{error::ProtocolError, identity::NodeIdentity};

fn sub_key(label: &[u8], key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(label);
    h.update(key);
    Zeroizing::new(h.finalize().into())
}

fn aad(params: &Params, mask: u64, from: u16, to: u16) -> Vec<u8> {
    let mut a = params.session.to_vec();
    a.extend_from_slice(&mask.to_be_bytes());
    a.extend_from_slice(&from.to_be_bytes());
    a.extend_from_slice(&to.to_be_bytes());
    a
}

fn nonce(mask: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&mask.to_le_bytes());
    n
}

/// Keys a node holds between step 0 and the king's answer.
pub(crate) struct Pending {
    own_sets: Vec<(u64, Zeroizing<[u8; 32]>)>,
    box_keys: Vec<Option<Zeroizing<[u8; 32]>>>,
    mask_keys: Vec<(usize, Zeroizing<[u8; 32]>)>,
}

/// Derives pairwise keys and this node's set keys; returns the boxes to send.
///
/// # Security
/// Derives secret keys from the node identity; they stay in zeroizing memory.
pub(crate) fn start(
    params: &Params,
    me: usize,
    identity: &NodeIdentity,
    rng: &mut impl rand_core::CryptoRngCore,
) -> Result<(Pending, Vec<SetKeyBox>), ProtocolError> {
    let n = params.n();
    let mut ctx = b"quorate/netting/limits/pair/v1\0".to_vec();
    ctx.extend_from_slice(&params.session);
    let mut box_keys = Vec::with_capacity(n);
    let mut mask_keys = Vec::new();
    for j in 0..n {
        if j == me {
            box_keys.push(None);
            continue;
        }
        let k = identity
            .pairwise_key(&params.seal_keys[j], &ctx)
            .ok_or_else(|| {
                ProtocolError::InvalidParameters(format!(
                    "committee position {j} has a low-order sealing key"
                ))
            })?;
        box_keys.push(Some(sub_key(b"quorate/netting/limits/box/v1\0", &k)));
        mask_keys.push((j, sub_key(b"quorate/netting/limits/mask/v1\0", &k)));
    }
    let mut own_sets = Vec::new();
    let mut boxes = Vec::new();
    for mask in prss::sets(n, params.d()) {
        if mask.trailing_zeros() as usize != me {
            continue;
        }
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        for (j, bk) in box_keys.iter().enumerate() {
            let Some(bk) = bk else { continue };
            if mask & (1 << j) == 0 {
                continue;
            }
            let cipher = ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&bk[..]));
            let ct = cipher
                .encrypt(
                    &nonce(mask).into(),
                    Payload {
                        msg: key.as_ref(),
                        aad: &aad(params, mask, me as u16, j as u16),
                    },
                )
                .map_err(|_| ProtocolError::Crypto("set key encryption failed".into()))?;
            boxes.push(SetKeyBox {
                set: mask,
                from: me as u16,
                to: j as u16,
                ciphertext: ct,
            });
        }
        own_sets.push((mask, key));
    }
    Ok((
        Pending {
            own_sets,
            box_keys,
            mask_keys,
        },
        boxes,
    ))
}

/// Key-confirmation digests `(set, digest)` of the sets a node belongs to.
pub(crate) type KeyDigests = Vec<(u64, [u8; 32])>;

/// `H("quorate/netting/limits/set-key-check/v1\0" ‖ session ‖ u64 set ‖ key)`.
fn key_digest(params: &Params, mask: u64, key: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"quorate/netting/limits/set-key-check/v1\0");
    h.update(params.session);
    h.update(mask.to_be_bytes());
    h.update(key);
    h.finalize().into()
}

/// Opens the set keys other members sent and builds the PRSS state, with the
/// key-confirmation digest of every set containing this node. Every such set must
/// be covered exactly once; a box that does not open aborts (without a name: the
/// coordinator relays the boxes).
pub(crate) fn finish(
    params: &Params,
    me: usize,
    pending: Pending,
    boxes: &[SetKeyBox],
) -> Result<(prss::Prss, KeyDigests), ProtocolError> {
    let n = params.n();
    let fail = |reason: String, culprits: Vec<crate::NodeId>| ProtocolError::LimitCheckAborted {
        step: 0,
        reason,
        culprits,
    };
    let mut keys = pending.own_sets;
    for mask in prss::sets(n, params.d()) {
        let owner = mask.trailing_zeros() as usize;
        if mask & (1 << me) == 0 || owner == me {
            continue;
        }
        let found: Vec<&SetKeyBox> = boxes
            .iter()
            .filter(|b| b.set == mask && usize::from(b.from) == owner && usize::from(b.to) == me)
            .collect();
        let [b] = found.as_slice() else {
            return Err(fail(
                format!(
                    "expected one key box for set {mask:#x} from position {owner}, got {}",
                    found.len()
                ),
                Vec::new(),
            ));
        };
        let bk = pending.box_keys[owner]
            .as_ref()
            .ok_or(ProtocolError::InvalidState("no box key"))?;
        let cipher = ChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&bk[..]));
        let plain = cipher
            .decrypt(
                &nonce(mask).into(),
                Payload {
                    msg: &b.ciphertext,
                    aad: &aad(params, mask, owner as u16, me as u16),
                },
            )
            .ok()
            .filter(|p| p.len() == 32)
            .ok_or_else(|| fail(
                format!(
                    "the key box for set {mask:#x} from position {owner} does not open (as relayed by the coordinator)"
                ),
                Vec::new(),
            ))?;
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&plain);
        keys.push((mask, k));
    }
    keys.sort_by_key(|(m, _)| *m);
    let digests = keys
        .iter()
        .map(|(m, k)| (*m, key_digest(params, *m, k)))
        .collect();
    Ok((
        prss::Prss::new(&params.xs(), me, keys, pending.mask_keys),
        digests,
    ))
}
