//! `fused`: a chain of elementwise ops computed in one pass over memory, each element of the
//! output from the elements of the inputs at its position (NumPy broadcasting), with no
//! intermediate tensor written. The `fuse_elementwise` pass builds it from `add`, `sub`, `mul`,
//! `div` and the one-tensor functions; its meaning is exactly theirs applied in order, which is
//! how the interpreter computes it.
//!
//! A chain may begin with one contraction, a convolution (or its input gradient) or a matrix
//! product. The steps after it (its epilogue) are applied to each tile of its result as the
//! tile is written out, while it is in cache, so its result is never written as it was computed. The tensors they read
//! besides it are per-element or broadcast along whole rows or columns of the product (a
//! bias, a residual), which is what the write-out can read in step with the tile.
//!
//! Before a convolution, or its weight gradient, a chain may compute the contraction's input x
//! itself (its prologue): elementwise steps over tensors of x's shape and per-channel ones
//! (batch norm's apply and ReLU), which the kernels compute as they read x (into a padded
//! copy, a packed panel, staged rows), so x is never written. A weight gradient is a chain's
//! contraction only so, and then the chain's last step. Where the kernels compute each element
//! of x once (`conv::copies_computed_x_once`: a convolution, or the input gradient of a stride-1
//! one, computing dy), the chain may also list x as its last result, which they store as they
//! compute it (`store_prologue`: other ops read x too).
//!
//! A chain may end in one reduction, a `sum_to` (batch norm's `sum(x̂ · dy)`, its variance's
//! sum of squares): the elements are then summed as they are computed, and the summed tensor
//! is never written. Such a chain reads only tensors of the shape it sums, and of the shape it
//! sums to (constant over what each output element sums, as a per-channel mean), so that every
//! step is computed once per element summed.
//!
//! A chain may instead list several results (`results`, step indices): elementwise steps of
//! one shape, then `sum_to` steps that sum tensors of that shape to one shape, all computed in
//! one pass over the summed tensor (batch norm's three gradient sums; a gradient and its sum).
//! Its output is the results flattened, one after the other; readers take each as a `slice`
//! (which shares the output's buffer) and a `reshape`.
//!
//! Fusion runs after differentiation, so a chain has no backward rule.

use super::elementwise::{emit_apply, emit_binary_value};
use super::{conv, layout, matmul, OpKind};
use crate::codegen::emit::Emitter;
use crate::codegen::gemm::{Epilogue, RowSum};
use crate::codegen::prologue::{Prologue, Source};
use crate::codegen::strided::{for_each_element, Strided};
use crate::codegen::{KernelSink, Operand};
use crate::interp::{EvalContext, Tensor};
use crate::ir::Shape;
use cranelift_codegen::ir::{Type, Value};

/// The steps of a fused op, in order; the last one's value is the op's output, unless
/// `results` lists the steps whose values it is (flattened, in that order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chain {
    pub steps: Vec<Step>,
    pub results: Vec<usize>,
}

/// One op of a chain: `kind` is `add`, `sub`, `mul`, `div` or a `Map`; first, a `Conv2d` or
/// `Conv2dInputGrad` or `MatMul`; last, a `SumTo`.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub kind: OpKind,
    pub args: Vec<Arg>,
}

/// What a step reads: one of the fused op's inputs, or an earlier step's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arg {
    Input(usize),
    Step(usize),
}

/// Whether `kind` may be a step of a chain.
pub fn is_elementwise(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div | OpKind::Map(_)
    )
}

/// Whether an op of this kind computes each output element from its inputs' elements at that
/// position alone: an elementwise op, or a chain of them only.
pub fn is_pointwise(kind: &OpKind) -> bool {
    match kind {
        OpKind::Fused(chain) => chain.is_elementwise(),
        kind => is_elementwise(kind),
    }
}

/// Whether `kind` may be a step of a chain (somewhere).
pub fn may_be_step(kind: &OpKind) -> bool {
    is_elementwise(kind) || follows_prologue(kind) || is_sum(kind)
}

/// Whether `kind` is a contraction that a prologue may compute the input of: a convolution
/// or its weight gradient (those whose kernels can: [`check_prologue`]).
pub fn follows_prologue(kind: &OpKind) -> bool {
    is_contraction(kind) || matches!(kind, OpKind::Conv2dWeightGrad(..))
}

/// Whether `kind` sums to a shape: `sum_to`, or (in a chain that begins with a convolution
/// and has several results) `sum_squared_deviations_to`.
pub fn is_sum(kind: &OpKind) -> bool {
    matches!(kind, OpKind::SumTo(_) | OpKind::SumSquaredDeviationsTo(_))
}

/// Whether `kind` may begin a chain.
pub fn is_contraction(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::Conv2d(_) | OpKind::Conv2dInputGrad(..) | OpKind::MatMul { .. }
    )
}

/// The trailing axes of a contraction's result that make a row of its product in memory:
/// a convolution's positions `[H, W]`, a matrix product's columns.
fn column_axes(kind: &OpKind) -> usize {
    match kind {
        OpKind::Conv2d(_) | OpKind::Conv2dInputGrad(..) => 2,
        _ => 1,
    }
}

/// Whether an epilogue can read a tensor of `shape` in step with the tiles of a contraction's
/// result of shape `output`: broadcast to it, it is either whole along the result's rows in
/// memory or constant along them.
pub fn epilogue_reads(kind: &OpKind, shape: &[usize], output: &[usize]) -> bool {
    let columns = column_axes(kind);
    let Some(lead) = output.len().checked_sub(shape.len()) else {
        return false;
    };
    let padded: Vec<usize> = std::iter::repeat_n(1, lead)
        .chain(shape.iter().copied())
        .collect();
    let trailing = output.len().saturating_sub(columns);
    let (own, full) = (&padded[trailing..], &output[trailing..]);
    own.iter().all(|&n| n == 1) || own == full
}

