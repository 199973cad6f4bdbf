//! The planner: turns a load forecast into the best configuration per stage.
