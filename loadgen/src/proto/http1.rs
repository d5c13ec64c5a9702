//! HTTP/1.1: an own keep-alive client on one reusable read buffer, with pipelining, so the client
//! costs about what wrk costs.

use std::time::Instant;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Failure, Proto};
use crate::Error;
use crate::config::Config;
use crate::net::{Endpoint, HttpTarget, Stream};

/// A response head larger than this is refused (a misdirected or hostile server).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

#[derive(Debug)]
pub(crate) struct Http1 {
    endpoint: Endpoint,
    /// One request's bytes.
    request_len: usize,
    /// `--pipeline` copies of the request, written as one.
    batch: Vec<u8>,
    head: bool,
    new_conn: bool,
}

#[derive(Debug)]
pub(crate) struct Lane {
    stream: Option<Stream>,
    buf: ReadBuffer,
}

impl Http1 {
    pub async fn new(config: &Config) -> Result<Http1, Error> {
        let target = HttpTarget::parse(&config.target, None).await?;
        let endpoint = target.endpoint(&config.tls, &[b"http/1.1"])?;
        let method = config.method.to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(Error::Config {
                field: "--http-method",
                problem: format!("{:?} is not an HTTP method", config.method),
            });
        }
        let mut request = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\n",
            target.path, target.authority
        );
        for (name, value) in &config.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !config.payload.is_empty() || matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
            request.push_str(&format!("Content-Length: {}\r\n", config.payload.len()));
        }
        request.push_str("\r\n");
        let mut one = request.into_bytes();
        one.extend_from_slice(&config.payload);
        Ok(Http1 {
            endpoint,
            request_len: one.len(),
            batch: one.repeat(config.pipeline),
            head: method == "HEAD",
            new_conn: config.new_conn,
        })
    }

    async fn connect(&self) -> Result<Stream, Failure> {
        let stream = self.endpoint.connect().await?;
        if let Some(alpn) = stream.alpn()
            && alpn != b"http/1.1"
        {
            return Err(Failure::new(
                "protocol",
                format!(
                    "{} negotiated ALPN {:?}, not http/1.1",
                    self.endpoint.addr,
                    String::from_utf8_lossy(alpn)
                ),
                true,
            ));
        }
        Ok(stream)
    }
}

impl Proto for Http1 {
    type Lane = Lane;

    async fn open(&self, lanes: usize) -> Result<Vec<Lane>, Failure> {
        let mut out = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let stream = if self.new_conn {
                None
            } else {
                Some(self.connect().await?)
            };
            out.push(Lane {
                stream,
                buf: ReadBuffer::new(),
            });
        }
        Ok(out)
    }

    fn tls_handshakes(&self) -> Option<(u64, u64)> {
        self.endpoint.tls_handshakes()
    }

    async fn call(
        &self,
        lane: &mut Lane,
        n: usize,
        done: &mut Vec<Instant>,
    ) -> Result<(), Failure> {
        let addr = self.endpoint.addr;
        if lane.stream.is_none() {
            lane.stream = Some(self.connect().await?);
            lane.buf.clear();
        }
        let Some(stream) = lane.stream.as_mut() else {
            return Err(Failure::new("io", "no connection".into(), true));
        };
        let bytes = &self.batch[..self.request_len * n];
        let written = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        if let Err(e) = written.await {
            lane.stream = None;
            return Err(Failure::io(addr, &e));
        }
        let mut bad: Option<Failure> = None;
        let mut keep_alive = true;
        for _ in 0..n {
            let answer = match read_response(stream, &mut lane.buf, self.head).await {
                Ok(answer) => answer,
                Err(e) => {
                    lane.stream = None;
                    return Err(e.into_failure(addr));
                }
            };
            keep_alive &= answer.keep_alive;
            if answer.status < 400 {
                done.push(Instant::now());
            } else if let Some(failure) = bad.as_mut() {
                failure.count += 1;
            } else {
                bad = Some(Failure::new(
                    format!("http {}", answer.status),
                    format!("{addr} answered HTTP {}", answer.status),
                    false,
                ));
            }
            if !keep_alive {
                break;
            }
        }
        if !keep_alive || self.new_conn {
            lane.stream = None;
        }
        match bad {
            Some(failure) => Err(failure),
            None if done.len() < n => Err(Failure::new(
                "io",
                format!(
                    "{addr} closed the connection after {} of {n} pipelined requests",
                    done.len()
                ),
                true,
            )),
            None => Ok(()),
        }
    }
}

/// A response head's meaning for the client.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    keep_alive: bool,
}

#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Closed,
    Protocol(String),
}

impl ReadError {
    fn into_failure(self, addr: std::net::SocketAddr) -> Failure {
        match self {
            ReadError::Io(e) => Failure::io(addr, &e),
            ReadError::Closed => Failure::new(
                "io",
                format!("{addr} closed the connection before answering"),
                true,
            ),
            ReadError::Protocol(problem) => Failure::new(
                "protocol",
                format!("{addr} sent a malformed HTTP/1.1 response: {problem}"),
                true,
            ),
        }
    }
}