/// A chain's contraction with the steps around it.
pub struct Around<'c> {
    /// The elementwise steps before it, which compute its first operand (if any).
    pub prologue: &'c [Step],
    pub contraction: &'c Step,
    /// The steps after it.
    pub epilogue: &'c [Step],
}

impl Chain {
    /// The contraction of a chain, after its prologue, and the steps after it (its epilogue).
    pub fn contraction(&self) -> Option<Around<'_>> {
        let at = self.steps.iter().position(|s| follows_prologue(&s.kind))?;
        let (prologue, rest) = self.steps.split_at(at);
        Some(Around {
            prologue,
            contraction: &rest[0],
            epilogue: &rest[1..],
        })
    }

    /// The prologue's value (its last step), where the chain stores it as its last result
    /// because other ops read x too: the one result out of step order.
    pub fn stored_prologue(&self) -> Option<usize> {
        let x = self.contraction()?.prologue.len().checked_sub(1)?;
        (self.results.last() == Some(&x)).then_some(x)
    }

    /// Whether every step is elementwise: each output element from the inputs' elements at
    /// its position alone.
    pub fn is_elementwise(&self) -> bool {
        self.contraction().is_none() && self.reduction().is_none() && self.results.is_empty()
    }

    /// The shape a chain ending in a reduction (its one result) sums to, and its elementwise
    /// steps before it.
    pub fn reduction(&self) -> Option<(&Shape, &[Step])> {
        if !self.results.is_empty() {
            return None;
        }
        match self.steps.split_last() {
            Some((
                Step {
                    kind: OpKind::SumTo(shape),
                    ..
                },
                elementwise,
            )) => Some((shape, elementwise)),
            _ => None,
        }
    }
}

/// The shape of every step, by the steps' own shape rules; the last is the output's.
fn step_shapes(chain: &Chain, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
    if chain.steps.is_empty() {
        return Err("a chain has at least one step".to_string());
    }
    let mut used = vec![false; inputs.len()];
    let mut shapes: Vec<Shape> = Vec::with_capacity(chain.steps.len());
    let last = chain.steps.len() - 1;
    let contraction = chain.steps.iter().position(|s| follows_prologue(&s.kind));
    for (index, step) in chain.steps.iter().enumerate() {
        let single = chain.results.is_empty();
        if single && matches!(step.kind, OpKind::SumTo(_)) && (index != last || index == 0) {
            return Err(format!(
                "step {index} is `sum_to`, which only a chain's last step (not its first) may be"
            ));
        }
        if single && matches!(step.kind, OpKind::SumSquaredDeviationsTo(_)) {
            return Err(format!(
                "step {index} is `{}`, which only a chain with several results may have",
                step.kind.name()
            ));
        }
        if follows_prologue(&step.kind) && contraction != Some(index) {
            return Err(format!(
                "step {index} is `{}`, but a chain has at most one contraction",
                step.kind.name()
            ));
        }
        if contraction.is_some_and(|c| index < c) && !is_elementwise(&step.kind) {
            return Err(format!(
                "step {index} is `{}`, but only elementwise steps come before a contraction",
                step.kind.name()
            ));
        }
        if !may_be_step(&step.kind) {
            return Err(format!(
                "step {index} is `{}`, which cannot be a step of a chain",
                step.kind.name()
            ));
        }
        let mut arg_shapes = Vec::with_capacity(step.args.len());
        for arg in &step.args {
            match *arg {
                Arg::Input(i) if i < inputs.len() => {
                    used[i] = true;
                    arg_shapes.push(inputs[i]);
                }
                Arg::Step(s) if s < index => arg_shapes.push(&shapes[s]),
                Arg::Input(i) => {
                    return Err(format!("step {index} reads input {i}, which is missing"))
                }
                Arg::Step(s) => {
                    return Err(format!(
                        "step {index} reads step {s}, which does not come before it"
                    ))
                }
            }
        }
        let shape = step
            .kind
            .shape(&arg_shapes)
            .map_err(|e| format!("step {index} (`{}`): {e}", step.kind.name()))?;
        shapes.push(shape);
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(format!("input {unused} is read by no step"));
    }
    if let Some(around) = chain.contraction() {
        check_prologue(&around, inputs, &shapes)?;
    }
    if !chain.results.is_empty() {
        check_results(chain, inputs, &shapes)?;
    } else if let Some(around) = chain.contraction() {
        check_epilogue(&around, inputs, &shapes, shapes.len() - 1)?;
    }
    if let Some((target, _)) = chain.reduction() {
        check_reads(inputs, summed_shape(chain, inputs, &shapes), target)?;
    }
    Ok(shapes)
}

