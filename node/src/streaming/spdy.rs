//! SPDY/3.1 as kubectl speaks it (moby/spdystream): frames, zlib header blocks, and a server
//! session that hands each client-opened stream to the caller.
//!
//! No crate implements SPDY any more, and kubectl ≤ 1.30 needs it (and ≥ 1.31 tunnels it in
//! websocket messages for port-forward). Only what spdystream uses is here: SYN_STREAM,
//! SYN_REPLY, DATA (with FIN), RST_STREAM, PING, GOAWAY; SETTINGS, HEADERS and WINDOW_UPDATE
//! are read and ignored (spdystream does no flow control either).

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: the stream was cancelled.
pub(crate) const RST_CANCEL: u32 = 5;

/// Errors of the SPDY layer: a peer that does not speak SPDY/3 as expected.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY: unsupported version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("SPDY: malformed {what} frame: {why}")]
    Malformed { what: &'static str, why: String },
    #[error("SPDY header compression: {0}")]
    Zlib(String),
}

fn malformed(what: &'static str, why: impl Into<String>) -> SpdyError {
    SpdyError::Malformed {
        what,
        why: why.into(),
    }
}

/// The SPDY/3 header compression dictionary (spec §2.6.10.1): length-prefixed words, then
/// a literal tail. Built from its parts so it can be read; a test pins its size and ends.
pub(crate) static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414\
        415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently\
        400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
        501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov \
        Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,\
        image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,\
        publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut dict = Vec::with_capacity(1423);
    for word in WORDS {
        dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(TAIL.as_bytes());
    dict
});

/// Header name/value pairs (names lower-case, as SPDY/3 requires).
pub(crate) type Headers = Vec<(String, String)>;

/// One decoded frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        stream: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway,
    /// SETTINGS, HEADERS, WINDOW_UPDATE, NOOP...: read and ignored.
    Ignored(u16),
}

/// Decodes frames from bytes; keeps the session's header decompressor.
pub(crate) struct Decoder {
    inflate: Decompress,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Self {
            inflate: Decompress::new(true),
        }
    }

    /// Takes one whole frame off the front of `buf`, or `None` if more bytes are needed.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        // The length is 24 bits: a frame is at most 16 MiB, no further limit needed.
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut body = buf.split_to(len).freeze();
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            return Ok(Some(Frame::Data {
                stream,
                fin,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize, what: &'static str| {
            if len < n {
                Err(malformed(what, format!("{len} bytes, at least {n} needed")))
            } else {
                Ok(())
            }
        };
        Ok(Some(match kind {
            TYPE_SYN_STREAM => {
                need(10, "SYN_STREAM")?;
                let stream = body.get_u32() & 0x7fff_ffff;
                body.advance(6); // associated stream, priority, slot
                Frame::SynStream {
                    stream,
                    fin,
                    headers: self.headers(&body)?,
                }
            }
            TYPE_SYN_REPLY => {
                need(4, "SYN_REPLY")?;
                let stream = body.get_u32() & 0x7fff_ffff;
                Frame::SynReply {
                    stream,
                    fin,
                    headers: self.headers(&body)?,
                }
            }
            TYPE_RST_STREAM => {
                need(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            TYPE_PING => {
                need(4, "PING")?;
                Frame::Ping(body.get_u32())
            }
            TYPE_GOAWAY => Frame::GoAway,
            // HEADERS carries a header block too: inflate it so the zlib stream stays in step.
            8 => {
                need(4, "HEADERS")?;
                body.advance(4);
                self.headers(&body)?;
                Frame::Ignored(8)
            }
            other => Frame::Ignored(other),
        }))
    }

    /// Inflates one header block (the session's zlib stream, flushed per frame) and parses it.
    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(compressed.len() * 4 + 256);
        let mut input = compressed;
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity());
            }
            let (before_in, before_out) = (self.inflate.total_in(), out.len());
            let mut progressed = false;
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                // The peer compresses with the SPDY dictionary (zlib FDICT).
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| SpdyError::Zlib(e.to_string()))?;
                    progressed = true;
                }
                Err(e) => return Err(SpdyError::Zlib(e.to_string())),
            }
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            progressed |= used > 0 || out.len() > before_out;
            // Done when all input is in and the inflater did not stop for lack of room.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if !progressed {
                return Err(SpdyError::Zlib("the header block does not inflate".into()));
            }
        }
        parse_header_block(&out)
    }
}

