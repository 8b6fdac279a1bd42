"""normkit benchmark harness (not part of the installed package).

Run from the repository root with ``python -m bench`` or ``python bench/run.py``.

Modules: ``cases`` (what is measured), ``harness`` (interleaved timing),
``bandwidth`` (in-process memory-bandwidth measurement), ``report``
(header / Markdown / JSON), ``runner`` (orchestration and CLI).
"""


def run_quick(print_fn=print):
    """Quick 2-case benchmark for the self-check; see :func:`bench.runner.run_quick`."""
    from .runner import run_quick as _run_quick

    return _run_quick(print_fn=print_fn)


def main(argv=None):
    from .runner import main as _main

    return _main(argv)


__all__ = ["run_quick", "main"]
