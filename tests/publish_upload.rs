//! Publishing to a running console (being written).
