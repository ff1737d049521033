"""Layer 0: torch-free utilities every other layer may use: typed user errors and exit codes (`errors`), the
command-line runner (`cli`), atomic outputs (`atomic`), sandboxed parsing of untrusted files (`sandbox`),
hashing (`hashing`) and library versions (`versions`). Nothing here imports torch or any package of this
project (docs/architecture.md)."""
