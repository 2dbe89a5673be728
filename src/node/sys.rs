//! The few plain system calls the packet threads share: waiting for a descriptor, making it
//! non-blocking, integer socket options, and turning a read/write return into a byte count.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Blocks until `fd` has something to read (or an error to report).
#[cfg(test)]
pub(crate) fn wait_readable(fd: RawFd) -> io::Result<()> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, exclusively borrowed for the call.
    match unsafe { libc::poll(&mut pfd, 1, -1) } {
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Blocks until at least one of `fds` has something to read (or an error to report), and
/// says which in `ready`: the packet threads' only wait, level-triggered, so nothing that
/// arrived meanwhile is missed.
pub(crate) fn wait_any(fds: &[RawFd], ready: &mut [bool]) -> io::Result<()> {
    const MAX: usize = 64;
    let n = fds.len().min(MAX);
    let mut pfds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; MAX];
    for (p, fd) in pfds.iter_mut().zip(fds) {
        *p = libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 };
    }
    // SAFETY: pfds holds n valid pollfds, exclusively borrowed for the call.
    if unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, -1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    for (r, p) in ready.iter_mut().zip(&pfds[..n]) {
        *r = p.revents != 0;
    }
    Ok(())
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
    // SAFETY: integer options take a C int, which `value` is.
    unsafe { setsockopt_struct(fd, level, name, &value) }
}

/// Reads an integer socket option.
pub(crate) fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value is a writable c_int and len its size, both living for the call.
    let r = unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
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

/// Sets a socket option whose value is the plain C struct `value`.
///
/// # Safety
/// `T` must be the exact structure the kernel expects for `level`/`name` (e.g. `ip_mreqn` for
/// IP_ADD_MEMBERSHIP), with no padding the kernel reads as meaningful.
unsafe fn setsockopt_struct<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: value is a live T of the size passed; the caller vouches T is what the option takes.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Joins the IPv4 multicast `group` on interface `ifindex` (0: the kernel picks by route).
pub(crate) fn join_group_v4(fd: RawFd, group: std::net::Ipv4Addr, ifindex: u32) -> io::Result<()> {
    let req = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: u32::from(group).to_be() },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as libc::c_int,
    };
    // SAFETY: IP_ADD_MEMBERSHIP takes a struct ip_mreqn (Linux accepts it as well as ip_mreq).
    unsafe { setsockopt_struct(fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &req) }
}

/// Joins the IPv6 multicast `group` on interface `ifindex` (0: the kernel picks by route).
pub(crate) fn join_group_v6(fd: RawFd, group: std::net::Ipv6Addr, ifindex: u32) -> io::Result<()> {
    let req = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr { s6_addr: group.octets() },
        ipv6mr_interface: ifindex as libc::c_uint,
    };
    // SAFETY: IPV6_ADD_MEMBERSHIP takes a struct ipv6_mreq.
    unsafe { setsockopt_struct(fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &req) }
}

/// Sends IPv4 multicast through interface `ifindex`.
pub(crate) fn multicast_if_v4(fd: RawFd, ifindex: u32) -> io::Result<()> {
    let req = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as libc::c_int,
    };
    // SAFETY: IP_MULTICAST_IF takes a struct ip_mreqn (or in_addr / ip_mreq, told apart by size).
    unsafe { setsockopt_struct(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &req) }
}

/// `struct in6_flowlabel_req` (include/uapi/linux/in6.h), which libc does not define.
#[repr(C)]
struct In6FlowlabelReq {
    flr_dst: libc::in6_addr,
    flr_label: u32,
    flr_action: u8,
    flr_share: u8,
    flr_flags: u16,
    flr_expires: u16,
    flr_linger: u16,
    pad: u32,
}

/// Registers flow label `label` with the socket (IPV6_FLOWLABEL_MGR: get, creating it, shared
/// with anyone) and lets sends carry it in `sin6_flowinfo` (IPV6_FLOWINFO_SEND). The kernel ties
/// a label to a destination when it is created, but lets the socket use it towards any: every
/// socket names the same nominal one (::1), so they can all share the label.
pub(crate) fn use_flowlabel(fd: RawFd, label: u32) -> io::Result<()> {
    const IPV6_FL_A_GET: u8 = 0;
    const IPV6_FL_S_ANY: u8 = 255;
    const IPV6_FL_F_CREATE: u16 = 1;
    let req = In6FlowlabelReq {
        flr_dst: libc::in6_addr { s6_addr: std::net::Ipv6Addr::LOCALHOST.octets() },
        flr_label: (label & 0xfffff).to_be(),
        flr_action: IPV6_FL_A_GET,
        flr_share: IPV6_FL_S_ANY,
        flr_flags: IPV6_FL_F_CREATE,
        flr_expires: 0,
        flr_linger: 0,
        pad: 0,
    };
    // SAFETY: IPV6_FLOWLABEL_MGR takes a struct in6_flowlabel_req, laid out as above.
    unsafe { setsockopt_struct(fd, libc::IPPROTO_IPV6, libc::IPV6_FLOWLABEL_MGR, &req)? };
    setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_FLOWINFO_SEND, 1)
}

