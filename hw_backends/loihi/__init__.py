"""Intel Loihi 2 (lava-nc): limits with sources (`limits`), hardware profiles (`profiles`: loihi1, loihi2),
fixed-point arithmetic (`numerics`), quantisation, hardware timing, placement under every per-core limit
(`connectivity`, `placement`, `resources`, `crossings`), the network file, the export, the lava-nc process graph
and its isolated runner. The target class is in `target` (registered as `loihi`)."""
