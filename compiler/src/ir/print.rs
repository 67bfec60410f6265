//! The IR's text form, printed; `parse` reads it back (`parse(print(g)) == g`). One line per
//! item, stable, for snapshots and for reading:
//!
//! ```text
//! graph tiny.training {
//!   %0 = data x : [2,1,4,4]
//!   %1 = target labels : [2]
//!   %2 = param conv1.weight : [3,1,3,3]
//!   %3 = scalar lr : []
//!   %4 = conv2d(%0, %2) stride=1x1 pad=0,0,0,0 dilation=1x1 groups=1 : [2,3,2,2] @conv1
//!   %5 = leaky_relu(%4) slope=0.01 : [2,3,2,2] @conv1
//!   %6 = reshape(%5) shape=[2,12] : [2,12] @flatten
//!   %7 = softmax_cross_entropy(%6, %1) : [] @loss
//!   %8 = mul(%2, %3) : [3,1,3,3]
//!   output loss loss = %7
//!   output prediction prediction = %6
//!   output update conv1.weight = %8
//! }
//! ```
//!
//! Values come in index order, each defined by an input (`%N = KIND NAME : SHAPE`) or by an op
//! (`%N = OP(ARGUMENTS) ATTRIBUTES : SHAPE @LAYER`, the layer where the op has one); then the
//! outputs (`output ROLE NAME = %N`). Every attribute is printed as `name=value`, in a fixed
//! order per op (`attributes`, the one table of them): counts as integers, `[H, W]` pairs as
//! `HxW`, paddings as `top,bottom,left,right`, shapes as `[2,3]` (`[]` for a scalar), flags as
//! `true`/`false`, and reals in Rust's shortest form that reads back to the same f64 (`0.1`,
//! `1e-8`, `-0.0`, `inf`, `NaN`), so they round-trip exactly.

use super::ops::fused::{Arg, Chain};
use super::ops::{ConvAttrs, MapFn, OpKind, PoolAttrs};
use super::{Definition, Graph};
use std::fmt;

/// The text of `graph`. Any graph prints, as it is, provided each value defined by an op names
/// an op that exists; so a graph that fails `verify` can still be read.
pub fn print(graph: &Graph) -> String {
    GraphText(graph).to_string()
}

struct GraphText<'a>(&'a Graph);

impl fmt::Display for GraphText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let graph = self.0;
        writeln!(f, "graph {} {{", graph.name)?;
        for (index, value) in graph.values.iter().enumerate() {
            write!(f, "  %{index} = ")?;
            match &value.definition {
                Definition::Input(input) => {
                    write!(f, "{} {}", input.kind.keyword(), input.name)?;
                    write!(f, " : {}", ShapeText(&value.shape))?;
                }
                Definition::Op(op_index) => {
                    let op = &graph.ops[*op_index];
                    let arguments: Vec<String> = op.inputs.iter().map(|v| v.to_string()).collect();
                    write!(f, "{}({})", op.kind.name(), arguments.join(", "))?;
                    // The table lends its attributes mutably, for the parser; printing reads a
                    // copy.
                    for (name, attribute) in attributes(&mut op.kind.clone()) {
                        write!(f, " {name}={attribute}")?;
                    }
                    write!(f, " : {}", ShapeText(&value.shape))?;
                    if let Some(layer) = &op.layer {
                        write!(f, " @{layer}")?;
                    }
                }
            }
            writeln!(f)?;
        }
        for output in &graph.outputs {
            let role = output.role.keyword();
            writeln!(f, "  output {role} {} = {}", output.name, output.value)?;
        }
        writeln!(f, "}}")
    }
}

/// A shape as the text form writes it: `[2,3]`, `[]`.
pub(crate) struct ShapeText<'a>(pub &'a [usize]);

impl fmt::Display for ShapeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extents: Vec<String> = self.0.iter().map(usize::to_string).collect();
        write!(f, "[{}]", extents.join(","))
    }
}

