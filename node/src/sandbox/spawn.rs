//! Starting a container's process without copying skiff: `clone(CLONE_VM | CLONE_VFORK)`
//! (what `posix_spawn` does), the pod entered in the child, then exec; the process is then
//! watched through a pidfd.
//!
//! `fork()` of skiff — one process with the API server, controllers and the data plane — copies
//! its page tables and makes every page it then writes copy-on-write: with 100 pods starting at
//! once that was about a sixth of skiff's CPU. The child here runs on its own small stack in
//! skiff's memory while the calling thread waits, so it must not allocate, lock or unwind: it
//! makes raw system calls on data prepared before the clone ([`Plan`]), and reports a failure
//! through that shared memory before `_exit`.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString, c_char, c_int, c_void};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use super::error::SandboxError;
use super::exec::Entry;

/// The child's stack: it makes a few system calls and nothing else.
const CHILD_STACK: usize = 64 * 1024;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct ProcessSpec {
    /// A path, or a name looked up in the `PATH` of `env` (as `execvp` would).
    pub program: OsString,
    pub args: Vec<OsString>,
    /// The whole environment (nothing of skiff's is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// The working directory, entered after the pod's mounts are made.
    pub cwd: Option<PathBuf>,
}

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Setup(SandboxError),
    #[error("{program:?}: executable file not found in $PATH")]
    NotFound { program: OsString },
    #[error("{program:?}: argument or environment contains a NUL byte")]
    Nul { program: OsString },
    #[error("{program:?}: {step}: {source}")]
    Start {
        program: OsString,
        step: &'static str,
        source: std::io::Error,
    },
}

impl SpawnError {
    /// True when the program does not exist (upstream's "executable file not found").
    pub fn is_not_found(&self) -> bool {
        match self {
            SpawnError::NotFound { .. } => true,
            SpawnError::Start { step, source, .. } => {
                *step == "exec" && source.kind() == std::io::ErrorKind::NotFound
            }
            _ => false,
        }
    }
}

/// A started process: its pid, a pidfd to wait on, and the read ends of its stdout and stderr.
#[derive(Debug)]
pub struct Process {
    pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

impl Process {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// Waits for the process to end and reaps it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let pidfd = self
            .pidfd
            .as_ref()
            .ok_or_else(|| std::io::Error::other("process already reaped"))?;
        let status = reap(pidfd, self.pid).await?;
        self.status = Some(status);
        Ok(status)
    }

    /// Sends SIGKILL (nothing if it already ended).
    pub fn start_kill(&mut self) -> std::io::Result<()> {
        match (&self.pidfd, self.status) {
            (Some(fd), None) => {
                match rustix::process::pidfd_send_signal(
                    fd.get_ref(),
                    rustix::process::Signal::KILL,
                ) {
                    Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Process {
    /// A process dropped before it was waited for is still reaped once it ends (no zombie).
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let (Some(pidfd), pid) = (self.pidfd.take(), self.pid) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = reap(&pidfd, pid).await;
                });
            }
            Err(_) => {
                std::thread::spawn(move || {
                    let mut status = 0;
                    // SAFETY: waitpid on our own child's pid, with a valid status pointer.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    drop(pidfd);
                });
            }
        }
    }
}

/// Waits until the pidfd says `pid` ended, and reaps it.
async fn reap(pidfd: &AsyncFd<OwnedFd>, pid: i32) -> std::io::Result<ExitStatus> {
    loop {
        let mut ready = pidfd.readable().await?;
        if let Some(status) = try_reap(pid)? {
            return Ok(status);
        }
        ready.clear_ready();
    }
}

/// Reaps `pid` if it has ended.
fn try_reap(pid: i32) -> std::io::Result<Option<ExitStatus>> {
    let mut status: c_int = 0;
    // SAFETY: waitpid on our own child (not yet reaped, so the pid is still ours) with a
    // valid pointer to the status.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match r {
        0 => Ok(None),
        r if r == pid => Ok(Some(ExitStatus::from_raw(status))),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Which step of the child failed (stored with the errno in [`Plan`]).
const STEPS: [&str; 6] = [
    "",
    "enter the pod",
    "redirect stdio",
    "change to the working directory",
    "exec",
    "reset signals",
];

/// Everything the child reads, prepared before the clone; the two atomics are how it reports.
struct Plan<'a> {
    entry: &'a Entry,
    stdio: [RawFd; 3],
    cwd: Option<&'a CString>,
    path: &'a CString,
    argv: &'a [*const c_char],
    envp: &'a [*const c_char],
    failed_step: AtomicI32,
    failed_errno: AtomicI32,
}

