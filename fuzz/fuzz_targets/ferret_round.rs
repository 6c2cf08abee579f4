//! Fuzzes what a Ferret COT receiver reads from its peer in an extension round: the tree
//! message (per tree and level, one correction block). Parsing must reject every wrong length
//! with an error, and a message of the right length, however wrong its contents, must run the
//! round to its end without a panic (the protocol is semi-honest: bad corrections only spoil
//! the correlation).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_mpc::ot::ferret::{FerretParams, LpnParams, ReceiverRound, TreeMsg};

/// A small, insecure set so that each input runs a whole round quickly.
const SMALL: FerretParams = FerretParams {
    pre: LpnParams { n: 4096, k: 1000, t: 16, log_bin: 8 },
    main: LpnParams { n: 8192, k: 2000, t: 32, log_bin: 8 },
};

fuzz_target!(|data: &[u8]| {
    let p = SMALL.pre;
    let Ok(msg) = TreeMsg::from_bytes(data, &p) else { return };
    let base: Vec<u128> = (0..p.consumed() as u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834)).collect();
    if let Ok(round) = ReceiverRound::new(p, base) {
        assert_eq!(round.finish(&msg, &SMALL, false).len(), p.n);
    }
});
