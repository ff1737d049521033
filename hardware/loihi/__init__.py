"""Intel Loihi 2 (and Loihi 1) as the simulator and the Loihi backend both see it: the limits with their sources
(`limits`, docs/limits.md), the hardware profiles (`profiles`: loihi2, loihi1) and the fixed-point arithmetic
(`numerics`: state range, synaptic input, input encoding, value bounds; docs/loihi_fixed_point.md)."""