/// What a kernel can compute its input with, plane by plane: the prologue's last step is the
/// contraction's first operand (its other operands are inputs), its steps read inputs of that
/// operand's shape or per channel (`[1, C, 1, 1]`), and nothing after the contraction reads
/// them. Only convolutions and their weight gradients take a prologue, and a weight gradient
/// only with one.
fn check_prologue(around: &Around, inputs: &[&Shape], shapes: &[Shape]) -> Result<(), String> {
    let (prologue, contraction) = (around.prologue, around.contraction);
    let name = contraction.kind.name();
    let Some(last) = prologue.len().checked_sub(1) else {
        return match contraction.kind {
            OpKind::Conv2dWeightGrad(..) => Err(format!(
                "step 0 is `{name}`, which a chain has only after a prologue"
            )),
            _ => Ok(()),
        };
    };
    let at = prologue.len();
    let [first, second] = &contraction.args[..] else {
        return Err(format!("step {at} (`{name}`) takes two operands"));
    };
    if *first != Arg::Step(last) || matches!(second, Arg::Step(_)) {
        return Err(format!(
            "step {at} (`{name}`) takes its prologue's last step t{last} as its first operand \
             and an input as its second"
        ));
    }
    let x = &shapes[last];
    let per_channel = [1, x[1], 1, 1];
    for (index, step) in prologue.iter().enumerate() {
        for arg in &step.args {
            let Arg::Input(i) = *arg else { continue };
            if inputs[i] != x && inputs[i][..] != per_channel[..] {
                return Err(format!(
                    "step {index} reads input {i} of {:?}, but a prologue reads tensors of its \
                     result's shape {x:?} or per channel, {per_channel:?}",
                    inputs[i]
                ));
            }
        }
    }
    let w = match *second {
        Arg::Input(i) => inputs[i],
        Arg::Step(_) => unreachable!("checked above"),
    };
    let takes_prologue = match contraction.kind {
        OpKind::Conv2d(_) | OpKind::Conv2dWeightGrad(..) => true,
        OpKind::Conv2dInputGrad(..) => conv::copies_computed_x_once(&contraction.kind, x, w),
        _ => false,
    };
    if !takes_prologue {
        return Err(format!(
            "step {at} is `{name}`, which takes no prologue here: only a convolution, its weight \
             gradient, and its input gradient where it copies dy once (stride 1) do"
        ));
    }
    let after = &around.epilogue;
    if let Some(index) = after.iter().position(|step| {
        step.args
            .iter()
            .any(|arg| matches!(arg, Arg::Step(s) if *s < at))
    }) {
        return Err(format!(
            "step {} reads the prologue, which only the contraction reads",
            at + 1 + index
        ));
    }
    if matches!(contraction.kind, OpKind::Conv2dWeightGrad(..)) && !after.is_empty() {
        return Err(format!("`{name}` is the last step of its chain"));
    }
    Ok(())
}

/// What the write-out of a contraction's tiles can compute: steps that read its result (at
/// the same position), each other and tensors [`epilogue_reads`] allows, whose result (step
/// `result`) has its shape.
fn check_epilogue(
    around: &Around,
    inputs: &[&Shape],
    shapes: &[Shape],
    result: usize,
) -> Result<(), String> {
    let (contraction, at) = (around.contraction, around.prologue.len());
    let output = &shapes[at];
    if shapes[result] != *output {
        return Err(format!(
            "a chain whose contraction is `{}` ends with its shape {output:?}",
            contraction.kind.name()
        ));
    }
    for (index, step) in around.epilogue.iter().enumerate() {
        for arg in &step.args {
            let Arg::Input(i) = *arg else { continue };
            if contraction.args.contains(arg) {
                return Err(format!(
                    "step {} reads input {i}, an operand of `{}`",
                    at + 1 + index,
                    contraction.kind.name()
                ));
            }
            if !epilogue_reads(&contraction.kind, inputs[i], output) {
                return Err(format!(
                    "step {} reads input {i} of {:?}, which is neither whole nor constant along \
                     the rows of `{}`'s {output:?}",
                    at + 1 + index,
                    inputs[i],
                    contraction.kind.name()
                ));
            }
        }
    }
    Ok(())
}

/// The pass of a chain with several results over the tensor it sums, as code generation
/// computes it: the elementwise steps, each sum and each elementwise result with its offset
/// (in floats) in the output.
pub struct Results<'c> {
    pub summed: Shape,
    pub target: Shape,
    pub steps: &'c [Step],
    pub sums: Vec<(Arg, usize)>,
    pub stores: Vec<(Arg, usize)>,
}

/// What one pass can compute: elementwise steps over tensors of one shape (and of the shape
/// it sums to, constant over what each sum adds), then `sum_to` steps of tensors of that shape
/// to one shape, every one a result; the other results are elementwise steps of the summed
/// shape. Or a convolution (or its input gradient) with its epilogue, then sums per channel
/// of the epilogue's values, with the epilogue's result first, which its write-out computes.
fn check_results(chain: &Chain, inputs: &[&Shape], shapes: &[Shape]) -> Result<(), String> {
    let stored_x = chain.stored_prologue();
    if let Some(x) = stored_x {
        check_stored_prologue(chain, inputs, &shapes[x])?;
    }
    let results = &chain.results[..chain.results.len() - usize::from(stored_x.is_some())];
    if results.len() < 2 || results.windows(2).any(|w| w[0] >= w[1]) {
        return Err(
            "a chain lists two or more results, in step order (and last, its prologue's value \
             if it stores it)"
                .to_string(),
        );
    }
    if let Some(&r) = results.iter().find(|&&r| r >= chain.steps.len()) {
        return Err(format!("result t{r} is not a step"));
    }
    let first_sum = chain
        .first_sum()
        .ok_or("a chain with several results sums something")?;
    let (before, sums) = chain.steps.split_at(first_sum);
    let around = chain.contraction();
    if let Some(around) = &around {
        if !matches!(
            around.contraction.kind,
            OpKind::Conv2d(_) | OpKind::Conv2dInputGrad(..)
        ) {
            return Err(format!(
                "a chain whose contraction is `{}` has one result",
                around.contraction.kind.name()
            ));
        }
    }
    let skip = around.as_ref().map_or(0, |a| a.prologue.len() + 1);
    if let Some(index) = before[skip..].iter().position(|s| !is_elementwise(&s.kind)) {
        return Err(format!(
            "step {} is `{}`, but a chain with several results computes elementwise \
             steps, then sums",
            index + skip,
            before[index + skip].kind.name()
        ));
    }
    let arg_shape = |arg: Arg| match arg {
        Arg::Input(i) => inputs[i],
        Arg::Step(s) => &shapes[s],
    };
    let summed = arg_shape(sums[0].args[0]);
    let target = &shapes[first_sum];
    for (k, step) in sums.iter().enumerate() {
        let index = first_sum + k;
        if !is_sum(&step.kind) {
            return Err(format!(
                "step {index} is `{}`, but only sums follow a chain's first sum",
                step.kind.name()
            ));
        }
        if arg_shape(step.args[0]) != summed || &shapes[index] != target {
            return Err(format!(
                "step {index} sums {:?} to {:?}, but the chain's sums take {summed:?} to \
                 {target:?}",
                arg_shape(step.args[0]),
                shapes[index]
            ));
        }
        if !results.contains(&index) {
            return Err(format!("sum t{index} is not a result"));
        }
        if matches!(step.args[0], Arg::Step(s) if s >= first_sum) {
            return Err(format!("step {index} sums a sum"));
        }
    }
    let stored: Vec<usize> = results.iter().copied().filter(|&r| r < first_sum).collect();
    if let Some(&r) = stored.iter().find(|&&r| &shapes[r] != summed) {
        return Err(format!(
            "result t{r} is {:?}, not the summed shape {summed:?}",
            shapes[r]
        ));
    }
    let deviations = first_sum
        + sums
            .iter()
            .position(|s| matches!(s.kind, OpKind::SumSquaredDeviationsTo(_)))
            .unwrap_or(sums.len());
    let Some(around) = around else {
        if deviations < chain.steps.len() {
            return Err(format!(
                "step {deviations} is `sum_squared_deviations_to`, which only a chain that \
                 begins with a convolution may have"
            ));
        }
        return check_reads(inputs, summed, target);
    };
    let name = around.contraction.kind.name();
    let [stored] = stored[..] else {
        return Err(format!(
            "a chain whose contraction is `{name}` has its epilogue's value as its one result \
             besides its sums"
        ));
    };
    if stored < skip - 1 {
        return Err(format!(
            "result t{stored} is a step of the prologue, which only the contraction reads"
        ));
    }
    check_epilogue(&around, inputs, shapes, stored)?;
    if let Some(index) = (first_sum..chain.steps.len()).find(|&index| {
        matches!(chain.steps[index].kind, OpKind::SumSquaredDeviationsTo(_))
            && chain.steps[index].args[0] != Arg::Step(stored)
    }) {
        return Err(format!(
            "step {index} sums the squared deviations of something other than the \
             epilogue's value t{stored}, which the write-out reads back"
        ));
    }
    let channels = summed.get(1).copied().unwrap_or(1);
    if summed.len() != 4 || *target != [1, channels, 1, 1] {
        return Err(format!(
            "a chain whose contraction is `{name}` sums per channel, to [1, {channels}, 1, 1], \
             not to {target:?}"
        ));
    }
    Ok(())
}

