"""The check's preflight (``python benchmarks/gpu_check preflight [--dry]``): the versions, or one line saying
what cannot import or that there is no GPU. Its imports are in its function, so that a library that fails to
import is that line."""

from __future__ import annotations

import sys


def check(dry: bool) -> int | str:
    """0 and the versions printed, or the line that fails the check (its process's exit message)."""
    try:
        import fvcore  # noqa: F401
        import mnist1d  # noqa: F401
        import optuna
        import timm
        import torch

        import nas_theseus  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return (f"preflight: cannot import {getattr(e, 'name', None) or e} ({type(e).__name__}); run "
                f"benchmarks/gpu_wheels.sh here and carry .whl")
    if not dry and not torch.cuda.is_available():
        return "preflight: no CUDA GPU here (use --dry on the CPU)"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (dry run)"
    print(f"preflight: torch {torch.__version__} (CUDA {torch.version.cuda}), optuna {optuna.__version__}, "
          f"timm {timm.__version__}, Python {sys.version.split()[0]}, {gpu}")
    return 0
