//! # moat-nn — the model core
//!
//! One model representation ([`Graph`]) and one fixed-point semantics for everything else in
//! moat: the float executor the model was trained as, the plaintext fixed-point executor that is
//! exactly what the secure protocol computes ([`QuantizedGraph`]), ONNX import/export, datasets
//! and CPU training of the model zoo.
//!
//! ```
//! use moat_nn::{zoo, FixedPoint, FloatExecutor, QuantizedGraph};
//!
//! let graph = zoo::build(&"lenet5".parse()?, &[1, 28, 28], 10, 42)?;
//! let input = vec![0.5f32; 784];
//! let float = FloatExecutor::predict(&graph, &input)?;
//! let fixed = QuantizedGraph::new(&graph, FixedPoint::default())?.predict(&input)?;
//! assert!(float < 10 && fixed < 10);
//! # Ok::<(), moat_nn::NnError>(())
//! ```

pub mod approx;
pub mod card;
pub mod data;
pub mod error;
pub mod eval;
pub mod exec;
pub mod fixed;
pub mod graph;
pub mod kernels;
pub mod onnx;
pub mod pad;
pub mod plan;
pub mod skeleton;
pub mod tensor;
#[cfg(feature = "train")]
pub mod train;
pub mod walk;
pub mod zoo;

pub use error::{NnError, Result};
pub use exec::{FloatExecutor, QuantizedGraph, QuantizedLayer};
pub use fixed::FixedPoint;
pub use graph::{BatchNorm, Conv2d, Dense, Graph, Node, Op, OpKind, Pool, ValueId};
pub use skeleton::Skeleton;
pub use tensor::Tensor;
