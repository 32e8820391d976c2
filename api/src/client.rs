//! How a client reaches the controller: `unix:/path/to/gantryd.sock` (local, identified
//! by peer credentials), `https://host:port` (TLS, with a token) or `http://host:port`
//! (plain, for a loopback listener). Every request carries the token when one is given.

use std::path::{Path, PathBuf};

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};
use tonic::{Request, Status};

/// Where the system's trusted certificate authorities are on Debian and its kin; used
/// for `https://` when no CA file is named.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the controller at {target}: {source}")]
    Transport {
        target: String,
        source: tonic::transport::Error,
    },
    #[error(
        "'{0}' is not a controller address (use unix:/path/to/gantryd.sock, https://host:port or http://host:port)"
    )]
    BadAddress(String),
    #[error("the token is not valid header text")]
    BadToken,
    #[error(
        "cannot read the certificate authority file {path}: {error} (name the authority that \
         signed the controller's certificate with --ca-file or GANTRY_CA_FILE)"
    )]
    CaFile { path: String, error: std::io::Error },
    #[error("TLS settings for {target}: {source}")]
    Tls {
        target: String,
        source: tonic::transport::Error,
    },
}

/// How a client trusts the controller's certificate on `https://` addresses.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// PEM file of the certificate authority (or the certificate itself) to trust;
    /// `None` trusts the system's authorities ([`SYSTEM_CA_BUNDLE`]).
    pub ca_file: Option<PathBuf>,
}

impl Trust {
    pub fn ca_file(path: Option<&Path>) -> Self {
        Self {
            ca_file: path.map(Path::to_path_buf),
        }
    }

    fn tls(&self) -> Result<ClientTlsConfig, ConnectError> {
        let path = self
            .ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
        let pem = std::fs::read(&path).map_err(|error| ConnectError::CaFile {
            path: path.display().to_string(),
            error,
        })?;
        Ok(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct WithToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl WithToken {
    pub fn new(token: Option<&str>) -> Result<Self, ConnectError> {
        token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| ConnectError::BadToken)
            })
            .transpose()
            .map(Self)
    }
}

impl Interceptor for WithToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert(crate::AUTHORIZATION, t.clone());
        }
        Ok(req)
    }
}

/// Opens a channel to `target`; `trust` says which authorities vouch for an `https://`
/// controller.
pub async fn connect(target: &str, trust: &Trust) -> Result<Channel, ConnectError> {
    let transport = |source| ConnectError::Transport {
        target: target.to_string(),
        source,
    };
    if let Some(path) = target.strip_prefix("unix:") {
        let path = path.to_string();
        // The URI is not used to connect; the connector opens the socket.
        return Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(transport);
    }
    if target.starts_with("http://") || target.starts_with("https://") {
        let mut ep = Endpoint::from_shared(target.to_string())
            .map_err(|_| ConnectError::BadAddress(target.to_string()))?;
        if target.starts_with("https://") {
            ep = ep
                .tls_config(trust.tls()?)
                .map_err(|source| ConnectError::Tls {
                    target: target.to_string(),
                    source,
                })?;
        }
        return ep.connect().await.map_err(transport);
    }
    Err(ConnectError::BadAddress(target.to_string()))
}
