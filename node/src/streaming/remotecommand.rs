//! exec and attach streams: the channel protocols over websocket (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io`) and over SPDY/3.1 (`v4.channel.k8s.io`, one stream per `streamType`),
//! both ending with the verdict on the error channel.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, StreamWriter};
use super::ws::{self, WsSender};
use super::{BoxRead, ContainerTarget, ExecRequest, PodStreams, TerminalSize, status};

/// Websocket channel numbers.
const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: `[255, channel]` from the client closes that channel (stdin EOF).
const CLOSE: u8 = 255;
/// How long a SPDY client may take to open the streams it announced.
const STREAM_WAIT: Duration = Duration::from_secs(30);

/// Whether the request runs a command or attaches to the main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exec,
    Attach,
}

/// Where one output channel goes.
enum Sink {
    Spdy(StreamWriter),
    Ws { sender: WsSender, channel: u8 },
}

impl Sink {
    async fn send(&self, data: Bytes) -> bool {
        match self {
            Self::Spdy(w) => w.write(data).await,
            Self::Ws { sender, channel } => {
                let mut msg = Vec::with_capacity(data.len() + 1);
                msg.push(*channel);
                msg.extend_from_slice(&data);
                sender.binary(Bytes::from(msg)).await
            }
        }
    }

    async fn close(&self) {
        // Websocket channels end with the connection.
        if let Self::Spdy(w) = self {
            w.close().await;
        }
    }
}

/// The client side of one exec, whatever the transport.
struct Channels {
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: Option<mpsc::Receiver<TerminalSize>>,
    stdout: Option<Sink>,
    stderr: Option<Sink>,
    error: Option<Sink>,
}

/// Serves exec/attach over an upgraded SPDY/3.1 connection (`v4.channel.k8s.io`).
pub async fn serve_spdy<IO>(
    io: IO,
    streams: Arc<dyn PodStreams>,
    target: ContainerTarget,
    request: ExecRequest,
    mode: Mode,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = spdy::serve(io);
    let expected = 1
        + usize::from(request.stdin)
        + usize::from(request.stdout)
        + usize::from(request.stderr && !request.tty)
        + usize::from(request.tty);
    let mut ch = Channels {
        stdin: None,
        resize: None,
        stdout: None,
        stderr: None,
        error: None,
    };
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + STREAM_WAIT;
    while seen < expected {
        let stream = match tokio::time::timeout_at(deadline, session.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(_) => {
                tracing::info!(
                    pod = target.pod,
                    "exec client did not open its streams in time"
                );
                return;
            }
        };
        seen += 1;
        match stream.header("streamtype").unwrap_or_default() {
            "error" => ch.error = Some(Sink::Spdy(stream.writer)),
            "stdin" => ch.stdin = Some(stream.incoming),
            "stdout" => ch.stdout = Some(Sink::Spdy(stream.writer)),
            "stderr" => ch.stderr = Some(Sink::Spdy(stream.writer)),
            "resize" => ch.resize = Some(resize_decoder(stream.incoming)),
            other => {
                tracing::debug!(stream_type = other, "unknown exec stream");
                stream.writer.reset().await;
                seen -= 1;
            }
        }
    }
    // Later streams (none are expected) are refused; the session lives on for ours.
    tokio::spawn(async move {
        while let Some(s) = session.recv().await {
            s.writer.reset().await;
        }
    });
    run(streams, target, request, mode, ch).await;
}

/// Concatenated JSON terminal sizes (SPDY's resize stream) to single sizes.
fn resize_decoder(mut incoming: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(b) = incoming.recv().await {
            buf.extend_from_slice(&b);
            let mut sizes = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
            let mut consumed = 0;
            while let Some(size) = sizes.next() {
                match size {
                    Ok(size) => {
                        consumed = sizes.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if e.is_eof() => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "bad terminal size");
                        return;
                    }
                }
            }
            buf.drain(..consumed);
        }
    });
    rx
}

/// Serves exec/attach over an upgraded websocket connection; `v5` enables the close channel.
pub async fn serve_ws<IO>(
    io: IO,
    streams: Arc<dyn PodStreams>,
    target: ContainerTarget,
    request: ExecRequest,
    mode: Mode,
    v5: bool,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (sender, mut messages) = ws::start(io);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(32);
    let (resize_tx, resize_rx) = mpsc::channel::<TerminalSize>(8);
    let want_stdin = request.stdin;
    tokio::spawn(async move {
        let mut stdin_tx = want_stdin.then_some(stdin_tx);
        while let Some(msg) = messages.recv().await {
            let Some((&channel, data)) = msg.split_first() else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(tx) = &stdin_tx
                        && !data.is_empty()
                        && tx.send(Bytes::copy_from_slice(data)).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                RESIZE => match serde_json::from_slice::<TerminalSize>(data) {
                    Ok(size) => {
                        let _ = resize_tx.try_send(size);
                    }
                    Err(e) => tracing::debug!(error = %e, "bad terminal size"),
                },
                CLOSE if v5 && data.first() == Some(&STDIN) => stdin_tx = None,
                _ => {}
            }
        }
    });
    let ch = Channels {
        stdin: request.stdin.then_some(stdin_rx),
        resize: request.tty.then_some(resize_rx),
        stdout: request.stdout.then(|| Sink::Ws {
            sender: sender.clone(),
            channel: STDOUT,
        }),
        stderr: (request.stderr && !request.tty).then(|| Sink::Ws {
            sender: sender.clone(),
            channel: STDERR,
        }),
        error: Some(Sink::Ws {
            sender: sender.clone(),
            channel: ERROR,
        }),
    };
    run(streams, target, request, mode, ch).await;
    sender.close(1000).await;
}