/// One attribute of an op, lent mutably: the printer reads it, the parser fills it in.
pub(crate) enum Attribute<'a> {
    /// A count, extent, axis or index.
    Count(&'a mut usize),
    /// `[along H, along W]`.
    Pair(&'a mut [usize; 2]),
    /// Padding `[top, bottom, left, right]`.
    Sides(&'a mut [usize; 4]),
    Flag(&'a mut bool),
    Real(&'a mut f64),
    /// A 64-bit key (a dropout stream), which may use all 64 bits.
    Key(&'a mut u64),
    Shape(&'a mut Vec<usize>),
    /// A fused op's steps.
    Chain(&'a mut Chain),
}

impl Attribute<'_> {
    /// What the text form's value looks like, for parse errors.
    pub(crate) fn form(&self) -> &'static str {
        match self {
            Attribute::Count(_) => "a whole number",
            Attribute::Pair(_) => "a pair like `2x2`",
            Attribute::Sides(_) => "four sides like `0,0,1,1` (top, bottom, left, right)",
            Attribute::Flag(_) => "`true` or `false`",
            Attribute::Real(_) => "a number like `0.5`",
            Attribute::Key(_) => "a whole number below 2^64",
            Attribute::Shape(_) => "a shape like `[2,3]`",
            Attribute::Chain(_) => "steps like `{mul(x0, x1); relu(t0)}`",
        }
    }
}

impl fmt::Display for Attribute<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Count(n) => write!(f, "{n}"),
            Attribute::Pair([h, w]) => write!(f, "{h}x{w}"),
            Attribute::Sides([top, bottom, left, right]) => {
                write!(f, "{top},{bottom},{left},{right}")
            }
            Attribute::Flag(b) => write!(f, "{b}"),
            // `{:?}` is the shortest text that reads back to the same f64 (`Display` would
            // write 1e-300 as three hundred digits).
            Attribute::Real(x) => write!(f, "{x:?}"),
            Attribute::Key(k) => write!(f, "{k}"),
            Attribute::Shape(s) => write!(f, "{}", ShapeText(s)),
            Attribute::Chain(chain) => write!(f, "{}", ChainText(chain)),
        }
    }
}

/// A chain as the text form writes it: `{mul(x0, x1); add_const(t0) value=0.5; relu(t1)}`.
struct ChainText<'a>(&'a Chain);

impl fmt::Display for ChainText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{")?;
        for (index, step) in self.0.steps.iter().enumerate() {
            if index > 0 {
                write!(f, "; ")?;
            }
            let args: Vec<String> = step
                .args
                .iter()
                .map(|arg| match arg {
                    Arg::Input(i) => format!("x{i}"),
                    Arg::Step(s) => format!("t{s}"),
                })
                .collect();
            write!(f, "{}({})", step.kind.name(), args.join(", "))?;
            for (name, attribute) in attributes(&mut step.kind.clone()) {
                write!(f, " {name}={attribute}")?;
            }
        }
        if !self.0.results.is_empty() {
            let results: Vec<String> = self.0.results.iter().map(|r| format!("t{r}")).collect();
            write!(f, " -> {}", results.join(", "))?;
        }
        write!(f, "}}")
    }
}

