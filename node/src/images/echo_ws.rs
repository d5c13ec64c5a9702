//! The echo image's WebSocket endpoint (`/ws`, RFC 6455): the upgrade check and a loop that
//! sends every text or binary message back as it came, answering pings and closes.
//!
//! Built on the frame codec of `streaming::ws`; its `start` merges text and binary into one
//! byte stream, and an echo must return each message with its own opcode, hence this loop.

use bytes::BytesMut;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::streaming::ws::{accept_key, encode_frame, read_frame};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;
/// Close codes (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_BAD_DATA: u16 = 1007;

/// The path the echo server upgrades; every other path keeps the JSON answer.
pub(crate) const WS_PATH: &str = "/ws";

/// `Sec-WebSocket-Key` when `req` is a WebSocket opening handshake on [`WS_PATH`] (HTTP/1.1
/// `GET` with `Upgrade: websocket`, `Connection: upgrade`, version 13), else `None` and the
/// request gets the ordinary answer.
pub(crate) fn upgrade_key<B>(req: &Request<B>) -> Option<String> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let ok = req.uri().path() == WS_PATH
        && req.method() == http::Method::GET
        && req.version() == http::Version::HTTP_11
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
    if !ok {
        return None;
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?.to_str().ok()?;
    (!key.trim().is_empty()).then(|| key.to_owned())
}

