"""The AVX-512 and AVX2 builds of the CPU kernels give the same bits.

Why it must hold: the lane counts, blocks and summation orders are functions of the sizes alone
(cpu/lanes.h), never of the vector width, and the kernels are compiled without floating-point
contraction (-ffp-contract=off): a product is fused into an add only where math::mul_add says so,
in both builds. What a user gets does not depend on which of the two the processor runs. (The
baseline build, for processors without FMA, rounds those products and adds apart.) Each ISA runs
in its own process (NORMKIT_CPU_ISA caps the choice when the module loads)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

FMA_ISAS = ("avx2", "avx512")
HERE = pathlib.Path(__file__).parent


def fingerprints(isa, **env_vars):
    env = dict(os.environ, NORMKIT_CPU_ISA=isa, **env_vars)
    out = subprocess.run([sys.executable, str(HERE / "isa_fingerprints.py")], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_avx2_and_avx512_give_the_same_bits():
    runs = {isa: fingerprints(isa) for isa in FMA_ISAS}
    if runs["avx512"]["simd"] != "avx512":
        pytest.skip(f"this processor has no AVX-512 (best build: {runs['avx512']['simd']}): nothing to compare")
    assert runs["avx2"]["simd"] == "avx2"
    reference, got = runs["avx512"]["digests"], runs["avx2"]["digests"]
    assert len(reference) == 4 * (2 * 3 + 4 * 2 * 5)  # (every case ran)
    differ = [case for case in reference if got[case] != reference[case]]
    assert not differ, f"AVX2 differs from AVX-512 in {len(differ)} cases, first: {differ[:3]}"


def test_avx512_bf16_instructions_give_the_integer_roundings_bits():
    """The AVX-512 build rounds float to bfloat16 by AVX512-BF16 instructions where the processor has
    them, else (and with NORMKIT_CPU_BF16=emulate) by integer operations: the same bits on every layer
    (test_bf16_rounding.py checks the corner values)."""
    hardware = fingerprints("avx512")
    if hardware["simd"] != "avx512" or not hardware["bf16_instructions"]:
        pytest.skip("this processor has no AVX512-BF16: the AVX-512 build rounds by integers only")
    emulated = fingerprints("avx512", NORMKIT_CPU_BF16="emulate")
    assert emulated["bf16_instructions"] is False
    bf16 = [case for case in hardware["digests"] if "bfloat16" in case]
    assert len(bf16) == 2 * 3 + 4 * 2 * 5
    differ = [case for case in bf16 if emulated["digests"][case] != hardware["digests"][case]]
    assert not differ, f"AVX512-BF16 rounding differs from the integer rounding in {len(differ)} cases: {differ[:3]}"