/// The attributes of an op, named, in their printed order: every field of the `OpKind` (and
/// `MapFn`) variant, so that the text form determines the op exactly.
pub(crate) fn attributes(kind: &mut OpKind) -> Vec<(&'static str, Attribute<'_>)> {
    use Attribute::{Count, Flag, Key, Pair, Real, Shape};
    match kind {
        OpKind::Conv2d(a) => conv_attributes(a),
        OpKind::Conv2dInputGrad(a, input_hw) => {
            let mut attributes = conv_attributes(a);
            attributes.push(("input_hw", Pair(input_hw)));
            attributes
        }
        OpKind::Conv2dWeightGrad(a, kernel) => {
            let mut attributes = conv_attributes(a);
            attributes.push(("kernel", Pair(kernel)));
            attributes
        }
        OpKind::PooledConv2dWeightGrad { conv, kernel } => {
            let mut attributes = conv_attributes(conv);
            attributes.push(("kernel", Pair(kernel)));
            attributes
        }
        OpKind::MatMul {
            transpose_a,
            transpose_b,
        } => vec![
            ("transpose_a", Flag(transpose_a)),
            ("transpose_b", Flag(transpose_b)),
        ],
        OpKind::MaxPool(a)
        | OpKind::MaxPoolWithIndices(a)
        | OpKind::MaxPoolGrad(a)
        | OpKind::AvgPool(a) => pool_attributes(a),
        OpKind::AvgPoolGrad(a, input_hw) => {
            let mut attributes = pool_attributes(a);
            attributes.push(("input_hw", Pair(input_hw)));
            attributes
        }
        OpKind::ChannelWindowSum { size } => vec![("size", Count(size))],
        OpKind::Map(f) => match f {
            MapFn::LeakyRelu(slope) => vec![("slope", Real(slope))],
            MapFn::Scale(factor) => vec![("factor", Real(factor))],
            MapFn::AddConst(value) => vec![("value", Real(value))],
            MapFn::PowConst(exponent) => vec![("exponent", Real(exponent))],
            MapFn::Neg
            | MapFn::Exp
            | MapFn::Log
            | MapFn::Sqrt
            | MapFn::Abs
            | MapFn::Sign
            | MapFn::Step
            | MapFn::Sigmoid
            | MapFn::Tanh
            | MapFn::Relu => vec![],
        },
        OpKind::Reshape(shape)
        | OpKind::SumTo(shape)
        | OpKind::SumSquaredDeviationsTo(shape)
        | OpKind::Broadcast(shape) => {
            vec![("shape", Shape(shape))]
        }
        OpKind::Concat { axis } => vec![("axis", Count(axis))],
        OpKind::Slice { axis, start, len } => vec![
            ("axis", Count(axis)),
            ("start", Count(start)),
            ("len", Count(len)),
        ],
        OpKind::DropoutMask {
            rate,
            stream,
            shape,
        } => vec![
            ("rate", Real(rate)),
            ("stream", Key(stream)),
            ("shape", Shape(shape)),
        ],
        OpKind::Fill { value, shape } => vec![("value", Real(value)), ("shape", Shape(shape))],
        OpKind::Fused(chain) => vec![("chain", Attribute::Chain(chain))],
        OpKind::Add
        | OpKind::Sub
        | OpKind::Mul
        | OpKind::Div
        | OpKind::Softmax
        | OpKind::SoftmaxGrad
        | OpKind::SoftmaxCrossEntropy
        | OpKind::SoftmaxCrossEntropyGrad
        | OpKind::BinaryCrossEntropy
        | OpKind::BinaryCrossEntropyGrad => vec![],
    }
}

fn conv_attributes(a: &mut ConvAttrs) -> Vec<(&'static str, Attribute<'_>)> {
    vec![
        ("stride", Attribute::Pair(&mut a.stride)),
        ("pad", Attribute::Sides(&mut a.pad)),
        ("dilation", Attribute::Pair(&mut a.dilation)),
        ("groups", Attribute::Count(&mut a.groups)),
    ]
}

fn pool_attributes(a: &mut PoolAttrs) -> Vec<(&'static str, Attribute<'_>)> {
    vec![
        ("kernel", Attribute::Pair(&mut a.kernel)),
        ("stride", Attribute::Pair(&mut a.stride)),
        ("pad", Attribute::Sides(&mut a.pad)),
        ("ceil", Attribute::Flag(&mut a.ceil)),
        ("include_pad", Attribute::Flag(&mut a.include_pad)),
    ]
}

#[cfg(test)]
pub(crate) mod examples {
    //! Hand-built graphs for the tests of the text form and the verifier.

    use crate::ir::ops::fused::{Arg, Chain, Step};
    use crate::ir::ops::{ConvAttrs, MapFn, OpKind, PoolAttrs};
    use crate::ir::{Graph, InputKind, OutputRole};

    /// The graph of the module comment's example.
    pub(crate) fn tiny() -> Graph {
        let mut g = Graph::new("tiny.training");
        let x = g.input(InputKind::Data, "x", vec![2, 1, 4, 4]);
        let labels = g.input(InputKind::Target, "labels", vec![2]);
        let w = g.input(InputKind::Param, "conv1.weight", vec![3, 1, 3, 3]);
        let lr = g.input(InputKind::Scalar, "lr", vec![]);
        let conv = OpKind::Conv2d(ConvAttrs {
            stride: [1, 1],
            pad: [0; 4],
            dilation: [1, 1],
            groups: 1,
        });
        let y = g.op(conv, &[x, w], Some("conv1"));
        let y = g.op(OpKind::Map(MapFn::LeakyRelu(0.01)), &[y], Some("conv1"));
        let logits = g.op(OpKind::Reshape(vec![2, 12]), &[y], Some("flatten"));
        let loss = g.op(OpKind::SoftmaxCrossEntropy, &[logits, labels], Some("loss"));
        let new_w = g.op(OpKind::Mul, &[w, lr], None);
        g.output(OutputRole::Loss, "loss", loss);
        g.output(OutputRole::Prediction, "prediction", logits);
        g.output(OutputRole::Update, "conv1.weight", new_w);
        g
    }

