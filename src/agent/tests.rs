//! Paused-time tests of the agent core (filled below).
