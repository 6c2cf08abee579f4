//! Fuzzes the secure-session handshake a server reads from any TCP client: the token and the
//! reply JSON must parse or fail cleanly, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_serve::secure::tokens::Token;
use moat_serve::secure::wire::HandshakeReply;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Token::parse(text);
    }
    let _ = serde_json::from_slice::<HandshakeReply>(data);
});
