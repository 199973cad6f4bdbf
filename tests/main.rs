//! Integration tests that run the real infadaptd binary.

mod plan_cli;