/// `u32 count`, then per pair `u32 len, name, u32 len, value` (values with NULs are several).
fn parse_header_block(mut block: &[u8]) -> Result<Headers, SpdyError> {
    let bad = |why: &str| malformed("header block", why.to_owned());
    if block.len() < 4 {
        return Err(bad("shorter than its count"));
    }
    let count = block.get_u32() as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    let read = |block: &mut &[u8]| -> Result<String, SpdyError> {
        if block.len() < 4 {
            return Err(bad("truncated length"));
        }
        let n = block.get_u32() as usize;
        if block.len() < n {
            return Err(bad("truncated string"));
        }
        let s = String::from_utf8_lossy(&block[..n]).into_owned();
        block.advance(n);
        Ok(s)
    };
    for _ in 0..count {
        let name = read(&mut block)?.to_ascii_lowercase();
        let value = read(&mut block)?;
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_owned()));
        }
    }
    Ok(headers)
}

/// Encodes frames; keeps the session's header compressor.
pub(crate) struct Encoder {
    deflate: Compress,
}

impl Encoder {
    pub(crate) fn new() -> Result<Self, SpdyError> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(&DICTIONARY)
            .map_err(|e| SpdyError::Zlib(e.to_string()))?;
        Ok(Self { deflate })
    }

    fn control(out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) {
        out.put_u16(0x8000 | VERSION);
        out.put_u16(kind);
        out.put_u32((u32::from(flags) << 24) | body.len() as u32);
        out.put_slice(body);
    }

    pub(crate) fn data(out: &mut BytesMut, stream: u32, fin: bool, data: &[u8]) {
        out.put_u32(stream & 0x7fff_ffff);
        let flags = if fin { FLAG_FIN } else { 0 };
        out.put_u32((u32::from(flags) << 24) | data.len() as u32);
        out.put_slice(data);
    }

    pub(crate) fn syn_reply(
        &mut self,
        out: &mut BytesMut,
        stream: u32,
        fin: bool,
        headers: &[(&str, &str)],
    ) -> Result<(), SpdyError> {
        let mut body = Vec::new();
        body.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        body.extend_from_slice(&self.header_block(headers)?);
        Self::control(out, TYPE_SYN_REPLY, if fin { FLAG_FIN } else { 0 }, &body);
        Ok(())
    }

    /// A SYN_STREAM (used by tests playing the client).
    #[cfg(test)]
    pub(crate) fn syn_stream(
        &mut self,
        out: &mut BytesMut,
        stream: u32,
        fin: bool,
        headers: &[(&str, &str)],
    ) -> Result<(), SpdyError> {
        let mut body = Vec::new();
        body.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&self.header_block(headers)?);
        Self::control(out, TYPE_SYN_STREAM, if fin { FLAG_FIN } else { 0 }, &body);
        Ok(())
    }

    pub(crate) fn rst_stream(out: &mut BytesMut, stream: u32, status: u32) {
        let mut body = [0u8; 8];
        body[..4].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        body[4..].copy_from_slice(&status.to_be_bytes());
        Self::control(out, TYPE_RST_STREAM, 0, &body);
    }

    pub(crate) fn ping(out: &mut BytesMut, id: u32) {
        Self::control(out, TYPE_PING, 0, &id.to_be_bytes());
    }

    fn header_block(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            raw.extend_from_slice(&(name.len() as u32).to_be_bytes());
            raw.extend_from_slice(name.as_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_be_bytes());
            raw.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input: &[u8] = &raw;
        loop {
            out.reserve(raw.len() + 64);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            let used = (self.deflate.total_in() - before) as usize;
            input = &input[used..];
            // A sync flush is complete when input is consumed and output did not fill up.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }
}

/// What a stream's owner sends through the session writer.
#[derive(Debug)]
enum Out {
    Data { stream: u32, fin: bool, data: Bytes },
    Reset { stream: u32 },
    Ping(u32),
}

/// The sending half of a stream: data frames and FIN.
#[derive(Debug, Clone)]
pub(crate) struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Sends data; `false` if the session is gone.
    pub(crate) async fn write(&self, data: Bytes) -> bool {
        // Keep frames small enough for any peer buffer.
        let mut data = data;
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(32 * 1024));
            let frame = Out::Data {
                stream: self.id,
                fin: false,
                data: chunk,
            };
            if self.out.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Half-closes the stream (FIN).
    pub(crate) async fn close(&self) {
        let _ = self
            .out
            .send(Out::Data {
                stream: self.id,
                fin: true,
                data: Bytes::new(),
            })
            .await;
    }

    /// Resets the stream (RST_STREAM CANCEL).
    pub(crate) async fn reset(&self) {
        let _ = self.out.send(Out::Reset { stream: self.id }).await;
    }
}

