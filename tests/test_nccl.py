"""The NCCL communicator (normkit._nccl and normkit.distributed.nccl).

Without a GPU: the module is built wherever nvcc and nccl.h were, NCCL loads and makes unique ids, and
every argument check answers with a typed error instead of a crash. With one GPU: a world-size-1
communicator sums torch tensors in place on the caller's stream. With two GPUs: two processes sum
across devices. The unique-id exchange of from_torch (group vs global ranks) and from_mpi runs on CPU.
"""

import importlib
import json
import os
import subprocess
import sys
import time

import normkit
import numpy as np
import pytest
import torch

nccl = importlib.import_module("normkit.distributed.nccl")
NCCLCommunicator = nccl.NCCLCommunicator
_nccl = nccl._nccl

needs_module = pytest.mark.skipif(_nccl is None, reason="normkit was built without the NCCL module")
needs_library = pytest.mark.skipif(not nccl.is_available(), reason="no NCCL library to load")
needs_gpu = pytest.mark.skipif(
    not (nccl.is_available() and torch.cuda.is_available()), reason="needs NCCL and a CUDA device"
)
# The pinned CPU build of torch sees no GPU even where there is one: ask normkit's CUDA runtime too.
no_gpu = pytest.mark.skipif(
    normkit.cuda_available() or torch.cuda.is_available(), reason="checks the error raised without a GPU"
)


def _wheel_header():
    try:
        spec = importlib.util.find_spec("nvidia.nccl")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isfile(os.path.join(root, "include", "nccl.h")):
            return root
    return None


# ---- build and loading -----------------------------------------------------------------------------


def test_module_built_with_cuda_and_nccl_header():
    info = normkit.build_info()
    if info["nccl"]:
        mod = importlib.import_module("normkit._nccl")
        assert mod.built is True and mod.UNIQUE_ID_BYTES == 128
    else:
        assert _nccl is None
    # nvcc (a CUDA build) and the nvidia-nccl-cu13 header in this environment: the module must exist.
    if info["cuda"] and _wheel_header() and os.environ.get("NORMKIT_NCCL", "AUTO").upper() != "OFF":
        assert info["nccl"], "CUDA build with nvidia-nccl-cu13 installed, yet no _nccl module"


def test_library_path_prefers_the_wheel(monkeypatch):
    monkeypatch.delenv("NORMKIT_NCCL_LIBRARY", raising=False)
    path = nccl.nccl_library_path()
    if _wheel_header():
        assert os.path.isfile(path) and path.endswith(os.path.join("nvidia", "nccl", "lib", "libnccl.so.2"))
    else:
        assert path == "libnccl.so.2"
    monkeypatch.setenv("NORMKIT_NCCL_LIBRARY", "/opt/x/libnccl.so.2")
    assert nccl.nccl_library_path() == "/opt/x/libnccl.so.2"


@needs_library
def test_version_and_loaded_path():
    v = _nccl.version()
    assert 20000 <= v < 30000, v  # NCCL 2.x: major*10000 + minor*100 + patch
    assert _nccl.HEADER_VERSION >= 20000
    path = _nccl.loaded_path()
    assert path and os.path.exists(path)
    assert _nccl.load(None) == path  # already loaded: a no-op
    assert _nccl.load(path) == path


@needs_library
def test_unique_ids_are_128_fresh_bytes():
    a, b = NCCLCommunicator.unique_id(), _nccl.unique_id()
    assert isinstance(a, bytes) and len(a) == len(b) == 128
    assert a != b


def _python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


@needs_module
def test_missing_library_is_a_clear_runtime_error():
    r = _python("from normkit import _nccl; _nccl.load('/nonexistent/libnccl.so.2')")
    assert r.returncode == 1
    assert "RuntimeError: cannot load the NCCL library '/nonexistent/libnccl.so.2'" in r.stderr
    r = _python(
        "import importlib; m = importlib.import_module('normkit.distributed.nccl')\n"
        "assert not m.is_available()\n"
        "m.NCCLCommunicator.unique_id()",
        NORMKIT_NCCL_LIBRARY="/nonexistent/libnccl.so.2",
    )
    assert r.returncode == 1 and "RuntimeError: cannot load the NCCL library" in r.stderr, r.stderr


