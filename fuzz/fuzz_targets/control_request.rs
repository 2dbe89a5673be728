//! Control-socket request parsing: never panics; an accepted request survives a serde_json
//! round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vxtap::control::{parse_request, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = parse_request(line) {
        let json = serde_json::to_string(&req).expect("an accepted request serializes");
        let again: Request = match parse_request(&json) {
            Ok(r) => r,
            Err(e) => panic!("re-parse of {json:?} (from {line:?}) failed: {e}"),
        };
        assert_eq!(req, again, "round trip changed the request: {json}");
    }
});
