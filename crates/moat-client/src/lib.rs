//! Client library: plaintext and secure inference against a moat server, Fusion mix-and-check.
