//! `fused`: a chain of elementwise ops computed in one pass over memory, each element of the
//! output from the elements of the inputs at its position (NumPy broadcasting), with no
//! intermediate tensor written. The `fuse_elementwise` pass builds it from `add`, `sub`, `mul`,
//! `div` and the one-tensor functions; its meaning is exactly theirs applied in order, which is
//! how the interpreter computes it.
//!
//! Fusion runs after differentiation, so a chain has no backward rule.

use super::elementwise::{emit_apply, emit_binary_value, eval_binary, eval_map};
use super::OpKind;
use crate::codegen::strided::{for_each_element, Strided};
use crate::codegen::{KernelSink, Operand};
use crate::interp::Tensor;
use crate::ir::Shape;
use cranelift_codegen::ir::Value;

/// The steps of a fused op, in order; the last one's value is the op's output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chain {
    pub steps: Vec<Step>,
}

/// One elementwise op of a chain: `kind` is `add`, `sub`, `mul`, `div` or a `Map`.
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

/// The shape of every step, by the steps' own shape rules; the last is the output's.
fn step_shapes(chain: &Chain, inputs: &[&Shape]) -> Result<Vec<Shape>, String> {
    if chain.steps.is_empty() {
        return Err("a chain has at least one step".to_string());
    }
    let mut used = vec![false; inputs.len()];
    let mut shapes: Vec<Shape> = Vec::with_capacity(chain.steps.len());
    for (index, step) in chain.steps.iter().enumerate() {
        if !is_elementwise(&step.kind) {
            return Err(format!(
                "step {index} is `{}`, which is not elementwise",
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
    Ok(shapes)
}

pub fn shape(chain: &Chain, inputs: &[&Shape]) -> Result<Shape, String> {
    let mut shapes = step_shapes(chain, inputs)?;
    Ok(shapes.pop().expect("a chain has a step"))
}

pub fn eval(chain: &Chain, inputs: &[&Tensor]) -> Tensor {
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
        let value = match step.kind {
            OpKind::Map(f) => eval_map(f, &args),
            _ => eval_binary(&step.kind, &args),
        };
        values.push(value);
    }
    values.pop().expect("a chain has a step")
}

/// One kernel over the output: each input read where broadcasting puts it, every step computed
/// in registers. A step narrower than the output (a per-channel scale) is computed at every
/// position it is broadcast to, which gives the same values.
pub fn emit(chain: &Chain, sink: &mut KernelSink, inputs: &[Operand], output: &Operand) {
    let operands: Vec<Strided> = inputs
        .iter()
        .map(|x| Strided::broadcast(x.slot, &x.shape, &output.shape))
        .collect();
    let out = Strided::dense(output.slot, &output.shape);
    for_each_element(sink, &output.shape, &operands, &out, |e, loaded, ty| {
        let mut values: Vec<Value> = Vec::with_capacity(chain.steps.len());
        for step in &chain.steps {
            let arg = |k: usize| match step.args[k] {
                Arg::Input(i) => loaded[i],
                Arg::Step(s) => values[s],
            };
            let value = match step.kind {
                OpKind::Map(f) => emit_apply(e, f, arg(0), ty),
                _ => emit_binary_value(e, &step.kind, arg(0), arg(1)),
            };
            values.push(value);
        }
        *values.last().expect("a chain has a step")
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::MapFn;

    #[test]
    fn a_chain_means_its_steps_in_order() {
        // relu(x * s + b) with a per-channel scale and shift.
        let chain = Chain {
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
        let y = eval(&chain, &[&x, &s, &b]);
        assert_eq!(y.shape, vec![2, 2]);
        assert_eq!(y.data, vec![1.0, 0.0, 5.0, 0.0]);
    }

    #[test]
    fn malformed_chains_have_no_shape() {
        let step = |kind, args| Step { kind, args };
        let cases = [
            (Chain::default(), "a chain has at least one step"),
            (
                Chain {
                    steps: vec![step(OpKind::Add, vec![Arg::Input(0), Arg::Step(0)])],
                },
                "step 0 reads step 0, which does not come before it",
            ),
            (
                Chain {
                    steps: vec![step(OpKind::Softmax, vec![Arg::Input(0)])],
                },
                "step 0 is `softmax`, which is not elementwise",
            ),
            (
                Chain {
                    steps: vec![step(OpKind::Map(MapFn::Exp), vec![Arg::Input(0)])],
                },
                "input 1 is read by no step",
            ),
        ];
        let (a, b) = (vec![2, 3], vec![3]);
        for (chain, message) in cases {
            assert_eq!(shape(&chain, &[&a, &b]), Err(message.to_string()));
        }
    }
}
