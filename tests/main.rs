//! netc's integration tests, in one binary so they build once. Data-driven: each module walks a
//! folder of inputs and compares against files beside them. Set `NETC_BLESS=1` to rewrite the
//! expected files from the current output (then review the diff).

mod cli;
mod codegen;
mod compile;
mod fuzz;
mod golden;
mod gradcheck;
mod invalid;
mod ir;
mod passes;
mod train;
mod training;
mod zoo;
