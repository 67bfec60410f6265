//! A compiled graph as the host runs it, whether its code was JIT-compiled by netc or linked
//! into a standalone executable: the [`Layout`] says what memory the generated code expects
//! and where each named tensor lives; [`Program`] allocates it, initialises the parameters and
//! state, runs steps and moves each step's updates into place.
//!
//! The layout is plain data (serialisable), so `netc compile` writes it into the executable
//! beside the code, and the executable rebuilds exactly the memory the JIT would have.

use crate::buffer::Buffer;
use crate::init::{initial_values, InitKind, TensorInit};
use crate::pool::Pool;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::BTreeMap;

/// What a graph input holds, and so who provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InputKind {
    /// A batch of examples.
    Data,
    /// What the loss compares with: class indices `[N]`, or values shaped like the prediction.
    Target,
    /// A trainable parameter (`conv1.weight`).
    Param,
    /// State the graph reads and updates: batch-norm running statistics, optimizer moments.
    State,
    /// A runtime scalar `[]`: the learning rate `lr`, the 1-based optimizer `step`.
    Scalar,
}

impl InputKind {
    pub const ALL: [InputKind; 5] = [
        InputKind::Data,
        InputKind::Target,
        InputKind::Param,
        InputKind::State,
        InputKind::Scalar,
    ];

    pub fn keyword(self) -> &'static str {
        match self {
            InputKind::Data => "data",
            InputKind::Target => "target",
            InputKind::Param => "param",
            InputKind::State => "state",
            InputKind::Scalar => "scalar",
        }
    }
}

/// What a graph output means to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputRole {
    /// The scalar training objective.
    Loss,
    /// The network's answer (the input of the loss).
    Prediction,
    /// The gradient of the loss with respect to the parameter of the output's name.
    Gradient,
    /// The new value of the parameter or state of the output's name.
    Update,
}

impl OutputRole {
    pub const ALL: [OutputRole; 4] = [
        OutputRole::Loss,
        OutputRole::Prediction,
        OutputRole::Gradient,
        OutputRole::Update,
    ];

    pub fn keyword(self) -> &'static str {
        match self {
            OutputRole::Loss => "loss",
            OutputRole::Prediction => "prediction",
            OutputRole::Gradient => "gradient",
            OutputRole::Update => "update",
        }
    }
}

/// A named tensor in the program's memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binding<K> {
    pub name: String,
    /// The input's kind or the output's role.
    pub kind: K,
    /// Its buffer's index in the table.
    pub slot: usize,
    pub shape: Vec<usize>,
}

impl<K> Binding<K> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An op's result, for finding where values first stop being finite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpOutput {
    /// The dotted name of the op's layer, else the op's name.
    pub layer: String,
    pub slot: usize,
    pub len: usize,
}

/// The op a kernel belongs to, for profiles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelOrigin {
    /// The op's primitive (`conv2d`, `fused`, ...).
    pub op: String,
    /// The dotted name of the op's layer, empty for ops of no layer (the optimizer's).
    pub layer: String,
}

/// A table slot whose floats lie inside another slot's buffer (the values the memory plan
/// places in one arena), from `offset` floats on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotView {
    pub slot: usize,
    pub of: usize,
    pub offset: usize,
}

/// The memory a program's code expects, and what lives where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Floats per table slot. Slot 0 holds the microkernel, not a buffer.
    pub buffer_floats: Vec<usize>,
    /// Slots that are not buffers of their own but lie in another's.
    #[serde(default)]
    pub views: Vec<SlotView>,
    pub inputs: Vec<Binding<InputKind>>,
    pub outputs: Vec<Binding<OutputRole>>,
    /// Op results in execution order.
    pub op_outputs: Vec<OpOutput>,
    /// How every parameter and state input starts.
    pub initial: Vec<TensorInit>,
    /// The most scratch one kernel task needs, per thread.
    pub scratch_floats: usize,
    /// The kernels a step launches, in order.
    pub kernels: Vec<KernelOrigin>,
}

impl Layout {
    pub fn input(&self, name: &str) -> Option<&Binding<InputKind>> {
        self.inputs.iter().find(|b| b.name == name)
    }

    pub fn output(&self, role: OutputRole, name: &str) -> Option<&Binding<OutputRole>> {
        self.outputs
            .iter()
            .find(|b| b.kind == role && b.name == name)
    }

    /// For each table slot, whether it lies in another slot's buffer (a [`SlotView`]) rather
    /// than being a buffer of its own.
    pub fn is_view(&self) -> Vec<bool> {
        let mut is_view = vec![false; self.buffer_floats.len()];
        for view in &self.views {
            is_view[view.slot] = true;
        }
        is_view
    }

    /// The floats of the buffers a [`Program`] allocates for this layout: every slot's but
    /// the views', which lie inside those (scratch, per thread, apart).
    pub fn allocated_floats(&self) -> usize {
        self.buffer_floats
            .iter()
            .zip(self.is_view())
            .filter(|&(_, view)| !view)
            .map(|(&floats, _)| floats)
            .sum()
    }
}

/// The generated `step(table, pool)`: every kernel of the graph in order.
pub type StepFn = unsafe extern "C" fn(table: *const *mut f32, pool: *const Pool);

/// A compiled graph with its memory, ready to run.
pub struct Program {
    layout: Layout,
    /// The table's buffers; pointers into them are in `table`.
    _buffers: Vec<Buffer>,
    table: Vec<*mut f32>,
    step: StepFn,
    pool: Pool,
    /// `(from, to, floats)`: each update output and the input it replaces.
    updates: Vec<(usize, usize, usize)>,
    /// Whatever keeps the code alive (the JIT's module); nothing for linked code.
    _code: Option<Box<dyn Any>>,
}

