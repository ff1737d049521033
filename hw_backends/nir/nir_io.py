"""The lowered IR as a standard NIR 1.0.8 graph, and back: the NIR back end's public names, from the modules that
hold them. `to_nir(graph)` builds the NIRGraph (ir_to_nir.py); `write_nir(path, graph)` writes it atomically and
`read_nir(path)` reads a file back into the IR it is the export of, checking that this IR exports to exactly the
file's nodes, parameters and edges (nir_file.py, nir_to_ir.py). The file's conventions (time step, thresholds,
layout, input): file_format.py and docs/nir.md."""
from __future__ import annotations

from .file_format import (DT, FORMAT, FORMAT_VERSION, NIRExportError, NIRReadError, model_threshold,
                          strict_threshold)
from .ir_to_nir import check_exportable, graph_metadata, to_nir, token_grid
from .nir_file import read_nir, read_nir_graph, write_nir
from .nir_to_ir import from_nir

__all__ = ["DT", "FORMAT", "FORMAT_VERSION", "NIRExportError", "NIRReadError", "check_exportable", "from_nir",
           "graph_metadata", "model_threshold", "read_nir", "read_nir_graph", "strict_threshold", "to_nir",
           "token_grid", "write_nir"]
