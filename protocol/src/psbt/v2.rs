//! BIP370 (PSBT version 2) read as BIP174 (version 0), and back.
//!
//! A version 2 PSBT carries the transaction in per-map fields instead of a global
//! unsigned transaction. [`to_v0`] rebuilds that transaction and re-encodes the
//! maps as version 0 (dropping only the version 2 fields), so rust-bitcoin's
//! hardened BIP174 decoder does the field parsing for both versions.
//! [`add_tap_key_sigs`] then writes signatures into the *original* version 2 maps,
//! leaving every other field as it was. Only the map framing is parsed here:
//! `magic ‖ global map ‖ input maps ‖ output maps`, each map a sequence of
//! `compact_size(key len) ‖ key ‖ compact_size(value len) ‖ value` ended by `0x00`.

use bitcoin::{
    absolute::LockTime,
    consensus::{deserialize, serialize},
    transaction::Version,
    OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};

use super::invalid;
use crate::error::ProtocolError;

const MAGIC: &[u8] = b"psbt\xff";
/// Global fields of version 2 (BIP370) that version 0 does not have.
const G_TX_VERSION: u8 = 0x02;
const G_FALLBACK_LOCKTIME: u8 = 0x03;
const G_INPUT_COUNT: u8 = 0x04;
const G_OUTPUT_COUNT: u8 = 0x05;
const G_TX_MODIFIABLE: u8 = 0x06;
const G_VERSION: u8 = 0xfb;
const G_UNSIGNED_TX: u8 = 0x00;
const I_PREVIOUS_TXID: u8 = 0x0e;
const I_OUTPUT_INDEX: u8 = 0x0f;
const I_SEQUENCE: u8 = 0x10;
const I_REQUIRED_TIME_LOCKTIME: u8 = 0x11;
const I_REQUIRED_HEIGHT_LOCKTIME: u8 = 0x12;
const I_TAP_KEY_SIG: u8 = 0x13;
const O_AMOUNT: u8 = 0x03;
const O_SCRIPT: u8 = 0x04;

type Pair = (Vec<u8>, Vec<u8>);
type Map = Vec<Pair>;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| invalid("body.psbt", "truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn compact_size(&mut self) -> Result<usize, ProtocolError> {
        let first = self.take(1)?[0];
        let n = match first {
            0xfd => u64::from(u16::from_le_bytes([self.take(1)?[0], self.take(1)?[0]])),
            0xfe => {
                let b = self.take(4)?;
                u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            0xff => {
                let b = self.take(8)?;
                u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
            n => u64::from(n),
        };
        usize::try_from(n).map_err(|_| invalid("body.psbt", "length overflows"))
    }

    fn map(&mut self) -> Result<Map, ProtocolError> {
        let mut map = Map::new();
        loop {
            let key_len = self.compact_size()?;
            if key_len == 0 {
                return Ok(map);
            }
            let key = self.take(key_len)?.to_vec();
            let value_len = self.compact_size()?;
            let value = self.take(value_len)?.to_vec();
            map.push((key, value));
        }
    }
}

fn write_compact_size(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
    }
}

fn write_map(out: &mut Vec<u8>, map: &Map) {
    for (k, v) in map {
        write_compact_size(out, k.len());
        out.extend_from_slice(k);
        write_compact_size(out, v.len());
        out.extend_from_slice(v);
    }
    out.push(0x00);
}

/// A version 2 PSBT's maps, as read.
pub(super) struct V2Maps {
    global: Map,
    inputs: Vec<Map>,
    outputs: Vec<Map>,
}

fn field(map: &Map, ty: u8) -> Option<&[u8]> {
    map.iter()
        .find(|(k, _)| k.len() == 1 && k[0] == ty)
        .map(|(_, v)| v.as_slice())
}

fn fixed<const N: usize>(v: &[u8], name: &str) -> Result<[u8; N], ProtocolError> {
    v.try_into().map_err(|_| {
        invalid(
            format!("psbt.{name}"),
            format!("{} bytes; {N} expected", v.len()),
        )
    })
}

