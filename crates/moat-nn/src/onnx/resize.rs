//! `Resize` (opsets 10–21) and `Upsample` (opsets 7–9) in `nearest` mode by whole factors.
//!
//! When each spatial factor `s` is a whole number and the file's coordinate rule maps output
//! pixel `i` to input pixel `⌊i / s⌋` — true of `Upsample`, of `Resize`-10, of PyTorch's
//! `nn.Upsample(mode="nearest")` export (`asymmetric`, `floor`) and of ONNX's defaults
//! (`half_pixel`, `round_prefer_floor`) — the resize copies every input pixel into an `s_h × s_w`
//! block. moat writes that with the data moves it already has, so every execution computes it
//! the same way and two-party inference pays nothing for it (each party moves its own shares):
//!
//! `x [C, H, W]` → `Concat` of `s_h·s_w` copies `[s_h·s_w·C, H, W]` → `Reshape [s_h, s_w, C, H, W]`
//! → `Transpose [C, H, s_h, W, s_w]` → `Reshape [C, H·s_h, W·s_w]`.
//!
//! The rule is checked output pixel by output pixel with the formulas of the ONNX `Resize`
//! specification; a factor that is not whole, a downsampling, a batch or channel factor other
//! than 1, a mode other than `nearest`, or a coordinate rule that does not give whole-block copies
//! (`align_corners` in general, `tf_crop_and_resize`) is refused, naming the node and why.

use super::import::{Ctx, Importer, batched};
use crate::error::Result;
use crate::graph::Op;

impl<'m> Importer<'m> {
    /// `Resize` and `Upsample` (see the module documentation).
    pub(super) fn resize(&mut self, ctx: &Ctx<'m>) -> Result<()> {
        let mode = ctx.string("mode")?.unwrap_or_else(|| "nearest".into());
        if mode != "nearest" {
            return Err(ctx.err(format!("mode = '{mode}': moat resizes in 'nearest' mode only")));
        }
        let (id, shape) = self.runtime(ctx, 0)?;
        let [c, h, w] = shape[..] else {
            return Err(ctx.err(format!("resizes a {} value; moat resizes [N, C, H, W] images", batched(&shape))));
        };
        let factors = self.resize_factors(ctx, &shape)?;
        if factors[0] != 1.0 || factors[1] != 1.0 {
            return Err(ctx.err(format!(
                "scales the batch or channel axis ({} and {}); moat resizes the spatial axes only",
                factors[0], factors[1]
            )));
        }
        let (coordinates, rounding) = if ctx.node.op_type == "Upsample" || self.opset < 11 {
            ("asymmetric".to_string(), "floor".to_string())
        } else {
            (
                ctx.string("coordinate_transformation_mode")?.unwrap_or_else(|| "half_pixel".into()),
                ctx.string("nearest_mode")?.unwrap_or_else(|| "round_prefer_floor".into()),
            )
        };
        let mut whole = [1usize; 2];
        for (k, (&len, &scale)) in [h, w].iter().zip(&factors[2..]).enumerate() {
            whole[k] = whole_factor(len, scale, &coordinates, &rounding)
                .map_err(|why| ctx.err(format!("axis {} ({len} → {scale}×): {why}", k + 2)))?;
        }
        let [sh, sw] = whole;
        let out_shape = vec![c, h * sh, w * sw];
        if sh * sw == 1 {
            return self.bind_output(ctx, 0, id, shape);
        }
        let x = self.materialize(ctx, id, &shape)?;
        let copies = self.push(ctx, Some("copies"), Op::Concat, vec![x; sh * sw])?;
        let stacked = self.push(ctx, Some("stack"), Op::Reshape(vec![sh, sw, c, h, w]), vec![copies])?;
        let blocks = self.push(ctx, Some("blocks"), Op::Transpose(vec![2, 3, 0, 4, 1]), vec![stacked])?;
        let out = self.push(ctx, None, Op::Reshape(out_shape.clone()), vec![blocks])?;
        self.bind_output(ctx, 0, out, out_shape)
    }

    /// The scale of each of the 4 axes `[N, C, H, W]`: `Upsample`'s `scales` attribute (opset
    /// 7–8) or input, `Resize`'s `scales` input, or its `sizes` input over `shape` (`[C, H, W]`;
    /// the batch entry of `sizes` is the exported batch and is not compared); with `axes` (opset
    /// 18 and up) the others are 1.
    fn resize_factors(&self, ctx: &Ctx<'m>, shape: &[usize]) -> Result<Vec<f64>> {
        let (scales_input, sizes_input) = match (ctx.node.op_type.as_str(), self.opset) {
            ("Upsample", opset) if opset < 9 => {
                let scales = ctx.attr("scales").map(|a| a.floats.as_slice()).unwrap_or_default();
                return four(ctx, scales.iter().map(|&v| f64::from(v)).collect(), None);
            }
            ("Upsample", _) | (_, 10) => (Some(1), None),
            _ => (Some(2), Some(3)),
        };
        let axes = ctx.ints("axes");
        let constant = |i: usize| -> Result<Option<std::rc::Rc<super::constant::Const>>> {
            if ctx.input(i).is_none() {
                return Ok(None);
            }
            if !self.is_constant(ctx, i)? {
                return Err(ctx.err(format!("input {i} is computed; moat needs the resize's scales or sizes constant")));
            }
            self.constant(ctx, i).map(Some)
        };
        if let Some(scales) = scales_input.map(constant).transpose()?.flatten() {
            let values = scales.floats().map_err(|m| ctx.err(m))?;
            if !values.is_empty() {
                return four(ctx, values.iter().map(|&v| f64::from(v)).collect(), axes);
            }
        }
        let Some(sizes) = sizes_input.map(constant).transpose()?.flatten() else {
            return Err(ctx.err("has neither scales nor sizes"));
        };
        if ctx.string("keep_aspect_ratio_policy")?.is_some_and(|p| p != "stretch") {
            return Err(ctx.err("keep_aspect_ratio_policy other than 'stretch': moat resizes by given factors only"));
        }
        let sizes = sizes.ints().map_err(|m| ctx.err(m))?;
        if sizes.len() != axes.map_or(4, <[i64]>::len) {
            return Err(ctx.err(format!("has {} sizes for a rank-4 input", sizes.len())));
        }
        let full: Vec<usize> = std::iter::once(0).chain(shape.iter().copied()).collect();
        let axes_of = |k: usize| axes.map_or(k, |a| a.get(k).map_or(usize::MAX, |&v| v.rem_euclid(4) as usize));
        let mut factors = vec![1.0; 4];
        for (k, &size) in sizes.iter().enumerate() {
            let axis = axes_of(k);
            if axis == 0 || axis >= 4 {
                continue;
            }
            factors[axis] = size as f64 / full[axis] as f64;
        }
        Ok(factors)
    }
}

