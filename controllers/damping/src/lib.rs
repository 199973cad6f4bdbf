//! The stability layer: damps planned changes so the control loop does not flap.
