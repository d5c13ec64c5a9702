//! gRPC over HTTP/2 framing: length-prefixed messages, status codes, and a body of one message plus trailers.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;

/// The largest message either side accepts (gRPC's default receive limit).
pub(crate) const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// gRPC status codes skiff uses.
pub(crate) mod code {
    pub const OK: u32 = 0;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const NOT_FOUND: u32 = 5;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const INTERNAL: u32 = 13;
    pub const UNIMPLEMENTED: u32 = 12;
}

/// One uncompressed length-prefixed message.
pub(crate) fn encode(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    // A prost message's encoded length fits u32 (messages are bounded by MAX_MESSAGE).
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // Cannot fail: the buffer has room for `len` bytes.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// The single message of a unary call's body, as (status code, text) on failure.
pub(crate) fn decode_one(body: &[u8]) -> Result<&[u8], (u32, String)> {
    let Some((&flag, rest)) = body.split_first() else {
        return Err((code::INTERNAL, "the body holds no gRPC message".into()));
    };
    if flag != 0 {
        return Err((
            code::UNIMPLEMENTED,
            "compressed messages are not supported: send identity encoding".into(),
        ));
    }
    let Some((len, message)) = rest.split_first_chunk::<4>() else {
        return Err((code::INTERNAL, "truncated gRPC message header".into()));
    };
    let len = u32::from_be_bytes(*len) as usize;
    if len != message.len() {
        return Err((
            code::INTERNAL,
            format!(
                "the message header says {len} bytes but {} follow (unary calls carry one message)",
                message.len()
            ),
        ));
    }
    Ok(message)
}

/// Trailers (or a trailers-only response's headers) for `status`.
pub(crate) fn status_headers(headers: &mut HeaderMap, status: u32, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(status));
    if !message.is_empty()
        && let Ok(value) = HeaderValue::from_str(&percent_encode(message))
    {
        headers.insert("grpc-message", value);
    }
}

/// gRPC's `grpc-message` encoding: printable ASCII except `%` as is, everything else `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response body: at most one data frame followed by optional trailers (unary calls), or the
/// frames a streaming handler sends through a channel (server reflection), trailers last.
#[derive(Debug, Default)]
pub(crate) struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
    stream: Option<mpsc::Receiver<Frame<Bytes>>>,
}

impl GrpcBody {
    pub(crate) fn new(data: Option<Bytes>, trailers: Option<HeaderMap>) -> GrpcBody {
        GrpcBody {
            data,
            trailers,
            stream: None,
        }
    }

    /// A body whose frames come from `frames` until its sender is dropped.
    pub(crate) fn streaming(frames: mpsc::Receiver<Frame<Bytes>>) -> GrpcBody {
        GrpcBody {
            data: None,
            trailers: None,
            stream: Some(frames),
        }
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(stream) = &mut this.stream {
            match stream.poll_recv(cx) {
                Poll::Ready(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Poll::Ready(None) => this.stream = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none() && self.stream.is_none()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::images::grpc_echo::proto::EchoRequest;

    #[test]
    fn frames_round_trip() {
        let request = EchoRequest {
            message: "hello".into(),
        };
        let frame = encode(&request);
        assert_eq!(&frame[..5], &[0, 0, 0, 0, 7]);
        let message = decode_one(&frame).unwrap();
        assert_eq!(
            <EchoRequest as prost::Message>::decode(message).unwrap(),
            request
        );
    }

    #[test]
    fn bad_frames_are_rejected_with_a_status() {
        assert_eq!(decode_one(&[]).unwrap_err().0, code::INTERNAL);
        assert_eq!(
            decode_one(&[1, 0, 0, 0, 0]).unwrap_err().0,
            code::UNIMPLEMENTED
        );
        assert_eq!(decode_one(&[0, 0, 0]).unwrap_err().0, code::INTERNAL);
        assert_eq!(
            decode_one(&[0, 0, 0, 0, 2, 1]).unwrap_err().0,
            code::INTERNAL
        );
        assert!(decode_one(&[0, 0, 0, 0, 0]).unwrap().is_empty());
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
        assert_eq!(percent_decode("a b%25c%0A%C3%A9"), "a b%c\né");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
