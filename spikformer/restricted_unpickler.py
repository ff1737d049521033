"""A pickle module for torch.load that rebuilds what weights_only=True rebuilds and, besides, the
`argparse.Namespace` that timm's training scripts (and so the official Spikformer ones) store under "args".

torch 2.3.1's weights_only unpickler has no way to allow one more class (torch.serialization.add_safe_globals
arrived in 2.4), so this module follows Python's documented way of restricting globals (the pickle module's
"Restricting Globals": an Unpickler whose find_class answers only for an allowlist): the allowlist is exactly
torch's own weights_only list (torch._weights_only_unpickler._get_allowed_globals) plus argparse.Namespace.
Nothing else can be looked up, so no other callable can run; a Namespace is built empty and filled with its
attributes (pickle's BUILD on an object without __setstate__ only updates __dict__), which the caller then
reduces to plain values (spikformer.checkpoint.plain)."""
from __future__ import annotations

import argparse
import pickle

from torch._weights_only_unpickler import _get_allowed_globals

EXTRA_ALLOWED = {"argparse.Namespace": argparse.Namespace}


class Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        path = f"{module}.{name}"
        allowed = _get_allowed_globals()
        if path in allowed:
            return allowed[path]
        if path in EXTRA_ALLOWED:
            return EXTRA_ALLOWED[path]
        raise pickle.UnpicklingError(f"Unsupported class {path} (only tensors, plain containers and "
                                     "argparse.Namespace are rebuilt)")


def load(file, **kwargs):
    return Unpickler(file, **kwargs).load()


Pickler = pickle.Pickler  # torch.load does not pickle; present for modules that expect it
UnpicklingError = pickle.UnpicklingError
