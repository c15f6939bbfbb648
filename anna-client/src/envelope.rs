//! The value envelope: how [`AnnaClient::get`](crate::AnnaClient::get),
//! [`put`](crate::AnnaClient::put) and [`delete`](crate::AnnaClient::delete)
//! lay out user values inside Anna LWW lattices.
//!
//! Anna reports an LWW lattice whose value is empty as `KEY_DNE`, so a
//! 0-byte user value stored as-is would read back as "missing", and Anna
//! has no delete at all. The envelope fixes both: the `value` bytes of the
//! stored `LWWValue` are
//!
//! ```text
//! +------+------+------+----------------------+
//! | 0xAE | 0x5C | kind |  body                |
//! +------+------+------+----------------------+
//!   magic (2 bytes)     kind = 0x11: live value, body = the user value
//!                       kind = 0x10: tombstone,  body = empty
//! ```
//!
//! - The high nibble of `kind` is the envelope format version (1), the low
//!   nibble the kind of entry. A reader refuses versions it does not know.
//! - An enveloped value is never empty (3 bytes at least), so Anna never
//!   mistakes it for a missing key; a tombstone is an ordinary LWW write
//!   and therefore ordered against puts by its timestamp.
//! - The 2-byte magic keeps values written by other clients (Cloudburst's
//!   serialized values start with a protobuf tag such as `0x08`/`0x0A`/
//!   `0x12`, pickles with `0x80`) from being mistaken for enveloped ones.
//!
//! # Example
//!
//! ```
//! use anna_client::Envelope;
//!
//! let bytes = Envelope::Value(Vec::new()).encode();
//! assert_eq!(bytes, [0xAE, 0x5C, 0x11]);
//! assert_eq!(Envelope::decode(&bytes), Ok(Envelope::Value(Vec::new())));
//! assert_eq!(Envelope::decode(&Envelope::Tombstone.encode()), Ok(Envelope::Tombstone));
//! assert!(Envelope::decode(b"plain bytes").is_err());
//! ```

/// The two magic bytes every envelope starts with.
pub const ENVELOPE_MAGIC: [u8; 2] = [0xAE, 0x5C];
/// Kind byte of a live value, envelope format version 1.
pub const KIND_VALUE_V1: u8 = 0x11;
/// Kind byte of a tombstone (deleted key), envelope format version 1.
pub const KIND_TOMBSTONE_V1: u8 = 0x10;
/// Length of the envelope header (magic + kind).
pub const ENVELOPE_HEADER_LEN: usize = 3;

/// A decoded envelope: a live value or the tombstone of a deleted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A live user value (possibly empty).
    Value(Vec<u8>),
    /// The key was deleted.
    Tombstone,
}

/// Why bytes are not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Shorter than the header or without the magic bytes.
    #[error("missing envelope magic")]
    NotEnveloped,
    /// The magic is there but the kind byte is unknown (a newer format?).
    #[error("unknown envelope kind byte 0x{0:02x}")]
    UnknownKind(u8),
}

impl Envelope {
    /// Serializes the envelope (header followed by the body).
    ///
    /// ```
    /// # use anna_client::Envelope;
    /// assert_eq!(Envelope::Value(b"hi".to_vec()).encode(), [0xAE, 0x5C, 0x11, b'h', b'i']);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        Self::encode_value_ref(match self {
            Envelope::Value(v) => Some(v),
            Envelope::Tombstone => None,
        })
    }

    /// Serializes a live value (`Some`) or a tombstone (`None`) without
    /// taking ownership of the value.
    ///
    /// ```
    /// # use anna_client::Envelope;
    /// assert_eq!(Envelope::encode_value_ref(Some(b"x")), Envelope::Value(b"x".to_vec()).encode());
    /// ```
    pub fn encode_value_ref(value: Option<&[u8]>) -> Vec<u8> {
        let body = value.unwrap_or_default();
        let mut out = Vec::with_capacity(ENVELOPE_HEADER_LEN + body.len());
        out.extend_from_slice(&ENVELOPE_MAGIC);
        out.push(if value.is_some() {
            KIND_VALUE_V1
        } else {
            KIND_TOMBSTONE_V1
        });
        out.extend_from_slice(body);
        out
    }

    /// Parses envelope bytes. A tombstone's body is ignored (liberal in
    /// what we accept).
    ///
    /// ```
    /// # use anna_client::{Envelope, EnvelopeError};
    /// assert_eq!(Envelope::decode(&[0xAE, 0x5C, 0x11, 7]), Ok(Envelope::Value(vec![7])));
    /// assert_eq!(Envelope::decode(&[0xAE, 0x5C, 0x21]), Err(EnvelopeError::UnknownKind(0x21)));
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() < ENVELOPE_HEADER_LEN || bytes[..2] != ENVELOPE_MAGIC {
            return Err(EnvelopeError::NotEnveloped);
        }
        match bytes[2] {
            KIND_VALUE_V1 => Ok(Envelope::Value(bytes[ENVELOPE_HEADER_LEN..].to_vec())),
            KIND_TOMBSTONE_V1 => Ok(Envelope::Tombstone),
            other => Err(EnvelopeError::UnknownKind(other)),
        }
    }

    /// Whether `bytes` start with the envelope magic (a cheap test that
    /// does not validate the kind byte).
    ///
    /// ```
    /// # use anna_client::Envelope;
    /// assert!(Envelope::is_enveloped(&[0xAE, 0x5C, 0x10]));
    /// assert!(!Envelope::is_enveloped(b"\x08\x01"));
    /// ```
    pub fn is_enveloped(bytes: &[u8]) -> bool {
        bytes.len() >= ENVELOPE_HEADER_LEN && bytes[..2] == ENVELOPE_MAGIC
    }

    /// The live value, or `None` for a tombstone.
    pub fn into_value(self) -> Option<Vec<u8>> {
        match self {
            Envelope::Value(v) => Some(v),
            Envelope::Tombstone => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for v in [Vec::new(), vec![0], vec![0xAE, 0x5C, 0x10], vec![1; 1000]] {
            let e = Envelope::Value(v.clone());
            assert_eq!(Envelope::decode(&e.encode()), Ok(e));
        }
        assert_eq!(
            Envelope::decode(&Envelope::Tombstone.encode()),
            Ok(Envelope::Tombstone)
        );
    }

    #[test]
    fn never_empty() {
        assert!(!Envelope::Value(Vec::new()).encode().is_empty());
        assert!(!Envelope::Tombstone.encode().is_empty());
    }

    #[test]
    fn refuses_foreign_bytes() {
        assert_eq!(Envelope::decode(b""), Err(EnvelopeError::NotEnveloped));
        assert_eq!(
            Envelope::decode(&[0xAE, 0x5C]),
            Err(EnvelopeError::NotEnveloped)
        );
        assert_eq!(
            Envelope::decode(b"\x08\x01\x12"),
            Err(EnvelopeError::NotEnveloped)
        );
    }
}