impl Program {
    /// Allocates `layout`'s memory (zeroed) for `step`, whose contractions call `microkernel`.
    ///
    /// # Safety
    /// `step` must be the code `layout` was made for, and `microkernel` a function of the
    /// microkernel interface; both must live as long as the program (`code` may keep them).
    pub unsafe fn new(
        layout: Layout,
        step: StepFn,
        microkernel: *const u8,
        threads: usize,
        code: Option<Box<dyn Any>>,
    ) -> Program {
        let buffers: Vec<Buffer> = layout
            .buffer_floats
            .iter()
            .zip(layout.is_view())
            .map(|(&n, view)| {
                if view {
                    Buffer::empty()
                } else {
                    Buffer::zeroed(n)
                }
            })
            .collect();
        let mut table: Vec<*mut f32> = buffers.iter().map(Buffer::pointer).collect();
        table[0] = microkernel as *mut f32;
        for view in &layout.views {
            assert!(
                view.offset + layout.buffer_floats[view.slot] <= layout.buffer_floats[view.of],
                "a view lies inside its buffer"
            );
            // SAFETY: the view's floats lie inside its buffer (checked).
            table[view.slot] = unsafe { table[view.of].add(view.offset) };
        }
        let updates = layout
            .outputs
            .iter()
            .filter(|o| o.kind == OutputRole::Update)
            .filter_map(|o| {
                let input = layout.input(&o.name)?;
                (input.slot != o.slot).then_some((o.slot, input.slot, o.len()))
            })
            .collect();
        Program {
            pool: Pool::new(threads, layout.scratch_floats),
            layout,
            _buffers: buffers,
            table,
            step,
            updates,
            _code: code,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Starts or stops timing each kernel launch (see [`Program::take_launch_times`]).
    pub fn set_profiling(&mut self, on: bool) {
        self.pool.set_profiling(on);
    }

    /// The wall time of each kernel launch since profiling started or this was last called:
    /// a step's launches are `layout().kernels`, in order.
    pub fn take_launch_times(&self) -> Vec<std::time::Duration> {
        self.pool.take_launch_times()
    }

    /// The floats of table slot `slot`.
    pub fn slot(&self, slot: usize, len: usize) -> &[f32] {
        assert!(
            len <= self.layout.buffer_floats[slot],
            "a slot holds its value"
        );
        // SAFETY: the slot's buffer holds at least `len` floats (checked), and no step runs
        // while `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.table[slot], len) }
    }

    fn slot_mut(&mut self, slot: usize, len: usize) -> &mut [f32] {
        assert!(
            len <= self.layout.buffer_floats[slot],
            "a slot holds its value"
        );
        // SAFETY: as in `slot`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.table[slot], len) }
    }

    /// The output of this role and name after a step.
    pub fn output(&self, role: OutputRole, name: &str) -> Option<&[f32]> {
        let binding = self.layout.output(role, name)?;
        Some(self.slot(binding.slot, binding.len()))
    }

    /// Sets every parameter and state to its initial value: from `weights` where it has the
    /// name, else drawn as `kind` says from `seed`.
    pub fn initialize(&mut self, kind: InitKind, seed: u64, weights: &BTreeMap<String, Vec<f32>>) {
        let initial = initial_values(&self.layout.initial, kind, seed);
        for (name, values) in initial {
            let slot = self.input_mut(&name).expect("initial values are of inputs");
            match weights.get(&name) {
                Some(given) => slot.copy_from_slice(given),
                None => slot
                    .iter_mut()
                    .zip(&values)
                    .for_each(|(to, &from)| *to = from as f32),
            }
        }
    }

    /// Its parameters and state (batch-norm statistics, optimizer moments): `(name, shape)`.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.layout
            .initial
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect()
    }

    /// The buffer of an input: the images `x`, the `labels`, a parameter or state, or the
    /// scalars `lr` and `step`.
    pub fn input_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let (slot, len) = self.layout.input(name).map(|b| (b.slot, b.len()))?;
        Some(self.slot_mut(slot, len))
    }

    pub fn input(&self, name: &str) -> Option<&[f32]> {
        let binding = self.layout.input(name)?;
        Some(self.slot(binding.slot, binding.len()))
    }

    /// Runs the graph once.
    pub fn run(&mut self) {
        // SAFETY: the table points to buffers sized for every value and workspace, alive as
        // long as `self`; the pool was created with the scratch the kernels asked for; `new`'s
        // caller vouched for the code.
        unsafe { (self.step)(self.table.as_ptr(), &self.pool) }
    }

    /// Copies each `update` output into the input of its name, so the next step starts
    /// from the new parameters and state.
    pub fn apply_updates(&mut self) {
        for &(from, to, len) in &self.updates {
            // SAFETY: both buffers hold `len` floats (an update has its input's shape), and
            // distinct buffers never overlap.
            unsafe { std::ptr::copy_nonoverlapping(self.table[from], self.table[to], len) };
        }
    }

    /// The mean loss of the last run.
    pub fn loss(&self) -> f32 {
        self.output(OutputRole::Loss, "loss")
            .expect("graphs output their loss")[0]
    }

    /// The class scores of the last run, `[batch, classes]`.
    pub fn prediction(&self) -> &[f32] {
        self.output(OutputRole::Prediction, "prediction")
            .expect("graphs output their prediction")
    }

    /// The layer whose output first holds a value that is not finite, in execution order.
    pub fn first_non_finite(&self) -> Option<String> {
        self.layout
            .op_outputs
            .iter()
            .find(|op| self.slot(op.slot, op.len).iter().any(|v| !v.is_finite()))
            .map(|op| op.layer.clone())
    }
}
