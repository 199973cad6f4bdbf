//! Planning problem files.
