//! The malicious client's share offsets for one query.
//!
//! Everything SEEK does is an *additive offset on the client's own shares*: adding `δ` to its
//! share of a value moves the value reconstructed inside the protocol by exactly `δ`, while
//! the server's share stays uniformly random and unknown. Three offsets make the building
//! blocks:
//!
//! * **kill** a ReLU: `−K` on its pre-activation (with `K = 2^(ℓ−3)` far above any honest
//!   value) makes the input negative, so the output is exactly `0` — whatever the server's
//!   share was;
//! * **inject** a value: after a kill the output is `0`, so adding `v` to the client's
//!   post-activation share sets the next layer's input to exactly `v`;
//! * **pass** an element (identity): `+K` before a ReLU keeps it positive, `−K` (at the
//!   output's scale) after it restores the value: the ReLU becomes the identity on it.

use moat_mpc::engine::{ClientBehaviour, ShareSite, TamperPoint};

/// Offsets at one non-linear node: added to every element (`*_fill`) and then to single
/// elements.
#[derive(Clone, Debug, Default)]
pub(crate) struct SiteOffsets {
    pub pre_fill: u64,
    pub pre: Vec<(usize, u64)>,
    pub post: Vec<(usize, u64)>,
}

/// The offsets of one query, per node, plus the logits'.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tampering {
    pub sites: Vec<Option<SiteOffsets>>,
    pub logit_fill: u64,
    pub logits: Vec<(usize, u64)>,
}

impl Tampering {
    pub fn new(nodes: usize) -> Self {
        Self { sites: vec![None; nodes], ..Self::default() }
    }

    pub fn site(&mut self, node: usize) -> &mut SiteOffsets {
        self.sites[node].get_or_insert_with(SiteOffsets::default)
    }
}

impl ClientBehaviour for Tampering {
    fn is_additive(&self) -> bool {
        true
    }

    fn tamper(&mut self, site: &ShareSite<'_>, share: &mut [u64]) {
        let apply = |share: &mut [u64], fill: u64, single: &[(usize, u64)]| {
            if fill != 0 {
                share.iter_mut().for_each(|v| *v = v.wrapping_add(fill));
            }
            for &(i, d) in single {
                if let Some(v) = share.get_mut(i) {
                    *v = v.wrapping_add(d);
                }
            }
        };
        match site.point {
            TamperPoint::Logits => apply(share, self.logit_fill, &self.logits),
            TamperPoint::PreActivation => {
                if let Some(Some(s)) = self.sites.get(site.node) {
                    apply(share, s.pre_fill, &s.pre);
                }
            }
            TamperPoint::PostActivation => {
                if let Some(Some(s)) = self.sites.get(site.node) {
                    apply(share, 0, &s.post);
                }
            }
        }
    }
}