/// A stream the client opened: its headers, what it sends, and our sending half.
#[derive(Debug)]
pub(crate) struct SpdyStream {
    pub(crate) headers: Headers,
    /// Data from the client; ends at its FIN or RST.
    pub(crate) incoming: mpsc::Receiver<Bytes>,
    pub(crate) writer: StreamWriter,
}

impl SpdyStream {
    /// The first value of header `name` (lower-case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Serves a SPDY session over `io` (the upgraded connection): answers every SYN_STREAM with
/// a SYN_REPLY and hands the stream out on the returned channel, answers PINGs, and ends when
/// the client goes away or says GOAWAY (the channel then closes).
pub(crate) fn serve<IO>(io: IO) -> mpsc::Receiver<SpdyStream>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (new_tx, new_rx) = mpsc::channel(16);
    let (out_tx, out_rx) = mpsc::channel::<Out>(64);
    let (reply_tx, reply_rx) = mpsc::unbounded_channel::<u32>();
    let (read, write) = tokio::io::split(io);
    tokio::spawn(write_loop(write, out_rx, reply_rx));
    tokio::spawn(read_loop(read, new_tx, out_tx, reply_tx));
    new_rx
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut read: R,
    new_tx: mpsc::Sender<SpdyStream>,
    out_tx: mpsc::Sender<Out>,
    reply_tx: mpsc::UnboundedSender<u32>,
) {
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let frame = match decoder.decode(&mut buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => match read.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY connection read failed");
                    break;
                }
            },
            Err(e) => {
                tracing::info!(error = %e, "ending the SPDY session");
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => {
                // The reply goes out before any data we send on the stream: both travel
                // through the one writer, the reply on its own priority queue.
                if reply_tx.send(stream).is_err() {
                    break;
                }
                let (tx, rx) = mpsc::channel(32);
                if !fin {
                    streams.insert(stream, tx);
                }
                let s = SpdyStream {
                    headers,
                    incoming: rx,
                    writer: StreamWriter {
                        id: stream,
                        out: out_tx.clone(),
                    },
                };
                if new_tx.send(s).await.is_err() {
                    break;
                }
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = streams.get(&stream)
                    && !data.is_empty()
                    && tx.send(data).await.is_err()
                {
                    // Nobody reads this stream any more: drop what it sends.
                    streams.remove(&stream);
                }
                if fin {
                    streams.remove(&stream);
                }
            }
            Frame::RstStream { stream, .. } => {
                streams.remove(&stream);
            }
            Frame::Ping(id) => {
                if out_tx.send(Out::Ping(id)).await.is_err() {
                    break;
                }
            }
            Frame::GoAway => break,
            Frame::SynReply { .. } | Frame::Ignored(_) => {}
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut out_rx: mpsc::Receiver<Out>,
    mut reply_rx: mpsc::UnboundedReceiver<u32>,
) {
    let mut encoder = match Encoder::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "SPDY header compressor");
            return;
        }
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        // Replies first: a stream's SYN_REPLY must precede its data.
        tokio::select! {
            biased;
            reply = reply_rx.recv() => match reply {
                Some(stream) => {
                    if let Err(e) = encoder.syn_reply(&mut buf, stream, false, &[]) {
                        tracing::warn!(error = %e, "SPDY SYN_REPLY");
                        return;
                    }
                }
                None => return,
            },
            out = out_rx.recv() => match out {
                Some(out) => {
                    while let Ok(stream) = reply_rx.try_recv() {
                        if encoder.syn_reply(&mut buf, stream, false, &[]).is_err() {
                            return;
                        }
                    }
                    encode_out(&mut buf, out);
                }
                None => return,
            },
        }
        while let Ok(out) = out_rx.try_recv() {
            encode_out(&mut buf, out);
            if buf.len() > 64 * 1024 {
                break;
            }
        }
        if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
            return;
        }
        buf.clear();
    }
}

