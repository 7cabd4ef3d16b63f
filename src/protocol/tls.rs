//! TLS for the group connection, with rustls: the CA file of `ssl.ca.location` or the
//! system's roots, host name verification unless `ssl.endpoint.identification.algorithm`
//! is `none`, and an optional client certificate for mutual TLS. Builds the rustls client
//! configuration from [`TlsConfig`] and wraps a TCP stream; reading a file that cannot be
//! used is a [`ProtocolError::TlsSetup`] naming the key, a failed handshake a
//! [`ProtocolError::Tls`] carrying rustls' reason.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::config::TlsConfig;
use super::error::ProtocolError;

fn setup(key: &'static str, path: &str, reason: impl ToString) -> ProtocolError {
    ProtocolError::TlsSetup {
        key,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certificates(
    key: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, ProtocolError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| setup(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup(key, path, e))?;
    if certs.is_empty() {
        return Err(setup(key, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn roots(tls: &TlsConfig) -> Result<RootCertStore, ProtocolError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_location {
        Some(path) => {
            for cert in certificates("ssl.ca.location", path)? {
                roots
                    .add(cert)
                    .map_err(|e| setup("ssl.ca.location", path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(setup(
                    "ssl.ca.location",
                    "(unset)",
                    "no system CA certificates found; set ssl.ca.location",
                ));
            }
        }
    }
    Ok(roots)
}

/// The rustls client configuration for `tls`, with the ring crypto provider.
pub(crate) fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, ProtocolError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots(tls)?);
    let protocols = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup("ssl.ca.location", "", e))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| {
            setup(
                "ssl.ca.location",
                tls.ca_location.as_deref().unwrap_or(""),
                e,
            )
        })?;
    let builder = if tls.verify_hostname() {
        protocols.with_webpki_verifier(verifier)
    } else {
        protocols
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyHostName(verifier)))
    };
    let config = match (&tls.certificate_location, &tls.key_location) {
        (Some(cert), Some(key)) => {
            let chain = certificates("ssl.certificate.location", cert)?;
            let private =
                PrivateKeyDer::from_pem_file(key).map_err(|e| setup("ssl.key.location", key, e))?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| setup("ssl.key.location", key, e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The host part of `host:port` (IPv6 brackets removed), as the certificate must name it.
fn server_name(addr: &str) -> Result<ServerName<'static>, ProtocolError> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|_| ProtocolError::InvalidConfig {
        key: "bootstrap.servers".into(),
        value: addr.into(),
        reason: "not a valid host name or IP address for TLS",
    })
}

/// Runs the TLS handshake over `tcp` with the broker at `addr`.
pub(crate) async fn handshake(
    config: Arc<ClientConfig>,
    addr: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, ProtocolError> {
    let name = server_name(addr)?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|source| ProtocolError::Tls {
            addr: addr.to_owned(),
            source,
        })
}

/// Checks the chain like webpki but accepts any host name
/// (`ssl.endpoint.identification.algorithm=none`).
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_address() {
        assert_eq!(
            server_name("127.0.0.1:9094").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("broker-1.example.com:9093").unwrap(),
            ServerName::try_from("broker-1.example.com").unwrap()
        );
        assert_eq!(
            server_name("[::1]:9094").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert!(matches!(
            server_name("bad host:1"),
            Err(ProtocolError::InvalidConfig { .. })
        ));
    }

    #[test]
    fn unusable_files_name_their_key() {
        let missing = TlsConfig {
            ca_location: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        };
        let err = client_config(&missing).unwrap_err();
        assert!(
            matches!(
                &err,
                ProtocolError::TlsSetup {
                    key: "ssl.ca.location",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

        let empty = std::env::temp_dir().join(format!("kstate-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let no_certs = TlsConfig {
            ca_location: Some(empty.display().to_string()),
            ..TlsConfig::default()
        };
        let err = client_config(&no_certs).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_file(empty);
    }
}
