//! Linux `splice(2)`: bytes move from one socket to the other through a kernel pipe without
//! being copied into the gateway's memory and back.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per `splice` call: the pipe's default capacity.
const CHUNK: usize = 64 * 1024;

/// A non-blocking pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two descriptors for `pipe2` to fill.
    let result = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `pipe2` succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain descriptors and null offsets (both ends are a socket or a pipe).
    let moved = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if moved < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(moved as usize)
    }
}

/// Moves bytes from `from` to `to` until `from` ends, then shuts down `to`'s write side
/// (half-close: the other direction goes on). Returns the bytes moved.
pub async fn one_way(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let (pipe_out, pipe_in) = pipe()?;
    let mut total = 0u64;
    loop {
        let moved = from
            .async_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe_in.as_raw_fd(), CHUNK)
            })
            .await?;
        if moved == 0 {
            // SAFETY: shutting down the write side of an open socket.
            let _ = unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
            return Ok(total);
        }
        let mut left = moved;
        while left > 0 {
            let sent = to
                .async_io(Interest::WRITABLE, || {
                    splice(pipe_out.as_raw_fd(), to.as_raw_fd(), left)
                })
                .await?;
            left -= sent;
        }
        total += moved as u64;
    }
}

/// Both directions at once; (client → task, task → client) bytes.
pub async fn both_ways(client: &TcpStream, task: &TcpStream) -> io::Result<(u64, u64)> {
    tokio::try_join!(one_way(client, task), one_way(task, client))
}
