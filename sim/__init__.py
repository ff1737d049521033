"""Layer 4: the simulator engine for IR graphs, in float reference semantics or Loihi fixed point (the numeric
mode is stated by the caller; a Build says which its graph needs)."""
