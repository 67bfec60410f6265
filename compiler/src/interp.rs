//! The reference interpreter: runs any IR graph with plain loops in f64. It is the oracle that
//! generated code, every pass and every gradient are checked against, so it favours obvious
//! correctness over speed. It is deterministic: dropout masks come from a counter-based
//! generator keyed by the seed in `EvalContext`.

use crate::ir::{Definition, Graph, OutputRole, Shape, ValueId};
use std::collections::HashMap;

/// A dense tensor in row-major order (the last axis varies fastest).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Shape,
    pub data: Vec<f64>,
}

impl Tensor {
    pub fn new(shape: Shape, data: Vec<f64>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "internal error: {} elements for shape {shape:?}",
            data.len()
        );
        Tensor { shape, data }
    }

    pub fn full(shape: Shape, value: f64) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(shape, vec![value; n])
    }

    pub fn scalar(value: f64) -> Tensor {
        Tensor::new(vec![], vec![value])
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row-major strides of the shape.
    pub fn strides(&self) -> Vec<usize> {
        strides(&self.shape)
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// What an op may read besides its inputs.
#[derive(Clone, Debug, Default)]
pub struct EvalContext {
    /// Seeds the dropout masks.
    pub seed: u64,
}

/// Every value of a run, by id.
pub struct Run {
    pub values: Vec<Tensor>,
}

impl Run {
    pub fn value(&self, id: ValueId) -> &Tensor {
        &self.values[id.0]
    }

    /// The output of this role and name.
    pub fn output<'a>(&'a self, graph: &Graph, role: OutputRole, name: &str) -> &'a Tensor {
        let id = graph
            .find_output(role, name)
            .unwrap_or_else(|| panic!("the graph has no {} output `{name}`", role.keyword()));
        self.value(id)
    }
}

/// Runs a graph on inputs given by name. A missing input or one of the wrong shape is the
/// caller's mistake, reported as an error.
pub fn run(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
    context: &EvalContext,
) -> Result<Run, String> {
    let mut values: Vec<Option<Tensor>> = vec![None; graph.values.len()];
    for (id, input) in graph.inputs() {
        let tensor = inputs
            .get(&input.name)
            .ok_or_else(|| format!("no value for input `{}`", input.name))?;
        if &tensor.shape != graph.shape(id) {
            return Err(format!(
                "input `{}` has shape {:?}, the graph wants {:?}",
                input.name,
                tensor.shape,
                graph.shape(id)
            ));
        }
        values[id.0] = Some(tensor.clone());
    }
    for op in &graph.ops {
        let args: Vec<&Tensor> = op
            .inputs
            .iter()
            .map(|v| {
                values[v.0]
                    .as_ref()
                    .expect("verified graphs define values before use")
            })
            .collect();
        let result = op.kind.eval(&args, context);
        debug_assert_eq!(&result.shape, graph.shape(op.output), "{}", op.kind.name());
        values[op.output.0] = Some(result);
    }
    let values = values
        .into_iter()
        .zip(&graph.values)
        .map(|(v, info)| match (v, &info.definition) {
            (Some(v), _) => v,
            (None, Definition::Input(_) | Definition::Op(_)) => {
                unreachable!("every input and op output was computed")
            }
        })
        .collect();
    Ok(Run { values })
}
