//! Where the two-party walk rescales: [`RescalePlan`] (defined beside the graph walk in
//! [`moat_nn::plan`], which every execution follows).

pub use moat_nn::plan::RescalePlan;