fn encode_out(buf: &mut BytesMut, out: Out) {
    match out {
        Out::Data { stream, fin, data } => Encoder::data(buf, stream, fin, &data),
        Out::Reset { stream } => Encoder::rst_stream(buf, stream, RST_CANCEL),
        Out::Ping(id) => Encoder::ping(buf, id),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = &*DICTIONARY;
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
        // The zlib preset-dictionary id of the SPDY/3 dictionary, as peers compute it.
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for byte in d.iter() {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        let mut inflate = Decompress::new(true);
        let adler = inflate.set_dictionary(d).unwrap_or((b << 16) | a);
        assert_eq!(adler, (b << 16) | a);
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream_per_direction() {
        let mut enc = Encoder::new().unwrap();
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        enc.syn_stream(
            &mut buf,
            1,
            false,
            &[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ],
        )
        .unwrap();
        enc.syn_stream(&mut buf, 3, true, &[("streamtype", "data"), ("x", "a\0b")])
            .unwrap();
        let first = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            first,
            Frame::SynStream {
                stream: 1,
                fin: false,
                headers: vec![
                    ("streamtype".into(), "error".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            }
        );
        let second = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            second,
            Frame::SynStream {
                stream: 3,
                fin: true,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("x".into(), "a".into()),
                    ("x".into(), "b".into()),
                ],
            }
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_decode_only_when_whole() {
        let mut dec = Decoder::new();
        let mut wire = BytesMut::new();
        Encoder::data(&mut wire, 5, true, b"hello");
        Encoder::ping(&mut wire, 7);
        Encoder::rst_stream(&mut wire, 9, RST_CANCEL);
        let all = wire.clone();
        // Byte by byte: nothing until a frame is complete.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Data {
                    stream: 5,
                    fin: true,
                    data: Bytes::from_static(b"hello")
                },
                Frame::Ping(7),
                Frame::RstStream {
                    stream: 9,
                    status: RST_CANCEL
                },
            ]
        );
    }

    #[test]
    fn bad_versions_are_refused() {
        let mut dec = Decoder::new();
        let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(dec.decode(&mut buf), Err(SpdyError::Version(2))));
        // A huge frame waits for its bytes rather than failing.
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert!(matches!(dec.decode(&mut buf), Ok(None)));
    }

    #[tokio::test]
    async fn session_replies_echoes_pings_and_carries_data() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut streams = serve(server);
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut enc = Encoder::new().unwrap();
        let mut buf = BytesMut::new();
        enc.syn_stream(&mut buf, 1, false, &[("streamtype", "stdin")])
            .unwrap();
        Encoder::data(&mut buf, 1, false, b"abc");
        Encoder::data(&mut buf, 1, true, b"def");
        Encoder::ping(&mut buf, 11);
        cw.write_all(&buf).await.unwrap();

        let mut s = streams.recv().await.unwrap();
        assert_eq!(s.header("streamtype"), Some("stdin"));
        let mut got = Vec::new();
        while let Some(b) = s.incoming.recv().await {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, b"abcdef");
        s.writer.write(Bytes::from_static(b"out")).await;
        s.writer.close().await;

        let mut dec = Decoder::new();
        let mut rbuf = BytesMut::new();
        let mut frames = Vec::new();
        while frames.len() < 4 {
            while let Some(f) = dec.decode(&mut rbuf).unwrap() {
                frames.push(f);
            }
            if frames.len() < 4 {
                cr.read_buf(&mut rbuf).await.unwrap();
            }
        }
        assert!(matches!(frames[0], Frame::SynReply { stream: 1, .. }));
        assert!(frames.contains(&Frame::Ping(11)));
        assert!(frames.contains(&Frame::Data {
            stream: 1,
            fin: false,
            data: Bytes::from_static(b"out")
        }));
        assert!(frames.contains(&Frame::Data {
            stream: 1,
            fin: true,
            data: Bytes::new()
        }));
    }
}
