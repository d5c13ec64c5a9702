//! Network namespace cookies: the identity the programs filter on (`bpf_get_netns_cookie`).
// The one unsafe call in this crate: getsockopt(SO_NETNS_COOKIE), which neither rustix nor
// socket2 wraps.
#![allow(unsafe_code)]

use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::Path,
};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use socket2::{Domain, Socket, Type};

use crate::EbpfError;

/// `SO_NETNS_COOKIE` (Linux 5.14+), absent from the libc crate.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace `socket` belongs to.
pub fn socket_netns_cookie(socket: impl AsFd) -> Result<u64, EbpfError> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the fd is a live socket borrowed for the call; the kernel writes at most `len`
    // (8) bytes into `cookie`, a u64 that outlives the call, and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(EbpfError::io(
            "getsockopt(SO_NETNS_COOKIE)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(cookie)
}

/// The cookie of the calling thread's current network namespace.
pub fn current_netns_cookie() -> Result<u64, EbpfError> {
    // An unbound datagram socket: nothing is sent or bound, it only names the namespace.
    let socket =
        Socket::new(Domain::IPV4, Type::DGRAM, None).map_err(|e| EbpfError::io("socket()", e))?;
    socket_netns_cookie(&socket)
}

/// The cookie of the network namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`).
pub fn netns_cookie(path: impl AsRef<Path>) -> Result<u64, EbpfError> {
    let path = path.as_ref();
    let file =
        File::open(path).map_err(|e| EbpfError::io(format!("opening {}", path.display()), e))?;
    netns_cookie_fd(file.as_fd())
}

/// The cookie of the network namespace `fd` refers to (an nsfs file descriptor).
pub fn netns_cookie_fd(fd: BorrowedFd<'_>) -> Result<u64, EbpfError> {
    // setns() changes only the calling thread, so do it on a short-lived thread of our own
    // and leave the caller's namespace alone.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                move_into_link_name_space(fd, Some(LinkNameSpaceType::Network))
                    .map_err(|e| EbpfError::io("setns(CLONE_NEWNET)", e.into()))?;
                current_netns_cookie()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(EbpfError::io(
                    "netns cookie thread",
                    std::io::Error::other("panicked"),
                ))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_namespace_has_a_stable_cookie() {
        // unprivileged: no setns here (the integration tests cover netns_cookie(path))
        let a = current_netns_cookie().expect("cookie");
        let b = current_netns_cookie().expect("cookie again");
        assert_eq!(a, b);
        assert_ne!(a, 0);
    }
}
