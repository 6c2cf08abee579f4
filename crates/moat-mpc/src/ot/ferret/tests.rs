//! Tests of the Ferret COT extension: the correlation `m = k ⊕ b·Δ` on a million outputs and
//! over several rounds, the parameter sets' consistency, the random/derived OT flavours, and
//! peers that send truncated or malformed messages or nothing at all.

use std::time::{Duration, Instant};

use super::*;
use crate::ot::iknp;
use crate::testing::{Net, run_pair};
use crate::transport::{ChannelConfig, TransportError, memory};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A small, **insecure** set that makes several rounds cheap (tests only).
pub(crate) const SMALL: FerretParams = FerretParams {
    pre: LpnParams { n: 8192, k: 2000, t: 32, log_bin: 8 },
    main: LpnParams { n: 16_384, k: 4000, t: 64, log_bin: 8 },
};

fn ferret_pair(
    ch: &mut dyn Channel,
    party: Party,
    params: FerretParams,
    seed: u64,
) -> Result<(FerretSender, FerretReceiver)> {
    let (mut s, mut r) = iknp::setup_both(ch, party, &mut rng(seed))?;
    setup_both(ch, party, &mut s, &mut r, params, &mut rng(seed + 100))
}

/// `n` COTs from P0 (sender) to P1 (receiver): `(Δ, K, M)`.
fn cots(net: Net, params: FerretParams, n: usize) -> Result<(Block, Vec<Block>, Vec<Block>)> {
    let ((delta, ks), ms) = run_pair(
        net,
        move |ch| {
            let (mut s, _r) = ferret_pair(ch, Party::P0, params, 1)?;
            let mut ks = Vec::with_capacity(n);
            s.take_cots(ch, n, &mut |_, c| {
                ks.extend_from_slice(c);
                Ok(())
            })?;
            Ok((s.delta(), ks))
        },
        move |ch| {
            let (_s, mut r) = ferret_pair(ch, Party::P1, params, 2)?;
            let mut ms = Vec::with_capacity(n);
            r.take_cots(ch, n, &mut |_, c| {
                ms.extend_from_slice(c);
                Ok(())
            })?;
            Ok(ms)
        },
    )?;
    Ok((delta, ks, ms))
}

fn check_cots(delta: Block, ks: &[Block], ms: &[Block]) {
    assert_eq!(ks.len(), ms.len());
    assert_eq!(delta & 1, 1);
    let mut ones = 0usize;
    for (i, (&k, &m)) in ks.iter().zip(ms).enumerate() {
        let x = m & 1;
        assert_eq!(k & 1, 0, "COT {i}: sender LSB");
        assert_eq!(m ^ k, x * delta, "COT {i}: correlation");
        ones += x as usize;
    }
    // Choice bits are balanced (a stuck bit or a broken LPN encode would show here).
    let n = ks.len() as f64;
    assert!((ones as f64 - n / 2.0).abs() < 6.0 * (n / 4.0).sqrt(), "{ones} ones in {n}");
    // Sender blocks are not repeated.
    let mut sorted = ks.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ks.len());
}

/// The set moat runs, on millions of outputs across a main-round boundary.
#[test]
fn default_set_cot_correlation_on_millions_of_outputs() -> Result<()> {
    let n = FerretParams::DEFAULT.per_round() + (1 << 20);
    let t = Instant::now();
    let (delta, ks, ms) = cots(Net::Memory, FerretParams::DEFAULT, n)?;
    check_cots(delta, &ks, &ms);
    eprintln!("ferret default set: setup + two rounds + {n} COTs in {:?}", t.elapsed());
    Ok(())
}

#[test]
fn b13_cot_correlation_on_a_million_outputs() -> Result<()> {
    let n = 1 << 20;
    let (delta, ks, ms) = cots(Net::Memory, FerretParams::B13, n)?;
    check_cots(delta, &ks, &ms);
    Ok(())
}

#[test]
fn several_rounds_keep_the_correlation() -> Result<()> {
    let n = 5 * SMALL.per_round() + 123;
    let (delta, ks, ms) = cots(Net::Tcp, SMALL, n)?;
    check_cots(delta, &ks, &ms);
    Ok(())
}

