"""Layer 0: torch-free utilities every other layer may use: typed user errors and exit codes (`errors`), the
command-line runner (`cli`), atomic outputs (`atomic`), isolated child processes (`isolated`), sandboxed calls
(`sandbox`, with its result format `sandbox_codec`) and HDF5 parsing through them (`hdf5_read`), hashing
(`hashing`) and library versions (`versions`). Nothing here imports torch or any package of this project
(docs/architecture.md)."""
