//! Authenticated encryption of peer traffic with a cluster key.
//!
//! With a key configured, every peer frame is sealed with XChaCha20-Poly1305
//! (RustCrypto's `chacha20poly1305`): `0xA5 || 24-byte random nonce ||
//! ciphertext`. A frame that does not open with the cluster key (a peer
//! without the key, a tampered or plaintext frame) is dropped unanswered.
//! Without a key (`--peer-mode plaintext`, chosen explicitly) frames are
//! plain `PeerEnvelope`s.

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const MAGIC: u8 = 0xA5;
const NONCE_LEN: usize = 24;

/// The cluster's peer key.
#[derive(Clone)]
pub struct PeerKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

impl PeerKey {
    /// A key from 64 hex digits (32 bytes).
    pub fn from_hex(hex: &str) -> Result<PeerKey, String> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a peer key is 64 hex digits (32 bytes)".into());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(PeerKey {
            cipher: XChaCha20Poly1305::new(&key.into()),
        })
    }

    /// A new random key, as 64 hex digits.
    pub fn generate_hex() -> String {
        let key: [u8; 32] = rand::random();
        key.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seals a frame.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(MAGIC);
        out.extend_from_slice(&nonce);
        // Encryption into a Vec cannot fail for in-memory buffers.
        if let Ok(ciphertext) = self.cipher.encrypt(XNonce::from_slice(&nonce), plaintext) {
            out.extend_from_slice(&ciphertext);
        }
        out
    }

    /// Opens a sealed frame; `None` if it was not sealed with this key.
    pub fn open(&self, frame: &[u8]) -> Option<Vec<u8>> {
        if frame.len() < 1 + NONCE_LEN + 16 || frame[0] != MAGIC {
            return None;
        }
        let (nonce, ciphertext) = frame[1..].split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_key_opens_a_frame() {
        let key = PeerKey::from_hex(&PeerKey::generate_hex()).unwrap();
        let other = PeerKey::from_hex(&PeerKey::generate_hex()).unwrap();
        let sealed = key.seal(b"hello");
        assert_eq!(key.open(&sealed).as_deref(), Some(&b"hello"[..]));
        assert_eq!(other.open(&sealed), None);
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open(&tampered), None);
        assert_eq!(key.open(b"plain"), None);
        assert!(PeerKey::from_hex("zz").is_err());
    }
}
