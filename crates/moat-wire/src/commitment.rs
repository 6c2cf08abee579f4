//! The server's commitment to a model's weights, and its opening to an auditor.
//!
//! **What is computed.** When a server loads a model version it draws a fresh 16-byte nonce
//! from the OS and publishes `c = SHA-256("moat-commit/1" ‖ nonce ‖ model file)` as 64 hex
//! digits: in every plaintext answer (`parameters.model_commitment`), in the secure-session
//! admission, and in the two-party protocol's hello (`moat-2pc/3`, field `model_commitment`).
//! A client running Fusion's mix-and-check sees one commitment per batch; a change inside a
//! batch is evidence that the server switched models.
//!
//! **What each party learns.** Before the opening, nothing about the weights: the nonce hides
//! which of a few candidate files was committed (without it, hashing each public candidate
//! would tell). The opening ([`CommitmentOpening`], served to an operator-authorised auditor)
//! hands over the nonce; the auditor, who obtains the model file out of band (escrow,
//! regulator), recomputes `c` ([`CommitmentOpening::verify`]). SHA-256's collision resistance
//! binds the server to one file per commitment. **Bytes:** 64 hex characters per answer; the
//! opening is one small JSON object; no extra rounds in the protocol.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Domain separator of the commitment hash.
pub const DOMAIN: &[u8] = b"moat-commit/1";

/// Bytes of the commitment nonce.
pub const NONCE_BYTES: usize = 16;

/// The commitment (64 lowercase hex digits) to `model_file` under `nonce`.
pub fn commit(nonce: &[u8; NONCE_BYTES], model_file: &[u8]) -> String {
    let digest = Sha256::new().chain_update(DOMAIN).chain_update(nonce).chain_update(model_file).finalize();
    to_hex(&digest)
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of an even-length hex string, or `None`.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// Why an opening does not open the commitment to the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpeningError {
    /// The nonce is not 16 bytes of hex.
    #[error("the opening's nonce is not {NONCE_BYTES} bytes of hex")]
    MalformedNonce,
    /// The opening is of another commitment than the one the client saw.
    #[error("the server opened commitment {opened}, the answers carried {seen}")]
    OtherCommitment {
        /// The commitment the client saw (e.g. in a Fusion batch).
        seen: String,
        /// The commitment opened.
        opened: String,
    },
    /// The file hashes to another commitment: it is not the committed model.
    #[error(
        "the file does not open the commitment: committed {committed}, the file with this nonce gives {recomputed}"
    )]
    Mismatch {
        /// What the server committed to.
        committed: String,
        /// What the file gives.
        recomputed: String,
    },
}

/// `GET /v2/models/{model}/versions/{version}/commitment/opening` (admin): the nonce of a
/// loaded version's commitment, for an auditor to check a model file against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitmentOpening {
    /// Model name.
    pub model_name: String,
    /// Model version.
    pub model_version: String,
    /// The commitment the server published for this version.
    pub commitment: String,
    /// The nonce, hex.
    pub nonce: String,
}

impl CommitmentOpening {
    /// Checks that `model_file` under the opening's nonce gives the opened commitment (the
    /// caller compares [`Self::commitment`] with the one it saw, e.g. in a Fusion batch).
    pub fn verify(&self, model_file: &[u8]) -> Result<(), OpeningError> {
        let nonce: [u8; NONCE_BYTES] =
            from_hex(&self.nonce).and_then(|b| b.try_into().ok()).ok_or(OpeningError::MalformedNonce)?;
        let recomputed = commit(&nonce, model_file);
        if recomputed.eq_ignore_ascii_case(&self.commitment) {
            Ok(())
        } else {
            Err(OpeningError::Mismatch { committed: self.commitment.clone(), recomputed })
        }
    }

    /// [`Self::verify`], after checking that the opening is of `seen`, the commitment the
    /// client's answers carried: the auditor's whole check of a batch's model.
    pub fn verify_seen(&self, seen: &str, model_file: &[u8]) -> Result<(), OpeningError> {
        if !seen.eq_ignore_ascii_case(&self.commitment) {
            return Err(OpeningError::OtherCommitment { seen: seen.to_string(), opened: self.commitment.clone() });
        }
        self.verify(model_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opening_verifies_its_file_and_no_other() {
        let nonce = [7u8; NONCE_BYTES];
        let file = b"weights of the committed model".to_vec();
        let opening = CommitmentOpening {
            model_name: "m".into(),
            model_version: "1".into(),
            commitment: commit(&nonce, &file),
            nonce: to_hex(&nonce),
        };
        assert_eq!(opening.commitment.len(), 64);
        assert_eq!(opening.verify(&file), Ok(()));
        assert_eq!(opening.verify_seen(&opening.commitment.to_uppercase(), &file), Ok(()));
        assert!(matches!(opening.verify_seen(&"0".repeat(64), &file), Err(OpeningError::OtherCommitment { .. })));
        let mut other = file.clone();
        other[3] ^= 1;
        assert!(matches!(opening.verify(&other), Err(OpeningError::Mismatch { .. })));
        // Another nonce gives another commitment: the nonce is bound too.
        assert_ne!(commit(&[8u8; NONCE_BYTES], &file), opening.commitment);
        let bad = CommitmentOpening { nonce: "abc".into(), ..opening.clone() };
        assert_eq!(bad.verify(&file), Err(OpeningError::MalformedNonce));
        assert_eq!(from_hex(&to_hex(&[0, 255, 16])), Some(vec![0, 255, 16]));
        assert_eq!(from_hex("zz"), None);
    }
}
