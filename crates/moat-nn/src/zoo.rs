//! The model zoo: architectures moat trains, serves, attacks and benchmarks, built as layer
//! graphs with seeded random (He-normal) weights.
//!
//! | name | architecture |
//! |---|---|
//! | `mlp:H1,H2,…` | fully connected, ReLU between layers |
//! | `lenet5[:xW]` | LeNet-5 style CNN (conv5-pool-conv5-pool-fc120-fc84-fc), channels × W |
//! | `resnet20`, `resnet32`, `resnet56[:xW]` | CIFAR ResNets (He et al. 2016, 3 stages of basic blocks, 16/32/64 channels × W) |
//! | `resnet18[:xW]`, `resnet34[:xW]` | ResNet-18 / -34 (basic blocks [2, 2, 2, 2] / [3, 4, 6, 3]) with a 3×3 stem for 32×32 inputs (64–512 channels × W) |
//! | `resnet50` | ResNet-50 v1.5 for ImageNet (7×7 stem, bottlenecks [3, 4, 6, 3], 25.6 M parameters) |
//! | `squeezenet` | SqueezeNet 1.1 for ImageNet (fire modules, 1.24 M parameters) |
//! | `mobilenetv2[:xW]` | MobileNetV2 for 32×32 inputs (Sandler et al. 2018: inverted residuals, depthwise 3×3, ReLU6; stem stride 1, second stage stride 1; channels and the 1280-wide head × W) |
//! | `shufflenet[:xW]` | ShuffleNet v1, g = 2, for 32×32 inputs (Zhang et al. 2018: grouped 1×1 convolutions, channel shuffle, depthwise 3×3; stages of 4/8/4 units, 200/400/800 channels × W) |

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};
use crate::graph::{BatchNorm, Conv2d, Dense, Graph, Node, Op, Pool, ValueId};
use crate::tensor::{Tensor, numel};

/// A zoo architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Architecture {
    /// Multi-layer perceptron with the given hidden widths.
    Mlp {
        /// Hidden layer widths.
        hidden: Vec<usize>,
    },
    /// LeNet-5 style CNN with a channel width multiplier.
    LeNet5 {
        /// Channel multiplier (1.0 = 6 and 16 channels).
        width: f32,
    },
    /// CIFAR-style ResNet of depth 6n + 2 with basic blocks.
    CifarResNet {
        /// Depth: 20, 32, 44, 56, …
        depth: usize,
        /// Channel multiplier (1.0 = 16/32/64 channels).
        width: f32,
    },
    /// ResNet-18 or -34 (basic blocks [2, 2, 2, 2] or [3, 4, 6, 3]) with a 3×3 stem and no
    /// max pool, for 32×32 inputs.
    ResNet {
        /// 18 or 34.
        depth: usize,
        /// Channel multiplier (1.0 = 64/128/256/512 channels).
        width: f32,
    },
    /// ResNet-50 v1.5 (ImageNet stem, bottleneck blocks [3, 4, 6, 3], stride in the 3×3 conv).
    ResNet50,
    /// SqueezeNet 1.1.
    SqueezeNet,
    /// MobileNetV2 for 32×32 inputs with a channel multiplier.
    MobileNetV2 {
        /// Channel multiplier (1.0 = the paper's widths).
        width: f32,
    },
    /// ShuffleNet v1 (g = 2) for 32×32 inputs with a channel multiplier.
    ShuffleNet {
        /// Channel multiplier (1.0 = 200/400/800 channels).
        width: f32,
    },
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |w: f32| if w == 1.0 { String::new() } else { format!(":x{w}") };
        match self {
            Architecture::Mlp { hidden } => {
                let h: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();
                write!(f, "mlp:{}", h.join(","))
            }
            Architecture::LeNet5 { width: w } => write!(f, "lenet5{}", width(*w)),
            Architecture::CifarResNet { depth, width: w } => write!(f, "resnet{depth}{}", width(*w)),
            Architecture::ResNet { depth, width: w } => write!(f, "resnet{depth}{}", width(*w)),
            Architecture::ResNet50 => write!(f, "resnet50"),
            Architecture::SqueezeNet => write!(f, "squeezenet"),
            Architecture::MobileNetV2 { width: w } => write!(f, "mobilenetv2{}", width(*w)),
            Architecture::ShuffleNet { width: w } => write!(f, "shufflenet{}", width(*w)),
        }
    }
}