/// A sender round that `ready` leaves to the party's receiver (`Twin`): encoded in one pass
/// with the receiver's round (`LpnCode::encode_pair`), or alone when the sender is used first
/// — the COTs of both directions keep their correlation, and `ready` counts what the pool
/// will hold.
#[test]
fn rounds_left_to_the_receiver_keep_the_correlation() -> Result<()> {
    fn sent(s: &mut FerretSender, ch: &mut dyn Channel, n: usize, ks: &mut Vec<Block>) -> Result<()> {
        s.take_cots(ch, n, &mut |_, c| {
            ks.extend_from_slice(c);
            Ok(())
        })
    }
    fn received(r: &mut FerretReceiver, ch: &mut dyn Channel, n: usize, ms: &mut Vec<Block>) -> Result<()> {
        r.take_cots(ch, n, &mut |_, c| {
            ms.extend_from_slice(c);
            Ok(())
        })
    }
    let party = |party: Party, seed: u64| {
        move |ch: &mut dyn Channel| -> Result<(Block, Vec<Block>, Vec<Block>)> {
            let (mut s, mut r) = ferret_pair(ch, party, SMALL, seed)?;
            let (mut ks, mut ms) = (Vec::new(), Vec::new());
            for fused in [true, false, true] {
                // Both pools dry (they run in step), then the rounds, the sender's first.
                let n = s.available();
                assert_eq!(r.available(), n);
                sent(&mut s, ch, n, &mut ks)?;
                received(&mut r, ch, n, &mut ms)?;
                assert_eq!(s.ready(ch)?, Some(SMALL.per_round()));
                assert_eq!(s.available(), SMALL.per_round());
                if !fused {
                    // The sender used before the receiver's round: its encoding runs alone.
                    sent(&mut s, ch, 100, &mut ks)?;
                }
                assert!(r.ready(ch)?.is_some());
                if !fused {
                    received(&mut r, ch, 100, &mut ms)?;
                }
            }
            sent(&mut s, ch, 1000, &mut ks)?;
            received(&mut r, ch, 1000, &mut ms)?;
            Ok((s.delta(), ks, ms))
        }
    };
    let ((delta0, ks0, ms0), (delta1, ks1, ms1)) = run_pair(Net::Tcp, party(Party::P0, 1), party(Party::P1, 2))?;
    // P0's sender with P1's receiver, and the other way.
    check_cots(delta0, &ks0, &ms1);
    check_cots(delta1, &ks1, &ms0);
    Ok(())
}

/// Extending a pool that is not dry keeps its rest in front of the new COTs: a rest shorter
/// than the round's reserved front (it takes that front's place in the reused buffer) and one
/// longer (a new buffer), with the correlation intact across every round boundary.
#[test]
fn extending_a_non_empty_pool_keeps_its_rest() -> Result<()> {
    let reserved = SMALL.main.consumed();
    // Extend, then take all but 10 (a short rest); extend, then leave `reserved + 10` (a long
    // rest); extend, then take three rounds' worth (the pool runs dry and refills in between).
    let takes = [SMALL.per_round() - 10, SMALL.per_round() - reserved, 3 * SMALL.per_round()];
    let ((delta, ks), ms) = run_pair(
        Net::Memory,
        move |ch| {
            let (mut s, _r) = ferret_pair(ch, Party::P0, SMALL, 1)?;
            let mut ks = Vec::new();
            for n in takes {
                let before = s.available();
                s.extend(ch)?;
                assert_eq!(s.available(), before + SMALL.per_round());
                s.take_cots(ch, n, &mut |_, c| {
                    ks.extend_from_slice(c);
                    Ok(())
                })?;
            }
            Ok((s.delta(), ks))
        },
        move |ch| {
            let (_s, mut r) = ferret_pair(ch, Party::P1, SMALL, 2)?;
            let mut ms = Vec::new();
            for n in takes {
                r.extend(ch)?;
                r.take_cots(ch, n, &mut |_, c| {
                    ms.extend_from_slice(c);
                    Ok(())
                })?;
            }
            Ok(ms)
        },
    )?;
    check_cots(delta, &ks, &ms);
    Ok(())
}

#[test]
fn params_are_consistent() {
    for p in [FerretParams::B12, FerretParams::B13, SMALL] {
        assert_eq!(p.validate(), Ok(()));
    }
    assert_eq!(FerretParams::DEFAULT, FerretParams::B12);
    assert_eq!(FerretParams::B12.bootstrap_ots(), 74_036);
    assert_eq!(FerretParams::B12.per_round(), 5_945_536);
    assert_eq!(FerretParams::B13.bootstrap_ots(), 41_030);
    assert_eq!(FerretParams::B13.per_round(), 10_017_120);
    let bad = FerretParams { pre: SMALL.pre, main: LpnParams { n: 16_000, ..SMALL.main } };
    assert!(bad.validate().is_err());
}