    /// How many variants `variant_number` numbers.
    pub(crate) const VARIANTS: usize = 30 + 14;

    /// A number in `0..VARIANTS` for each variant of `OpKind`, and of `MapFn` within `Map`. The
    /// matches are exhaustive: a new variant does not compile until it is numbered here, and
    /// then the tests fail until `every_op` uses it, which makes the round-trip and verifier
    /// tests cover it.
    pub(crate) fn variant_number(kind: &OpKind) -> usize {
        match kind {
            OpKind::Conv2d(_) => 0,
            OpKind::Conv2dInputGrad(..) => 1,
            OpKind::Conv2dWeightGrad(..) => 2,
            OpKind::MatMul { .. } => 3,
            OpKind::MaxPool(_) => 4,
            OpKind::MaxPoolGrad(_) => 5,
            OpKind::AvgPool(_) => 6,
            OpKind::AvgPoolGrad(..) => 7,
            OpKind::ChannelWindowSum { .. } => 8,
            OpKind::Add => 9,
            OpKind::Sub => 10,
            OpKind::Mul => 11,
            OpKind::Div => 12,
            OpKind::Reshape(_) => 13,
            OpKind::SumTo(_) => 14,
            OpKind::Broadcast(_) => 15,
            OpKind::Concat { .. } => 16,
            OpKind::Slice { .. } => 17,
            OpKind::Softmax => 18,
            OpKind::SoftmaxGrad => 19,
            OpKind::SoftmaxCrossEntropy => 20,
            OpKind::SoftmaxCrossEntropyGrad => 21,
            OpKind::BinaryCrossEntropy => 22,
            OpKind::BinaryCrossEntropyGrad => 23,
            OpKind::DropoutMask { .. } => 24,
            OpKind::Fill { .. } => 25,
            OpKind::Fused(_) => 26,
            OpKind::SumSquaredDeviationsTo(_) => 27,
            OpKind::PooledConv2dWeightGrad { .. } => 28,
            OpKind::MaxPoolWithIndices(_) => 29,
            OpKind::Map(f) => {
                30 + match f {
                    MapFn::Neg => 0,
                    MapFn::Exp => 1,
                    MapFn::Log => 2,
                    MapFn::Sqrt => 3,
                    MapFn::Abs => 4,
                    MapFn::Sign => 5,
                    MapFn::Step => 6,
                    MapFn::Sigmoid => 7,
                    MapFn::Tanh => 8,
                    MapFn::Relu => 9,
                    MapFn::LeakyRelu(_) => 10,
                    MapFn::Scale(_) => 11,
                    MapFn::AddConst(_) => 12,
                    MapFn::PowConst(_) => 13,
                }
            }
        }
    }

