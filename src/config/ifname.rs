//! Linux interface names (TAP devices, the underlay device of a multicast group): checked before
//! any system call, so a bad name is one clear error rather than an ioctl's EINVAL.

/// Longest interface name the kernel takes (IFNAMSIZ less the NUL).
pub const MAX_LEN: usize = 15;

/// Checks `name` the way the kernel's `dev_valid_name` does: 1 to 15 bytes, no `/`, `:`,
/// whitespace or NUL, and not `.` or `..`. `what` names the device in the error ("TAP").
pub fn check(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_LEN {
        return Err(format!("{what} name {name:?} must be 1 to {MAX_LEN} bytes long"));
    }
    if name.bytes().any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':')
        || name == "."
        || name == ".."
    {
        return Err(format!("{what} name {name:?} is not a valid interface name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernel_rules() {
        assert_eq!(MAX_LEN, libc::IFNAMSIZ - 1);
        assert!(check("TAP", "vxt0").is_ok());
        assert!(check("TAP", "a23456789012345").is_ok());
        let long = check("TAP", "a234567890123456").unwrap_err();
        assert!(long.contains("1 to 15 bytes"), "{long}");
        for bad in ["", "a/b", "a b", ".", "..", "a:b", "a\0b"] {
            assert!(check("TAP", bad).is_err(), "{bad:?}");
        }
    }
}
