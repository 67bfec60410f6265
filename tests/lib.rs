//! Integration tests for netc live in `main.rs` and its modules; this library is empty so the
//! package can hold them in the workspace's top-level `tests/` folder.
