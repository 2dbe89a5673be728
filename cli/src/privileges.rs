//! Dropping root after setup (`vxtap run --user`).
//!
//! Creating a TAP, setting its MTU and address and binding port 4789 need root or
//! CAP_NET_ADMIN; moving packets through descriptors that are already open needs nothing. So once
//! everything is open vxtap can become an ordinary user, keeping no capability at all: a bug in
//! the packet path then cannot be used to reconfigure the host.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;

use anyhow::{anyhow, bail, Context, Result};

/// A user to run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

impl User {
    /// Looks up a user name, or a numeric uid, in the password database.
    pub fn lookup(spec: &str) -> Result<User> {
        // SAFETY: passwd is plain old data (integers and pointers); all-zero is a valid value,
        // and getpw*_r fills it before anything reads it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = if let Ok(uid) = spec.parse::<libc::uid_t>() {
            // SAFETY: all pointers are valid for the call; buf outlives the use of pwd's strings.
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) }
        } else {
            let c = CString::new(spec).map_err(|_| anyhow!("invalid user name {spec:?}"))?;
            // SAFETY: as above; c is NUL-terminated.
            unsafe { libc::getpwnam_r(c.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) }
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc))
                .with_context(|| format!("looking up user {spec:?}"));
        }
        if found.is_null() {
            bail!("no such user {spec:?} (--user)");
        }
        // SAFETY: getpw*_r succeeded, so pw_name points to a NUL-terminated string in buf.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }.to_string_lossy().into_owned();
        Ok(User { name, uid: pwd.pw_uid, gid: pwd.pw_gid })
    }

    /// Becomes this user for good: supplementary groups cleared, then gid, then uid. A process
    /// that changes its uid from 0 loses every capability; `no_new_privs` keeps it from gaining
    /// any back through a set-uid program.
    pub fn become_user(&self) -> Result<()> {
        // The order (groups, gid, uid) matters: dropping the uid first would forbid the others.
        // SAFETY: setgroups with a count of 0 reads no list, so a null pointer is allowed.
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
            return Err(io::Error::last_os_error()).context("clearing supplementary groups");
        }
        // SAFETY: plain system call with integer arguments.
        if unsafe { libc::setresgid(self.gid, self.gid, self.gid) } != 0 {
            return Err(io::Error::last_os_error()).context("setting the group id");
        }
        // SAFETY: plain system call with integer arguments.
        if unsafe { libc::setresuid(self.uid, self.uid, self.uid) } != 0 {
            return Err(io::Error::last_os_error()).context("setting the user id");
        }
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error()).context("setting no_new_privs");
        }
        // SAFETY: setuid with an integer argument; geteuid cannot fail.
        if self.uid != 0 && (unsafe { libc::setuid(0) } == 0 || unsafe { libc::geteuid() } != self.uid) {
            bail!("could not drop root: still able to regain uid 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_by_name_and_uid() {
        let root = User::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(User::lookup("0").unwrap().name, "root");
        let err = User::lookup("no-such-user-vxtap").unwrap_err().to_string();
        assert!(err.contains("no such user"), "{err}");
    }
}