/// Starts `process` inside the pod `entry` describes.
pub(crate) fn spawn(process: &ProcessSpec, entry: Entry) -> Result<Process, SpawnError> {
    let program = process.program.clone();
    let nul = || SpawnError::Nul {
        program: program.clone(),
    };
    let start = |step: &'static str| {
        let program = program.clone();
        move |source: std::io::Error| SpawnError::Start {
            program,
            step,
            source,
        }
    };
    let path = resolve(&process.program, &process.env).ok_or_else(|| SpawnError::NotFound {
        program: program.clone(),
    })?;
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| nul())?;
    let args: Vec<CString> = std::iter::once(process.program.as_os_str())
        .chain(process.args.iter().map(OsString::as_os_str))
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| nul())?;
    let env: Vec<CString> = process
        .env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .map_err(|_| nul())?;
    let argv: Vec<*const c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let cwd = match &process.cwd {
        Some(d) => Some(CString::new(d.as_os_str().as_bytes()).map_err(|_| nul())?),
        None => None,
    };
    let stdin = std::fs::File::open("/dev/null").map_err(start("open /dev/null"))?;
    let (out_r, out_w) = pipe_pair().map_err(start("make the stdout pipe"))?;
    let (err_r, err_w) = pipe_pair().map_err(start("make the stderr pipe"))?;
    let plan = Plan {
        entry: &entry,
        stdio: [stdin.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
        cwd: cwd.as_ref(),
        path: &path,
        argv: &argv,
        envp: &envp,
        failed_step: AtomicI32::new(0),
        failed_errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let pid = clone_vfork(&plan, &mut stack).map_err(start("clone"))?;
    drop((stdin, out_w, err_w));
    let step = plan.failed_step.load(Ordering::Acquire);
    if step != 0 {
        let errno = plan.failed_errno.load(Ordering::Acquire);
        // The child has exited (vfork returns after exec or exit): reap it.
        let mut status = 0;
        // SAFETY: waitpid on the child just made, with a valid status pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let step = usize::try_from(step)
            .ok()
            .and_then(|i| STEPS.get(i))
            .copied()
            .unwrap_or("start");
        return Err(start(step)(std::io::Error::from_raw_os_error(errno)));
    }
    let pidfd = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| std::io::Error::other("clone returned pid 0"))
        .and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::NONBLOCK)
                .map_err(std::io::Error::from)
        })
        .and_then(|fd| {
            // SAFETY: the `AsyncFd` owns the pidfd, so it stays open and the same for the
            // registration's whole life.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                .map_err(std::io::Error::from)
        });
    let pidfd = match pidfd {
        Ok(fd) => fd,
        Err(e) => {
            // SAFETY: kill + waitpid on our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(start("watch the process")(e));
        }
    };
    Ok(Process {
        pid,
        pidfd: Some(pidfd),
        status: None,
        stdout: pipe::Receiver::from_owned_fd(out_r).ok(),
        stderr: pipe::Receiver::from_owned_fd(err_r).ok(),
    })
}

/// `program` as `execvp` would find it: a path as given, a bare name in the `PATH` of `env`.
fn resolve(program: &OsStr, env: &[(OsString, OsString)]) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    if program.is_empty() {
        return None;
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"), |(_, v)| v);
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.is_file() && rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}

/// A close-on-exec pipe: (read end, write end).
fn pipe_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just made and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Clones a child that shares our memory and runs [`child_main`] on `stack`; returns once the
/// child has exec'd or exited. Every signal is blocked around it, so no handler of skiff's runs
/// in the child before it resets them.
fn clone_vfork(plan: &Plan<'_>, stack: &mut [u8]) -> std::io::Result<i32> {
    // SAFETY: plain sigset manipulation on local values.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // The stack grows down from its end, 16-byte aligned.
    let top = stack.as_mut_ptr_range().end as usize & !15;
    // SAFETY: `child_main` only reads `plan` (alive until we return, since CLONE_VFORK
    // suspends this thread until the child execs or exits) and makes raw system calls on its
    // own stack; SIGCHLD tells us when it ends.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            plan as *const Plan<'_> as *mut c_void,
        )
    };
    let error = std::io::Error::last_os_error();
    // SAFETY: restores this thread's signal mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 { Err(error) } else { Ok(pid) }
}