/// Room for the control messages of one send: UDP_SEGMENT (a u16) and IP_TOS / IPV6_TCLASS (an
/// int), each padded to the platform's alignment; 64 bytes hold both on every Linux ABI.
const CMSG_ROOM: usize = 64;

/// One UDP send: `contents` to `dst` as one datagram, or with `segment` a GSO train of datagrams
/// of that many bytes (UDP_SEGMENT), with `tos` as the outer DS byte (IP_TOS, or IPV6_TCLASS for
/// a native IPv6 destination; a v4-mapped one is sent by the IPv4 code and takes IP_TOS).
/// Retries on EINTR.
pub(crate) fn send_udp(
    fd: RawFd,
    dst: &socket2::SockAddr,
    contents: &[u8],
    segment: Option<u16>,
    tos: u8,
    ipv6_tclass: bool,
) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: contents.as_ptr() as *mut libc::c_void, iov_len: contents.len() };
    let mut control = [0u64; CMSG_ROOM / 8];
    // SAFETY: msghdr is plain old data; all-zero is a valid value, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = dst.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = dst.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_ROOM as _;
    let mut used = 0usize;
    // SAFETY: msg_control points at CMSG_ROOM writable, 8-aligned bytes that outlive the call;
    // CMSG_FIRSTHDR/NXTHDR stay within msg_controllen, and each header gets a data area of its
    // CMSG_SPACE, which the two messages' sum (at most 48 bytes) keeps inside CMSG_ROOM.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        let (level, kind) = if ipv6_tclass {
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
        } else {
            (libc::IPPROTO_IP, libc::IP_TOS)
        };
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), libc::c_int::from(tos));
        used += libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        if let Some(size) = segment {
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
            used += libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        }
    }
    msg.msg_controllen = used as _;
    loop {
        // SAFETY: msg and everything it points to (dst, iov, contents, control) live for the call.
        let n = unsafe { libc::sendmsg(fd, &msg, 0) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Raises the soft limit on open descriptors to the hard limit (at most `want`): send pools bind
/// sockets as flows appear. Returns the soft limit in force.
pub(crate) fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: lim is a writable rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let target = want.min(lim.rlim_max);
    if lim.rlim_cur < target {
        let new = libc::rlimit { rlim_cur: target, rlim_max: lim.rlim_max };
        // SAFETY: new is a valid rlimit for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return target;
        }
    }
    lim.rlim_cur
}

/// The CPUs this process may run on (sched_getaffinity), in order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a writable cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET only reads the set, for indices below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Keeps the calling thread on the CPUs in `cpus`.
pub(crate) fn pin_thread(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: c is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: set is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_INCOMING_CPU` (asm-generic/socket.h), which libc exports for few targets.
const SO_INCOMING_CPU: libc::c_int = 49;

/// Makes `fd` the socket of its SO_REUSEPORT group that gets the datagrams the kernel receives
/// on `cpu` (Linux 6.2+ honours it when selecting within a group).
pub(crate) fn set_incoming_cpu(fd: RawFd, cpu: usize) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, SO_INCOMING_CPU, cpu as libc::c_int)
}

/// A BPF instruction (struct bpf_insn).
#[repr(C)]
struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The head of `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`; the kernel
/// zero-extends a shorter attribute.
#[repr(C)]
struct BpfProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads the TAP steering program `return bpf_get_smp_processor_id();` (a socket filter): the
/// tun driver takes its result modulo the number of queues, so a frame the stack sends on CPU
/// `c` lands on queue `c % queues`, read by the thread kept on that CPU.
pub(crate) fn load_cpu_steering() -> io::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    const BPF_FUNC_GET_SMP_PROCESSOR_ID: i32 = 8;
    let insns = [
        BpfInsn { code: 0x85, regs: 0, off: 0, imm: BPF_FUNC_GET_SMP_PROCESSOR_ID }, // call
        BpfInsn { code: 0x95, regs: 0, off: 0, imm: 0 },                             // exit
    ];
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"vxtap_cpu");
    let attr = BpfProgLoad {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: attr, insns and license live for the call; the kernel reads size_of::<BpfProgLoad>()
    // bytes of attr and the arrays its pointers give, with the lengths it names.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const BpfProgLoad,
            std::mem::size_of::<BpfProgLoad>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the bpf syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// An eventfd: a counter another thread bumps to wake a thread waiting on it in poll
/// ([`wait_any`]), non-blocking. A packet thread has one in its poll set, so that a change of the
/// networks it serves (a reload) reaches it even while no packet arrives.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: plain eventfd(2); the descriptor is owned right away.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd returned a new descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the descriptor readable (until [`EventFd::clear`]).
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of a live u64, as eventfd requires. It cannot block (the
        // counter would have to reach u64::MAX - 1), and a failure leaves the fd readable anyway.
        let _ = unsafe { libc::write(self.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter: not readable any more until the next [`EventFd::notify`]. True if it
    /// had been notified.
    pub(crate) fn clear(&self) -> bool {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; non-blocking, so EAGAIN when already clear.
        let n = unsafe { libc::read(self.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
        n == 8
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
}

/// The byte count a read or write system call returned, or its error.
pub(crate) fn byte_count(n: isize) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