/// That a contraction whose prologue's value `x` (of that shape) a chain stores computes each
/// element of x once, so that it can store x as it goes.
fn check_stored_prologue(chain: &Chain, inputs: &[&Shape], x: &Shape) -> Result<(), String> {
    let around = chain
        .contraction()
        .expect("a chain that stores its prologue's value");
    let w = match around.contraction.args.get(1) {
        Some(&Arg::Input(i)) => inputs[i],
        _ => return Err("a contraction's second operand is an input".to_string()),
    };
    if conv::copies_computed_x_once(&around.contraction.kind, x, w) {
        return Ok(());
    }
    Err(format!(
        "result t{} is the prologue's value, which only a convolution (or its input gradient) \
         that computes each element of it once can store, not `{}` over {x:?}",
        around.prologue.len() - 1,
        around.contraction.kind.name()
    ))
}

/// That a chain summing `summed` to `target` reads tensors of those shapes only, so that each
/// step is computed once per element summed.
fn check_reads(inputs: &[&Shape], summed: &Shape, target: &Shape) -> Result<(), String> {
    match inputs
        .iter()
        .position(|&shape| shape != summed && shape != target)
    {
        Some(i) => Err(format!(
            "input {i} is {:?}, but a chain that sums {summed:?} to {target:?} reads only \
             tensors of those two shapes",
            inputs[i]
        )),
        None => Ok(()),
    }
}

impl Chain {
    /// The step of the first sum, if the chain sums.
    fn first_sum(&self) -> Option<usize> {
        self.steps.iter().position(|s| is_sum(&s.kind))
    }

    /// A chain that sums without a contraction (one that ends in a sum, or has several
    /// results) as one pass over the summed tensor computes it; `None` for other chains.
    pub fn sum_pass(&self, inputs: &[&Shape]) -> Option<Results<'_>> {
        let first_sum = self.first_sum()?;
        if self.contraction().is_some() {
            return None;
        }
        let shapes = step_shapes(self, inputs).expect("a verified chain");
        let arg_shape = |arg: Arg| match arg {
            Arg::Input(i) => inputs[i].clone(),
            Arg::Step(s) => shapes[s].clone(),
        };
        let mut pass = Results {
            summed: arg_shape(self.steps[first_sum].args[0]),
            target: shapes[first_sum].clone(),
            steps: &self.steps[..first_sum],
            sums: Vec::new(),
            stores: Vec::new(),
        };
        // A chain that ends in its one sum has that sum as its result.
        let last = [self.steps.len() - 1];
        let results = if self.results.is_empty() {
            &last[..]
        } else {
            &self.results
        };
        let mut offset = 0;
        for &r in results {
            if r >= first_sum {
                pass.sums.push((self.steps[r].args[0], offset));
            } else {
                pass.stores.push((Arg::Step(r), offset));
            }
            offset += shapes[r].iter().product::<usize>();
        }
        Some(pass)
    }
}

/// The shape a chain that ends in a reduction sums, given its steps' shapes.
fn summed_shape<'s>(chain: &Chain, inputs: &[&'s Shape], shapes: &'s [Shape]) -> &'s Shape {
    match chain.steps.last().expect("a step").args[0] {
        Arg::Input(i) => inputs[i],
        Arg::Step(s) => &shapes[s],
    }
}

pub fn shape(chain: &Chain, inputs: &[&Shape]) -> Result<Shape, String> {
    let mut shapes = step_shapes(chain, inputs)?;
    if !chain.results.is_empty() {
        let floats = chain
            .results
            .iter()
            .map(|&r| shapes[r].iter().product::<usize>());
        return Ok(vec![floats.sum()]);
    }
    Ok(shapes.pop().expect("a chain has a step"))
}

