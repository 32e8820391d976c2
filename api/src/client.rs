//! How a client reaches the controller: `unix:/path/to/gantryd.sock` (local, identified
//! by peer credentials), `https://host:port` (TLS, with a token) or `http://host:port`
//! (plain, for a loopback listener). Every request carries the token when one is given.
//!
//! A target may list several controllers, comma-separated (an active one and its
//! standbys over one PostgreSQL state): [`connect`] finds the active one. A standby
//! answers every call with UNAVAILABLE and the active one's address in the
//! `gantry-active` metadata.

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
    #[error("no controller of {tried} is active: {last}")]
    NoActive { tried: String, last: String },
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

/// The metadata key under which a standby names the active controller.
pub const ACTIVE_KEY: &str = "gantry-active";

/// The metadata key a standby's answers carry (`standby`).
pub const ROLE_KEY: &str = "gantry-role";

/// How long [`connect`] keeps trying a list of controllers none of which is active (a
/// takeover under way): a little more than a lease and a restore.
const TAKEOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// How long one controller of a list has to answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Opens a channel to `target`, one address or several separated by commas (the active
/// controller is found among them, following what standbys say; during a takeover it
/// waits for one to become active); `trust` says which authorities vouch for an
/// `https://` controller.
pub async fn connect(target: &str, trust: &Trust) -> Result<Channel, ConnectError> {
    let targets: Vec<&str> = target
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    match targets[..] {
        [] => Err(ConnectError::BadAddress(target.to_string())),
        [one] => connect_one(one, trust).await,
        _ => connect_active(&targets, trust).await,
    }
}

/// What one controller of a list said.
pub enum Probe {
    /// It is the active controller: a channel to it.
    Active(Channel),
    /// A standby: the active controller's address if there is one, and its message.
    Standby(Option<String>, String),
    /// It did not answer: why.
    Unreachable(String),
}

/// Asks the controller at `target` (one address) whether it is the active one.
pub async fn probe(target: &str, trust: &Trust) -> Result<Probe, ConnectError> {
    let channel = match tokio::time::timeout(PROBE_TIMEOUT, connect_one(target, trust)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e @ (ConnectError::BadAddress(_) | ConnectError::CaFile { .. }))) => return Err(e),
        Ok(Err(e)) => return Ok(Probe::Unreachable(e.to_string())),
        Err(_) => return Ok(Probe::Unreachable(format!("{target} did not answer"))),
    };
    let mut client = crate::controller_client::ControllerClient::new(channel.clone());
    let asked = tokio::time::timeout(PROBE_TIMEOUT, client.who_am_i(crate::WhoAmIRequest {})).await;
    Ok(match asked {
        Err(_) => Probe::Unreachable(format!("{target} did not answer")),
        // Any answer but UNAVAILABLE is the active controller's (an unauthenticated
        // caller is refused by the active one too).
        Ok(Ok(_)) => Probe::Active(channel),
        Ok(Err(s)) if s.code() != tonic::Code::Unavailable => Probe::Active(channel),
        Ok(Err(s)) if s.metadata().get(ROLE_KEY).is_some() => {
            let active = s.metadata().get(ACTIVE_KEY).and_then(|v| v.to_str().ok());
            Probe::Standby(active.map(str::to_string), s.message().to_string())
        }
        Ok(Err(s)) => Probe::Unreachable(format!("{target}: {}", s.message())),
    })
}

async fn connect_active(targets: &[&str], trust: &Trust) -> Result<Channel, ConnectError> {
    let started = std::time::Instant::now();
    loop {
        let mut last = String::new();
        let mut order: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        let mut i = 0;
        while i < order.len() {
            match probe(&order[i], trust).await? {
                Probe::Active(c) => return Ok(c),
                Probe::Standby(Some(active), message) => {
                    // Followed only to a controller of the list, and first.
                    if let Some(at) = order.iter().skip(i + 1).position(|t| *t == active) {
                        let t = order.remove(i + 1 + at);
                        order.insert(i + 1, t);
                    }
                    last = message;
                }
                Probe::Standby(None, message) | Probe::Unreachable(message) => last = message,
            }
            i += 1;
        }
        if started.elapsed() > TAKEOVER_WAIT {
            return Err(ConnectError::NoActive {
                tried: targets.join(", "),
                last,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

async fn connect_one(target: &str, trust: &Trust) -> Result<Channel, ConnectError> {
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
