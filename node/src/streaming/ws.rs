//! Server-side websocket (RFC 6455): the handshake key, frames, and a connection split into
//! a message receiver and a sender; plus the byte tunnel kubectl ≥ 1.31 runs SPDY through.
//!
//! Hand-rolled rather than tokio-tungstenite: the server side needs only unmasking, a few
//! opcodes and ping/pong, the upgrade is hyper's, and the SPDY tunnel wants the payload as a
//! plain byte stream (kubectl splits frames anywhere) — about 200 lines and no new crates.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;
/// The largest message accepted from a client.
const MAX_MESSAGE: usize = 16 << 20;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// One frame off the wire (payload unmasked).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WsFrame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

/// Reads one frame; `None` at a clean end of the connection.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<WsFrame>> {
    let mut head = [0u8; 2];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0f;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("websocket frame of {len} bytes is over the {MAX_MESSAGE} limit"),
        ));
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some(WsFrame {
        fin,
        opcode,
        payload,
    }))
}

/// Encodes an unmasked (server) frame, or a masked one for tests playing the client.
pub(crate) fn encode_frame(out: &mut BytesMut, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.put_u8(0x80 | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.put_u8(m | n as u8),
        n if n <= 0xffff => {
            out.put_u8(m | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(m | 127);
            out.put_u64(n as u64);
        }
    }
    match mask {
        Some(mask) => {
            out.put_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.put_slice(payload),
    }
}

enum Out {
    Binary(Bytes),
    Pong(Vec<u8>),
    Close(u16),
}

/// Sends messages on a websocket connection.
#[derive(Debug, Clone)]
pub(crate) struct WsSender {
    tx: mpsc::Sender<Out>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Binary(b) => write!(f, "Binary({})", b.len()),
            Self::Pong(_) => f.write_str("Pong"),
            Self::Close(c) => write!(f, "Close({c})"),
        }
    }
}

impl WsSender {
    /// Sends one binary message; `false` when the connection is gone.
    pub(crate) async fn binary(&self, data: Bytes) -> bool {
        self.tx.send(Out::Binary(data)).await.is_ok()
    }

    /// Sends a close frame (1000 = normal) and ends the writer after it.
    pub(crate) async fn close(&self, code: u16) {
        let _ = self.tx.send(Out::Close(code)).await;
    }
}

/// Runs a websocket connection over `io`: returns the sender and the received data messages
/// (binary or text, reassembled). Pings are answered; a close from the client is answered and
/// ends the receiver.
pub(crate) fn start<IO>(io: IO) -> (WsSender, mpsc::Receiver<Vec<u8>>)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    let (msg_tx, msg_rx) = mpsc::channel::<Vec<u8>>(32);
    let (mut read, mut write) = tokio::io::split(io);
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(out) = out_rx.recv().await {
            let mut closing = false;
            let mut next = Some(out);
            while let Some(out) = next.take() {
                match out {
                    Out::Binary(b) => encode_frame(&mut buf, OP_BINARY, &b, None),
                    Out::Pong(p) => encode_frame(&mut buf, OP_PONG, &p, None),
                    Out::Close(code) => {
                        encode_frame(&mut buf, OP_CLOSE, &code.to_be_bytes(), None);
                        closing = true;
                        break;
                    }
                }
                if buf.len() < 64 * 1024 {
                    next = out_rx.try_recv().ok();
                }
            }
            if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
                return;
            }
            buf.clear();
            if closing {
                let _ = write.shutdown().await;
                return;
            }
        }
    });
    let pong = out_tx.clone();
    tokio::spawn(async move {
        let mut message: Vec<u8> = Vec::new();
        loop {
            let frame = match read_frame(&mut read).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    break;
                }
            };
            match frame.opcode {
                OP_PING => {
                    let _ = pong.send(Out::Pong(frame.payload)).await;
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let _ = pong.send(Out::Close(1000)).await;
                    break;
                }
                OP_TEXT | OP_BINARY | OP_CONTINUATION => {
                    if message.len() + frame.payload.len() > MAX_MESSAGE {
                        break;
                    }
                    message.extend_from_slice(&frame.payload);
                    if frame.fin && msg_tx.send(std::mem::take(&mut message)).await.is_err() {
                        break;
                    }
                }
                other => {
                    tracing::debug!(opcode = other, "unknown websocket opcode");
                    break;
                }
            }
        }
    });
    (WsSender { tx: out_tx }, msg_rx)
}

