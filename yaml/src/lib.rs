//! The project's one way to read a YAML file: the exporter's config, the web config and the
//! simulator's scenario.
//!
//! [`parse`] reads the text once into a tree of [`Node`]s, each knowing its line
//! ([`tree`]). A file's settings are then checked from the tree by `check_*` functions through
//! a [`Checker`] ([`check`]), which collects *every* problem, each as
//! `file:line: field.path: message`, instead of stopping at the first as serde's derive does.
//! Durations have one syntax everywhere, Go's (as exporter-toolkit and Prometheus write them)
//! with days: [`parse_duration`].
//!
//! serde_yaml keeps no positions for values (its errors have one, and deserialization stops at
//! the first), so the tree is built on yaml-rust2's event parser, whose events carry marks.

#![forbid(unsafe_code)]

pub mod check;
mod duration;
pub mod tree;

pub use check::{Checker, Field, Map, Problem, ROOT};
pub use duration::{format_duration, parse_duration, DurationError};
pub use tree::{describe, parse, Node, Value};
