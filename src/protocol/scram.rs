//! The client side of SCRAM (RFC 5802, RFC 7677) as Kafka speaks it for SCRAM-SHA-256 and
//! SCRAM-SHA-512: no channel binding (`n,,`), user names escaped (`=2C`, `=3D`), at least
//! 4096 iterations. Sans-IO: [`ScramClient`] turns server messages into client messages and
//! checks the server's signature; the connection carries the bytes in SaslAuthenticate.
//! Errors never contain the password.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::secret::Secret;

/// Kafka's lower bound on SCRAM iterations (`ScramMechanism.minIterations`).
const MIN_ITERATIONS: u32 = 4096;
/// Refuse absurd iteration counts a hostile server could send to burn CPU.
const MAX_ITERATIONS: u32 = 1_000_000;

/// The SCRAM hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    /// The hash of a SASL mechanism name, if it is a SCRAM mechanism kstate supports.
    pub fn of_mechanism(mechanism: &str) -> Option<Self> {
        match mechanism {
            "SCRAM-SHA-256" => Some(ScramHash::Sha256),
            "SCRAM-SHA-512" => Some(ScramHash::Sha512),
            _ => None,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// Why a SCRAM exchange failed on the client side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("the server's SCRAM message is malformed: {0}")]
    Malformed(&'static str),
    #[error("the server answered with a SCRAM error: {0}")]
    Server(String),
    #[error("the server's nonce does not extend ours")]
    NonceMismatch,
    #[error("the server asks for {0} iterations (allowed {MIN_ITERATIONS}..={MAX_ITERATIONS})")]
    Iterations(u32),
    #[error("the server's signature is wrong: it does not know this user's credentials")]
    ServerSignature,
}

/// One SCRAM authentication, from the client-first message to the server's signature.
pub struct ScramClient {
    hash: ScramHash,
    password: Secret,
    nonce: String,
    client_first_bare: String,
    server_signature: Option<Vec<u8>>,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

fn escape_username(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// The `key=value` attributes of a SCRAM message.
fn attribute(message: &str, key: char) -> Option<&str> {
    message.split(',').find_map(|part| {
        let mut chars = part.chars();
        (chars.next() == Some(key) && chars.next() == Some('=')).then(|| &part[2..])
    })
}

impl ScramClient {
    /// Starts an exchange for `username` with a fresh random nonce.
    pub fn new(hash: ScramHash, username: &str, password: Secret) -> Self {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).expect("the OS random source works");
        Self::with_nonce(hash, username, password, B64.encode(raw))
    }

    /// Starts an exchange with a given nonce (tests use the RFC's).
    pub fn with_nonce(hash: ScramHash, username: &str, password: Secret, nonce: String) -> Self {
        let client_first_bare = format!("n={},r={nonce}", escape_username(username));
        ScramClient {
            hash,
            password,
            nonce,
            client_first_bare,
            server_signature: None,
        }
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Answers the server-first message with the client-final message (the proof).
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| ScramError::Malformed("server-first is not UTF-8"))?;
        if let Some(e) = attribute(server_first, 'e') {
            return Err(ScramError::Server(e.to_owned()));
        }
        let nonce =
            attribute(server_first, 'r').ok_or(ScramError::Malformed("server-first lacks r="))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = attribute(server_first, 's')
            .and_then(|s| B64.decode(s).ok())
            .ok_or(ScramError::Malformed("server-first lacks a base64 salt"))?;
        let iterations: u32 = attribute(server_first, 'i')
            .and_then(|i| i.parse().ok())
            .ok_or(ScramError::Malformed(
                "server-first lacks an iteration count",
            ))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let h = self.hash;
        let salted = h.salted_password(self.password.expose().as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        let server_key = h.hmac(&salted, b"Server Key");
        self.server_signature = Some(h.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proves it knows the credentials too.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let server_final = std::str::from_utf8(server_final)
            .map_err(|_| ScramError::Malformed("server-final is not UTF-8"))?;
        if let Some(e) = attribute(server_final, 'e') {
            return Err(ScramError::Server(e.to_owned()));
        }
        let verifier = attribute(server_final, 'v')
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("server-final lacks a base64 v="))?;
        match &self.server_signature {
            Some(expected) if *expected == verifier => Ok(()),
            _ => Err(ScramError::ServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: the SCRAM-SHA-256 exchange for user "user", password "pencil".
    #[test]
    fn rfc_7677_sha256_vector() {
        let mut c = ScramClient::with_nonce(
            ScramHash::Sha256,
            "user",
            Secret::new("pencil"),
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(c.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = c.client_final(server_first).unwrap();
        assert_eq!(
            String::from_utf8(client_final).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert_eq!(
            c.verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::ServerSignature)
        );
    }

    /// A SCRAM-SHA-512 server in a few lines (RFC 5802 §3), checking the client's proof the
    /// way Kafka's `ScramSaslServer` does.
    #[test]
    fn sha512_proof_is_accepted_by_a_server_knowing_the_password() {
        let h = ScramHash::Sha512;
        let (salt, iterations) = (b"pepper-salt".to_vec(), 4096);
        let salted = h.salted_password(b"s3cret", &salt, iterations);
        let stored_key = h.hash(&h.hmac(&salted, b"Client Key"));
        let server_key = h.hmac(&salted, b"Server Key");

        let mut c = ScramClient::new(h, "al,ice=", Secret::new("s3cret"));
        let first = String::from_utf8(c.client_first()).unwrap();
        let bare = first.strip_prefix("n,,").unwrap();
        assert!(bare.starts_with("n=al=2Cice=3D,r="), "{bare}");
        let nonce = format!("{}server", attribute(bare, 'r').unwrap());
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        let client_final =
            String::from_utf8(c.client_final(server_first.as_bytes()).unwrap()).unwrap();
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let auth = format!("{bare},{server_first},{without_proof}");
        let client_key = xor(
            &B64.decode(proof).unwrap(),
            &h.hmac(&stored_key, auth.as_bytes()),
        );
        assert_eq!(h.hash(&client_key), stored_key, "the proof matches");
        let v = B64.encode(h.hmac(&server_key, auth.as_bytes()));
        c.verify_server_final(format!("v={v}").as_bytes()).unwrap();
    }

    #[test]
    fn bad_server_messages_are_named_errors() {
        let mut c = ScramClient::with_nonce(ScramHash::Sha256, "u", Secret::new("p"), "abc".into());
        assert_eq!(
            c.client_final(b"r=xyz1,s=AAAA,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            c.client_final(b"r=abc1,s=AAAA,i=10"),
            Err(ScramError::Iterations(10))
        );
        assert_eq!(
            c.client_final(b"e=unknown-user"),
            Err(ScramError::Server("unknown-user".into()))
        );
        assert!(matches!(
            c.client_final(b"r=abc1,i=4096"),
            Err(ScramError::Malformed(_))
        ));
    }
}