/// `values` as the four axes' scales (`axes` picks which, the others 1).
fn four(ctx: &Ctx<'_>, values: Vec<f64>, axes: Option<&[i64]>) -> Result<Vec<f64>> {
    let Some(axes) = axes else {
        if values.len() != 4 {
            return Err(ctx.err(format!("has {} scales for a rank-4 input", values.len())));
        }
        return Ok(values);
    };
    if values.len() != axes.len() {
        return Err(ctx.err(format!("has {} scales for {} axes", values.len(), axes.len())));
    }
    let mut factors = vec![1.0; 4];
    for (&axis, &v) in axes.iter().zip(&values) {
        factors[axis.rem_euclid(4) as usize] = v;
    }
    Ok(factors)
}

/// The whole factor `s` by which an axis of `len` pixels grows at `scale`, when the coordinate
/// rule maps every output pixel `i` to input pixel `⌊i / s⌋`; otherwise why not.
fn whole_factor(len: usize, scale: f64, coordinates: &str, rounding: &str) -> std::result::Result<usize, String> {
    if !(scale >= 1.0 && scale.fract() == 0.0 && scale <= 64.0) {
        return Err("moat resizes by whole factors from 1 to 64 (nearest-neighbour upsampling)".into());
    }
    let s = scale as usize;
    let out = len * s;
    for i in 0..out {
        let x = i as f64;
        let original = match coordinates {
            "half_pixel" => (x + 0.5) / scale - 0.5,
            "pytorch_half_pixel" if out > 1 => (x + 0.5) / scale - 0.5,
            "pytorch_half_pixel" => 0.0,
            "asymmetric" => x / scale,
            "tf_half_pixel_for_nn" => (x + 0.5) / scale,
            "align_corners" if out > 1 => x * (len as f64 - 1.0) / (out as f64 - 1.0),
            "align_corners" => 0.0,
            other => return Err(format!("coordinate_transformation_mode = '{other}' is not supported")),
        };
        let nearest = match rounding {
            "round_prefer_floor" if original.fract().abs() == 0.5 => original.floor(),
            "round_prefer_ceil" if original.fract().abs() == 0.5 => original.ceil(),
            "round_prefer_floor" | "round_prefer_ceil" => original.round(),
            "floor" => original.floor(),
            "ceil" => original.ceil(),
            other => return Err(format!("nearest_mode = '{other}' is not supported")),
        };
        let j = nearest.clamp(0.0, len as f64 - 1.0) as usize;
        if j != i / s {
            return Err(format!(
                "coordinate_transformation_mode = '{coordinates}' with nearest_mode = '{rounding}' maps output \
                 pixel {i} to input pixel {j}, not {}: not a copy of whole blocks, which is what moat resizes",
                i / s
            ));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::whole_factor;

    #[test]
    fn the_usual_rules_copy_whole_blocks_and_the_others_are_refused() {
        for (coordinates, rounding) in [
            ("asymmetric", "floor"),
            ("half_pixel", "round_prefer_floor"),
            ("half_pixel", "round_prefer_ceil"),
            ("pytorch_half_pixel", "round_prefer_floor"),
            ("tf_half_pixel_for_nn", "floor"),
        ] {
            for s in [1.0, 2.0, 3.0, 4.0] {
                assert_eq!(whole_factor(7, s, coordinates, rounding), Ok(s as usize), "{coordinates}/{rounding} ×{s}");
            }
        }
        // asymmetric with rounding: output pixel 2 of ×3 is 0.67 → 1, not a block copy.
        assert!(whole_factor(5, 3.0, "asymmetric", "round_prefer_floor").is_err_and(|e| e.contains("pixel 2")));
        assert!(whole_factor(5, 2.0, "align_corners", "floor").is_err());
        assert!(whole_factor(5, 1.5, "asymmetric", "floor").is_err_and(|e| e.contains("whole factors")));
        assert!(whole_factor(5, 0.5, "asymmetric", "floor").is_err());
        assert!(whole_factor(5, 2.0, "tf_crop_and_resize", "floor").is_err_and(|e| e.contains("not supported")));
    }
}