fn count(map: &Map, ty: u8, name: &str, remaining: usize) -> Result<usize, ProtocolError> {
    let v = field(map, ty).ok_or_else(|| invalid(format!("psbt.{name}"), "missing"))?;
    let n = Reader { bytes: v, at: 0 }.compact_size()?;
    // Every map is at least its terminator byte.
    if n > remaining {
        return Err(invalid(
            format!("psbt.{name}"),
            format!("{n} maps in {remaining} bytes"),
        ));
    }
    Ok(n)
}

/// Whether `bytes` is a PSBT whose global map says version 2.
pub(super) fn is_v2(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        return false;
    };
    let mut r = Reader { bytes: rest, at: 0 };
    r.map()
        .ok()
        .and_then(|g| field(&g, G_VERSION).map(|v| v == [2, 0, 0, 0]))
        .unwrap_or(false)
}

/// Reads the maps of a version 2 PSBT.
pub(super) fn read(bytes: &[u8]) -> Result<V2Maps, ProtocolError> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| invalid("body.psbt", "no PSBT magic"))?;
    let mut r = Reader { bytes: rest, at: 0 };
    let global = r.map()?;
    if field(&global, G_UNSIGNED_TX).is_some() {
        return Err(invalid(
            "body.psbt",
            "version 2 with a global unsigned transaction",
        ));
    }
    let n_in = count(&global, G_INPUT_COUNT, "global.input_count", rest.len())?;
    let n_out = count(&global, G_OUTPUT_COUNT, "global.output_count", rest.len())?;
    let inputs = (0..n_in).map(|_| r.map()).collect::<Result<Vec<_>, _>>()?;
    let outputs = (0..n_out).map(|_| r.map()).collect::<Result<Vec<_>, _>>()?;
    if r.at != rest.len() {
        return Err(invalid("body.psbt", "trailing bytes after the output maps"));
    }
    Ok(V2Maps {
        global,
        inputs,
        outputs,
    })
}

fn lock_time(m: &V2Maps) -> Result<LockTime, ProtocolError> {
    let mut heights = Vec::new();
    let mut times = Vec::new();
    let mut height_only = false;
    let mut time_only = false;
    for (i, input) in m.inputs.iter().enumerate() {
        let h = field(input, I_REQUIRED_HEIGHT_LOCKTIME)
            .map(|v| fixed::<4>(v, &format!("input[{i}].required_height_locktime")))
            .transpose()?
            .map(u32::from_le_bytes);
        let t = field(input, I_REQUIRED_TIME_LOCKTIME)
            .map(|v| fixed::<4>(v, &format!("input[{i}].required_time_locktime")))
            .transpose()?
            .map(u32::from_le_bytes);
        height_only |= h.is_some() && t.is_none();
        time_only |= t.is_some() && h.is_none();
        heights.extend(h);
        times.extend(t);
    }
    let value = if height_only && time_only {
        return Err(invalid(
            "psbt.input.required_locktime",
            "inputs require both a height and a time lock; no lock time satisfies them",
        ));
    } else if !heights.is_empty() && !time_only {
        heights.iter().copied().max().unwrap_or(0)
    } else if !times.is_empty() {
        times.iter().copied().max().unwrap_or(0)
    } else {
        field(&m.global, G_FALLBACK_LOCKTIME)
            .map(|v| fixed::<4>(v, "global.fallback_locktime"))
            .transpose()?
            .map_or(0, u32::from_le_bytes)
    };
    Ok(LockTime::from_consensus(value))
}