/// The `101 Switching Protocols` answer to a handshake with `key`.
pub(crate) fn switching_protocols<B: Default>(key: &str) -> Response<B> {
    let mut resp = Response::new(B::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept_key(key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}

/// Echoes messages on an upgraded connection until the client closes or breaks the protocol:
/// each text or binary message (fragments reassembled) comes back as one frame of the same
/// type; a ping gets a pong with its payload; a close is answered with the same code and
/// ends the loop. Invalid UTF-8 in a text message closes with 1007, a frame out of sequence
/// or an unknown opcode with 1002.
pub(crate) async fn echo<IO: AsyncRead + AsyncWrite + Unpin>(io: IO) -> std::io::Result<()> {
    let (mut read, mut write) = tokio::io::split(io);
    let mut out = BytesMut::new();
    // The opcode and payload of a message whose last fragment has not come yet.
    let mut partial: Option<(u8, Vec<u8>)> = None;
    let close =
        |out: &mut BytesMut, code: u16| encode_frame(out, OP_CLOSE, &code.to_be_bytes(), None);
    loop {
        let Some(frame) = read_frame(&mut read).await? else {
            return Ok(());
        };
        let mut done = false;
        match (frame.opcode, partial.take()) {
            (OP_PING, p) => {
                partial = p;
                encode_frame(&mut out, OP_PONG, &frame.payload, None);
            }
            (OP_PONG, p) => partial = p,
            (OP_CLOSE, _) => {
                // Echo the client's status code; a close without one is answered with 1000.
                let code = match frame.payload.get(..2) {
                    Some(c) => u16::from_be_bytes([c[0], c[1]]),
                    None => CLOSE_NORMAL,
                };
                close(&mut out, code);
                done = true;
            }
            (OP_TEXT | OP_BINARY, None) => partial = Some((frame.opcode, frame.payload)),
            (OP_CONTINUATION, Some((op, mut data))) => {
                data.extend_from_slice(&frame.payload);
                partial = Some((op, data));
            }
            _ => {
                close(&mut out, CLOSE_PROTOCOL);
                done = true;
            }
        }
        if frame.fin
            && !done
            && let Some((op, data)) = partial.take_if(|_| frame.opcode < OP_CLOSE)
        {
            if op == OP_TEXT && std::str::from_utf8(&data).is_err() {
                close(&mut out, CLOSE_BAD_DATA);
                done = true;
            } else {
                encode_frame(&mut out, op, &data, None);
            }
        }
        if !out.is_empty() {
            write.write_all(&out).await?;
            write.flush().await?;
            out.clear();
        }
        if done {
            let _ = write.shutdown().await;
            return Ok(());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::streaming::ws::WsFrame;

    const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_frame(&mut out, opcode, payload, MASK);
        if !fin {
            out[0] &= 0x7f;
        }
        out
    }

    /// Sends `frames` as the client, then reads what the server wrote until it ends.
    async fn exchange(frames: &[BytesMut]) -> Vec<WsFrame> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(echo(server));
        for f in frames {
            client.write_all(f).await.unwrap();
        }
        let mut got = Vec::new();
        while let Some(f) = read_frame(&mut client).await.unwrap() {
            let close = f.opcode == OP_CLOSE;
            got.push(f);
            if close {
                break;
            }
        }
        task.await.unwrap().unwrap();
        got
    }

    fn server(opcode: u8, payload: &[u8]) -> WsFrame {
        WsFrame {
            fin: true,
            opcode,
            payload: payload.to_vec(),
        }
    }

    #[tokio::test]
    async fn text_and_binary_come_back_with_their_type() {
        let got = exchange(&[
            frame(true, OP_TEXT, b"hello"),
            frame(true, OP_BINARY, &[0, 255, 7]),
            frame(true, OP_CLOSE, &1000u16.to_be_bytes()),
        ])
        .await;
        assert_eq!(
            got,
            vec![
                server(OP_TEXT, b"hello"),
                server(OP_BINARY, &[0, 255, 7]),
                server(OP_CLOSE, &1000u16.to_be_bytes()),
            ]
        );
    }

    #[tokio::test]
    async fn fragments_are_reassembled_and_pings_answered_between_them() {
        let big = vec![b'x'; 70_000];
        let got = exchange(&[
            frame(false, OP_TEXT, b"hel"),
            frame(true, OP_PING, b"p"),
            frame(true, OP_CONTINUATION, b"lo"),
            frame(true, OP_BINARY, &big),
            frame(true, OP_CLOSE, &[]),
        ])
        .await;
        assert_eq!(
            got,
            vec![
                server(OP_PONG, b"p"),
                server(OP_TEXT, b"hello"),
                server(OP_BINARY, &big),
                server(OP_CLOSE, &1000u16.to_be_bytes()),
            ]
        );
    }

    #[tokio::test]
    async fn protocol_errors_close_with_their_code() {
        let got = exchange(&[frame(true, OP_CONTINUATION, b"x")]).await;
        assert_eq!(got, vec![server(OP_CLOSE, &1002u16.to_be_bytes())]);
        let got = exchange(&[frame(true, 0x3, b"x")]).await;
        assert_eq!(got, vec![server(OP_CLOSE, &1002u16.to_be_bytes())]);
        let got = exchange(&[frame(true, OP_TEXT, &[0xff, 0xfe])]).await;
        assert_eq!(got, vec![server(OP_CLOSE, &1007u16.to_be_bytes())]);
        // A new message before the last one's final fragment.
        let got = exchange(&[frame(false, OP_TEXT, b"a"), frame(true, OP_TEXT, b"b")]).await;
        assert_eq!(got, vec![server(OP_CLOSE, &1002u16.to_be_bytes())]);
    }

    #[test]
    fn only_a_websocket_handshake_on_ws_is_an_upgrade() {
        let req = |path: &str, version: &str| {
            Request::get(path)
                .header("upgrade", "WebSocket")
                .header("connection", "keep-alive, Upgrade")
                .header("sec-websocket-version", version)
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .body(())
                .unwrap()
        };
        assert_eq!(
            upgrade_key(&req("/ws", "13")).as_deref(),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(upgrade_key(&req("/ws/x", "13")), None);
        assert_eq!(upgrade_key(&req("/other", "13")), None);
        assert_eq!(upgrade_key(&req("/ws", "8")), None);
        assert_eq!(upgrade_key(&Request::get("/ws").body(()).unwrap()), None);
        let resp: Response<()> = switching_protocols("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(resp.status(), 101);
        // RFC 6455 §1.3's example.
        assert_eq!(
            resp.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
