//! port-forward streams: SPDY/3.1 `portforward.k8s.io` (also tunnelled in websocket messages,
//! kubectl ≥ 1.31): per forwarded connection the client opens an `error` and a `data` stream
//! sharing `port` and `requestID` headers; the data stream is piped to the pod's port.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::spdy::{self, SpdyStream};
use super::{PodStreams, PodTarget};

/// Serves a port-forward session over an upgraded SPDY connection (or a websocket tunnel).
pub async fn serve_spdy<IO>(io: IO, streams: Arc<dyn PodStreams>, target: PodTarget)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = spdy::serve(io);
    // requestID → (error stream, data stream) until both are there.
    let mut pending: HashMap<String, (Option<SpdyStream>, Option<SpdyStream>)> = HashMap::new();
    while let Some(stream) = session.recv().await {
        let request = stream.header("requestid").unwrap_or_default().to_owned();
        let entry = pending.entry(request.clone()).or_default();
        match stream.header("streamtype").unwrap_or_default() {
            "error" => entry.0 = Some(stream),
            "data" => entry.1 = Some(stream),
            other => {
                tracing::debug!(stream_type = other, "unknown port-forward stream");
                stream.writer.reset().await;
                continue;
            }
        }
        if matches!(pending.get(&request), Some((Some(_), Some(_))))
            && let Some((Some(error), Some(data))) = pending.remove(&request)
        {
            tokio::spawn(forward(streams.clone(), target.clone(), error, data));
        }
    }
}

/// One forwarded connection: pod port ↔ data stream; failures go to the error stream.
async fn forward(
    streams: Arc<dyn PodStreams>,
    target: PodTarget,
    error: SpdyStream,
    data: SpdyStream,
) {
    let fail = |message: String| {
        let error = error.writer.clone();
        let data = data.writer.clone();
        async move {
            error.write(Bytes::from(message)).await;
            error.close().await;
            data.close().await;
        }
    };
    let port_header = data.header("port").unwrap_or_default().to_owned();
    let port = match port_header.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            fail(format!(
                "invalid port {port_header:?} in the port-forward request: use 1-65535"
            ))
            .await;
            return;
        }
    };
    let tcp = match streams.port_forward(&target, port).await {
        Ok(tcp) => tcp,
        Err(e) => {
            fail(format!(
                "error forwarding port {port} to pod {}/{}, uid {}: {e}",
                target.namespace, target.pod, target.uid
            ))
            .await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut r, mut w) = tcp.into_split();
    let mut incoming = data.incoming;
    let upstream = tokio::spawn(async move {
        while let Some(b) = incoming.recv().await {
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
        // The client closed its side: pass the half-close on.
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !data.writer.write(Bytes::copy_from_slice(&buf[..n])).await {
                    break;
                }
            }
        }
    }
    data.writer.close().await;
    error.writer.close().await;
    // The client may still be sending; the upstream half ends with its FIN or the session.
    let _ = upstream.await;
}
