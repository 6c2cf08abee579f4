//! Session tokens: 128-bit bearer secrets from OS entropy, each good for one connection within
//! its lifetime.
//!
//! A token is the only thing the session port asks for, so it is drawn from the operating
//! system's generator (the one deliberate exception to moat's seeded randomness: a seeded token
//! would be guessable by whoever knows the seed) and never logged. The store keeps at most
//! `capacity` outstanding tokens; [`TokenStore::take`] removes a token whatever the outcome, so a
//! token cannot be replayed, and hands back the grant of an expired one so its budget can be
//! refunded.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::TryRngCore;
use rand::rngs::OsRng;

/// Bytes of entropy in a token.
pub const TOKEN_BYTES: usize = 16;

/// A session token: [`TOKEN_BYTES`] random bytes written as lowercase hex. Its `Debug` does not
/// show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Token(String);

impl Token {
    /// A fresh token from the operating system's entropy source.
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        OsRng.try_fill_bytes(&mut bytes).map_err(|e| TokenError::Entropy(e.to_string()))?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// Accepts only the token format (32 lowercase hex digits), so malformed input never
    /// reaches the store.
    pub fn parse(text: &str) -> Option<Self> {
        let ok =
            text.len() == 2 * TOKEN_BYTES && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(text.to_string()))
    }

    /// The token text (a bearer secret: hand it to the client only).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Why a token could not be issued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The operating system's entropy source failed.
    #[error("no OS entropy for a session token: {0}")]
    Entropy(String),
    /// Too many tokens are outstanding.
    #[error("{capacity} secure sessions are already waiting to connect")]
    Full {
        /// The store's capacity.
        capacity: usize,
    },
}

/// What presenting a token found.
#[derive(Debug, PartialEq)]
pub enum Lookup<G> {
    /// A live token: its grant (the token is now used up).
    Valid(G),
    /// The token had expired (it is now removed): its grant, for a refund.
    Expired(G),
    /// Never issued, already used, or expired and already swept.
    Unknown,
}

#[derive(Debug)]
struct Pending<G> {
    grant: G,
    expires: Instant,
}

/// Outstanding tokens and what each grants.
#[derive(Debug)]
pub struct TokenStore<G> {
    ttl: Duration,
    capacity: usize,
    pending: Mutex<HashMap<Token, Pending<G>>>,
}