    /// A graph with an op of every kind and every map function, attributes chosen so that
    /// swapping two of them changes the graph (`stride=1x2`, not `1x1`), and reals that are hard
    /// to print exactly.
    pub(crate) fn every_op() -> Graph {
        let mut g = Graph::new("every_op.training");
        let x = g.input(InputKind::Data, "x", vec![2, 3, 8, 8]);
        let labels = g.input(InputKind::Target, "labels", vec![2]);
        let target = g.input(InputKind::Target, "target", vec![2, 5]);
        let w = g.input(InputKind::Param, "conv.weight", vec![4, 3, 3, 3]);
        let dense = g.input(InputKind::Param, "dense.weight", vec![5, 16]);
        let mean = g.input(InputKind::State, "bn.running_mean", vec![4]);
        let lr = g.input(InputKind::Scalar, "lr", vec![]);
        let step = g.input(InputKind::Scalar, "step", vec![]);

        let conv = ConvAttrs {
            stride: [1, 2],
            pad: [1, 1, 0, 2],
            dilation: [2, 1],
            groups: 1,
        };
        let layer = Some("block.0.conv");
        let y = g.op(OpKind::Conv2d(conv), &[x, w], layer);
        g.op(OpKind::Conv2dInputGrad(conv, [8, 8]), &[y, w], layer);
        let dw = g.op(OpKind::Conv2dWeightGrad(conv, [3, 3]), &[x, y], layer);

        let max = PoolAttrs {
            kernel: [2, 2],
            stride: [2, 1],
            pad: [0, 1, 0, 0],
            ceil: true,
            include_pad: false,
        };
        let pooled = g.op(OpKind::MaxPool(max), &[y], Some("pool"));
        g.op(OpKind::MaxPoolGrad(max), &[y, pooled], Some("pool"));
        let unpadded = ConvAttrs {
            pad: [0; 4],
            ..conv
        };
        let z = g.op(OpKind::Conv2d(unpadded), &[x, w], layer);
        let z_pooled = g.op(OpKind::MaxPoolWithIndices(max), &[z], Some("pool"));
        let halves = [0, 1].map(|start| {
            let slice = OpKind::Slice {
                axis: 0,
                start,
                len: 1,
            };
            let half = g.op(slice, &[z_pooled], Some("pool"));
            let shape = g.shape(half)[1..].to_vec();
            g.op(OpKind::Reshape(shape), &[half], Some("pool"))
        });
        let pooled_grad = OpKind::PooledConv2dWeightGrad {
            conv: unpadded,
            kernel: [3, 3],
        };
        g.op(pooled_grad, &[x, halves[1], halves[0]], layer);
        let avg = PoolAttrs {
            kernel: [3, 2],
            stride: [3, 2],
            pad: [0; 4],
            ceil: false,
            include_pad: true,
        };
        let averaged = g.op(OpKind::AvgPool(avg), &[y], None);
        g.op(OpKind::AvgPoolGrad(avg, [6, 4]), &[averaged], None);
        let window = g.op(OpKind::ChannelWindowSum { size: 3 }, &[y], Some("lrn"));

        let per_channel = g.op(OpKind::Reshape(vec![1, 4, 1, 1]), &[mean], None);
        for kind in [OpKind::Add, OpKind::Sub, OpKind::Mul, OpKind::Div] {
            g.op(kind, &[y, per_channel], Some("bn"));
        }
        let sums = g.op(OpKind::SumTo(vec![1, 4, 1, 1]), &[y], Some("bn"));
        let new_mean = g.op(OpKind::Reshape(vec![4]), &[sums], Some("bn"));
        g.op(OpKind::Broadcast(vec![2, 4, 6, 4]), &[per_channel], None);
        let joined = g.op(OpKind::Concat { axis: 1 }, &[y, window], None);
        let slice = OpKind::Slice {
            axis: 1,
            start: 2,
            len: 3,
        };
        g.op(slice, &[joined], None);

        let flat = g.op(OpKind::Reshape(vec![2, 16]), &[averaged], None);
        let matmul = OpKind::MatMul {
            transpose_a: false,
            transpose_b: true,
        };
        let logits = g.op(matmul, &[flat, dense], Some("dense"));
        let probabilities = g.op(OpKind::Softmax, &[logits], None);
        g.op(OpKind::SoftmaxGrad, &[probabilities, logits], None);
        let loss = g.op(OpKind::SoftmaxCrossEntropy, &[logits, labels], Some("loss"));
        let sce_grad = OpKind::SoftmaxCrossEntropyGrad;
        g.op(sce_grad, &[logits, labels, loss], Some("loss"));
        let p = g.op(OpKind::Map(MapFn::Sigmoid), &[logits], None);
        let bce = g.op(OpKind::BinaryCrossEntropy, &[p, target], None);
        g.op(OpKind::BinaryCrossEntropyGrad, &[p, target, bce], None);

        let dropout = OpKind::DropoutMask {
            rate: 0.1,
            stream: u64::MAX,
            shape: vec![2, 5],
        };
        g.op(dropout, &[step], Some("dropout"));
        let fill = OpKind::Fill {
            value: 1e-300,
            shape: vec![2, 5],
        };
        g.op(fill, &[], None);
        let maps = [
            MapFn::Neg,
            MapFn::Exp,
            MapFn::Log,
            MapFn::Sqrt,
            MapFn::Abs,
            MapFn::Sign,
            MapFn::Step,
            MapFn::Tanh,
            MapFn::Relu,
            MapFn::LeakyRelu(0.01),
            MapFn::Scale(f64::NEG_INFINITY),
            MapFn::AddConst(-0.0),
            MapFn::PowConst(-0.5),
        ];
        for f in maps {
            g.op(OpKind::Map(f), &[logits], None);
        }
        let chain = Chain {
            steps: vec![
                Step {
                    kind: OpKind::Mul,
                    args: vec![Arg::Input(0), Arg::Input(1)],
                },
                Step {
                    kind: OpKind::Map(MapFn::AddConst(0.5)),
                    args: vec![Arg::Step(0)],
                },
                Step {
                    kind: OpKind::Map(MapFn::Relu),
                    args: vec![Arg::Step(1)],
                },
            ],
            results: Vec::new(),
        };
        g.op(OpKind::Fused(chain), &[y, per_channel], Some("bn"));
        // A chain that begins with a contraction, and one that ends in a sum.
        let step = |kind, args: &[Arg]| Step {
            kind,
            args: args.to_vec(),
        };
        let (x0, x1, x2, t0, t1) = (
            Arg::Input(0),
            Arg::Input(1),
            Arg::Input(2),
            Arg::Step(0),
            Arg::Step(1),
        );
        let epilogue = Chain {
            steps: vec![
                step(OpKind::Conv2d(conv), &[x0, x1]),
                step(OpKind::Add, &[t0, x2]),
                step(OpKind::Map(MapFn::Relu), &[t1]),
            ],
            results: Vec::new(),
        };
        g.op(OpKind::Fused(epilogue), &[x, w, per_channel], layer);
        let sum = Chain {
            steps: vec![
                step(OpKind::Mul, &[x0, x0]),
                step(OpKind::SumTo(vec![1, 4, 1, 1]), &[t0]),
            ],
            results: Vec::new(),
        };
        g.op(OpKind::Fused(sum), &[y], Some("bn"));
        // A chain with several results: a product, the sum of its first factor and its own.
        let both = Chain {
            steps: vec![
                step(OpKind::Mul, &[x0, x1]),
                step(OpKind::SumTo(vec![1, 4, 1, 1]), &[x0]),
                step(OpKind::SumTo(vec![1, 4, 1, 1]), &[t0]),
            ],
            results: vec![0, 1, 2],
        };
        g.op(OpKind::Fused(both), &[y, per_channel], Some("bn"));

        let new_w = g.op(OpKind::Mul, &[dw, lr], None);
        g.op(
            OpKind::SumSquaredDeviationsTo(vec![1, 4, 1, 1]),
            &[y],
            Some("bn"),
        );
        // Batch norm's statistics gathered as a convolution writes its result.
        let statistics = Chain {
            steps: vec![
                step(OpKind::Conv2d(conv), &[x0, x1]),
                step(OpKind::SumTo(vec![1, 4, 1, 1]), &[t0]),
                step(OpKind::SumSquaredDeviationsTo(vec![1, 4, 1, 1]), &[t0]),
            ],
            results: vec![0, 1, 2],
        };
        g.op(OpKind::Fused(statistics), &[x, w], layer);
        g.output(OutputRole::Loss, "loss", loss);
        g.output(OutputRole::Prediction, "prediction", probabilities);
        g.output(OutputRole::Gradient, "conv.weight", dw);
        g.output(OutputRole::Update, "conv.weight", new_w);
        g.output(OutputRole::Update, "bn.running_mean", new_mean);
        g
    }
}

