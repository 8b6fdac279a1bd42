"""Whose threads run the CPU kernels (normkit.build_info()["threading"]): the OpenMP runtime's where
normkit was built with OpenMP, one runtime shared with PyTorch in a process that loads both; normkit's
own pool with NORMKIT_THREADING=pool, in a child after fork(), or in a build without OpenMP."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import normkit
import pytest

HERE = pathlib.Path(__file__).parent


def run_script(code, timeout=300, **env):
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr
    return done.stdout


def fingerprints(threading):
    out = subprocess.run([sys.executable, str(HERE / "isa_fingerprints.py")], check=True, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, NORMKIT_THREADING=threading)).stdout
    return json.loads(out)["digests"]


def test_build_info_names_the_backend():
    assert normkit.build_info()["threading"] in ("openmp", "pool")
    assert run_script("import normkit; print(normkit.build_info()['threading'])", NORMKIT_THREADING="pool") == "pool\n"


def test_both_backends_give_the_same_bits():
    """Which thread runs a chunk never changes what it computes: every op, dtype and layout of
    isa_fingerprints.py, forward and backward, bit for bit on the OpenMP runtime and on the pool."""
    openmp, pool = fingerprints("openmp"), fingerprints("pool")
    assert len(openmp) == 4 * (2 * 3 + 4 * 2 * 5)  # (every case ran)
    differ = [case for case in openmp if pool[case] != openmp[case]]
    assert not differ, f"the pool differs from OpenMP in {len(differ)} cases, first: {differ[:3]}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
@pytest.mark.parametrize("first", ["torch", "normkit"])
def test_one_openmp_runtime_with_torch(first):
    """torch's CPU ops and normkit's share one libgomp whichever is imported first: two runtimes would
    each keep spinning threads on the same cores."""
    built = run_script("import normkit; print(normkit.build_info()['threading'])", NORMKIT_THREADING="openmp")
    if built != "openmp\n":
        pytest.skip("normkit was built without OpenMP")
    second = "normkit" if first == "torch" else "torch"
    out = run_script(f"""
        import {first}, {second}
        import numpy as np
        from normkit import functional as F
        F.layer_norm(np.ones((64, 4096), np.float32), (4096,))
        torch.ones(1 << 20).sum()
        runtimes = {{line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line}}
        print(len(runtimes), normkit.build_info()["threading"])
    """, NORMKIT_THREADING="openmp")
    assert out == "1 openmp\n"


_FORK = """
import os, pickle, sys
import numpy as np
import torch
import normkit
from normkit import functional as F
normkit.set_num_threads(2)
x = np.random.default_rng(0).normal(size=(512, 1024)).astype(np.float32)
dy = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)

def run():
    y, mean, rstd = F.layer_norm_forward(x, (1024,), None, None, 1e-5)
    return y, F.layer_norm_backward(dy, x, (1024,), mean, rstd, np.ones(1024, np.float32))[1]

if sys.argv[1] == "normkit":
    parent = run()  # normkit's threads are running now
else:
    torch.set_num_threads(2)
    torch.ones(1 << 22).mul(2)  # torch's OpenMP threads are running, normkit has run nothing parallel
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, pickle.dumps((normkit.build_info()["threading"], run())))
    os._exit(0)
os.close(write)
data = b""
while chunk := os.read(read, 1 << 20):
    data += chunk
os.waitpid(pid, 0)
backend, child = pickle.loads(data)
if sys.argv[1] != "normkit":
    parent = run()
print(backend, all(np.array_equal(a, b) for a, b in zip(parent, child)))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork()")
@pytest.mark.parametrize("parent_ran", ["normkit", "torch"])
def test_a_forked_child_computes_on_its_own_threads(parent_ran):
    """The OpenMP runtime's threads are the parent's: in the child, parallel ops run on a fresh pool
    (with the runtime's they would wait forever for threads that do not exist there), also when only
    torch had started the runtime's threads before the fork."""
    # (Its own session: on a timeout the hung child goes with the parent.)
    proc = subprocess.Popen([sys.executable, "-c", _FORK, parent_ran], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err
    assert out == "pool True\n"
