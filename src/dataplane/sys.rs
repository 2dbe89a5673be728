//! The few plain system calls the packet threads share: waiting for a descriptor, making it
//! non-blocking, integer socket options, and turning a read/write return into a byte count.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// Blocks until `fd` has something to read (or an error to report): the packet threads' only
/// wait, level-triggered, so nothing that arrived meanwhile is missed.
pub(crate) fn wait_readable(fd: RawFd) -> io::Result<()> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, exclusively borrowed for the call.
    match unsafe { libc::poll(&mut pfd, 1, -1) } {
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Makes reads on `fd` return WouldBlock instead of waiting.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: F_SETFL takes an int of flags by value.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: value is a c_int living for the call, and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Datagrams the kernel dropped at socket `fd` (receive buffer full, bad checksum): the
/// SK_MEMINFO_DROPS field of SO_MEMINFO. None if the kernel does not say.
pub(crate) fn socket_drops(fd: RawFd) -> Option<u64> {
    const DROPS: usize = libc::SK_MEMINFO_DROPS as usize;
    let mut info = [0u32; DROPS + 1];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: info is a writable buffer of len bytes, and len is passed by pointer.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_MEMINFO, info.as_mut_ptr().cast(), &mut len)
    };
    (r == 0 && len as usize >= (DROPS + 1) * 4).then(|| u64::from(info[DROPS]))
}

/// The byte count a read or write system call returned, or its error.
pub(crate) fn byte_count(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