/// The payload of binary messages both ways as one byte stream (kubectl's
/// `SPDY/3.1+portforward.k8s.io` tunnel): what is written to the returned end goes out as
/// binary messages, received messages are readable from it.
pub(crate) fn byte_tunnel<IO>(io: IO) -> DuplexStream
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (sender, mut messages) = start(io);
    let (mut tr, mut tw) = tokio::io::split(ours);
    tokio::spawn(async move {
        while let Some(m) = messages.recv().await {
            if tw.write_all(&m).await.is_err() {
                break;
            }
        }
        let _ = tw.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match tr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !sender.binary(Bytes::copy_from_slice(&buf[..n])).await {
                        return;
                    }
                }
            }
        }
        sender.close(1000).await;
    });
    theirs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn frames_round_trip_with_and_without_mask_at_every_length_form() {
        for len in [0usize, 5, 125, 126, 1000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut buf = BytesMut::new();
                encode_frame(&mut buf, OP_BINARY, &payload, mask);
                let mut r: &[u8] = &buf;
                let f = read_frame(&mut r).await.unwrap().unwrap();
                assert_eq!(
                    f,
                    WsFrame {
                        fin: true,
                        opcode: OP_BINARY,
                        payload: payload.clone()
                    }
                );
                assert!(r.is_empty());
            }
        }
    }

    #[tokio::test]
    async fn connection_answers_pings_and_reassembles_fragments() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (sender, mut messages) = start(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, OP_PING, b"hb", Some([9, 9, 9, 9]));
        // A message in two fragments: first without FIN.
        buf.put_u8(OP_BINARY);
        buf.put_u8(0x80 | 2);
        buf.put_slice(&[0, 0, 0, 0]);
        buf.put_slice(b"\x01a");
        encode_frame(&mut buf, OP_CONTINUATION, b"bc", Some([0, 0, 0, 0]));
        cw.write_all(&buf).await.unwrap();
        assert_eq!(messages.recv().await.unwrap(), b"\x01abc");
        let pong = read_frame(&mut cr).await.unwrap().unwrap();
        assert_eq!(
            (pong.opcode, pong.payload.as_slice()),
            (OP_PONG, &b"hb"[..])
        );
        sender.binary(Bytes::from_static(b"\x01out")).await;
        sender.close(1000).await;
        let f = read_frame(&mut cr).await.unwrap().unwrap();
        assert_eq!(f.payload, b"\x01out");
        let f = read_frame(&mut cr).await.unwrap().unwrap();
        assert_eq!(
            (f.opcode, f.payload),
            (OP_CLOSE, 1000u16.to_be_bytes().to_vec())
        );
    }

    #[tokio::test]
    async fn byte_tunnel_carries_bytes_split_anywhere() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut tunnel = byte_tunnel(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, OP_BINARY, b"hel", Some([1, 1, 1, 1]));
        encode_frame(&mut buf, OP_BINARY, b"lo", Some([2, 2, 2, 2]));
        cw.write_all(&buf).await.unwrap();
        let mut got = [0u8; 5];
        tunnel.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        tunnel.write_all(b"back").await.unwrap();
        let f = read_frame(&mut cr).await.unwrap().unwrap();
        assert_eq!((f.opcode, f.payload.as_slice()), (OP_BINARY, &b"back"[..]));
    }
}
