"""Hardware back ends. Importing this package registers every available target: `nir` always, `loihi` when its
package (hw_backends/loihi, which needs lava-nc) is present and imports."""
from __future__ import annotations

import importlib

from . import base
from .base import Backend, UnknownTargetError, get_backend, list_backends, register  # noqa: F401
from . import nir  # noqa: F401  (registers "nir")

__all__ = ["Backend", "UnknownTargetError", "get_backend", "list_backends", "register", "unavailable"]


def unavailable() -> dict[str, str]:
    """Target packages that are present but failed to import: name -> reason."""
    return dict(base._UNAVAILABLE)


for _name in ("loihi",):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _e:
        if _e.name != f"{__name__}.{_name}":  # the package is there but something it needs is not
            base.mark_unavailable(_name, f"{type(_e).__name__}: {_e}")
    except Exception as _e:  # noqa: BLE001 - a broken optional target must not take the others down
        base.mark_unavailable(_name, f"{type(_e).__name__}: {_e}")