/// The steps in order, each by its own op's reference semantics.
pub fn eval(chain: &Chain, inputs: &[&Tensor], context: &EvalContext) -> Tensor {
    let mut values: Vec<Tensor> = Vec::with_capacity(chain.steps.len());
    for step in &chain.steps {
        let args: Vec<&Tensor> = step
            .args
            .iter()
            .map(|arg| match *arg {
                Arg::Input(i) => inputs[i],
                Arg::Step(s) => &values[s],
            })
            .collect();
        values.push(step.kind.eval(&args, context));
    }
    if chain.results.is_empty() {
        return values.pop().expect("a chain has a step");
    }
    let data: Vec<f64> = chain
        .results
        .iter()
        .flat_map(|&r| values[r].data.iter().copied())
        .collect();
    Tensor::new(vec![data.len()], data)
}

/// One kernel over the output: each input read where broadcasting puts it, every step computed
/// in registers. A step narrower than the output (a per-channel scale) is computed at every
/// position it is broadcast to, which gives the same values. A chain that ends in a reduction
/// is the reduction's kernel, its terms computed as they are summed.
pub fn emit(chain: &Chain, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let shapes: Vec<&Shape> = inputs.iter().map(|input| &input.shape).collect();
    if let Some(pass) = chain.sum_pass(&shapes) {
        return layout::emit_sum(sink, inputs, &pass, output);
    }
    if let Some(around) = chain.contraction() {
        return emit_contraction(chain, &around, sink, inputs, output);
    }
    let operands: Vec<Strided> = inputs
        .iter()
        .map(|x| Strided::broadcast(x.slot, &x.shape, &output.shape))
        .collect();
    let out = Strided::dense(output.slot, &output.shape);
    for_each_element(sink, &output.shape, &operands, &out, |e, loaded, ty| {
        emit_steps(e, &chain.steps, loaded, ty)
    });
}

/// A contraction with the steps after it as its epilogue: its operands are the inputs it
/// reads, or its prologue's value; the epilogue's inputs are its result (input 0) and the
/// inputs the epilogue reads. With several `results`, the epilogue's result is the first, and
/// the others are its sums.
fn emit_contraction(
    chain: &Chain,
    around: &Around,
    sink: &mut KernelSink,
    inputs: &[Operand],
    output: &Operand,
) {
    let (contraction, steps, at) = (around.contraction, around.epilogue, around.prologue.len());
    let results = &chain.results;
    // x is an input, or the prologue's value (which only a convolution or its gradients
    // read, as their first operand), stored last in the output where the chain stores it.
    let stored = chain.stored_prologue().map(|_| output.slot);
    let mut prologue = prologue(around.prologue, inputs);
    if let (Some(slot), Some((prologue, x))) = (stored, &mut prologue) {
        let floats: usize = x.iter().product();
        prologue.stored = Some((slot, output.len() - floats));
    }
    let operand_shapes: Vec<&Shape> = contraction
        .args
        .iter()
        .map(|arg| match (*arg, &prologue) {
            (Arg::Input(i), _) => &inputs[i].shape,
            (Arg::Step(_), Some((_, x))) => *x,
            (Arg::Step(_), None) => {
                unreachable!("a contraction reads a step only after a prologue")
            }
        })
        .collect();
    // The result of the contraction's shape, from the first float of the output, the sums
    // (if any) after it.
    let output = &Operand {
        slot: output.slot,
        shape: contraction
            .kind
            .shape(&operand_shapes)
            .expect("a verified chain"),
    };
    let mut others: Vec<usize> = steps
        .iter()
        .flat_map(|step| &step.args)
        .filter_map(|arg| match *arg {
            Arg::Input(i) => Some(i),
            Arg::Step(_) => None,
        })
        .collect();
    others.sort_unstable();
    others.dedup();
    let remap = |arg: &Arg| match *arg {
        Arg::Step(s) if s == at => Arg::Input(0),
        Arg::Step(s) => Arg::Step(s - at - 1),
        Arg::Input(i) => Arg::Input(1 + others.iter().position(|&o| o == i).expect("an input")),
    };
    // Steps after the contraction: elementwise, then sums.
    let elementwise = steps
        .iter()
        .position(|step| is_sum(&step.kind))
        .unwrap_or(steps.len());
    let result = match results.first() {
        Some(&r) => Arg::Step(r),
        None => Arg::Step(at + elementwise),
    };
    let epilogue = Epilogue {
        steps: steps[..elementwise]
            .iter()
            .map(|step| Step {
                kind: step.kind.clone(),
                args: step.args.iter().map(remap).collect(),
            })
            .collect(),
        result: remap(&result),
        sums: steps[elementwise..]
            .iter()
            .map(|step| {
                let sum = match step.kind {
                    OpKind::SumSquaredDeviationsTo(_) => RowSum::SquaredDeviations,
                    _ => RowSum::Plain,
                };
                (remap(&step.args[0]), sum)
            })
            .collect(),
        inputs: others
            .iter()
            .map(|&i| {
                // The strides along the rows' axes, then along the merged column axes: the
                // innermost one that has more than one element's (a broadcast axis of one
                // element has stride 0, though the input is whole along the columns when the
                // axes before it are: a `[N, C, H, 1]` map).
                let strided = Strided::broadcast(inputs[i].slot, &inputs[i].shape, &output.shape);
                let rows = strided.strides.len() - column_axes(&contraction.kind);
                let mut strides = strided.strides[..rows].to_vec();
                let columns = strided.strides[rows..].iter().zip(&output.shape[rows..]);
                let merged = columns.rev().find(|&(_, &extent)| extent > 1);
                strides.push(merged.map_or(0, |(&stride, _)| stride));
                (inputs[i].slot, strides)
            })
            .collect(),
    };
    let operand = |k: usize| match contraction.args[k] {
        Arg::Input(i) => &inputs[i],
        Arg::Step(_) => unreachable!("a contraction's operand after the first is an input"),
    };
    let x = match &prologue {
        Some((prologue, _)) => Source::Computed(prologue),
        None => Source::Tensor(operand(0).slot),
    };
    let x = (&x, &operand_shapes[0][..]);
    let operands = || [operand(0).clone(), operand(1).clone()];
    match &contraction.kind {
        OpKind::Conv2d(a) => conv::emit(a, sink, x, operand(1), output, &epilogue),
        OpKind::Conv2dWeightGrad(a, _) => conv::emit_weight_grad(a, sink, x, operand(1), output),
        OpKind::Conv2dInputGrad(a, _) => {
            conv::emit_input_grad(a, sink, x, operand(1), output, &epilogue)
        }
        OpKind::MatMul {
            transpose_a,
            transpose_b,
        } => matmul::emit(
            *transpose_a,
            *transpose_b,
            sink,
            &operands(),
            output,
            &epilogue,
        ),
        kind => unreachable!("`{}` is not a contraction", kind.name()),
    }
}