impl FromStr for Architecture {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            NnError::Graph(format!(
                "unknown architecture '{s}' (expected mlp:H1,H2,…, lenet5[:xW], resnet20|32|44|56[:xW], resnet18|34[:xW], resnet50, squeezenet, mobilenetv2[:xW], shufflenet[:xW])"
            ))
        };
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let width = || -> Result<f32> {
            match arg {
                None => Ok(1.0),
                Some(a) => {
                    let w: f32 = a.strip_prefix('x').ok_or_else(bad)?.parse().map_err(|_| bad())?;
                    if w > 0.0 && w <= 16.0 { Ok(w) } else { Err(bad()) }
                }
            }
        };
        match name {
            "mlp" => {
                let hidden = match arg {
                    None | Some("") => vec![],
                    Some(a) => {
                        a.split(',').map(|h| h.trim().parse::<usize>().map_err(|_| bad())).collect::<Result<_>>()?
                    }
                };
                if hidden.contains(&0) {
                    return Err(bad());
                }
                Ok(Architecture::Mlp { hidden })
            }
            "lenet5" => Ok(Architecture::LeNet5 { width: width()? }),
            "resnet18" => Ok(Architecture::ResNet { depth: 18, width: width()? }),
            "resnet34" => Ok(Architecture::ResNet { depth: 34, width: width()? }),
            "resnet50" if arg.is_none() => Ok(Architecture::ResNet50),
            "squeezenet" if arg.is_none() => Ok(Architecture::SqueezeNet),
            "mobilenetv2" => Ok(Architecture::MobileNetV2 { width: width()? }),
            "shufflenet" => Ok(Architecture::ShuffleNet { width: width()? }),
            _ => {
                let depth: usize = name.strip_prefix("resnet").and_then(|d| d.parse().ok()).ok_or_else(bad)?;
                // `resnet50` is the ImageNet bottleneck network, never a CIFAR depth.
                if depth < 8 || depth == 50 || !(depth - 2).is_multiple_of(6) {
                    return Err(bad());
                }
                Ok(Architecture::CifarResNet { depth, width: width()? })
            }
        }
    }
}

impl Architecture {
    /// A file-name-safe form of the name: `mlp:128,64` → `mlp-128_64`, `lenet5:x2` → `lenet5-x2`.
    pub fn slug(&self) -> String {
        self.to_string().replace(':', "-").replace(',', "_")
    }
}

