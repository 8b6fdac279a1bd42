import os
import sys

# torch's CPU allocator maps a large output in 4 KB pages, faulted in on first write, unless
# THP_MEM_ALLOC_ENABLE asks it for transparent huge pages; normkit's host cache uses huge pages.
# Compare against torch at its best: set before torch allocates anything (an explicit value stays).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from bench.runner import main  # noqa: E402  (after the environment is set)

sys.exit(main())