@needs_library
def test_second_library_is_refused():
    with pytest.raises(RuntimeError, match="already loaded"):
        _nccl.load("/nonexistent/libnccl.so.2")


# ---- argument checks (no GPU needed) ----------------------------------------------------------------


@needs_library
@pytest.mark.parametrize(
    "args, match",
    [
        ((b"x" * 5, 0, 1, 0), "unique_id must be 128 bytes"),
        ((None, 1, 1, 0), "rank must be in \\[0, 1\\), got 1"),
        ((None, -1, 2, 0), "rank must be in"),
        ((None, 0, 0, 0), "size must be at least 1"),
        ((None, 0, 1, -1), "device must be a CUDA device index"),
    ],
)
def test_bad_arguments_are_value_errors(args, match):
    uid = args[0] if args[0] is not None else _nccl.unique_id()
    with pytest.raises(ValueError, match=match):
        NCCLCommunicator(uid, *args[1:])


@needs_library
@no_gpu
def test_no_gpu_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="no usable CUDA device.*NCCL needs a GPU"):
        NCCLCommunicator(NCCLCommunicator.unique_id(), 0, 1, 0)


@needs_module
def test_buffer_checks():
    with pytest.raises(ValueError, match="buffer is in cpu memory"):
        _nccl._check_buffer(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="buffer is in cpu memory"):
        _nccl._check_buffer(torch.zeros(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="int32"):
        _nccl._check_buffer(np.zeros(4, np.int32))


def test_device_index():
    assert nccl._device_index(3) == 3
    assert nccl._device_index(np.int64(1)) == 1
    assert nccl._device_index("cuda:1") == 1
    assert nccl._device_index(torch.device("cuda", 2)) == 2
    with pytest.raises(ValueError, match="device must be"):
        nccl._device_index("cpu")
    with pytest.raises(ValueError, match="device must be"):
        nccl._device_index(torch.device("cpu"))


# ---- unique-id exchange, with a stand-in for the communicator -------------------------------------


class _Recorder(NCCLCommunicator):
    """Records what from_mpi/from_torch would construct, without NCCL's collective init (no GPU)."""

    def __init__(self, unique_id, rank, size, device):
        self.args = (bytes(unique_id), rank, size, device)


class _FakeMpiComm:
    def __init__(self, rank, size, root_value=None):
        self.rank, self.size, self.root_value = rank, size, root_value

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def bcast(self, obj, root=0):
        assert root == 0
        return obj if self.rank == 0 else self.root_value


@needs_library
def test_from_mpi_shares_rank_zeros_id():
    uid, rank, size, device = _Recorder.from_mpi(_FakeMpiComm(0, 3), device=1).args
    assert len(uid) == 128 and (rank, size, device) == (0, 3, 1)
    sent = bytes(range(128))
    assert _Recorder.from_mpi(_FakeMpiComm(2, 3, sent), device=0).args == (sent, 2, 3, 0)


def test_from_mpi_passes_rank_zeros_error_on():
    with pytest.raises(RuntimeError, match="MPI rank 0 could not make one: RuntimeError: no NCCL"):
        _Recorder.from_mpi(_FakeMpiComm(1, 2, "RuntimeError: no NCCL"), device=0)

    class Failing(_Recorder):
        @staticmethod
        def unique_id():
            raise RuntimeError("no NCCL here")

    with pytest.raises(RuntimeError, match="no NCCL here"):
        Failing.from_mpi(_FakeMpiComm(0, 2), device=0)


def _torch_exchange_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        group = dist.new_group([1, 2])  # every rank takes part in creating it
        result = {"world": list(_Recorder.from_torch(None, device=rank).args)}
        if rank in (1, 2):
            result["group"] = list(_Recorder.from_torch(group, device=rank).args)
        for k in result:
            result[k][0] = result[k][0].hex()
        with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@needs_library
def test_from_torch_uses_group_ranks(tmp_path):
    """Group [1, 2] of 3 processes: its rank 0 is global rank 1, which must make the id."""
    import torch.multiprocessing as mp

    mp.spawn(_torch_exchange_worker, args=(3, str(tmp_path / "rdv"), str(tmp_path)), nprocs=3, join=True)
    res = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(3)]
    world_ids = {r["world"][0] for r in res}
    assert len(world_ids) == 1 and len(bytes.fromhex(world_ids.pop())) == 128
    assert [r["world"][1:] for r in res] == [[0, 3, 0], [1, 3, 1], [2, 3, 2]]
    assert "group" not in res[0]
    assert res[1]["group"][0] == res[2]["group"][0] != res[0]["world"][0]
    assert [res[1]["group"][1:], res[2]["group"][1:]] == [[0, 2, 1], [1, 2, 2]]


