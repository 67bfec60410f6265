//! The primitive ops. Each carries a shape rule, reference semantics (the interpreter's), and a
//! backward rule (its vector-Jacobian product, built from other primitives); each family lives
//! in its own file and is dispatched here by exhaustive `match`, so a new primitive that lacks a
//! rule does not compile.
//!
//! Ops whose names end in `_grad` exist to express backward passes, and `fused` and
//! `maxpool_with_indices` exist only after differentiation (the passes make them); they are not themselves differentiated (netc
//! needs no second derivatives), and asking for their VJP is a compiler bug.

pub mod conv;
pub mod deviations;
pub mod elementwise;
pub mod fused;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod pool;
pub mod pooled_weight_grad;
pub mod softmax;
pub mod source;
pub mod window;

use super::{Graph, Op, Shape, ValueId};
use crate::codegen::gemm::Epilogue;
use crate::codegen::prologue::Source;
use crate::codegen::{KernelSink, Operand};
use crate::interp::{EvalContext, Tensor};

/// Attributes of a 2-D convolution: padding is `[top, bottom, left, right]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvAttrs {
    pub stride: [usize; 2],
    pub pad: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
}

/// Attributes of a pooling window: padding is `[top, bottom, left, right]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolAttrs {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 4],
    /// PyTorch's `ceil_mode`.
    pub ceil: bool,
    /// PyTorch's `count_include_pad` (average pooling only).
    pub include_pad: bool,
}

/// Elementwise functions of one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MapFn {
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    /// -1, 0 or 1.
    Sign,
    /// 1 where x > 0, else 0.
    Step,
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu(f64),
    /// `c * x`.
    Scale(f64),
    /// `x + c`.
    AddConst(f64),
    /// `x ^ p`.
    PowConst(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// `(x [N,C,H,W], w [O,C/g,kh,kw]) -> [N,O,OH,OW]`, cross-correlation as in every framework.
    Conv2d(ConvAttrs),
    /// `(dy [N,O,OH,OW], w) -> dx [N,C,H,W]`; the attribute is the input's `[H, W]`.
    Conv2dInputGrad(ConvAttrs, [usize; 2]),
    /// `(x, dy) -> dw [O,C/g,kh,kw]`; the attribute is the kernel's `[kh, kw]`.
    Conv2dWeightGrad(ConvAttrs, [usize; 2]),
    /// `(a, b) -> a·b` on matrices, either transposed first.
    MatMul {
        transpose_a: bool,
        transpose_b: bool,
    },
    /// `(x, indices, dy) -> dw`: the weight gradient of an unpadded convolution whose output is
    /// max-pooled, from the pool's gradient `dy` and the `indices` of its maxima (as
    /// `maxpool_with_indices` gives them): each element of dy goes to the output at its index
    /// in its plane (none where the index is negative), then `conv2d_weight_grad`.
    PooledConv2dWeightGrad {
        conv: ConvAttrs,
        kernel: [usize; 2],
    },
    /// `x [N,C,H,W] -> [N,C,OH,OW]`; padding never wins.
    MaxPool(PoolAttrs),
    /// `x -> [2,N,C,OH,OW]`: `maxpool(x)`, then the index in its plane (`row · W + column`, as
    /// a float) of each window's first maximum, -1 for a window with no cell (PyTorch's
    /// `return_indices`). Only `pool_weight_grads` makes it.
    MaxPoolWithIndices(PoolAttrs),
    /// `(x, dy) -> dx`: each window's gradient goes to its first maximum (PyTorch's choice).
    MaxPoolGrad(PoolAttrs),
    AvgPool(PoolAttrs),
    /// `dy -> dx`; the attribute is the input's `[H, W]`.
    AvgPoolGrad(PoolAttrs, [usize; 2]),
    /// `x [N,C,H,W] -> y`, `y[c] = sum of x over channels c - size/2 ..= c + size/2` (zero
    /// beyond the edges); local response normalization's window. Self-adjoint.
    ChannelWindowSum {
        size: usize,
    },
    /// Elementwise with NumPy broadcasting; the output has the broadcast shape.
    Add,
    Sub,
    Mul,
    Div,
    Map(MapFn),
    /// Same elements, new shape.
    Reshape(Shape),
    /// Sums over the axes where the target extent is 1 (or missing at the front): the adjoint
    /// of broadcasting. `SumTo([])` sums everything.
    SumTo(Shape),
    /// Sums, as `SumTo` does, the squares of the input's deviations from its mean over the
    /// summed axes: batch norm's variance times the count.
    SumSquaredDeviationsTo(Shape),
    /// Repeats along axes of extent 1 (or missing at the front).
    Broadcast(Shape),
    /// Joins along an axis.
    Concat {
        axis: usize,
    },
    /// `len` elements from `start` along an axis.
    Slice {
        axis: usize,
        start: usize,
        len: usize,
    },
    /// Softmax over axis 1.
    Softmax,
    /// `(y, dy) -> dx = y * (dy - sum over axis 1 of dy * y)`.
    SoftmaxGrad,
    /// `(logits [N,K], labels [N]) -> []`: mean over the batch of `-log softmax(logits)[label]`.
    SoftmaxCrossEntropy,
    /// `(logits, labels, dloss []) -> dlogits = dloss * (softmax(logits) - onehot) / N`.
    SoftmaxCrossEntropyGrad,
    /// `(p, t) -> []`: mean of `-(t log p + (1 - t) log(1 - p))`, logs clamped at -100 as in
    /// PyTorch's `BCELoss`.
    BinaryCrossEntropy,
    /// `(p, t, dloss []) -> dp`.
    BinaryCrossEntropyGrad,
    /// `(step []) -> mask`: 0 with probability `rate`, else `1 / (1 - rate)`, drawn from a
    /// counter-based generator keyed by the seed, `stream` and the step, so every step gets
    /// fresh masks and any element can be computed alone.
    DropoutMask {
        rate: f64,
        stream: u64,
        shape: Shape,
    },
    /// `() -> tensor` of one value.
    Fill {
        value: f64,
        shape: Shape,
    },
    /// `(inputs...) -> y`: elementwise ops in one pass, built by fusion (`fused::Chain`).
    Fused(fused::Chain),
}

