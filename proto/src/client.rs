//! Connecting to the API: a Unix socket path, or an `http://host:port` address.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Opens a channel to `server`: a filesystem path (Unix socket) or an http(s) URL.
pub async fn connect(server: &str) -> Result<Channel, String> {
    if server.starts_with("http://") || server.starts_with("https://") {
        return Endpoint::from_shared(server.to_string())
            .map_err(|e| format!("bad server address '{server}': {e}"))?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {server}: {e}"));
    }
    let path = PathBuf::from(server.strip_prefix("unix://").unwrap_or(server));
    let display = path.display().to_string();
    // The URI is required by the API but unused: the connector below dials the socket.
    Endpoint::try_from("http://localhost")
        .expect("static URI")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| {
            let cause = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
            format!("cannot connect to vswitchd at {display}: {e} {cause} (is vswitchd running? --server selects another socket)")
        })
}
