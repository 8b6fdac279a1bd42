"""normkit.build_info(), cuda_available(), set_num_threads()/get_num_threads()."""

import os

import normkit
import pytest

KEYS = {
    "version": str,
    "cuda": bool,
    "cuda_archs": list,
    "mpi": bool,
    "nccl": bool,
    "simd": str,
    "bf16_instructions": bool,
    "streaming_output_bytes": int,
    "num_threads": int,
}


def test_build_info_keys_and_types():
    info = normkit.build_info()
    assert isinstance(info, dict)
    missing = set(KEYS) - set(info)
    assert not missing, f"build_info() lacks {sorted(missing)}"
    for key, typ in KEYS.items():
        v = info[key]
        assert isinstance(v, typ), f"build_info()[{key!r}] = {v!r} is not {typ.__name__}"
        if typ is int:
            assert not isinstance(v, bool), key
    assert all(isinstance(a, str) and a for a in info["cuda_archs"])
    assert info["version"]
    assert info["simd"]
    assert info["num_threads"] >= 1


def test_build_info_is_consistent():
    info = normkit.build_info()
    if not info["cuda"]:
        assert info["cuda_archs"] == [], "CUDA architectures listed in a build without CUDA"
        assert info["nccl"] is False, "NCCL without CUDA"
    version = getattr(normkit, "__version__", None)
    if version is not None:
        assert info["version"] == version


def test_cuda_available():
    avail = normkit.cuda_available()
    assert isinstance(avail, bool)
    if not normkit.build_info()["cuda"]:
        assert avail is False
    if not any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/proc/driver/nvidia")):
        assert avail is False, "cuda_available() is True on a machine without an NVIDIA device"


@pytest.mark.parametrize("n", (1, 2, 3))
def test_set_get_num_threads(n):
    normkit.set_num_threads(n)
    assert normkit.get_num_threads() == n
    assert normkit.build_info()["num_threads"] == n


def test_build_info_reports_current_thread_count():
    assert normkit.build_info()["num_threads"] == normkit.get_num_threads()