#[test]
fn random_and_derived_ot_flavours() -> Result<()> {
    const N: usize = 3 * CHUNK_OTS / 2 + 17;
    let choices = BitVec::random(N, &mut rng(9));
    let deltas: Vec<u64> = (0..N as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
    let (c1, d0) = (choices.clone(), deltas.clone());
    let ((pairs, x), (keys, y, z)) = run_pair(
        Net::Memory,
        move |ch| {
            let (mut s, _r) = ferret_pair(ch, Party::P0, SMALL, 1)?;
            let pairs = s.send_random(ch, N)?;
            let x = s.send_correlated(ch, &d0, 37)?;
            s.send_one_of_n(ch, &(0..4 * 1000).collect::<Vec<u64>>(), 2, 20)?;
            Ok((pairs, x))
        },
        move |ch| {
            let (_s, mut r) = ferret_pair(ch, Party::P1, SMALL, 2)?;
            let keys = r.receive_random(ch, &c1)?;
            let y = r.receive_correlated(ch, &c1, 37)?;
            let z = r.receive_one_of_n(ch, &(0..1000).map(|i| (i % 4) as u8).collect::<Vec<_>>(), 2, 20)?;
            Ok((keys, y, z))
        },
    )?;
    for i in 0..N {
        let c = choices.bit(i) as usize;
        assert_eq!(keys[i], pairs[i][c], "ROT {i}");
        assert_ne!(keys[i], pairs[i][1 - c], "ROT {i}");
        let mask = (1u64 << 37) - 1;
        assert_eq!(y[i], x[i].wrapping_add(choices.bit(i) * deltas[i]) & mask, "COT {i}");
    }
    for (i, &v) in z.iter().enumerate() {
        assert_eq!(v, (4 * i + i % 4) as u64);
    }
    Ok(())
}

/// Random OTs with the receiver's random choices are the COTs' own: `m_x = H(M)` for the
/// choice `x` (the block's lowest bit), the other message differs, and the receiver sends
/// nothing — across a refill round too, whose only traffic is the sender's tree message.
#[test]
fn random_choice_ots_exchange_nothing() -> Result<()> {
    let n = 2 * SMALL.per_round() + 1234;
    let ((pairs, sender_got), (choices, keys, receiver_sent)) = run_pair(
        Net::Memory,
        move |ch| {
            let (mut s, _r) = ferret_pair(ch, Party::P0, SMALL, 1)?;
            assert!(s.random_choice_is_silent());
            let got = ch.stats().total().bytes_received;
            let mut pairs = Vec::with_capacity(n);
            s.send_random_choice_chunks(ch, n, &mut |offset, chunk| {
                assert_eq!(offset, pairs.len());
                pairs.extend_from_slice(chunk);
                Ok(())
            })?;
            Ok((pairs, ch.stats().total().bytes_received - got))
        },
        move |ch| {
            let (_s, mut r) = ferret_pair(ch, Party::P1, SMALL, 2)?;
            assert!(r.random_choice_is_silent());
            let sent = ch.stats().total().bytes_sent;
            let (choices, keys) = r.receive_random_choice(ch, n, &mut rng(3))?;
            Ok((choices, keys, ch.stats().total().bytes_sent - sent))
        },
    )?;
    assert_eq!((sender_got, receiver_sent), (0, 0));
    assert_eq!((pairs.len(), keys.len(), choices.len()), (n, n, n));
    let ones = (0..n).filter(|&i| choices.bit(i) == 1).count();
    assert!(ones.abs_diff(n / 2) < n / 20, "{ones} of {n} choices are 1");
    for i in 0..n {
        let c = choices.bit(i) as usize;
        assert_eq!(keys[i], pairs[i][c], "ROT {i}");
        assert_ne!(keys[i], pairs[i][1 - c], "ROT {i}");
    }
    Ok(())
}

/// P1 is an honest receiver that needs a main round; P0 sends `reply` in its place.
fn receiver_against(
    reply: impl FnOnce(&mut dyn Channel) -> Result<()> + Send + 'static,
    timeout: Duration,
) -> MpcError {
    let config = ChannelConfig::default().with_timeout(timeout);
    let (mut c0, mut c1) = memory::pair(config);
    let peer = std::thread::spawn(move || -> Result<()> {
        let (_s, _r) = ferret_pair(&mut c0, Party::P0, SMALL, 1)?;
        reply(&mut c0)?;
        std::thread::sleep(timeout * 2);
        Ok(())
    });
    let started = Instant::now();
    let got = (|| -> Result<()> {
        let (_s, mut r) = ferret_pair(&mut c1, Party::P1, SMALL, 2)?;
        r.take_cots(&mut c1, 10, &mut |_, _| Ok(()))
    })();
    assert!(started.elapsed() < timeout * 4, "no answer within the timeout: {:?}", started.elapsed());
    let _ = peer.join();
    match got {
        Err(e) => e,
        Ok(()) => panic!("a bad round was accepted"),
    }
}

#[test]
fn truncated_tree_message_is_rejected() {
    let err = receiver_against(
        |ch| {
            let full = 16 * 64 * 8;
            ch.send(&vec![7u8; full - 5])?;
            ch.flush()?;
            Ok(())
        },
        Duration::from_secs(2),
    );
    assert!(matches!(err, MpcError::PeerMisbehaved { context: "ferret trees", .. }), "{err}");
    assert!(err.to_string().contains("expected"), "{err}");
}

#[test]
fn silent_peer_times_out() {
    let err = receiver_against(|_| Ok(()), Duration::from_millis(500));
    assert!(matches!(err, MpcError::Transport(TransportError::Timeout { .. })), "{err}");
}

#[test]
fn tree_messages_of_the_wrong_length_are_rejected() {
    let p = SMALL.main;
    let n = 16 * p.t * p.log_bin as usize;
    for len in [0, 15, n - 16, n - 1, n + 1, n + 16] {
        let err = TreeMsg::from_bytes(&vec![0; len], &p).err();
        assert!(matches!(err, Some(MpcError::PeerMisbehaved { context: "ferret trees", .. })), "{len}: {err:?}");
    }
    let msg = TreeMsg::from_bytes(&(0..n).map(|i| i as u8).collect::<Vec<_>>(), &p).map_err(|e| e.to_string());
    assert_eq!(msg.map(|m| m.to_bytes()), Ok((0..n).map(|i| i as u8).collect::<Vec<_>>()));
}

/// The sans-IO round on its own: the correlation holds, and one flipped bit in a correction
/// (a message of the right length) breaks it — nothing in the message lets the receiver check
/// it: the protocol is semi-honest.
#[test]
fn a_round_keeps_the_correlation_and_a_flipped_correction_breaks_it() -> Result<()> {
    let p = SMALL.pre;
    let mut r = rng(5);
    let delta = random_block(&mut r) | 1;
    let ks: Vec<Block> = (0..p.consumed()).map(|_| random_block(&mut r) & !1).collect();
    let ms: Vec<Block> = ks.iter().map(|&k| if r.next_u32() & 1 == 1 { k ^ delta } else { k }).collect();
    let round = SenderRound::new(p, delta, &ks)?;
    let shown = format!("{round:?}");
    assert!(!shown.contains(&delta.to_string()) && !shown.contains(&format!("{delta:x}")), "{shown}");
    let (msg, v) = round.finish(&SMALL, false, &mut r);
    let w = ReceiverRound::new(p, ms.clone())?.finish(&msg, &SMALL, false);
    check_cots(delta, &v, &w);
    let mut bad = msg.to_bytes();
    bad[3] ^= 1;
    let bad = TreeMsg::from_bytes(&bad, &p)?;
    let w = ReceiverRound::new(p, ms)?.finish(&bad, &SMALL, false);
    assert!(v.iter().zip(&w).any(|(&k, &m)| k != m && k ^ m != delta));
    Ok(())
}

/// The receiver's corrections, a word at a time, are `x ⊕ c` bit by bit: every alignment of
/// the choices' offset and every length around a word.
#[test]
fn corrections_are_the_lowest_bits_xor_the_choices() -> Result<()> {
    let mut r = rng(12);
    let ms: Vec<Block> = (0..300).map(|_| random_block(&mut r)).collect();
    let choices = BitVec::random(500, &mut r);
    for offset in [0, 1, 5, 63, 64, 65, 127, 130, 199] {
        for len in [0, 1, 63, 64, 65, 128, 129, 300] {
            let d = corrections(&ms[..len], &choices, offset)?;
            assert_eq!(d.len(), len);
            for i in 0..len {
                assert_eq!(
                    d.bit(i),
                    (ms[i] as u64 ^ choices.bit(offset + i)) & 1,
                    "offset {offset}, len {len}, bit {i}"
                );
            }
            assert_eq!(d.words().len(), len.div_ceil(64));
            if len % 64 != 0 {
                assert_eq!(d.words()[len / 64] >> (len % 64), 0, "padding");
            }
        }
    }
    Ok(())
}
