//! TOML reading with positions.
