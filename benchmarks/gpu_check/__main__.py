"""``python benchmarks/gpu_check [STEP] [--dry]``: the whole check, or one step (harness.py)."""

import os
import sys

# benchmarks/, not this folder, on the path: the steps use its scripts (_common, stage_loop, ...) and this
# package as ``gpu_check``, and none of this folder's module names shadows a library's
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from gpu_check.harness import main  # noqa: E402

main()