impl OpKind {
    /// The name in the IR's text form.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Conv2d(_) => "conv2d",
            OpKind::Conv2dInputGrad(..) => "conv2d_input_grad",
            OpKind::Conv2dWeightGrad(..) => "conv2d_weight_grad",
            OpKind::PooledConv2dWeightGrad { .. } => "pooled_conv2d_weight_grad",
            OpKind::MatMul { .. } => "matmul",
            OpKind::MaxPool(_) => "maxpool",
            OpKind::MaxPoolWithIndices(_) => "maxpool_with_indices",
            OpKind::MaxPoolGrad(_) => "maxpool_grad",
            OpKind::AvgPool(_) => "avgpool",
            OpKind::AvgPoolGrad(..) => "avgpool_grad",
            OpKind::ChannelWindowSum { .. } => "channel_window_sum",
            OpKind::Add => "add",
            OpKind::Sub => "sub",
            OpKind::Mul => "mul",
            OpKind::Div => "div",
            OpKind::Map(f) => f.name(),
            OpKind::Reshape(_) => "reshape",
            OpKind::SumTo(_) => "sum_to",
            OpKind::SumSquaredDeviationsTo(_) => "sum_squared_deviations_to",
            OpKind::Broadcast(_) => "broadcast",
            OpKind::Concat { .. } => "concat",
            OpKind::Slice { .. } => "slice",
            OpKind::Softmax => "softmax",
            OpKind::SoftmaxGrad => "softmax_grad",
            OpKind::SoftmaxCrossEntropy => "softmax_cross_entropy",
            OpKind::SoftmaxCrossEntropyGrad => "softmax_cross_entropy_grad",
            OpKind::BinaryCrossEntropy => "binary_cross_entropy",
            OpKind::BinaryCrossEntropyGrad => "binary_cross_entropy_grad",
            OpKind::DropoutMask { .. } => "dropout_mask",
            OpKind::Fill { .. } => "fill",
            OpKind::Fused(_) => "fused",
        }
    }

    /// The output shape for inputs of these shapes, or why they do not fit.
    pub fn shape(&self, inputs: &[&Shape]) -> Result<Shape, String> {
        match self {
            OpKind::Conv2d(a) => conv::shape(a, inputs),
            OpKind::Conv2dInputGrad(a, hw) => conv::input_grad_shape(a, *hw, inputs),
            OpKind::Conv2dWeightGrad(a, k) => conv::weight_grad_shape(a, *k, inputs),
            OpKind::PooledConv2dWeightGrad { conv, kernel } => {
                pooled_weight_grad::shape(conv, *kernel, inputs)
            }
            OpKind::MatMul {
                transpose_a,
                transpose_b,
            } => matmul::shape(*transpose_a, *transpose_b, inputs),
            OpKind::MaxPool(a) | OpKind::AvgPool(a) => pool::shape(a, inputs),
            OpKind::MaxPoolWithIndices(a) => pool::max_with_indices_shape(a, inputs),
            OpKind::MaxPoolGrad(a) => pool::max_grad_shape(a, inputs),
            OpKind::AvgPoolGrad(a, hw) => pool::avg_grad_shape(a, *hw, inputs),
            OpKind::ChannelWindowSum { size } => window::shape(*size, inputs),
            OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div => {
                elementwise::binary_shape(inputs)
            }
            OpKind::Map(_) => elementwise::map_shape(inputs),
            OpKind::Reshape(s) => layout::reshape_shape(s, inputs),
            OpKind::SumTo(s) => layout::sum_to_shape(s, inputs),
            OpKind::SumSquaredDeviationsTo(s) => deviations::shape(s, inputs),
            OpKind::Broadcast(s) => layout::broadcast_shape(s, inputs),
            OpKind::Concat { axis } => layout::concat_shape(*axis, inputs),
            OpKind::Slice { axis, start, len } => layout::slice_shape(*axis, *start, *len, inputs),
            OpKind::Softmax => softmax::shape(inputs),
            OpKind::SoftmaxGrad => softmax::grad_shape(inputs),
            OpKind::SoftmaxCrossEntropy => loss::softmax_cross_entropy_shape(inputs),
            OpKind::SoftmaxCrossEntropyGrad => loss::softmax_cross_entropy_grad_shape(inputs),
            OpKind::BinaryCrossEntropy => loss::binary_cross_entropy_shape(inputs),
            OpKind::BinaryCrossEntropyGrad => loss::binary_cross_entropy_grad_shape(inputs),
            OpKind::DropoutMask { shape, .. } => source::dropout_mask_shape(shape, inputs),
            OpKind::Fill { shape, .. } => source::fill_shape(shape, inputs),
            OpKind::Fused(chain) => fused::shape(chain, inputs),
        }
    }

    /// The reference semantics: the op on these inputs, computed with plain loops in f64.
    pub fn eval(&self, inputs: &[&Tensor], context: &EvalContext) -> Tensor {
        match self {
            OpKind::Conv2d(a) => conv::eval(a, inputs),
            OpKind::Conv2dInputGrad(a, hw) => conv::eval_input_grad(a, *hw, inputs),
            OpKind::Conv2dWeightGrad(a, k) => conv::eval_weight_grad(a, *k, inputs),
            OpKind::PooledConv2dWeightGrad { conv, kernel } => {
                pooled_weight_grad::eval(conv, *kernel, inputs)
            }
            OpKind::MatMul {
                transpose_a,
                transpose_b,
            } => matmul::eval(*transpose_a, *transpose_b, inputs),
            OpKind::MaxPool(a) => pool::eval_max(a, inputs),
            OpKind::MaxPoolWithIndices(a) => pool::eval_max_with_indices(a, inputs),
            OpKind::MaxPoolGrad(a) => pool::eval_max_grad(a, inputs),
            OpKind::AvgPool(a) => pool::eval_avg(a, inputs),
            OpKind::AvgPoolGrad(a, hw) => pool::eval_avg_grad(a, *hw, inputs),
            OpKind::ChannelWindowSum { size } => window::eval(*size, inputs),
            OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div => {
                elementwise::eval_binary(self, inputs)
            }
            OpKind::Map(f) => elementwise::eval_map(*f, inputs),
            OpKind::Reshape(s) => layout::eval_reshape(s, inputs),
            OpKind::SumTo(s) => layout::eval_sum_to(s, inputs),
            OpKind::SumSquaredDeviationsTo(s) => deviations::eval(s, inputs),
            OpKind::Broadcast(s) => layout::eval_broadcast(s, inputs),
            OpKind::Concat { axis } => layout::eval_concat(*axis, inputs),
            OpKind::Slice { axis, start, len } => layout::eval_slice(*axis, *start, *len, inputs),
            OpKind::Softmax => softmax::eval(inputs),
            OpKind::SoftmaxGrad => softmax::eval_grad(inputs),
            OpKind::SoftmaxCrossEntropy => loss::eval_softmax_cross_entropy(inputs),
            OpKind::SoftmaxCrossEntropyGrad => loss::eval_softmax_cross_entropy_grad(inputs),
            OpKind::BinaryCrossEntropy => loss::eval_binary_cross_entropy(inputs),
            OpKind::BinaryCrossEntropyGrad => loss::eval_binary_cross_entropy_grad(inputs),
            OpKind::DropoutMask {
                rate,
                stream,
                shape,
            } => source::eval_dropout_mask(*rate, *stream, shape, inputs, context),
            OpKind::Fill { value, shape } => source::eval_fill(*value, shape),
            OpKind::Fused(chain) => fused::eval(chain, inputs, context),
        }
    }

    /// The backward rule: given the gradient `grad` of the op's output, appends the ops that
    /// compute the gradients of its inputs to `graph` and returns them, one per input (`None`
    /// where no gradient flows: labels, masks, piecewise-constant functions).
    pub fn vjp(&self, op: &Op, graph: &mut Graph, grad: ValueId) -> Vec<Option<ValueId>> {
        match self {
            OpKind::Conv2d(a) => conv::vjp(a, op, graph, grad),
            OpKind::MatMul {
                transpose_a,
                transpose_b,
            } => matmul::vjp(*transpose_a, *transpose_b, op, graph, grad),
            OpKind::MaxPool(a) => pool::vjp_max(a, op, graph, grad),
            OpKind::AvgPool(a) => pool::vjp_avg(a, op, graph, grad),
            OpKind::ChannelWindowSum { size } => window::vjp(*size, op, graph, grad),
            OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div => {
                elementwise::vjp_binary(self, op, graph, grad)
            }
            OpKind::Map(f) => elementwise::vjp_map(*f, op, graph, grad),
            OpKind::Reshape(_) => layout::vjp_reshape(op, graph, grad),
            OpKind::SumTo(_) => layout::vjp_sum_to(op, graph, grad),
            OpKind::SumSquaredDeviationsTo(_) => deviations::vjp(op, graph, grad),
            OpKind::Broadcast(_) => layout::vjp_broadcast(op, graph, grad),
            OpKind::Concat { axis } => layout::vjp_concat(*axis, op, graph, grad),
            OpKind::Slice { .. } => layout::vjp_slice(op, graph, grad),
            OpKind::Softmax => softmax::vjp(op, graph, grad),
            OpKind::SoftmaxCrossEntropy => loss::vjp_softmax_cross_entropy(op, graph, grad),
            OpKind::BinaryCrossEntropy => loss::vjp_binary_cross_entropy(op, graph, grad),
            OpKind::DropoutMask { .. } | OpKind::Fill { .. } => vec![None; op.inputs.len()],
            OpKind::Conv2dInputGrad(..)
            | OpKind::Conv2dWeightGrad(..)
            | OpKind::PooledConv2dWeightGrad { .. }
            | OpKind::MaxPoolWithIndices(_)
            | OpKind::MaxPoolGrad(_)
            | OpKind::AvgPoolGrad(..)
            | OpKind::SoftmaxGrad
            | OpKind::SoftmaxCrossEntropyGrad
            | OpKind::BinaryCrossEntropyGrad
            | OpKind::Fused(_) => {
                panic!("internal error: `{}` is not differentiated", self.name())
            }
        }
    }
}

