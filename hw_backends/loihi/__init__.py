"""Intel Loihi 2 (lava-nc): limits with sources (`limits`), fixed-point arithmetic (`numerics`), quantisation,
hardware timing, resource mapping, the network file, the export, the lava-nc process graph and its isolated
runner. The target class is in `target` (registered as `loihi`)."""
