"""Script entry point: ``python bench/run.py [options]`` (same as ``python -m bench``)."""

import os
import sys

if __name__ == "__main__":
    _here = os.path.dirname(os.path.abspath(__file__))
    # Running as a script puts bench/ itself on sys.path; replace it with the
    # repository root so the modules are imported as the ``bench`` package.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # (as python -m bench: see bench/__main__.py)

    from bench.runner import main

    sys.exit(main())
