//! How a client reaches the controller: `unix:/path/to/gantryd.sock` (local, identified
//! by peer credentials) or `http://host:port` (with a token). Every request carries the
//! token when one is given.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach the controller at {target}: {source}")]
    Transport {
        target: String,
        source: tonic::transport::Error,
    },
    #[error(
        "'{0}' is not a controller address (use unix:/path/to/gantryd.sock or http://host:port)"
    )]
    BadAddress(String),
    #[error("the token is not valid header text")]
    BadToken,
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

/// Opens a channel to `target`.
pub async fn connect(target: &str) -> Result<Channel, ConnectError> {
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
        let ep = Endpoint::from_shared(target.to_string())
            .map_err(|_| ConnectError::BadAddress(target.to_string()))?;
        return ep.connect().await.map_err(transport);
    }
    Err(ConnectError::BadAddress(target.to_string()))
}
