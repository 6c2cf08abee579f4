//! Byte, frame and round counters, per phase.
//!
//! Every channel owns a [`Stats`]. Bytes are counted on the wire: payload plus the 4-byte frame
//! header, so the in-memory pair and TCP report the same numbers for the same protocol.
//!
//! **Rounds.** A party's `rounds` counts its outgoing *flights*: a round starts each time it
//! sends after having received (or sends first); a flight of several frames costs one
//! latency. The one-way latencies on a protocol's critical path lie between the maximum and
//! the sum of the two parties' counts: the sum for strictly alternating protocols (all OT
//! protocols of this crate), the maximum for symmetric exchanges where both send at once
//! ([`super::Channel::exchange`]).
//!
//! **Phases.** Counters are attributed to the current phase label (`"main"` until set), e.g.
//! `"base-ot"`, `"relu:layer3"`. A flight is counted in the phase that is current when it starts.
//! Labels are free-form; [`StatsSnapshot::sum_prefix`] aggregates a hierarchy such as `relu:*`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The label of traffic outside any named phase.
pub const DEFAULT_PHASE: &str = "main";

/// Traffic counters of one party (in total or in one phase).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Bytes written, frame headers included.
    pub bytes_sent: u64,
    /// Bytes read, frame headers included.
    pub bytes_received: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Outgoing flights (see the module docs).
    pub rounds: u64,
}

impl Counters {
    /// Field-wise sum.
    pub fn plus(&self, other: &Counters) -> Counters {
        Counters {
            bytes_sent: self.bytes_sent + other.bytes_sent,
            bytes_received: self.bytes_received + other.bytes_received,
            frames_sent: self.frames_sent + other.frames_sent,
            frames_received: self.frames_received + other.frames_received,
            rounds: self.rounds + other.rounds,
        }
    }

    /// Field-wise difference `self − earlier` (saturating), for measuring a span.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            bytes_received: self.bytes_received.saturating_sub(earlier.bytes_received),
            frames_sent: self.frames_sent.saturating_sub(earlier.frames_sent),
            frames_received: self.frames_received.saturating_sub(earlier.frames_received),
            rounds: self.rounds.saturating_sub(earlier.rounds),
        }
    }

    /// Bytes in both directions.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_sent + self.bytes_received
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Sent,
    Received,
}

/// The counters of one channel endpoint, with the current phase.
#[derive(Clone, Debug)]
pub struct Stats {
    phase: String,
    last: Option<Direction>,
    total: Counters,
    phases: BTreeMap<String, Counters>,
}

impl Default for Stats {
    fn default() -> Self {
        Self { phase: DEFAULT_PHASE.to_string(), last: None, total: Counters::default(), phases: BTreeMap::new() }
    }
}

/// A serialisable copy of a [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// All traffic.
    pub total: Counters,
    /// Traffic per phase label (phases without traffic are absent).
    pub phases: BTreeMap<String, Counters>,
}

impl StatsSnapshot {
    /// The sum over phases whose label starts with `prefix` (e.g. `"relu"` or `"relu:"`).
    pub fn sum_prefix(&self, prefix: &str) -> Counters {
        self.phases
            .iter()
            .filter(|(label, _)| label.starts_with(prefix))
            .fold(Counters::default(), |acc, (_, c)| acc.plus(c))
    }
}

impl Stats {
    /// Fresh counters in phase [`DEFAULT_PHASE`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The current phase label.
    pub fn phase(&self) -> &str {
        &self.phase
    }

    /// Switches the phase label, returning the previous one.
    pub fn set_phase(&mut self, label: &str) -> String {
        std::mem::replace(&mut self.phase, label.to_string())
    }

    /// Totals over all phases.
    pub fn total(&self) -> Counters {
        self.total
    }

    /// Counters of one phase (zero if it never had traffic).
    pub fn phase_counters(&self, label: &str) -> Counters {
        self.phases.get(label).copied().unwrap_or_default()
    }

    /// A serialisable copy.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot { total: self.total, phases: self.phases.clone() }
    }

    /// Zeroes the counters (the phase label and flight state are kept).
    pub fn reset(&mut self) {
        self.total = Counters::default();
        self.phases.clear();
    }

    /// Records one frame of `wire_bytes` (header included) written.
    pub fn record_send(&mut self, wire_bytes: usize) {
        let new_round = self.last != Some(Direction::Sent);
        self.last = Some(Direction::Sent);
        let phase = phase_entry(&mut self.phases, &self.phase);
        for c in [&mut self.total, phase] {
            c.bytes_sent += wire_bytes as u64;
            c.frames_sent += 1;
            c.rounds += new_round as u64;
        }
    }

    /// Records one frame of `wire_bytes` (header included) read.
    pub fn record_recv(&mut self, wire_bytes: usize) {
        self.last = Some(Direction::Received);
        let phase = phase_entry(&mut self.phases, &self.phase);
        for c in [&mut self.total, phase] {
            c.bytes_received += wire_bytes as u64;
            c.frames_received += 1;
        }
    }
}

/// The counters of `label`, inserted on first use.
fn phase_entry<'a>(phases: &'a mut BTreeMap<String, Counters>, label: &str) -> &'a mut Counters {
    phases.entry(label.to_string()).or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flights_count_rounds_per_phase() {
        let mut s = Stats::new();
        s.record_send(10);
        s.record_send(10); // same flight
        s.set_phase("b");
        s.record_recv(5);
        s.record_send(7); // new flight, in phase b
        let snap = s.snapshot();
        assert_eq!(snap.total.rounds, 2);
        assert_eq!(snap.phases["main"], Counters { bytes_sent: 20, frames_sent: 2, rounds: 1, ..Default::default() });
        assert_eq!(
            snap.phases["b"],
            Counters { bytes_sent: 7, bytes_received: 5, frames_sent: 1, frames_received: 1, rounds: 1 }
        );
        assert_eq!(snap.sum_prefix(""), snap.total);
    }
}