#[cfg(test)]
mod tests {
    use super::examples::{every_op, tiny, variant_number, VARIANTS};
    use super::print;
    use crate::ir::ops::OpKind;
    use crate::ir::{Graph, OutputRole};
    use std::collections::BTreeSet;

    #[test]
    fn prints_the_documented_example() {
        let expected = "\
graph tiny.training {
  %0 = data x : [2,1,4,4]
  %1 = target labels : [2]
  %2 = param conv1.weight : [3,1,3,3]
  %3 = scalar lr : []
  %4 = conv2d(%0, %2) stride=1x1 pad=0,0,0,0 dilation=1x1 groups=1 : [2,3,2,2] @conv1
  %5 = leaky_relu(%4) slope=0.01 : [2,3,2,2] @conv1
  %6 = reshape(%5) shape=[2,12] : [2,12] @flatten
  %7 = softmax_cross_entropy(%6, %1) : [] @loss
  %8 = mul(%2, %3) : [3,1,3,3]
  output loss loss = %7
  output prediction prediction = %6
  output update conv1.weight = %8
}
";
        assert_eq!(print(&tiny()), expected);
    }

    #[test]
    fn the_example_uses_every_variant() {
        let used: BTreeSet<usize> = every_op()
            .ops
            .iter()
            .map(|op| variant_number(&op.kind))
            .collect();
        let all: BTreeSet<usize> = (0..VARIANTS).collect();
        assert_eq!(used, all, "every_op misses some variants");
    }

    /// Every op kind and map function with its attributes, so a change to the text form of any
    /// shows here.
    #[test]
    fn prints_every_op() {
        let expected = "\
graph every_op.training {
  %0 = data x : [2,3,8,8]
  %1 = target labels : [2]
  %2 = target target : [2,5]
  %3 = param conv.weight : [4,3,3,3]
  %4 = param dense.weight : [5,16]
  %5 = state bn.running_mean : [4]
  %6 = scalar lr : []
  %7 = scalar step : []
  %8 = conv2d(%0, %3) stride=1x2 pad=1,1,0,2 dilation=2x1 groups=1 : [2,4,6,4] @block.0.conv
  %9 = conv2d_input_grad(%8, %3) stride=1x2 pad=1,1,0,2 dilation=2x1 groups=1 input_hw=8x8 : [2,3,8,8] @block.0.conv
  %10 = conv2d_weight_grad(%0, %8) stride=1x2 pad=1,1,0,2 dilation=2x1 groups=1 kernel=3x3 : [4,3,3,3] @block.0.conv
  %11 = maxpool(%8) kernel=2x2 stride=2x1 pad=0,1,0,0 ceil=true include_pad=false : [2,4,3,3] @pool
  %12 = maxpool_grad(%8, %11) kernel=2x2 stride=2x1 pad=0,1,0,0 ceil=true include_pad=false : [2,4,6,4] @pool
  %13 = conv2d(%0, %3) stride=1x2 pad=0,0,0,0 dilation=2x1 groups=1 : [2,4,4,3] @block.0.conv
  %14 = maxpool_with_indices(%13) kernel=2x2 stride=2x1 pad=0,1,0,0 ceil=true include_pad=false : [2,2,4,2,2] @pool
  %15 = slice(%14) axis=0 start=0 len=1 : [1,2,4,2,2] @pool
  %16 = reshape(%15) shape=[2,4,2,2] : [2,4,2,2] @pool
  %17 = slice(%14) axis=0 start=1 len=1 : [1,2,4,2,2] @pool
  %18 = reshape(%17) shape=[2,4,2,2] : [2,4,2,2] @pool
  %19 = pooled_conv2d_weight_grad(%0, %18, %16) stride=1x2 pad=0,0,0,0 dilation=2x1 groups=1 kernel=3x3 : [4,3,3,3] @block.0.conv
  %20 = avgpool(%8) kernel=3x2 stride=3x2 pad=0,0,0,0 ceil=false include_pad=true : [2,4,2,2]
  %21 = avgpool_grad(%20) kernel=3x2 stride=3x2 pad=0,0,0,0 ceil=false include_pad=true input_hw=6x4 : [2,4,6,4]
  %22 = channel_window_sum(%8) size=3 : [2,4,6,4] @lrn
  %23 = reshape(%5) shape=[1,4,1,1] : [1,4,1,1]
  %24 = add(%8, %23) : [2,4,6,4] @bn
  %25 = sub(%8, %23) : [2,4,6,4] @bn
  %26 = mul(%8, %23) : [2,4,6,4] @bn
  %27 = div(%8, %23) : [2,4,6,4] @bn
  %28 = sum_to(%8) shape=[1,4,1,1] : [1,4,1,1] @bn
  %29 = reshape(%28) shape=[4] : [4] @bn
  %30 = broadcast(%23) shape=[2,4,6,4] : [2,4,6,4]
  %31 = concat(%8, %22) axis=1 : [2,8,6,4]
  %32 = slice(%31) axis=1 start=2 len=3 : [2,3,6,4]
  %33 = reshape(%20) shape=[2,16] : [2,16]
  %34 = matmul(%33, %4) transpose_a=false transpose_b=true : [2,5] @dense
  %35 = softmax(%34) : [2,5]
  %36 = softmax_grad(%35, %34) : [2,5]
  %37 = softmax_cross_entropy(%34, %1) : [] @loss
  %38 = softmax_cross_entropy_grad(%34, %1, %37) : [2,5] @loss
  %39 = sigmoid(%34) : [2,5]
  %40 = binary_cross_entropy(%39, %2) : []
  %41 = binary_cross_entropy_grad(%39, %2, %40) : [2,5]
  %42 = dropout_mask(%7) rate=0.1 stream=18446744073709551615 shape=[2,5] : [2,5] @dropout
  %43 = fill() value=1e-300 shape=[2,5] : [2,5]
  %44 = neg(%34) : [2,5]
  %45 = exp(%34) : [2,5]
  %46 = log(%34) : [2,5]
  %47 = sqrt(%34) : [2,5]
  %48 = abs(%34) : [2,5]
  %49 = sign(%34) : [2,5]
  %50 = step(%34) : [2,5]
  %51 = tanh(%34) : [2,5]
  %52 = relu(%34) : [2,5]
  %53 = leaky_relu(%34) slope=0.01 : [2,5]
  %54 = scale(%34) factor=-inf : [2,5]
  %55 = add_const(%34) value=-0.0 : [2,5]
  %56 = pow_const(%34) exponent=-0.5 : [2,5]
  %57 = fused(%8, %23) chain={mul(x0, x1); add_const(t0) value=0.5; relu(t1)} : [2,4,6,4] @bn
  %58 = fused(%0, %3, %23) chain={conv2d(x0, x1) stride=1x2 pad=1,1,0,2 dilation=2x1 groups=1; add(t0, x2); relu(t1)} : [2,4,6,4] @block.0.conv
  %59 = fused(%8) chain={mul(x0, x0); sum_to(t0) shape=[1,4,1,1]} : [1,4,1,1] @bn
  %60 = fused(%8, %23) chain={mul(x0, x1); sum_to(x0) shape=[1,4,1,1]; sum_to(t0) shape=[1,4,1,1] -> t0, t1, t2} : [200] @bn
  %61 = mul(%10, %6) : [4,3,3,3]
  %62 = sum_squared_deviations_to(%8) shape=[1,4,1,1] : [1,4,1,1] @bn
  %63 = fused(%0, %3) chain={conv2d(x0, x1) stride=1x2 pad=1,1,0,2 dilation=2x1 groups=1; sum_to(t0) shape=[1,4,1,1]; sum_squared_deviations_to(t0) shape=[1,4,1,1] -> t0, t1, t2} : [200] @block.0.conv
  output loss loss = %37
  output prediction prediction = %35
  output gradient conv.weight = %10
  output update conv.weight = %61
  output update bn.running_mean = %29
}
";
        assert_eq!(print(&every_op()), expected);
    }

    #[test]
    fn prints_reals_in_their_shortest_exact_form() {
        let mut g = Graph::new("reals");
        for value in [0.1, 1e-8, 1e300, 5e-324, -0.0, f64::INFINITY, f64::NAN, 3.0] {
            let v = g.op(
                OpKind::Fill {
                    value,
                    shape: vec![],
                },
                &[],
                None,
            );
            g.output(OutputRole::Prediction, format!("v{}", v.0), v);
        }
        let text = print(&g);
        let values: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split(" value=").nth(1)?.split(' ').next())
            .collect();
        assert_eq!(
            values,
            ["0.1", "1e-8", "1e300", "5e-324", "-0.0", "inf", "NaN", "3.0"]
        );
    }
}
