//! Pseudo-terminals for `exec -t`: the slave becomes a process's stdio and controlling
//! terminal, the master an async reader/writer for the stream, resized with `TIOCSWINSZ`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use rustix::io::Errno;
use rustix::pty::OpenptFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What can go wrong while allocating a pseudo-terminal.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error(
        "cannot allocate a pseudo-terminal ({step}): {source}; is /dev/pts (devpts) mounted and /dev/ptmx present?"
    )]
    Open {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

impl PtyError {
    fn open(step: &'static str) -> impl FnOnce(Errno) -> Self {
        move |e| Self::Open {
            step,
            source: e.into(),
        }
    }
}

/// A pseudo-terminal pair: the slave for the process, the master for the kubelet.
#[derive(Debug)]
pub struct Pty {
    master: PtyMaster,
    slave: OwnedFd,
}

impl Pty {
    /// Allocates a pair. Both ends are close-on-exec, so only the stdio slots the slave is
    /// given to survive into the process; the master is non-blocking, for the reactor.
    pub fn open() -> Result<Self, PtyError> {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = rustix::pty::openpt(flags).map_err(PtyError::open("open /dev/ptmx"))?;
        rustix::pty::grantpt(&master).map_err(PtyError::open("grantpt"))?;
        rustix::pty::unlockpt(&master).map_err(PtyError::open("unlockpt"))?;
        let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
            Ok(slave) => slave,
            // Kernels before 4.13 have no TIOCGPTPEER: open the slave by its name.
            Err(_) => {
                let name =
                    rustix::pty::ptsname(&master, Vec::new()).map_err(PtyError::open("ptsname"))?;
                rustix::fs::open(
                    name.as_c_str(),
                    rustix::fs::OFlags::RDWR
                        | rustix::fs::OFlags::NOCTTY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(PtyError::open("open the slave"))?
            }
        };
        rustix::io::ioctl_fionbio(&master, true).map_err(PtyError::open("set non-blocking"))?;
        let fd = super::exec::register_with_reactor(master).map_err(|source| PtyError::Open {
            step: "register with the reactor",
            source,
        })?;
        Ok(Self {
            master: PtyMaster(Arc::new(Shared {
                fd,
                ended: AtomicBool::new(false),
                reader: AtomicWaker::new(),
            })),
            slave,
        })
    }

    /// A handle on the master: reader, writer and resizer at once.
    pub fn master(&self) -> PtyMaster {
        self.master.clone()
    }

    /// Makes the slave the stdin, stdout, stderr and controlling terminal of the process
    /// `cmd` starts (call after the sandbox set up `cmd`: the hook runs after the sandbox's).
    /// `cmd` and this `Pty` keep copies of the slave: drop both right after spawning (keep
    /// [`Self::master`] handles), or the master never reads EOF.
    pub fn give_to(&self, cmd: &mut tokio::process::Command) -> io::Result<()> {
        let copy = || -> io::Result<Stdio> { Ok(Stdio::from(self.slave.try_clone()?)) };
        cmd.stdin(copy()?).stdout(copy()?).stderr(copy()?);
        super::exec::controlling_terminal_on_exec(cmd, self.slave.try_clone()?);
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    fd: AsyncFd<OwnedFd>,
    /// Set when the process ended: reads that would block are then EOF, so a background
    /// process that keeps the slave open cannot hold the stream open after the exit code.
    ended: AtomicBool,
    /// The last reader to see "would block", woken when `ended` is set.
    reader: AtomicWaker,
}

/// The master of a [`Pty`]: what the process writes is read here (output, echo), what is
/// written here is its terminal input. Cheap to clone; the fd closes with the last clone.
#[derive(Debug, Clone)]
pub struct PtyMaster(Arc<Shared>);

impl PtyMaster {
    /// Sets the terminal size (`TIOCSWINSZ`); the kernel sends SIGWINCH to the foreground
    /// process group when it changes.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        Ok(rustix::termios::tcsetwinsize(self.0.fd.get_ref(), size)?)
    }

    /// The current terminal size as (rows, columns).
    pub fn size(&self) -> io::Result<(u16, u16)> {
        let size = rustix::termios::tcgetwinsize(self.0.fd.get_ref())?;
        Ok((size.ws_row, size.ws_col))
    }

    /// The process ended (or never started): once the output written so far is read,
    /// reads return EOF.
    pub fn process_ended(&self) {
        self.0.ended.store(true, Ordering::Release);
        self.0.reader.wake();
    }
}

/// Retries a system call interrupted by a signal.
fn retry<T>(mut op: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    loop {
        match op() {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = &*self.0;
        // Registered before `ended` is read, so an end signalled after that read wakes us.
        shared.reader.register(cx.waker());
        loop {
            let ended = shared.ended.load(Ordering::Acquire);
            let fd = shared.fd.get_ref().as_fd();
            match retry(|| rustix::io::read(fd, buf.initialize_unfilled())) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Linux answers EIO once every slave fd is closed (the process and its
                // children exited): the end of the output, not a failure.
                Err(Errno::IO) => return Poll::Ready(Ok(())),
                Err(Errno::AGAIN) if ended => return Poll::Ready(Ok(())),
                Err(Errno::AGAIN) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            match shared.fd.poll_read_ready(cx) {
                // Cleared before the next read, so data arriving in between is not missed.
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let shared = &*self.0;
        loop {
            match retry(|| rustix::io::write(shared.fd.get_ref(), data)) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(Errno::AGAIN) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
            match shared.fd.poll_write_ready(cx) {
                Poll::Ready(Ok(mut guard)) => guard.clear_ready(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// A terminal has no half-close: the end of the client's input leaves the process
    /// running, as with upstream runtimes (it ends with its own exit, or a typed Ctrl-D).
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A host shell on a new terminal: its stdio and controlling terminal are the slave.
    fn shell(pty: &Pty, script: &str) -> tokio::process::Child {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", script]).kill_on_drop(true);
        pty.give_to(&mut cmd).unwrap();
        cmd.spawn().unwrap()
    }

    async fn read_all(master: &mut PtyMaster) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), master.read_to_end(&mut out))
            .await
            .expect("the master reads EOF")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn the_process_gets_a_controlling_terminal_with_the_size_set_on_the_master() {
        let pty = Pty::open().unwrap();
        let mut master = pty.master();
        master.resize(33, 111).unwrap();
        assert_eq!(master.size().unwrap(), (33, 111));
        // /dev/tty opens only for a process that has a controlling terminal.
        let mut child = shell(
            &pty,
            "tty; stty size; echo ctty >/dev/tty && echo has-ctty; exit 3",
        );
        drop(pty);
        let out = read_all(&mut master).await;
        assert!(out.contains("/dev/pts/"), "{out:?}");
        assert!(out.contains("33 111"), "{out:?}");
        assert!(out.contains("has-ctty"), "{out:?}");
        // The line discipline turns \n into \r\n, as a terminal client expects.
        assert!(out.contains("\r\n"), "{out:?}");
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
    }

    #[tokio::test]
    async fn input_written_to_the_master_reaches_the_process() {
        let pty = Pty::open().unwrap();
        let mut master = pty.master();
        let mut child = shell(&pty, "read line; echo got-$line");
        drop(pty);
        master.write_all(b"abc\n").await.unwrap();
        let out = read_all(&mut master).await;
        // The terminal echoes the input, then the shell answers.
        assert!(out.contains("abc\r\n"), "{out:?}");
        assert!(out.contains("got-abc"), "{out:?}");
        assert!(child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn ctrl_c_typed_into_the_terminal_interrupts_the_process() {
        use std::os::unix::process::ExitStatusExt;
        let pty = Pty::open().unwrap();
        let mut master = pty.master();
        // Signals come from the line discipline only to the terminal's foreground process
        // group, which TIOCSCTTY made the new session's.
        let mut child = shell(&pty, "echo ready; exec sleep 60");
        drop(pty);
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("ready") {
            let mut buf = [0u8; 64];
            let n = master.read(&mut buf).await.unwrap();
            assert!(n > 0, "EOF before the shell was ready");
            seen.extend_from_slice(&buf[..n]);
        }
        // Whether or not `exec` has replaced the shell yet, SIGINT ends it (default action).
        master.write_all(b"\x03").await.unwrap();
        // Polled with `try_wait` (waitpid), not `wait`: this once waited out its 20 s under a
        // parallel test run, and the poll tells a SIGINT that never came (still running) from
        // an exit whose wake-up was missed.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Ctrl-C did not end the process: still running after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(status.signal(), Some(2), "{status:?}");
    }

    #[tokio::test]
    async fn a_background_process_holding_the_terminal_does_not_hold_the_output_open() {
        let pty = Pty::open().unwrap();
        let mut master = pty.master();
        let mut child = shell(&pty, "sleep 60 & echo bg=$!");
        drop(pty);
        assert!(child.wait().await.unwrap().success());
        master.process_ended();
        let out = read_all(&mut master).await;
        let pid = out
            .split("bg=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw);
        assert!(pid.is_some(), "{out:?}");
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}
