"""Run as a script: prints, as JSON, the CPU kernel build in use (and whether it rounds to bfloat16 by
AVX512-BF16 instructions) and one digest per case (op, dtype, layout) of the forward output and the
gradients, computed with the build that NORMKIT_CPU_ISA caps (test_isa_agreement.py compares the
builds, and the two roundings of the AVX-512 build)."""
import hashlib
import json

import normkit
import normkit.torch.functional as nkF
import torch

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Short planes (a quarter of the lanes, scalar tails), planes of several full lane groups, planes of
# a map run each with 32 channels (channels last: rows of whole bfloat16 vector pairs), rows that
# span two lane blocks of 4096 values, rows of whole bfloat16 vector pairs (1024 = 32 x 32); channels
# last, rows of 160 channels summed in address order over blocks of several chunks of rows.
PLANES = ((4, 16, 13, 11), (2, 8, 40, 40), (2, 32, 33, 35), (3, 160, 11, 12))
ROWS = ((37, 1000), (3, 5000), (9, 1024))


def digest(*tensors):
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            h.update(t.detach().contiguous().view(torch.uint8 if t.element_size() == 1 else torch.int16
                                                  if t.element_size() == 2 else torch.int32).numpy().tobytes())
    return h.hexdigest()[:16]


def forward_backward(fn, x, *params):
    x = x.clone().requires_grad_()
    ps = [p.clone().requires_grad_() for p in params]
    y = fn(x, *ps)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(y.dtype)
    y.backward(dy.contiguous(memory_format=torch.channels_last) if y.dim() == 4 and not y.is_contiguous() else dy)
    return digest(y, x.grad, *[p.grad for p in ps])


def cases():
    for dt in DTYPES:
        g = torch.Generator().manual_seed(1)
        for shape in ROWS:
            n = shape[-1]
            x = (torch.randn(shape, generator=g) * 2 + 1).to(dt)
            w, b = torch.randn(n, generator=g).to(dt), torch.randn(n, generator=g).to(dt)
            yield f"layer_norm {shape} {dt}", forward_backward(
                lambda x, w, b, n=n: nkF.layer_norm(x, (n,), w, b), x, w, b)
            yield f"rms_norm {shape} {dt}", forward_backward(lambda x, w, n=n: nkF.rms_norm(x, (n,), w), x, w)
        for shape in PLANES:
            for cl in (False, True):
                x = (torch.randn(shape, generator=g) * 3 + 2).to(dt)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                c = shape[1]
                w, b = torch.randn(c, generator=g).to(dt), torch.randn(c, generator=g).to(dt)
                rm, rv = torch.linspace(-1, 1, c).to(dt), torch.linspace(0.5, 2, c).to(dt)
                key = f"{shape} {dt} channels_last={cl}"
                yield f"batch_norm train {key}", forward_backward(
                    lambda x, w, b, rm=rm, rv=rv: nkF.batch_norm(x, rm.clone(), rv.clone(), w, b, training=True),
                    x, w, b)
                yield f"batch_norm eval {key}", forward_backward(
                    lambda x, w, b, rm=rm, rv=rv: nkF.batch_norm(x, rm, rv, w, b, training=False), x, w, b)
                yield f"instance_norm {key}", forward_backward(
                    lambda x, w, b: nkF.instance_norm(x, weight=w, bias=b), x, w, b)
                yield f"group_norm {key}", forward_backward(lambda x, w, b: nkF.group_norm(x, 4, w, b), x, w, b)
                yield f"local_response_norm {key}", forward_backward(lambda x: nkF.local_response_norm(x, 5), x)


if __name__ == "__main__":
    info = normkit.build_info()
    print(json.dumps({"simd": info["simd"], "bf16_instructions": info["bf16_instructions"],
                      "digests": dict(cases())}))