/// The child: enter the pod, stdio, working directory, default signal handlers, exec. On
/// failure it records the step and errno in the plan and exits 127.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Plan` the parent passed, alive while the parent waits for us.
    let plan = unsafe { &*(arg as *const Plan<'_>) };
    let fail = |step: i32, errno: i32| -> c_int {
        plan.failed_errno.store(errno, Ordering::Release);
        plan.failed_step.store(step, Ordering::Release);
        // SAFETY: ends the child without running anything of the parent's (no atexit).
        unsafe { libc::_exit(127) }
    };
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    if let Err(e) = plan.entry.apply() {
        return fail(1, e.raw_os_error().unwrap_or(libc::EIO));
    }
    for (fd, target) in plan.stdio.iter().zip(0..) {
        // SAFETY: dup2 of fds the parent keeps open until we exec; it clears close-on-exec.
        if unsafe { libc::dup2(*fd, target) } < 0 {
            return fail(2, errno());
        }
    }
    if let Some(dir) = plan.cwd {
        // SAFETY: chdir with a NUL-terminated path.
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            return fail(3, errno());
        }
    }
    // Skiff's handlers mean nothing in the program; ignored signals stay ignored as exec keeps
    // them, except SIGPIPE, which Rust ignores for itself and programs expect at its default.
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: reading and setting signal dispositions of this (child) process, whose
        // handler table is its own copy (no CLONE_SIGHAND).
        unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            let handled =
                current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
            if handled || sig == libc::SIGPIPE {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                if libc::sigaction(sig, &default, std::ptr::null_mut()) != 0 {
                    return fail(5, errno());
                }
            }
        }
    }
    // SAFETY: an empty mask for the program, as a freshly started process has.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    // SAFETY: NUL-terminated path and NULL-terminated arrays of NUL-terminated strings, all
    // owned by the parent, which is suspended until this exec.
    unsafe { libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
    fail(4, errno())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn spec(program: &str, args: &[&str]) -> ProcessSpec {
        ProcessSpec {
            program: program.into(),
            args: args.iter().map(Into::into).collect(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: None,
        }
    }

    async fn read_all(r: Option<pipe::Receiver>) -> String {
        let mut out = String::new();
        r.unwrap().read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn runs_the_program_with_its_env_cwd_and_pipes() {
        let mut s = spec("sh", &["-c", "echo \"$FOO\"; pwd; echo oops >&2; exit 3"]);
        s.env.push(("FOO".into(), "bar baz".into()));
        s.cwd = Some("/tmp".into());
        let mut p = spawn(&s, Entry::default()).unwrap();
        let (out, err) = (
            read_all(p.stdout.take()).await,
            read_all(p.stderr.take()).await,
        );
        assert_eq!(out, "bar baz\n/tmp\n");
        assert_eq!(err, "oops\n");
        assert_eq!(p.wait().await.unwrap().code(), Some(3));
        // Waiting again answers the same.
        assert_eq!(p.wait().await.unwrap().code(), Some(3));
    }

    #[tokio::test]
    async fn the_program_gets_default_signals_and_an_empty_mask() {
        // The test harness, like skiff, ignores SIGPIPE; a program must not inherit that.
        let mut p = spawn(
            &spec("grep", &["-E", "^Sig(Blk|Ign)", "/proc/self/status"]),
            Entry::default(),
        )
        .unwrap();
        let out = read_all(p.stdout.take()).await;
        assert!(p.wait().await.unwrap().success());
        let field = |name: &str| {
            let hex = out
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim();
            u64::from_str_radix(hex, 16).unwrap()
        };
        assert_eq!(field("SigBlk:"), 0, "{out}");
        let sigpipe = 1u64 << (libc::SIGPIPE - 1);
        assert_eq!(field("SigIgn:") & sigpipe, 0, "{out}");
    }

    #[tokio::test]
    async fn a_missing_program_or_working_directory_is_named() {
        let err = spawn(&spec("no-such-program-here", &[]), Entry::default()).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(err.to_string().contains("no-such-program-here"), "{err}");

        let err = spawn(&spec("/no/such/path", &[]), Entry::default()).unwrap_err();
        assert!(err.is_not_found(), "{err}");

        let mut s = spec("true", &[]);
        s.cwd = Some("/no/such/dir".into());
        let err = spawn(&s, Entry::default()).unwrap_err();
        assert!(!err.is_not_found(), "{err}");
        assert!(err.to_string().contains("working directory"), "{err}");

        let err = spawn(&spec("true", &["a\0b"]), Entry::default()).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[tokio::test]
    async fn kill_ends_it_and_a_dropped_process_is_reaped() {
        let mut p = spawn(&spec("sleep", &["100"]), Entry::default()).unwrap();
        p.start_kill().unwrap();
        let status = p.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        p.start_kill().unwrap();

        let p = spawn(&spec("true", &[]), Entry::default()).unwrap();
        let pid = p.id();
        drop(p);
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        for _ in 0..500 {
            if !proc_dir.exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("pid {pid} was not reaped after its Process was dropped");
    }
}
