//! Config file parsing: never panics; an accepted config satisfies the documented limits and
//! validates again.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(vxtap::config::Settings { networks: nets, .. }) = vxtap::config::parse(text) {
        assert!(!nets.is_empty());
        for n in &nets {
            assert!(n.vni <= vxtap::wire::MAX_VNI, "vni {} accepted", n.vni);
            let mtu = n.mtu();
            assert!((68..=65535).contains(&mtu), "mtu {mtu} accepted");
            assert!(mtu + n.overhead() <= 65535, "mtu {mtu} + overhead {} over 65535", n.overhead());
            assert_ne!(n.port(), 0);
            let _ = n.bind_addr();
            let _ = n.control_path();
            let _ = n.src_ports();
        }
        if let Err(e) = vxtap::config::validate(&nets) {
            panic!("parse accepted a config that validate rejects: {e}");
        }
    }
});