/// Copies a process output to its channel, then closes the channel.
async fn pump(reader: Option<BoxRead>, sink: Option<Sink>) {
    match (reader, sink) {
        (Some(mut r), sink) => {
            let mut buf = vec![0u8; 32 * 1024];
            let mut sink = sink;
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(s) = &sink
                            && !s.send(Bytes::copy_from_slice(&buf[..n])).await
                        {
                            // The client went away: keep draining so the process never blocks.
                            sink = None;
                        }
                    }
                }
            }
            if let Some(s) = sink {
                s.close().await;
            }
        }
        (None, Some(s)) => s.close().await,
        (None, None) => {}
    }
}

/// Starts the process and relays until it ends, then writes the verdict.
async fn run(
    streams: Arc<dyn PodStreams>,
    target: ContainerTarget,
    request: ExecRequest,
    mode: Mode,
    ch: Channels,
) {
    let command = request.command.clone();
    let started = match mode {
        Mode::Exec => streams.exec(&target, request).await,
        Mode::Attach => streams.attach(&target, request).await,
    };
    let child = match started {
        Ok(child) => child,
        Err(e) => {
            tracing::info!(pod = target.pod, container = target.container, error = %e,
                "exec could not start");
            finish(ch.error, status::stream_failure(&e), [ch.stdout, ch.stderr]).await;
            return;
        }
    };
    let stdin_task = match (ch.stdin, child.stdin) {
        (Some(mut rx), Some(mut w)) => Some(tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        })),
        (Some(mut rx), None) => Some(tokio::spawn(
            async move { while rx.recv().await.is_some() {} },
        )),
        _ => None,
    };
    let resize_task = match (ch.resize, child.resize) {
        (Some(mut rx), Some(tx)) => Some(tokio::spawn(async move {
            while let Some(size) = rx.recv().await {
                if tx.send(size).await.is_err() {
                    break;
                }
            }
        })),
        _ => None,
    };
    let (code, (), ()) = tokio::join!(
        child.exit,
        pump(child.stdout, ch.stdout),
        pump(child.stderr, ch.stderr)
    );
    for task in [stdin_task, resize_task].into_iter().flatten() {
        task.abort();
    }
    let verdict = match code {
        Ok(code) => status::exit_status(&command, code),
        Err(e) => status::stream_failure(&e),
    };
    finish(ch.error, verdict, [None, None]).await;
}

/// Writes the verdict on the error channel and closes what is left.
async fn finish(error: Option<Sink>, verdict: serde_json::Value, others: [Option<Sink>; 2]) {
    for s in others.into_iter().flatten() {
        s.close().await;
    }
    if let Some(error) = error {
        // Upstream writes Success too; kubectl reads the channel to its end either way.
        error.send(Bytes::from(verdict.to_string())).await;
        error.close().await;
    }
}

/// Decodes `?command=a&command=b` style repeated values, in order.
pub fn commands<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<String> {
    pairs
        .into_iter()
        .filter(|(k, _)| *k == "command")
        .map(|(_, v)| v.to_owned())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resize_decoder_splits_concatenated_json_across_chunks() {
        let (tx, rx) = mpsc::channel(4);
        let mut sizes = resize_decoder(rx);
        tx.send(Bytes::from_static(b"{\"Width\":80,\"Height\":24}{\"Wid"))
            .await
            .unwrap();
        tx.send(Bytes::from_static(b"th\":100,\"Height\":30}"))
            .await
            .unwrap();
        assert_eq!(
            sizes.recv().await.unwrap(),
            TerminalSize {
                width: 80,
                height: 24
            }
        );
        assert_eq!(
            sizes.recv().await.unwrap(),
            TerminalSize {
                width: 100,
                height: 30
            }
        );
    }

    #[test]
    fn commands_keep_order() {
        assert_eq!(
            commands([("command", "sh"), ("stdin", "true"), ("command", "-c")]),
            vec!["sh".to_owned(), "-c".to_owned()]
        );
    }
}