impl From<Architecture> for String {
    fn from(a: Architecture) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Architecture {
    type Error = NnError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// Builds `arch` for inputs of `input_shape` and `classes` outputs, with He-normal weights drawn
/// from `seed`.
pub fn build(arch: &Architecture, input_shape: &[usize], classes: usize, seed: u64) -> Result<Graph> {
    let mut b = GraphBuilder::new(input_shape, seed);
    let x = ValueId::INPUT;
    let scaled = |c: usize, w: f32| ((c as f32 * w).round() as usize).max(1);
    let out = match arch {
        Architecture::Mlp { hidden } => {
            let mut x = b.flatten(x)?;
            for (i, &h) in hidden.iter().enumerate() {
                x = b.dense(&format!("fc{}", i + 1), x, h)?;
                x = b.relu(x)?;
            }
            b.dense(&format!("fc{}", hidden.len() + 1), x, classes)?
        }
        Architecture::LeNet5 { width } => {
            let spatial = b.shape(x)?.get(1).copied().unwrap_or(0);
            // 28×28 inputs are padded to 32×32 as in the original LeNet-5.
            let pad = if spatial == 28 { 2 } else { 0 };
            let mut x = b.conv("conv1", x, scaled(6, *width), 5, 1, pad)?;
            x = b.relu(x)?;
            x = b.max_pool(x, 2, 2)?;
            x = b.conv("conv2", x, scaled(16, *width), 5, 1, 0)?;
            x = b.relu(x)?;
            x = b.max_pool(x, 2, 2)?;
            x = b.flatten(x)?;
            x = b.dense("fc1", x, scaled(120, *width))?;
            x = b.relu(x)?;
            x = b.dense("fc2", x, scaled(84, *width))?;
            x = b.relu(x)?;
            b.dense("fc3", x, classes)?
        }
        Architecture::CifarResNet { depth, width } => {
            let n = (depth - 2) / 6;
            let mut x = b.conv_bn("conv1", x, scaled(16, *width), 3, 1, 1)?;
            x = b.relu(x)?;
            for (stage, &c) in [16, 32, 64].iter().enumerate() {
                for block in 0..n {
                    let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                    x = b.basic_block(&format!("layer{}.{}", stage + 1, block), x, scaled(c, *width), stride)?;
                }
            }
            x = b.global_avg_pool(x)?;
            b.dense("fc", x, classes)?
        }
        Architecture::ResNet { depth, width } => {
            let blocks = match depth {
                18 => [2, 2, 2, 2],
                34 => [3, 4, 6, 3],
                _ => return Err(NnError::Graph(format!("no basic-block ResNet of depth {depth} (18 or 34)"))),
            };
            let mut x = b.conv_bn("conv1", x, scaled(64, *width), 3, 1, 1)?;
            x = b.relu(x)?;
            for (stage, (&c, &blocks)) in [64, 128, 256, 512].iter().zip(&blocks).enumerate() {
                for block in 0..blocks {
                    let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                    x = b.basic_block(&format!("layer{}.{}", stage + 1, block), x, scaled(c, *width), stride)?;
                }
            }
            x = b.global_avg_pool(x)?;
            b.dense("fc", x, classes)?
        }
        Architecture::ResNet50 => {
            let mut x = b.conv_bn("conv1", x, 64, 7, 2, 3)?;
            x = b.relu(x)?;
            x = b.push("maxpool", Op::MaxPool(Pool { kernel: [3; 2], stride: [2; 2], padding: [1; 4] }), vec![x])?;
            for (stage, (&c, &blocks)) in [64, 128, 256, 512].iter().zip(&[3, 4, 6, 3]).enumerate() {
                for block in 0..blocks {
                    let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                    x = b.bottleneck(&format!("layer{}.{}", stage + 1, block), x, c, stride)?;
                }
            }
            x = b.global_avg_pool(x)?;
            b.dense("fc", x, classes)?
        }
        Architecture::SqueezeNet => {
            let pool = |b: &mut GraphBuilder, x| {
                b.push("", Op::MaxPool(Pool { kernel: [3; 2], stride: [2; 2], padding: [0; 4] }), vec![x])
            };
            let mut x = b.conv("features.0", x, 64, 3, 2, 0)?;
            x = b.relu(x)?;
            x = pool(&mut b, x)?;
            for (i, &(squeeze, expand)) in [(16, 64), (16, 64)].iter().enumerate() {
                x = b.fire(&format!("fire{}", i + 2), x, squeeze, expand)?;
            }
            x = pool(&mut b, x)?;
            for (i, &(squeeze, expand)) in [(32, 128), (32, 128)].iter().enumerate() {
                x = b.fire(&format!("fire{}", i + 4), x, squeeze, expand)?;
            }
            x = pool(&mut b, x)?;
            for (i, &(squeeze, expand)) in [(48, 192), (48, 192), (64, 256), (64, 256)].iter().enumerate() {
                x = b.fire(&format!("fire{}", i + 6), x, squeeze, expand)?;
            }
            x = b.conv("classifier.1", x, classes, 1, 1, 0)?;
            x = b.relu(x)?;
            b.global_avg_pool(x)?
        }
        Architecture::MobileNetV2 { width } => {
            // Channels rounded to multiples of 4 (the paper rounds to 8 at full width).
            let ch = |c: usize| scaled(c, *width).div_ceil(4) * 4;
            let mut x = b.conv_bn("features.0", x, ch(32), 3, 1, 1)?;
            x = b.relu6(x)?;
            let mut block = 1;
            for &(t, c, n, s) in &[
                (1, 16, 1, 1),
                (6, 24, 2, 1),
                (6, 32, 3, 2),
                (6, 64, 4, 2),
                (6, 96, 3, 1),
                (6, 160, 3, 2),
                (6, 320, 1, 1),
            ] {
                for i in 0..n {
                    let stride = if i == 0 { s } else { 1 };
                    x = b.inverted_residual(&format!("features.{block}"), x, t, ch(c), stride)?;
                    block += 1;
                }
            }
            x = b.conv_bn(&format!("features.{block}"), x, ch(1280), 1, 1, 0)?;
            x = b.relu6(x)?;
            x = b.global_avg_pool(x)?;
            b.dense("classifier", x, classes)?
        }
        Architecture::ShuffleNet { width } => {
            const GROUPS: usize = 2;
            // Multiples of 4·g, so every bottleneck (a quarter) splits into the groups.
            let ch = |c: usize| scaled(c, *width).div_ceil(4 * GROUPS) * 4 * GROUPS;
            let mut x = b.conv_bn("conv1", x, ch(24), 3, 1, 1)?;
            x = b.relu(x)?;
            for (stage, (&c, &units)) in [200, 400, 800].iter().zip(&[4, 8, 4]).enumerate() {
                for unit in 0..units {
                    let stride = if unit == 0 { 2 } else { 1 };
                    // The first 1×1 of the network reads the stem's few channels: ungrouped.
                    let first_groups = if stage == 0 && unit == 0 { 1 } else { GROUPS };
                    let name = format!("stage{}.{unit}", stage + 2);
                    x = b.shuffle_unit(&name, x, ch(c), GROUPS, first_groups, stride)?;
                }
            }
            x = b.global_avg_pool(x)?;
            b.dense("fc", x, classes)?
        }
    };
    b.finish(&arch.to_string(), out)
}

/// Incremental graph construction with seeded He-normal initialisation.
pub struct GraphBuilder {
    input_shape: Vec<usize>,
    nodes: Vec<Node>,
    /// Shape of every value so far (`shapes[0]` is the input).
    shapes: Vec<Vec<usize>>,
    rng: ChaCha20Rng,
    anonymous: usize,
}

impl GraphBuilder {
    /// A builder for inputs of `input_shape`.
    pub fn new(input_shape: &[usize], seed: u64) -> Self {
        Self {
            input_shape: input_shape.to_vec(),
            nodes: Vec::new(),
            shapes: vec![input_shape.to_vec()],
            rng: ChaCha20Rng::seed_from_u64(seed),
            anonymous: 0,
        }
    }

    /// Shape of a value built so far.
    pub fn shape(&self, value: ValueId) -> Result<Vec<usize>> {
        self.shapes.get(value.0).cloned().ok_or_else(|| NnError::Graph(format!("value {} is not built yet", value.0)))
    }

    /// Appends a node; fails (naming it) if its shapes do not fit.
    pub fn push(&mut self, name: &str, op: Op, inputs: Vec<ValueId>) -> Result<ValueId> {
        let name = if name.is_empty() {
            self.anonymous += 1;
            format!("{}_{}", op.kind().to_lowercase(), self.anonymous)
        } else {
            name.to_string()
        };
        let node = Node { name, op, inputs };
        if let Some(bad) = node.inputs.iter().find(|v| v.0 >= self.shapes.len()) {
            return Err(NnError::node(&node.name, node.op.kind(), format!("reads value {} not built yet", bad.0)));
        }
        let shape = crate::graph::node_shape(&self.shapes, &node)?;
        self.shapes.push(shape);
        self.nodes.push(node);
        Ok(ValueId::of_node(self.nodes.len() - 1))
    }

    fn normal(&mut self, std: f32) -> f32 {
        // Box–Muller.
        let u1: f32 = self.rng.random_range(f32::EPSILON..1.0);
        let u2: f32 = self.rng.random();
        std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }

    fn he_normal(&mut self, count: usize, fan_in: usize) -> Vec<f32> {
        let std = (2.0 / fan_in.max(1) as f32).sqrt();
        (0..count).map(|_| self.normal(std)).collect()
    }

    /// Convolution `k×k` with `out` channels, stride and symmetric padding.
    pub fn conv(&mut self, name: &str, x: ValueId, out: usize, k: usize, stride: usize, pad: usize) -> Result<ValueId> {
        let c = self.shape(x)?.first().copied().unwrap_or(0);
        let weight = Tensor::new(vec![out, c, k, k], self.he_normal(out * c * k * k, c * k * k))?;
        let conv = Conv2d { weight, bias: vec![0.0; out], stride: [stride; 2], padding: [pad; 4], group: 1 };
        self.push(name, Op::Conv2d(conv), vec![x])
    }

    /// Grouped convolution `k×k` with `out` channels in `group` groups (`group` = input
    /// channels = `out`: depthwise), stride and symmetric padding.
    #[expect(clippy::too_many_arguments, reason = "the convolution's hyper-parameters, all needed")]
    pub fn grouped_conv(
        &mut self,
        name: &str,
        x: ValueId,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        group: usize,
    ) -> Result<ValueId> {
        let c = self.shape(x)?.first().copied().unwrap_or(0) / group.max(1);
        let weight = Tensor::new(vec![out, c, k, k], self.he_normal(out * c * k * k, c * k * k))?;
        let conv = Conv2d { weight, bias: vec![0.0; out], stride: [stride; 2], padding: [pad; 4], group };
        self.push(name, Op::Conv2d(conv), vec![x])
    }

    /// Batch norm with identity statistics (γ = 1, β = 0, μ = 0, σ² = 1).
    pub fn batch_norm(&mut self, name: &str, x: ValueId) -> Result<ValueId> {
        let c = self.shape(x)?.first().copied().unwrap_or(0);
        let bn =
            BatchNorm { gamma: vec![1.0; c], beta: vec![0.0; c], mean: vec![0.0; c], var: vec![1.0; c], eps: 1e-5 };
        self.push(name, Op::BatchNorm(bn), vec![x])
    }

    /// Convolution followed by batch norm (`name` and `name` + `.bn`).
    pub fn conv_bn(
        &mut self,
        name: &str,
        x: ValueId,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> Result<ValueId> {
        let y = self.conv(name, x, out, k, stride, pad)?;
        self.batch_norm(&format!("{name}.bn"), y)
    }

    /// A basic residual block: conv-bn-relu-conv-bn, plus the input (through a 1×1 conv + bn
    /// when the shape changes), then ReLU.
    pub fn basic_block(&mut self, name: &str, x: ValueId, out: usize, stride: usize) -> Result<ValueId> {
        let c = self.shape(x)?.first().copied().unwrap_or(0);
        let mut y = self.conv_bn(&format!("{name}.conv1"), x, out, 3, stride, 1)?;
        y = self.relu(y)?;
        y = self.conv_bn(&format!("{name}.conv2"), y, out, 3, 1, 1)?;
        let shortcut = if stride != 1 || c != out {
            self.conv_bn(&format!("{name}.downsample"), x, out, 1, stride, 0)?
        } else {
            x
        };
        let sum = self.push(&format!("{name}.add"), Op::Add, vec![y, shortcut])?;
        self.relu(sum)
    }

    /// A bottleneck residual block (ResNet-50 v1.5): 1×1 reduce, 3×3 (with the stride), 1×1
    /// expand ×4, each with batch norm, plus the (projected) input, then ReLU.
    pub fn bottleneck(&mut self, name: &str, x: ValueId, width: usize, stride: usize) -> Result<ValueId> {
        let c = self.shape(x)?.first().copied().unwrap_or(0);
        let out = 4 * width;
        let mut y = self.conv_bn(&format!("{name}.conv1"), x, width, 1, 1, 0)?;
        y = self.relu(y)?;
        y = self.conv_bn(&format!("{name}.conv2"), y, width, 3, stride, 1)?;
        y = self.relu(y)?;
        y = self.conv_bn(&format!("{name}.conv3"), y, out, 1, 1, 0)?;
        let shortcut = if stride != 1 || c != out {
            self.conv_bn(&format!("{name}.downsample"), x, out, 1, stride, 0)?
        } else {
            x
        };
        let sum = self.push(&format!("{name}.add"), Op::Add, vec![y, shortcut])?;
        self.relu(sum)
    }

    /// A SqueezeNet fire module: 1×1 squeeze + ReLU, then 1×1 and 3×3 expands (+ ReLU each),
    /// concatenated along channels.
    pub fn fire(&mut self, name: &str, x: ValueId, squeeze: usize, expand: usize) -> Result<ValueId> {
        let mut s = self.conv(&format!("{name}.squeeze"), x, squeeze, 1, 1, 0)?;
        s = self.relu(s)?;
        let mut e1 = self.conv(&format!("{name}.expand1x1"), s, expand, 1, 1, 0)?;
        e1 = self.relu(e1)?;
        let mut e3 = self.conv(&format!("{name}.expand3x3"), s, expand, 3, 1, 1)?;
        e3 = self.relu(e3)?;
        self.push(&format!("{name}.concat"), Op::Concat, vec![e1, e3])
    }

    /// A MobileNetV2 inverted residual: 1×1 expansion by `expand` (omitted when 1) + BN +
    /// ReLU6, depthwise 3×3 with the stride + BN + ReLU6, 1×1 linear projection to `out` + BN,
    /// plus the input when the shape is kept.
    pub fn inverted_residual(
        &mut self,
        name: &str,
        x: ValueId,
        expand: usize,
        out: usize,
        stride: usize,
    ) -> Result<ValueId> {
        let c = self.shape(x)?.first().copied().unwrap_or(0);
        let hidden = c * expand;
        let mut y = x;
        if expand != 1 {
            y = self.conv_bn(&format!("{name}.expand"), y, hidden, 1, 1, 0)?;
            y = self.relu6(y)?;
        }
        y = self.grouped_conv(&format!("{name}.depthwise"), y, hidden, 3, stride, 1, hidden)?;
        y = self.batch_norm(&format!("{name}.depthwise.bn"), y)?;
        y = self.relu6(y)?;
        y = self.conv_bn(&format!("{name}.project"), y, out, 1, 1, 0)?;
        if stride == 1 && c == out {
            y = self.push(&format!("{name}.add"), Op::Add, vec![y, x])?;
        }
        Ok(y)
    }

    /// A ShuffleNet v1 unit to `out` channels: grouped 1×1 (`first_groups` groups) to a
    /// quarter of `out` + BN + ReLU, channel shuffle, depthwise 3×3 with the stride + BN,
    /// grouped 1×1 + BN; then the input added (stride 1) or its 3×3 average pool concatenated
    /// (stride 2, the 1×1 producing the remaining channels), and ReLU.
    pub fn shuffle_unit(
        &mut self,
        name: &str,
        x: ValueId,
        out: usize,
        groups: usize,
        first_groups: usize,
        stride: usize,
    ) -> Result<ValueId> {
        let c = self.shape(x)?.first().copied().unwrap_or(0);
        let mid = out / 4;
        let mut y = self.grouped_conv(&format!("{name}.gconv1"), x, mid, 1, 1, 0, first_groups)?;
        y = self.batch_norm(&format!("{name}.gconv1.bn"), y)?;
        y = self.relu(y)?;
        y = self.channel_shuffle(&format!("{name}.shuffle"), y, groups)?;
        y = self.grouped_conv(&format!("{name}.depthwise"), y, mid, 3, stride, 1, mid)?;
        y = self.batch_norm(&format!("{name}.depthwise.bn"), y)?;
        let main = if stride == 1 { out } else { out.saturating_sub(c) };
        y = self.grouped_conv(&format!("{name}.gconv2"), y, main, 1, 1, 0, groups)?;
        y = self.batch_norm(&format!("{name}.gconv2.bn"), y)?;
        let joined = if stride == 1 {
            self.push(&format!("{name}.add"), Op::Add, vec![y, x])?
        } else {
            let pool = Pool { kernel: [3; 2], stride: [2; 2], padding: [1; 4] };
            let shortcut = self.push(&format!("{name}.avgpool"), Op::AvgPool(pool), vec![x])?;
            self.push(&format!("{name}.concat"), Op::Concat, vec![y, shortcut])?
        };
        self.relu(joined)
    }

    /// ShuffleNet's channel shuffle of a `[C, H, W]` value: reshape to `[g, C/g, H, W]`,
    /// swap the first two axes, reshape back.
    pub fn channel_shuffle(&mut self, name: &str, x: ValueId, groups: usize) -> Result<ValueId> {
        let shape = self.shape(x)?;
        let &[c, h, w] = shape.as_slice() else {
            return Err(NnError::Graph(format!("{name}: channel shuffle of {shape:?}, not [C, H, W]")));
        };
        let split = self.push(&format!("{name}.split"), Op::Reshape(vec![groups, c / groups.max(1), h, w]), vec![x])?;
        let swapped = self.push(&format!("{name}.transpose"), Op::Transpose(vec![1, 0, 2, 3]), vec![split])?;
        self.push(&format!("{name}.merge"), Op::Reshape(vec![c, h, w]), vec![swapped])
    }

    /// ReLU6, `Clip(0, 6)`.
    pub fn relu6(&mut self, x: ValueId) -> Result<ValueId> {
        self.push("", Op::Clip { min: 0.0, max: 6.0 }, vec![x])
    }

    /// Fully connected layer to `out` units.
    pub fn dense(&mut self, name: &str, x: ValueId, out: usize) -> Result<ValueId> {
        let n = numel(&self.shape(x)?);
        let weight = Tensor::new(vec![out, n], self.he_normal(out * n, n))?;
        self.push(name, Op::Dense(Dense { weight, bias: vec![0.0; out] }), vec![x])
    }

    /// ReLU.
    pub fn relu(&mut self, x: ValueId) -> Result<ValueId> {
        self.push("", Op::Relu, vec![x])
    }

    /// Max pool `k×k` with the given stride.
    pub fn max_pool(&mut self, x: ValueId, k: usize, stride: usize) -> Result<ValueId> {
        self.push("", Op::MaxPool(Pool { kernel: [k; 2], stride: [stride; 2], padding: [0; 4] }), vec![x])
    }

    /// Global average pool.
    pub fn global_avg_pool(&mut self, x: ValueId) -> Result<ValueId> {
        self.push("", Op::GlobalAvgPool, vec![x])
    }

    /// Flatten (omitted when the value is already 1-D).
    pub fn flatten(&mut self, x: ValueId) -> Result<ValueId> {
        if self.shape(x)?.len() == 1 {
            return Ok(x);
        }
        self.push("", Op::Flatten, vec![x])
    }

    /// The finished, shape-checked graph returning `output`.
    pub fn finish(self, name: &str, output: ValueId) -> Result<Graph> {
        Graph::new(name, self.input_shape, self.nodes, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_parse_and_print() -> Result<()> {
        for s in [
            "mlp:128,64",
            "lenet5",
            "lenet5:x2",
            "resnet20",
            "resnet32:x0.5",
            "resnet18",
            "resnet34:x0.5",
            "resnet50",
            "squeezenet",
            "mobilenetv2",
            "mobilenetv2:x0.5",
            "shufflenet:x0.25",
        ] {
            assert_eq!(s.parse::<Architecture>()?.to_string(), s);
        }
        assert_eq!("mlp:128,64".parse::<Architecture>()?.slug(), "mlp-128_64");
        for bad in ["resnet21", "lenet5:2", "mlp:0", "vgg16", "lenet5:x-1", "resnet50:x2"] {
            assert!(bad.parse::<Architecture>().is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn zoo_models_have_published_sizes() -> Result<()> {
        let r20 = build(&"resnet20".parse()?, &[3, 32, 32], 10, 0)?;
        // ≈0.27 M parameters (He et al.), ≈41 M multiply-accumulates.
        assert!((260_000..290_000).contains(&r20.parameter_count()), "{}", r20.parameter_count());
        let macs: usize = (0..r20.nodes().len()).map(|i| r20.node_macs(i)).sum();
        assert!((39_000_000..43_000_000).contains(&macs), "{macs}");
        let r18 = build(&"resnet18".parse()?, &[3, 32, 32], 10, 0)?;
        assert!((11_000_000..11_300_000).contains(&r18.parameter_count()), "{}", r18.parameter_count());
        // ResNet-34 for CIFAR (3×3 stem, no max pool): ≈ 21.3 M parameters, ≈ 1.16 G MACs.
        let r34 = build(&"resnet34".parse()?, &[3, 32, 32], 10, 0)?;
        assert!((21_200_000..21_400_000).contains(&r34.parameter_count()), "{}", r34.parameter_count());
        let r34_macs: usize = (0..r34.nodes().len()).map(|i| r34.node_macs(i)).sum();
        assert!((1_100_000_000..1_200_000_000).contains(&r34_macs), "{r34_macs}");
        // torchvision: resnet50 25,557,032 and squeezenet1_1 1,235,496 parameters (BN counts γ, β).
        let r50 = build(&"resnet50".parse()?, &[3, 224, 224], 1000, 0)?;
        // Our convolutions carry a (zero-initialised) bias, torchvision's do not.
        let conv_biases: usize =
            r50.nodes().iter().map(|n| if let Op::Conv2d(c) = &n.op { c.out_channels() } else { 0 }).sum();
        assert_eq!(r50.parameter_count(), 25_557_032 + conv_biases);
        let r50_macs: usize = (0..r50.nodes().len()).map(|i| r50.node_macs(i)).sum();
        assert!((4_000_000_000..4_200_000_000).contains(&r50_macs), "{r50_macs}");
        let squeeze = build(&"squeezenet".parse()?, &[3, 224, 224], 1000, 0)?;
        assert_eq!(squeeze.parameter_count(), 1_235_496);
        assert_eq!(squeeze.output_shape(), &[1000]);
        let lenet = build(&"lenet5".parse()?, &[1, 28, 28], 10, 0)?;
        assert_eq!(lenet.output_shape(), &[10]);
        assert_eq!(lenet.parameter_count(), 61_706);
        Ok(())
    }

    #[test]
    fn same_seed_same_weights() -> Result<()> {
        let a = build(&"lenet5".parse()?, &[1, 28, 28], 10, 3)?;
        let b = build(&"lenet5".parse()?, &[1, 28, 28], 10, 3)?;
        let c = build(&"lenet5".parse()?, &[1, 28, 28], 10, 4)?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        Ok(())
    }
}
