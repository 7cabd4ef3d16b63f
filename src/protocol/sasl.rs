//! SASL authentication of a [`BrokerConnection`]: SaslHandshake (v1) names the mechanism,
//! then SaslAuthenticate carries PLAIN's one message or SCRAM's two round trips
//! ([`super::scram`]). Returns the session lifetime the broker grants, so the connection can
//! authenticate again before it runs out (KIP-368). A refusal is a
//! [`ProtocolError::Authentication`] with the broker's message; nothing here logs or returns
//! the password.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use tracing::debug;

use super::connection::BrokerConnection;
use super::error::ProtocolError;
use super::scram::{ScramClient, ScramHash};
use super::secret::Secret;

const SASL_HANDSHAKE_KEY: i16 = 17;
const SASL_AUTHENTICATE_KEY: i16 = 36;

/// Authenticates `conn` with its configured mechanism; returns the session lifetime the
/// broker granted (`None` when sessions do not expire).
pub(super) async fn authenticate(
    conn: &mut BrokerConnection,
) -> Result<Option<Duration>, ProtocolError> {
    let sasl = conn.config().sasl.clone();
    let mechanism = sasl.mechanism.unwrap_or_default();
    let username = sasl.username.unwrap_or_default();
    let password = sasl.password.unwrap_or_else(|| Secret::new(""));
    let addr = conn.addr().to_owned();

    // v1 of the handshake means "SaslAuthenticate requests follow" (v0 sent raw tokens).
    let version = conn.negotiate(SASL_HANDSHAKE_KEY, 1, 1)?;
    let mut handshake = SaslHandshakeRequest::default();
    handshake.mechanism = StrBytes::from_string(mechanism.clone());
    let response = conn.send_sasl("SaslHandshake", &handshake, version).await?;
    if response.error_code != 0 {
        let enabled: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(ProtocolError::SaslMechanism {
            addr,
            mechanism,
            enabled: enabled.join(","),
        });
    }

    let version = conn.negotiate(SASL_AUTHENTICATE_KEY, 0, 2)?;
    let mut exchange = Exchange {
        conn,
        addr: addr.clone(),
        mechanism: mechanism.clone(),
        version,
    };
    let last = match ScramHash::of_mechanism(&mechanism) {
        Some(hash) => {
            let mut scram = ScramClient::new(hash, &username, password);
            let server_first = exchange.send(scram.client_first()).await?;
            let client_final = scram
                .client_final(&server_first.auth_bytes)
                .map_err(|source| ProtocolError::Scram {
                    addr: addr.clone(),
                    source,
                })?;
            let server_final = exchange.send(client_final).await?;
            scram
                .verify_server_final(&server_final.auth_bytes)
                .map_err(|source| ProtocolError::Scram {
                    addr: addr.clone(),
                    source,
                })?;
            server_final
        }
        None => exchange.send(plain_token(&username, &password)).await?,
    };
    let lifetime = (last.session_lifetime_ms > 0)
        .then(|| Duration::from_millis(last.session_lifetime_ms as u64));
    debug!(addr = %addr, mechanism = %mechanism, user = %username, ?lifetime, "SASL authenticated");
    Ok(lifetime)
}

/// PLAIN's single message (RFC 4616): no authorization id, user, password.
fn plain_token(username: &str, password: &Secret) -> Vec<u8> {
    let mut token = Vec::with_capacity(username.len() + password.expose().len() + 2);
    token.push(0);
    token.extend_from_slice(username.as_bytes());
    token.push(0);
    token.extend_from_slice(password.expose().as_bytes());
    token
}

struct Exchange<'a> {
    conn: &'a mut BrokerConnection,
    addr: String,
    mechanism: String,
    version: i16,
}

impl Exchange<'_> {
    /// Sends one SaslAuthenticate; a refusal becomes [`ProtocolError::Authentication`].
    async fn send(&mut self, token: Vec<u8>) -> Result<SaslAuthenticateResponse, ProtocolError> {
        let mut request = SaslAuthenticateRequest::default();
        request.auth_bytes = Bytes::from(token);
        let response: SaslAuthenticateResponse = self
            .conn
            .send_sasl("SaslAuthenticate", &request, self.version)
            .await?;
        if response.error_code != 0 {
            return Err(ProtocolError::Authentication {
                addr: self.addr.clone(),
                mechanism: self.mechanism.clone(),
                message: response.error_message.as_ref().map_or_else(
                    || format!("error code {}", response.error_code),
                    |m| m.to_string(),
                ),
            });
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_token_is_nul_separated() {
        assert_eq!(plain_token("alice", &Secret::new("pw")), b"\0alice\0pw");
    }
}
