"""normkit: normalization layers with a framework-agnostic C++/CUDA core.

Entry points:
  normkit.functional        ops on any DLPack array (NumPy in -> NumPy out, torch in -> torch out)
  normkit.numpy             layer objects with forward/backward on NumPy arrays
  normkit.torch             drop-in twins of torch.nn layers (imported on demand; needs PyTorch)
"""

from normkit import functional
from normkit._core import build_info, cuda_available, get_num_threads, set_num_threads
from normkit._core import host_cache_clear as empty_host_cache

__version__ = build_info()["version"]

__all__ = [
    "__version__",
    "build_info",
    "cuda_available",
    "empty_host_cache",
    "functional",
    "get_num_threads",
    "set_num_threads",
]
