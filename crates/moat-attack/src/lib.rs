//! Attacks on (secure) inference services: SEEK, membership inference, fingerprinting, extraction, and their metrics.
