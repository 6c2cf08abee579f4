//! Two-party secure inference engine: ring and shares, transport, oblivious transfer, non-linear protocols, the simulated and real backends, tamper hooks.
