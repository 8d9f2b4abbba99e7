import pytest
import torch

from glister_train import runtime
from glister_train.config import RuntimeConfig

INTEL_AMX = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AMD_ZEN4 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
OLD_XEON = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\nbugs\t\t: avx512_bf16_is_not_a_flag_here\n"


@pytest.mark.parametrize("cpuinfo, fast", [(INTEL_AMX, True), (AMD_ZEN4, True), (OLD_XEON, False), ("", False)])
def test_native_bf16_is_read_from_the_flags_line_only(cpuinfo, fast):
    assert runtime.cpu_has_fast_bf16(cpuinfo) is fast


@pytest.mark.parametrize("fast, precision", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, fast, precision):
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: fast)
    threads = torch.get_num_threads()
    try:
        rt = runtime.resolve_runtime(RuntimeConfig(device="cpu", threads=1))
    finally:
        torch.set_num_threads(threads)
    assert rt.precision == precision
    assert runtime.resolve_runtime(RuntimeConfig(device="cpu", precision="fp32", threads=threads)).precision == "fp32"


def test_the_inference_batch_is_the_devices_default_unless_set():
    cpu = runtime.Runtime(torch.device("cpu"), "fp32", True, 1)
    gpu = runtime.Runtime(torch.device("cuda"), "bf16", True, 1)
    assert (cpu.eval_batch(0), gpu.eval_batch(0), cpu.eval_batch(200)) == (64, 256, 200)
