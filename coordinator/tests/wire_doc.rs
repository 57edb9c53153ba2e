//! The byte layout the OpenAPI document and README give integrators matches what the
//! coordinator and nodes decode: a request encoded by hand from the documented rules
//! equals `SignedRequest::encode()`, and its documented hash is what the client signs.

use ed25519_dalek::{Signer as _, SigningKey};
use quorate_coordinator::{
    client::RequestBuilder,
    protocol::{
        psbt::BitcoinNetwork,
        request::{RequestBody, SignedRequest},
        KeyId,
    },
};
use sha2::{Digest, Sha256};

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

#[test]
fn hand_encoding_from_the_documentation_matches() {
    let client = SigningKey::from_bytes(&[7; 32]);
    let psbt = RequestBuilder::new(KeyId([9; 16]))
        .psbt(
            b"psbt\xffnot-parsed-by-encoding".to_vec(),
            BitcoinNetwork::Regtest,
            vec![0, 300],
        )
        .purpose("BTC", 0, "", "");
    for (tweak, body) in [(None, None), (Some([3u8; 32]), None), (None, Some(psbt))] {
        let mut b = RequestBuilder::new(KeyId([9; 16]))
            .messages([vec![1u8; 32], b"second".to_vec()])
            .purpose("BTC", 50_000_000, "bc1qexample", "payout 42");
        if let Some(t) = tweak {
            b = b.tweak(t);
        }
        let signed = body.unwrap_or(b).sign(&client);
        let r = &signed.request;

        let mut enc = Vec::new();
        varint(u64::from(r.version), &mut enc);
        assert_eq!(r.version, 2);
        enc.extend_from_slice(&r.client);
        enc.extend_from_slice(&r.key_id.0);
        match &r.body {
            RequestBody::Raw { messages, tweak } => {
                enc.push(0); // body variant: raw
                varint(messages.len() as u64, &mut enc);
                for m in messages {
                    bytes(m, &mut enc);
                }
                match tweak {
                    None => enc.push(0),
                    Some(t) => {
                        enc.push(1);
                        enc.extend_from_slice(t);
                    }
                }
            }
            RequestBody::BitcoinPsbt(p) => {
                enc.push(1); // body variant: bitcoin_psbt
                bytes(&p.psbt, &mut enc);
                enc.push(3); // network: regtest
                varint(p.inputs.len() as u64, &mut enc);
                for i in &p.inputs {
                    varint(u64::from(*i), &mut enc);
                }
            }
        }
        bytes(r.purpose.asset.as_bytes(), &mut enc);
        varint(r.purpose.amount, &mut enc);
        bytes(r.purpose.destination.as_bytes(), &mut enc);
        bytes(r.purpose.memo.as_bytes(), &mut enc);
        varint(r.expires_at_ms, &mut enc);
        enc.extend_from_slice(&r.nonce);

        // The documented hash is what the client signs.
        let mut h = Sha256::new();
        h.update(b"quorate/request/v1\0");
        h.update(&enc);
        let hash: [u8; 32] = h.finalize().into();
        assert_eq!(hash, r.hash());
        let sig = client.sign(&hash);
        assert_eq!(sig, signed.signature);

        // SignedRequest = request ‖ 64-byte signature ‖ approvals (count + entries).
        let mut full = enc.clone();
        full.extend_from_slice(&sig.to_bytes());
        varint(0, &mut full);
        assert_eq!(full, signed.encode());
        let decoded = SignedRequest::decode(&full).expect("decodes");
        decoded.verify_client().expect("verifies");

        // With one approval.
        let approver = SigningKey::from_bytes(&[8; 32]);
        let mut approved = signed.clone();
        approved.approve(&approver);
        let mut msg = b"quorate/approval/v1\0".to_vec();
        msg.extend_from_slice(&hash);
        let mut full = enc.clone();
        full.extend_from_slice(&sig.to_bytes());
        varint(1, &mut full);
        full.extend_from_slice(&approver.verifying_key().to_bytes());
        full.extend_from_slice(&approver.sign(&msg).to_bytes());
        assert_eq!(full, approved.encode());
    }
}
