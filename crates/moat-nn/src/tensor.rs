//! Dense row-major tensors with a static shape.
//!
//! moat's tensors are deliberately plain: a shape and a `Vec` of elements in row-major (C-order)
//! layout. Images are `[C, H, W]` (one sample; executors loop over a batch), vectors `[N]`,
//! dense weights `[out, in]`, convolution weights `[out, in, kh, kw]`.

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// A dense row-major tensor of `T`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T> Tensor<T> {
    /// Builds a tensor from its shape and row-major data; fails if the sizes disagree.
    pub fn new(shape: Vec<usize>, data: Vec<T>) -> Result<Self> {
        let expected = numel(&shape);
        if expected != data.len() {
            return Err(NnError::Shape(format!(
                "tensor of shape {shape:?} needs {expected} elements, got {}",
                data.len()
            )));
        }
        Ok(Self { shape, data })
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Mutable access to the elements in row-major order.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Consumes the tensor, returning its elements.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Same elements under another shape with the same element count.
    pub fn reshape(self, shape: Vec<usize>) -> Result<Self> {
        Self::new(shape, self.data)
    }

    /// Applies `f` to every element.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Tensor<U> {
        Tensor { shape: self.shape.clone(), data: self.data.iter().map(f).collect() }
    }
}

impl<T: Clone + Default> Tensor<T> {
    /// A tensor of default values (zeros for numbers).
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = numel(&shape);
        Self { shape, data: vec![T::default(); n] }
    }
}

/// Number of elements of a shape (1 for a scalar shape `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Index of the largest element (the first one on ties); `None` for an empty slice.
pub fn argmax_f32(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        match best {
            // NaN never wins, and ties keep the first index.
            Some((_, b)) if v.partial_cmp(&b) != Some(std::cmp::Ordering::Greater) => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_element_count() {
        assert!(Tensor::new(vec![2, 3], vec![0.0f32; 6]).is_ok());
        assert!(Tensor::new(vec![2, 3], vec![0.0f32; 5]).is_err());
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax_f32(&[1.0, 3.0, 3.0, -1.0]), Some(1));
        assert_eq!(argmax_f32(&[]), None);
    }
}