/// Bytes read but not yet parsed: `data[start..end]`.
#[derive(Debug)]
struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuffer {
    fn new() -> ReadBuffer {
        ReadBuffer {
            data: vec![0; 16 * 1024],
            start: 0,
            end: 0,
        }
    }

    fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.clear();
        }
    }

    /// Read more bytes; `Closed` at end of stream.
    async fn fill<S: tokio::io::AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<usize, ReadError> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = self.data.len() * 2;
                self.data.resize(grown, 0);
            }
        }
        let n = stream
            .read(&mut self.data[self.end..])
            .await
            .map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        self.end += n;
        Ok(n)
    }

    /// Drop `len` body bytes, reading as needed.
    async fn skip<S: tokio::io::AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        mut len: usize,
    ) -> Result<(), ReadError> {
        loop {
            let have = self.end - self.start;
            if have >= len {
                self.consume(len);
                return Ok(());
            }
            len -= have;
            self.clear();
            self.fill(stream).await?;
        }
    }

    /// One CRLF-terminated line (without the CRLF), consumed.
    async fn line<S: tokio::io::AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(at) = self.filled().windows(2).position(|w| w == b"\r\n") {
                let line = self.filled()[..at].to_vec();
                self.consume(at + 2);
                return Ok(line);
            }
            if self.end - self.start > MAX_HEAD {
                return Err(ReadError::Protocol("chunk line too long".into()));
            }
            self.fill(stream).await?;
        }
    }
}

/// How the body of a response is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Read one whole response (1xx interim answers skipped), leaving what follows in `buf`.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut ReadBuffer,
    head: bool,
) -> Result<Answer, ReadError> {
    loop {
        let (status, mut keep_alive, body, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buf.filled()) {
                Ok(httparse::Status::Complete(len)) => {
                    let parsed = parse_head(&response, head)?;
                    break (parsed.0, parsed.1, parsed.2, len);
                }
                Ok(httparse::Status::Partial) => {
                    if buf.end - buf.start > MAX_HEAD {
                        return Err(ReadError::Protocol(format!(
                            "response head longer than {MAX_HEAD} bytes"
                        )));
                    }
                }
                Err(e) => return Err(ReadError::Protocol(e.to_string())),
            }
            buf.fill(stream).await?;
        };
        buf.consume(head_len);
        match body {
            Body::None => {}
            Body::Length(len) => buf.skip(stream, len).await?,
            Body::Chunked => loop {
                let line = buf.line(stream).await?;
                let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size_text)
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .ok_or_else(|| {
                        ReadError::Protocol(format!(
                            "bad chunk size {:?}",
                            String::from_utf8_lossy(&line)
                        ))
                    })?;
                if size == 0 {
                    while !buf.line(stream).await?.is_empty() {}
                    break;
                }
                buf.skip(stream, size + 2).await?;
            },
            Body::UntilClose => {
                keep_alive = false;
                loop {
                    buf.clear();
                    match buf.fill(stream).await {
                        Ok(_) => {}
                        Err(ReadError::Closed) => break,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        return Ok(Answer { status, keep_alive });
    }
}

fn parse_head(
    response: &httparse::Response<'_, '_>,
    head: bool,
) -> Result<(u16, bool, Body), ReadError> {
    let status = response
        .code
        .ok_or_else(|| ReadError::Protocol("no status code".into()))?;
    let mut keep_alive = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ReadError::Protocol(format!(
                        "bad Content-Length {:?}",
                        String::from_utf8_lossy(header.value)
                    ))
                })?;
            length = Some(len);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = contains_token(header.value, b"chunked");
        } else if header.name.eq_ignore_ascii_case("connection") {
            if contains_token(header.value, b"close") {
                keep_alive = false;
            } else if contains_token(header.value, b"keep-alive") {
                keep_alive = true;
            }
        }
    }
    let body = if head || (100..200).contains(&status) || status == 204 || status == 304 {
        Body::None
    } else if chunked {
        Body::Chunked
    } else if let Some(len) = length {
        Body::Length(len)
    } else {
        Body::UntilClose
    };
    Ok((status, keep_alive, body))
}

fn contains_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn answers(wire: &[u8], count: usize, head: bool) -> Result<Vec<Answer>, ReadError> {
        // One byte per read: every parser state sees a partial buffer at least once.
        let mut stream = tokio_test_reader(wire);
        let mut buf = ReadBuffer::new();
        let mut out = Vec::new();
        for _ in 0..count {
            out.push(read_response(&mut stream, &mut buf, head).await?);
        }
        assert!(buf.filled().is_empty(), "left over: {:?}", buf.filled());
        Ok(out)
    }

    fn tokio_test_reader(wire: &[u8]) -> Trickle {
        Trickle {
            data: wire.to_vec(),
            pos: 0,
        }
    }

    /// Hands out one byte per read.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
    }

    impl tokio::io::AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.pos < self.data.len() {
                let byte = self.data[self.pos];
                buf.put_slice(&[byte]);
                self.pos += 1;
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn pipelined_responses_of_every_framing_are_read_exactly() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n\
HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end";
        let got = answers(wire, 5, false).await.unwrap();
        let statuses: Vec<(u16, bool)> = got.iter().map(|a| (a.status, a.keep_alive)).collect();
        assert_eq!(
            statuses,
            vec![
                (200, true),
                (503, true),
                (204, true),
                (200, false),
                (200, false)
            ]
        );
    }

    #[tokio::test]
    async fn malformed_and_truncated_answers_are_errors() {
        assert!(matches!(
            answers(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 1, false).await,
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            answers(b"SSH-2.0-OpenSSH\r\n\r\n", 1, false).await,
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            answers(
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
                1,
                false
            )
            .await,
            Err(ReadError::Closed)
        ));
        // HEAD: a Content-Length but no body follows.
        let got = answers(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", 1, true)
            .await
            .unwrap();
        assert_eq!(got[0].status, 200);
    }
}