/// A prologue as the kernels compute it, its steps reading its own inputs in the order they
/// are first read, and x's shape: that of its largest input, since it reads tensors of x's
/// shape and per-channel ones (`check_prologue`); `None` for none.
fn prologue<'i>(steps: &[Step], inputs: &'i [Operand]) -> Option<(Prologue, &'i Shape)> {
    let mut read: Vec<usize> = Vec::new();
    let steps = steps
        .iter()
        .map(|step| Step {
            kind: step.kind.clone(),
            args: step
                .args
                .iter()
                .map(|arg| match *arg {
                    Arg::Input(i) => Arg::Input(match read.iter().position(|&r| r == i) {
                        Some(position) => position,
                        None => {
                            read.push(i);
                            read.len() - 1
                        }
                    }),
                    step => step,
                })
                .collect(),
        })
        .collect();
    let x = read
        .iter()
        .map(|&i| &inputs[i].shape)
        .max_by_key(|shape| shape.iter().product::<usize>())?;
    let inputs = read
        .iter()
        .map(|&i| (inputs[i].slot, inputs[i].shape != *x))
        .collect();
    let prologue = Prologue {
        steps,
        inputs,
        stored: None,
    };
    Some((prologue, x))
}

/// The value of elementwise `steps` over the `loaded` elements of a chain's inputs.
pub fn emit_steps(e: &mut Emitter, steps: &[Step], loaded: &[Value], ty: Type) -> Value {
    let values = emit_each_step(e, steps, loaded, ty);
    values.last().copied().unwrap_or(loaded[0])
}

/// The value `arg` names: a loaded input's, or a step's among `values`.
pub fn arg_value(arg: Arg, loaded: &[Value], values: &[Value]) -> Value {
    match arg {
        Arg::Input(i) => loaded[i],
        Arg::Step(s) => values[s],
    }
}

