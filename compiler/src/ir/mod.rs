//! The intermediate representation: a graph of primitive ops over f32 tensors with static
//! shapes, in SSA form. Blocks, branches and repeats are gone; layer names survive on ops.
//!
//! Layout is NCHW for activations (the batch axis first, then channels) and OIHW for
//! convolution weights, `[out, in]` for dense weights — PyTorch's, so weights move between the
//! two unchanged and `flatten` is channel-major in both. A graph lists its values in definition
//! order: inputs first (data, targets, parameters, state, scalars), then one value per op. Ops
//! are in an order where every input is defined before use; outputs name the values a caller
//! reads back (the loss, predictions, gradients, the new values of parameters and state).

pub mod ops;
pub mod parse;
pub mod print;
pub mod verify;

pub use ops::OpKind;

use std::fmt;

/// Extents of a tensor, batch axis included; `[]` is a scalar.
pub type Shape = Vec<usize>;

/// A value: the input or op output with this index in `Graph::values`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

pub use netc_runtime::program::{InputKind, OutputRole};

#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub kind: InputKind,
    /// Unique among inputs: `x`, `labels`, `conv1.weight`, `conv1.weight.momentum`, `lr`.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Definition {
    Input(Input),
    /// The op with this index in `Graph::ops`.
    Op(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub shape: Shape,
    pub definition: Definition,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub kind: OpKind,
    pub inputs: Vec<ValueId>,
    pub output: ValueId,
    /// The layer this op computes part of (its dotted name), forward or backward.
    pub layer: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub role: OutputRole,
    pub name: String,
    pub value: ValueId,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub values: Vec<ValueInfo>,
    pub ops: Vec<Op>,
    pub outputs: Vec<Output>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    pub fn shape(&self, value: ValueId) -> &Shape {
        &self.values[value.0].shape
    }

    /// The index of the op that computes `value`; None for an input.
    pub fn producer(&self, value: ValueId) -> Option<usize> {
        match self.values[value.0].definition {
            Definition::Op(op) => Some(op),
            Definition::Input(_) => None,
        }
    }

    /// Adds an input. Input names are unique; a repeated name is a compiler bug.
    pub fn input(&mut self, kind: InputKind, name: impl Into<String>, shape: Shape) -> ValueId {
        let name = name.into();
        assert!(
            self.find_input(&name).is_none(),
            "internal error: graph input `{name}` defined twice"
        );
        self.values.push(ValueInfo {
            shape,
            definition: Definition::Input(Input { kind, name }),
        });
        ValueId(self.values.len() - 1)
    }

    /// Appends an op, inferring its output shape. Ops are only built by netc itself from checked
    /// networks, so a shape error here is a compiler bug.
    pub fn op(&mut self, kind: OpKind, inputs: &[ValueId], layer: Option<&str>) -> ValueId {
        let shapes: Vec<&Shape> = inputs.iter().map(|&v| self.shape(v)).collect();
        let shape = kind.shape(&shapes).unwrap_or_else(|e| {
            panic!(
                "internal error: building `{}` on {shapes:?}: {e}",
                kind.name()
            )
        });
        self.values.push(ValueInfo {
            shape,
            definition: Definition::Op(self.ops.len()),
        });
        let output = ValueId(self.values.len() - 1);
        self.ops.push(Op {
            kind,
            inputs: inputs.to_vec(),
            output,
            layer: layer.map(str::to_string),
        });
        output
    }

    pub fn output(&mut self, role: OutputRole, name: impl Into<String>, value: ValueId) {
        self.outputs.push(Output {
            role,
            name: name.into(),
            value,
        });
    }

    /// The inputs, in definition order.
    pub fn inputs(&self) -> impl Iterator<Item = (ValueId, &Input)> {
        self.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match &v.definition {
                Definition::Input(input) => Some((ValueId(i), input)),
                Definition::Op(_) => None,
            })
    }

    pub fn find_input(&self, name: &str) -> Option<ValueId> {
        self.inputs().find(|(_, i)| i.name == name).map(|(v, _)| v)
    }

    pub fn find_output(&self, role: OutputRole, name: &str) -> Option<ValueId> {
        self.outputs
            .iter()
            .find(|o| o.role == role && o.name == name)
            .map(|o| o.value)
    }

    /// How many ops of each kind name, for tests and summaries.
    pub fn count_ops(&self, name: &str) -> usize {
        self.ops.iter().filter(|op| op.kind.name() == name).count()
    }
}