# ---- with GPUs ---------------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_world_of_one_sums_in_place(dtype):
    comm = NCCLCommunicator(NCCLCommunicator.unique_id(), 0, 1, 0)
    assert (comm.rank, comm.size, comm.device) == (0, 1, 0)
    assert isinstance(comm._nk_handle, int) and comm._nk_handle != 0
    x = torch.randn(1000, 3, dtype=dtype, device="cuda")
    want = x.clone()
    ptr = x.data_ptr()
    assert comm.allreduce(x) is x
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):  # queued on the current (non-default) stream
        comm.allreduce(x)
    s.synchronize()
    assert x.data_ptr() == ptr
    torch.testing.assert_close(x, want, rtol=0, atol=0)
    comm.allreduce(torch.empty(0, dtype=dtype, device="cuda"))
    comm.allreduce(x, stream=torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()


@needs_gpu
def test_bad_buffers_on_gpu():
    comm = NCCLCommunicator(NCCLCommunicator.unique_id(), 0, 1, 0)
    with pytest.raises(ValueError, match="cpu memory"):
        comm.allreduce(torch.zeros(4))
    with pytest.raises(ValueError, match="contiguous"):
        comm.allreduce(torch.zeros(4, 4, device="cuda").t())
    with pytest.raises(TypeError, match="float32 or float64"):
        comm.allreduce(torch.zeros(4, device="cuda", dtype=torch.float16))
    with pytest.raises(TypeError):
        comm.allreduce(torch.zeros(4, device="cuda", dtype=torch.int32))
    with pytest.raises(RuntimeError, match="does not exist"):
        NCCLCommunicator(NCCLCommunicator.unique_id(), 0, 1, torch.cuda.device_count())


def _two_gpu_worker(rank, id_file, init_file):
    torch.cuda.set_device(rank)
    if rank == 0:
        uid = NCCLCommunicator.unique_id()
        with open(id_file + ".tmp", "wb") as f:
            f.write(uid)
        os.replace(id_file + ".tmp", id_file)  # appears whole
    else:
        deadline = time.time() + 60
        while not os.path.exists(id_file):
            assert time.time() < deadline, "rank 0 wrote no unique id"
            time.sleep(0.05)
        with open(id_file, "rb") as f:
            uid = f.read()
    comm = NCCLCommunicator(uid, rank, 2, rank)
    for dtype in (torch.float32, torch.float64):
        x = torch.arange(4097, dtype=dtype, device="cuda") * (rank + 1)
        comm.allreduce(x)
        torch.testing.assert_close(x.cpu(), torch.arange(4097, dtype=dtype) * 3, rtol=0, atol=0)

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        comm2 = NCCLCommunicator.from_torch(None, device=rank)
        assert (comm2.rank, comm2.size) == (rank, 2)
        y = torch.full((100,), float(rank + 1), device="cuda")
        comm2.allreduce(y)
        assert torch.equal(y.cpu(), torch.full((100,), 3.0))
    finally:
        dist.destroy_process_group()


@needs_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_processes_two_gpus(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_two_gpu_worker, args=(str(tmp_path / "uid"), str(tmp_path / "rdv")), nprocs=2, join=True)
