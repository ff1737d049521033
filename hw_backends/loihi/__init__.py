"""Intel Loihi 2 (lava-nc) as a target: quantisation, hardware timing, placement under every per-core limit
(`connectivity`, `placement`, `resources`, `crossings`), the network file, the export, the lava-nc process graph and
its isolated runner. The target class is in `target` (registered as `loihi`). The chip itself (limits, profiles,
fixed-point arithmetic) is modelled in hardware/loihi/, which the simulator shares."""