/// The unsigned transaction a version 2 PSBT describes.
fn transaction(m: &V2Maps) -> Result<Transaction, ProtocolError> {
    let version = field(&m.global, G_TX_VERSION)
        .ok_or_else(|| invalid("psbt.global.tx_version", "missing"))
        .and_then(|v| fixed::<4>(v, "global.tx_version"))?;
    let mut input = Vec::with_capacity(m.inputs.len());
    for (i, map) in m.inputs.iter().enumerate() {
        let txid = field(map, I_PREVIOUS_TXID)
            .ok_or_else(|| invalid(format!("psbt.input[{i}].previous_txid"), "missing"))
            .and_then(|v| fixed::<32>(v, &format!("input[{i}].previous_txid")))?;
        let vout = field(map, I_OUTPUT_INDEX)
            .ok_or_else(|| invalid(format!("psbt.input[{i}].output_index"), "missing"))
            .and_then(|v| fixed::<4>(v, &format!("input[{i}].output_index")))?;
        let sequence = field(map, I_SEQUENCE)
            .map(|v| fixed::<4>(v, &format!("input[{i}].sequence")))
            .transpose()?
            .map_or(Sequence::MAX, |b| Sequence(u32::from_le_bytes(b)));
        input.push(TxIn {
            previous_output: OutPoint {
                txid: deserialize::<Txid>(&txid).map_err(|e| invalid("body.psbt", e))?,
                vout: u32::from_le_bytes(vout),
            },
            script_sig: ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        });
    }
    let mut output = Vec::with_capacity(m.outputs.len());
    for (i, map) in m.outputs.iter().enumerate() {
        let amount = field(map, O_AMOUNT)
            .ok_or_else(|| invalid(format!("psbt.output[{i}].amount"), "missing"))
            .and_then(|v| fixed::<8>(v, &format!("output[{i}].amount")))?;
        let script = field(map, O_SCRIPT)
            .ok_or_else(|| invalid(format!("psbt.output[{i}].script"), "missing"))?;
        output.push(TxOut {
            value: bitcoin::Amount::from_sat(u64::from_le_bytes(amount)),
            script_pubkey: ScriptBuf::from_bytes(script.to_vec()),
        });
    }
    Ok(Transaction {
        version: Version(i32::from_le_bytes(version)),
        lock_time: lock_time(m)?,
        input,
        output,
    })
}

fn without(map: &Map, drop: &[u8]) -> Map {
    map.iter()
        .filter(|(k, _)| !(k.len() == 1 && drop.contains(&k[0])))
        .cloned()
        .collect()
}

/// Re-encodes version 2 maps as a version 0 PSBT (same fields, the transaction
/// in the global map).
pub(super) fn to_v0(m: &V2Maps) -> Result<Vec<u8>, ProtocolError> {
    let tx = transaction(m)?;
    let mut global = vec![(vec![G_UNSIGNED_TX], serialize(&tx))];
    global.extend(without(
        &m.global,
        &[
            G_TX_VERSION,
            G_FALLBACK_LOCKTIME,
            G_INPUT_COUNT,
            G_OUTPUT_COUNT,
            G_TX_MODIFIABLE,
            G_VERSION,
        ],
    ));
    let mut out = MAGIC.to_vec();
    write_map(&mut out, &global);
    for map in &m.inputs {
        let drop = [
            I_PREVIOUS_TXID,
            I_OUTPUT_INDEX,
            I_SEQUENCE,
            I_REQUIRED_TIME_LOCKTIME,
            I_REQUIRED_HEIGHT_LOCKTIME,
        ];
        write_map(&mut out, &without(map, &drop));
    }
    for map in &m.outputs {
        write_map(&mut out, &without(map, &[O_AMOUNT, O_SCRIPT]));
    }
    Ok(out)
}

/// The original version 2 PSBT with `PSBT_IN_TAP_KEY_SIG` set on the given inputs.
pub(super) fn add_tap_key_sigs(mut m: V2Maps, sigs: &[(usize, Vec<u8>)]) -> Vec<u8> {
    for (i, sig) in sigs {
        if let Some(map) = m.inputs.get_mut(*i) {
            map.retain(|(k, _)| !(k.len() == 1 && k[0] == I_TAP_KEY_SIG));
            map.push((vec![I_TAP_KEY_SIG], sig.clone()));
        }
    }
    let mut out = MAGIC.to_vec();
    write_map(&mut out, &m.global);
    for map in m.inputs.iter().chain(&m.outputs) {
        write_map(&mut out, map);
    }
    out
}
