//! netc's criterion benchmarks live in this package's `[[bench]]` targets; this library is empty
//! so the package can sit in the workspace's top-level `benches/` folder.