impl OpKind {
    /// The code-generation rule: appends to `sink` the kernels that compute the op's `output`
    /// from its `inputs` (shapes as the shape rule gives them).
    pub fn emit(&self, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
        match self {
            OpKind::Conv2d(a) => {
                let x = (&Source::Tensor(inputs[0].slot), &inputs[0].shape[..]);
                conv::emit(a, sink, x, &inputs[1], output, &Epilogue::none())
            }
            OpKind::Conv2dInputGrad(a, _) => {
                let dy = (&Source::Tensor(inputs[0].slot), &inputs[0].shape[..]);
                conv::emit_input_grad(a, sink, dy, &inputs[1], output, &Epilogue::none())
            }
            OpKind::Conv2dWeightGrad(a, _) => {
                let x = (&Source::Tensor(inputs[0].slot), &inputs[0].shape[..]);
                conv::emit_weight_grad(a, sink, x, &inputs[1], output)
            }
            OpKind::PooledConv2dWeightGrad { conv, .. } => {
                pooled_weight_grad::emit(conv, sink, inputs, output)
            }
            OpKind::MatMul {
                transpose_a,
                transpose_b,
            } => matmul::emit(
                *transpose_a,
                *transpose_b,
                sink,
                inputs,
                output,
                &Epilogue::none(),
            ),
            OpKind::MaxPool(a) => pool::emit_max(a, sink, inputs, output),
            OpKind::MaxPoolWithIndices(a) => pool::emit_max_with_indices(a, sink, inputs, output),
            OpKind::MaxPoolGrad(a) => pool::emit_max_grad(a, sink, inputs, output),
            OpKind::AvgPool(a) => pool::emit_avg(a, sink, inputs, output),
            OpKind::AvgPoolGrad(a, _) => pool::emit_avg_grad(a, sink, inputs, output),
            OpKind::ChannelWindowSum { size } => window::emit(*size, sink, inputs, output),
            OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div => {
                elementwise::emit_binary(self, sink, inputs, output)
            }
            OpKind::Map(f) => elementwise::emit_map(*f, sink, inputs, output),
            // A reshape shares its input's buffer: there is nothing to compute.
            OpKind::Reshape(_) => {}
            OpKind::SumTo(_) => layout::emit_sum_to(sink, inputs, output),
            OpKind::SumSquaredDeviationsTo(_) => deviations::emit(sink, inputs, output),
            OpKind::Broadcast(_) => layout::emit_broadcast(sink, inputs, output),
            OpKind::Concat { axis } => layout::emit_concat(*axis, sink, inputs, output),
            OpKind::Slice { axis, start, .. } => {
                layout::emit_slice(*axis, *start, sink, inputs, output)
            }
            OpKind::Softmax => softmax::emit(sink, inputs, output),
            OpKind::SoftmaxGrad => softmax::emit_grad(sink, inputs, output),
            OpKind::SoftmaxCrossEntropy => loss::emit_softmax_cross_entropy(sink, inputs, output),
            OpKind::SoftmaxCrossEntropyGrad => {
                loss::emit_softmax_cross_entropy_grad(sink, inputs, output)
            }
            OpKind::BinaryCrossEntropy => loss::emit_binary_cross_entropy(sink, inputs, output),
            OpKind::BinaryCrossEntropyGrad => {
                loss::emit_binary_cross_entropy_grad(sink, inputs, output)
            }
            OpKind::DropoutMask { rate, stream, .. } => {
                source::emit_dropout_mask(*rate, *stream, sink, inputs, output)
            }
            OpKind::Fill { value, .. } => source::emit_fill(*value, sink, inputs, output),
            OpKind::Fused(chain) => fused::emit(chain, sink, inputs, output),
        }
    }
}

impl MapFn {
    pub fn name(&self) -> &'static str {
        match self {
            MapFn::Neg => "neg",
            MapFn::Exp => "exp",
            MapFn::Log => "log",
            MapFn::Sqrt => "sqrt",
            MapFn::Abs => "abs",
            MapFn::Sign => "sign",
            MapFn::Step => "step",
            MapFn::Sigmoid => "sigmoid",
            MapFn::Tanh => "tanh",
            MapFn::Relu => "relu",
            MapFn::LeakyRelu(_) => "leaky_relu",
            MapFn::Scale(_) => "scale",
            MapFn::AddConst(_) => "add_const",
            MapFn::PowConst(_) => "pow_const",
        }
    }
}

/// The shape error when an op gets the wrong number of inputs.
pub fn arity(inputs: &[&Shape], expected: usize) -> Result<(), String> {
    if inputs.len() == expected {
        Ok(())
    } else {
        Err(format!(
            "expected {expected} inputs, found {}",
            inputs.len()
        ))
    }
}