/// The value of each of elementwise `steps` over the `loaded` elements of a chain's inputs.
pub fn emit_each_step(e: &mut Emitter, steps: &[Step], loaded: &[Value], ty: Type) -> Vec<Value> {
    let mut values: Vec<Value> = Vec::with_capacity(steps.len());
    for step in steps {
        let arg = |k: usize| arg_value(step.args[k], loaded, &values);
        let value = match step.kind {
            OpKind::Map(f) => emit_apply(e, f, arg(0), ty),
            _ => emit_binary_value(e, &step.kind, arg(0), arg(1)),
        };
        values.push(value);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::{ConvAttrs, MapFn};

    #[test]
    fn a_chain_means_its_steps_in_order() {
        // relu(x * s + b) with a per-channel scale and shift.
        let chain = Chain {
            results: Vec::new(),
            steps: vec![
                Step {
                    kind: OpKind::Mul,
                    args: vec![Arg::Input(0), Arg::Input(1)],
                },
                Step {
                    kind: OpKind::Add,
                    args: vec![Arg::Step(0), Arg::Input(2)],
                },
                Step {
                    kind: OpKind::Map(MapFn::Relu),
                    args: vec![Arg::Step(1)],
                },
            ],
        };
        let x = Tensor::new(vec![2, 2], vec![1.0, -2.0, 3.0, -4.0]);
        let s = Tensor::new(vec![1, 2], vec![2.0, 1.0]);
        let b = Tensor::new(vec![2], vec![-1.0, 0.5]);
        let y = eval(&chain, &[&x, &s, &b], &EvalContext::default());
        assert_eq!(y.shape, vec![2, 2]);
        assert_eq!(y.data, vec![1.0, 0.0, 5.0, 0.0]);
    }

    #[test]
    fn a_chain_with_several_results_computes_them_in_one_pass() {
        let step = |kind, args: &[Arg]| Step {
            kind,
            args: args.to_vec(),
        };
        let (x0, x1, t0, t1) = (Arg::Input(0), Arg::Input(1), Arg::Step(0), Arg::Step(1));
        let target = OpKind::SumTo(vec![1, 2]);
        let conv = OpKind::Conv2d(ConvAttrs {
            stride: [1, 1],
            pad: [0; 4],
            dilation: [1, 1],
            groups: 1,
        });
        let chain = |steps, results: &[usize]| Chain {
            steps,
            results: results.to_vec(),
        };
        // x - s, and the sums of x and of (x - s)²: the results flattened, in order.
        let both = chain(
            vec![
                step(OpKind::Sub, &[x0, x1]),
                step(OpKind::Mul, &[t0, t0]),
                step(target.clone(), &[x0]),
                step(target.clone(), &[t1]),
            ],
            &[0, 2, 3],
        );
        let x = Tensor::new(vec![2, 2], vec![1.0, 2.0, 3.0, 5.0]);
        let s = Tensor::new(vec![1, 2], vec![1.0, 2.0]);
        let y = eval(&both, &[&x, &s], &EvalContext::default());
        assert_eq!(y.shape, vec![8]);
        assert_eq!(y.data, vec![0.0, 0.0, 2.0, 3.0, 4.0, 7.0, 4.0, 9.0]);
        let shapes = [vec![2, 2], vec![1, 2]];
        let shapes: Vec<&Shape> = shapes.iter().collect();
        assert_eq!(shape(&both, &shapes), Ok(vec![8]));
        let cases: Vec<(Chain, Vec<Shape>, &str)> = vec![
            (
                chain(vec![step(target.clone(), &[x0])], &[0]),
                vec![vec![2, 2]],
                "a chain lists two or more results, in step order (and last, its prologue's \
                 value if it stores it)",
            ),
            (
                chain(
                    vec![
                        step(OpKind::Map(MapFn::Neg), &[x0]),
                        step(target.clone(), &[t0]),
                    ],
                    &[0, 2],
                ),
                vec![vec![2, 2]],
                "result t2 is not a step",
            ),
            (
                chain(
                    vec![
                        step(target.clone(), &[x0]),
                        step(OpKind::Map(MapFn::Neg), &[x0]),
                        step(target.clone(), &[t1]),
                    ],
                    &[0, 2],
                ),
                vec![vec![2, 2]],
                "step 1 is `neg`, but only sums follow a chain's first sum",
            ),
            (
                chain(
                    vec![
                        step(OpKind::Map(MapFn::Neg), &[x0]),
                        step(target.clone(), &[t0]),
                    ],
                    &[0],
                ),
                vec![vec![2, 2]],
                "a chain lists two or more results, in step order (and last, its prologue's \
                 value if it stores it)",
            ),
            (
                chain(
                    vec![
                        step(OpKind::Map(MapFn::Neg), &[x0]),
                        step(target.clone(), &[t0]),
                        step(OpKind::SumTo(vec![2, 1]), &[t0]),
                    ],
                    &[1, 2],
                ),
                vec![vec![2, 2]],
                "step 2 sums [2, 2] to [2, 1], but the chain's sums take [2, 2] to [1, 2]",
            ),
            (
                chain(
                    vec![
                        step(OpKind::Map(MapFn::Neg), &[x0]),
                        step(target.clone(), &[t0]),
                        step(target.clone(), &[t0]),
                    ],
                    &[0, 1],
                ),
                vec![vec![2, 2]],
                "sum t2 is not a result",
            ),
            (
                chain(
                    vec![
                        step(OpKind::Map(MapFn::Neg), &[x1]),
                        step(target.clone(), &[x0]),
                    ],
                    &[0, 1],
                ),
                vec![vec![2, 2], vec![1, 2]],
                "result t0 is [1, 2], not the summed shape [2, 2]",
            ),
            (
                chain(
                    vec![
                        step(
                            OpKind::MatMul {
                                transpose_a: false,
                                transpose_b: false,
                            },
                            &[x0, x1],
                        ),
                        step(target.clone(), &[t0]),
                    ],
                    &[0, 1],
                ),
                vec![vec![2, 2], vec![2, 2]],
                "a chain whose contraction is `matmul` has one result",
            ),
            (
                chain(
                    vec![
                        step(conv.clone(), &[x0, x1]),
                        step(OpKind::SumTo(vec![1, 1, 3, 3]), &[t0]),
                    ],
                    &[0, 1],
                ),
                vec![vec![1, 2, 3, 3], vec![2, 2, 1, 1]],
                "a chain whose contraction is `conv2d` sums per channel, to [1, 2, 1, 1], \
                 not to [1, 1, 3, 3]",
            ),
            (
                chain(
                    vec![
                        step(conv.clone(), &[x0, x1]),
                        step(OpKind::Map(MapFn::Neg), &[t0]),
                        step(OpKind::SumTo(vec![1, 2, 1, 1]), &[t1]),
                    ],
                    &[0, 1, 2],
                ),
                vec![vec![1, 2, 3, 3], vec![2, 2, 1, 1]],
                "a chain whose contraction is `conv2d` has its epilogue's value as its one \
                 result besides its sums",
            ),
            (
                chain(
                    vec![
                        step(OpKind::Map(MapFn::Neg), &[x0]),
                        step(OpKind::SumSquaredDeviationsTo(vec![1, 2]), &[t0]),
                    ],
                    &[],
                ),
                vec![vec![2, 2]],
                "step 1 is `sum_squared_deviations_to`, which only a chain with several results \
                 may have",
            ),
            (
                chain(
                    vec![
                        step(OpKind::Map(MapFn::Neg), &[x0]),
                        step(target.clone(), &[t0]),
                        step(OpKind::SumSquaredDeviationsTo(vec![1, 2]), &[t0]),
                    ],
                    &[1, 2],
                ),
                vec![vec![2, 2]],
                "step 2 is `sum_squared_deviations_to`, which only a chain that begins with a \
                 convolution may have",
            ),
            (
                chain(
                    vec![
                        step(conv.clone(), &[x0, x1]),
                        step(OpKind::Map(MapFn::Neg), &[t0]),
                        step(OpKind::SumTo(vec![1, 2, 1, 1]), &[t1]),
                        step(OpKind::SumSquaredDeviationsTo(vec![1, 2, 1, 1]), &[t0]),
                    ],
                    &[1, 2, 3],
                ),
                vec![vec![1, 2, 3, 3], vec![2, 2, 1, 1]],
                "step 3 sums the squared deviations of something other than the epilogue's \
                 value t1, which the write-out reads back",
            ),
        ];
        for (chain, shapes, message) in cases {
            let shapes: Vec<&Shape> = shapes.iter().collect();
            assert_eq!(
                shape(&chain, &shapes),
                Err(message.to_string()),
                "{chain:?}"
            );
        }
    }

    #[test]
    fn malformed_chains_have_no_shape() {
        let step = |kind, args: &[Arg]| Step {
            kind,
            args: args.to_vec(),
        };
        let chain = |steps| Chain {
            steps,
            results: Vec::new(),
        };
        let (x0, x1, x2) = (Arg::Input(0), Arg::Input(1), Arg::Input(2));
        let (t0, t1) = (Arg::Step(0), Arg::Step(1));
        let matmul = OpKind::MatMul {
            transpose_a: false,
            transpose_b: false,
        };
        let conv = |groups| {
            OpKind::Conv2d(ConvAttrs {
                stride: [1, 1],
                pad: [0; 4],
                dilation: [1, 1],
                groups,
            })
        };
        let exp = OpKind::Map(MapFn::Exp);
        let relu = OpKind::Map(MapFn::Relu);
        let grouped = ConvAttrs {
            stride: [1, 1],
            pad: [0; 4],
            dilation: [1, 1],
            groups: 2,
        };
        let weight_grad = OpKind::Conv2dWeightGrad(grouped, [1, 1]);
        let input_grad = OpKind::Conv2dInputGrad(grouped, [3, 3]);
        let cases: Vec<(Chain, Vec<Shape>, &str)> = vec![
            (Chain::default(), vec![], "a chain has at least one step"),
            (
                chain(vec![step(OpKind::Add, &[x0, t0])]),
                vec![vec![3]],
                "step 0 reads step 0, which does not come before it",
            ),
            (
                chain(vec![step(OpKind::Softmax, &[x0])]),
                vec![vec![2, 3]],
                "step 0 is `softmax`, which cannot be a step of a chain",
            ),
            (
                chain(vec![step(exp.clone(), &[x0])]),
                vec![vec![2, 3], vec![3]],
                "input 1 is read by no step",
            ),
            (
                chain(vec![
                    step(OpKind::SumTo(vec![3]), &[x0]),
                    step(exp.clone(), &[t0]),
                ]),
                vec![vec![2, 3]],
                "step 0 is `sum_to`, which only a chain's last step (not its first) may be",
            ),
            (
                chain(vec![
                    step(exp.clone(), &[x0]),
                    step(matmul.clone(), &[t0, x1]),
                ]),
                vec![vec![2, 3], vec![3, 3]],
                "step 1 is `matmul`, which takes no prologue here: only a convolution, its \
                 weight gradient, and its input gradient where it copies dy once (stride 1) do",
            ),
            (
                chain(vec![
                    step(OpKind::Mul, &[x0, x1]),
                    step(OpKind::SumTo(vec![1, 3]), &[t0]),
                ]),
                vec![vec![2, 3], vec![3]],
                "input 1 is [3], but a chain that sums [2, 3] to [1, 3] reads only tensors of \
                 those two shapes",
            ),
            (
                chain(vec![
                    step(matmul.clone(), &[x0, x1]),
                    step(OpKind::Add, &[t0, x0]),
                ]),
                vec![vec![2, 3], vec![3, 3]],
                "step 1 reads input 0, an operand of `matmul`",
            ),
            (
                chain(vec![
                    step(matmul.clone(), &[x0, x1]),
                    step(OpKind::Add, &[t0, x2]),
                ]),
                vec![vec![2, 3], vec![3, 3], vec![4, 2, 3]],
                "a chain whose contraction is `matmul` ends with its shape [2, 3]",
            ),
            (
                chain(vec![step(conv(1), &[x0, x1]), step(OpKind::Add, &[t0, x2])]),
                vec![vec![1, 2, 3, 3], vec![1, 2, 1, 1], vec![3, 1]],
                "step 1 reads input 2 of [3, 1], which is neither whole nor constant along \
                 the rows of `conv2d`'s [1, 1, 3, 3]",
            ),
            (
                chain(vec![
                    step(conv(1), &[x0, x1]),
                    step(OpKind::Add, &[t0, x2]),
                    step(OpKind::Mul, &[t1, x2]),
                ]),
                vec![vec![1, 2, 3, 3], vec![1, 2, 1, 1], vec![1, 3, 3]],
                "",
            ),
            (
                chain(vec![step(weight_grad, &[x0, x1])]),
                vec![vec![1, 2, 3, 3], vec![1, 2, 3, 3]],
                "step 0 is `conv2d_weight_grad`, which a chain has only after a prologue",
            ),
            (
                chain(vec![step(OpKind::Mul, &[x0, x2]), step(conv(2), &[t0, x1])]),
                vec![vec![1, 2, 3, 3], vec![2, 1, 1, 1], vec![1, 1, 3, 3]],
                "step 0 reads input 2 of [1, 1, 3, 3], but a prologue reads tensors of its \
                 result's shape [1, 2, 3, 3] or per channel, [1, 2, 1, 1]",
            ),
            (
                chain(vec![step(relu.clone(), &[x0]), step(conv(2), &[x0, x1])]),
                vec![vec![1, 2, 3, 3], vec![2, 1, 1, 1]],
                "step 1 (`conv2d`) takes its prologue's last step t0 as its first operand and \
                 an input as its second",
            ),
            (
                chain(vec![
                    step(relu.clone(), &[x0]),
                    step(conv(2), &[t0, x1]),
                    step(OpKind::Add, &[t1, t0]),
                ]),
                vec![vec![1, 2, 3, 3], vec![2, 1, 1, 1]],
                "step 2 reads the prologue, which only the contraction reads",
            ),
            (
                chain(vec![step(relu, &[x0]), step(input_grad, &[t0, x1])]),
                vec![vec![1, 2, 3, 3], vec![2, 1, 1, 1]],
                "step 1 is `conv2d_input_grad`, which takes no prologue here: only a \
                 convolution, its weight gradient, and its input gradient where it copies dy \
                 once (stride 1) do",
            ),
        ];
        for (chain, shapes, message) in cases {
            let shapes: Vec<&Shape> = shapes.iter().collect();
            let expected = match message {
                "" => Ok(vec![1, 1, 3, 3]),
                message => Err(message.to_string()),
            };
            assert_eq!(shape(&chain, &shapes), expected, "{chain:?}");
        }
    }
}