impl<G> TokenStore<G> {
    /// A store whose tokens live `ttl`, holding at most `capacity` (≥ 1) at once.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { ttl, capacity: capacity.max(1), pending: Mutex::new(HashMap::new()) }
    }

    /// How long a token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Token, Pending<G>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh token for `grant` at time `now`; fails when the store is full of live
    /// tokens (expired ones are swept first and returned with the error's grant for refunds,
    /// see [`TokenStore::sweep`]).
    pub fn issue(&self, grant: G, now: Instant) -> Result<Token, (TokenError, G)> {
        let token = match Token::generate() {
            Ok(t) => t,
            Err(e) => return Err((e, grant)),
        };
        let mut pending = self.lock();
        if pending.len() >= self.capacity {
            return Err((TokenError::Full { capacity: self.capacity }, grant));
        }
        pending.insert(token.clone(), Pending { grant, expires: now + self.ttl });
        Ok(token)
    }

    /// Presents `token` at time `now`: a live token is used up and its grant returned.
    pub fn take(&self, token: &str, now: Instant) -> Lookup<G> {
        let Some(token) = Token::parse(token) else { return Lookup::Unknown };
        match self.lock().remove(&token) {
            None => Lookup::Unknown,
            Some(p) if now >= p.expires => Lookup::Expired(p.grant),
            Some(p) => Lookup::Valid(p.grant),
        }
    }

    /// Whether `token` is live at `now` (without using it up).
    pub fn is_live(&self, token: &str, now: Instant) -> bool {
        Token::parse(token).is_some_and(|t| self.lock().get(&t).is_some_and(|p| now < p.expires))
    }

    /// Removes every token expired at `now`; returns their grants.
    pub fn sweep(&self, now: Instant) -> Vec<G> {
        self.sweep_tokens(now).into_iter().map(|(_, g)| g).collect()
    }

    /// [`TokenStore::sweep`], with each grant's token.
    pub fn sweep_tokens(&self, now: Instant) -> Vec<(Token, G)> {
        let mut pending = self.lock();
        let expired: Vec<Token> = pending.iter().filter(|(_, p)| now >= p.expires).map(|(t, _)| t.clone()).collect();
        expired.into_iter().filter_map(|t| pending.remove(&t).map(|p| (t, p.grant))).collect()
    }

    /// Outstanding tokens (live or not yet swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no token is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(store: &TokenStore<u32>, grant: u32, now: Instant) -> Result<Token, String> {
        store.issue(grant, now).map_err(|(e, _)| e.to_string())
    }

    #[test]
    fn tokens_are_128_bit_hex_and_distinct() -> Result<(), TokenError> {
        let a = Token::generate()?;
        let b = Token::generate()?;
        assert_eq!(a.as_str().len(), 32);
        assert!(Token::parse(a.as_str()).is_some());
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "Token(…)", "Debug must not leak the secret");
        assert!(Token::parse("").is_none());
        assert!(Token::parse("ABCDEF0123456789ABCDEF0123456789").is_none());
        assert!(Token::parse("abcdef0123456789abcdef0123456789").is_some());
        assert!(Token::parse(&format!("{}0", a.as_str())).is_none());
        assert!(Token::parse("zz0123456789abcdef0123456789abcd").is_none());
        Ok(())
    }

    #[test]
    fn a_token_is_good_for_exactly_one_use() -> Result<(), String> {
        let store = TokenStore::new(Duration::from_secs(30), 8);
        let t0 = Instant::now();
        let token = issue(&store, 7, t0)?;
        assert!(store.is_live(token.as_str(), t0));
        assert_eq!(store.take(token.as_str(), t0 + Duration::from_secs(1)), Lookup::Valid(7));
        // Replayed: gone.
        assert_eq!(store.take(token.as_str(), t0 + Duration::from_secs(1)), Lookup::Unknown);
        assert!(!store.is_live(token.as_str(), t0));
        assert!(store.is_empty());
        // Never issued, or not even a token.
        assert_eq!(store.take("00000000000000000000000000000000", t0), Lookup::Unknown);
        assert_eq!(store.take("not a token", t0), Lookup::Unknown);
        Ok(())
    }

    #[test]
    fn tokens_expire_and_hand_back_their_grant() -> Result<(), String> {
        let store = TokenStore::new(Duration::from_secs(30), 8);
        let t0 = Instant::now();
        let late = issue(&store, 1, t0)?;
        let swept = issue(&store, 2, t0)?;
        let fresh = issue(&store, 3, t0 + Duration::from_secs(20))?;
        let at_expiry = t0 + Duration::from_secs(30);
        // Exactly at the expiry instant a token is dead.
        assert!(!store.is_live(late.as_str(), at_expiry));
        assert!(store.is_live(late.as_str(), at_expiry - Duration::from_millis(1)));
        assert_eq!(store.take(late.as_str(), at_expiry), Lookup::Expired(1));
        // Sweeping removes the other expired one and keeps the fresh one.
        assert_eq!(store.sweep(at_expiry), vec![2]);
        assert_eq!(store.take(swept.as_str(), at_expiry), Lookup::Unknown);
        assert_eq!(store.len(), 1);
        assert_eq!(store.take(fresh.as_str(), at_expiry), Lookup::Valid(3));
        Ok(())
    }

    #[test]
    fn the_store_is_bounded() -> Result<(), String> {
        let store = TokenStore::new(Duration::from_secs(30), 2);
        let t0 = Instant::now();
        issue(&store, 1, t0)?;
        let second = issue(&store, 2, t0)?;
        match store.issue(3, t0) {
            Err((TokenError::Full { capacity: 2 }, 3)) => {}
            other => return Err(format!("expected a full store, got {other:?}")),
        }
        // Using a token frees its place.
        assert_eq!(store.take(second.as_str(), t0), Lookup::Valid(2));
        issue(&store, 3, t0)?;
        Ok(())
    }
}
