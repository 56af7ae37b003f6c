"""What a method costs per sample: wall-clock seconds, UNet evaluations and peak memory, measured per phase.

UNet evaluations count latents pushed through the UNet (a batched call of B latents counts B; classifier-free
guidance on one branch counts 2), which does not depend on how a method batches its calls; forward calls are counted
too. Backward evaluations count the latents of UNet forwards that a gradient was taken through: from the output (an
optimisation-based inversion's loss.backward()) or, from a loss inside the network, into its input (pix2pix-zero's
guidance on attention maps); each costs about two forwards, so that optimisation is not understated. Peak memory is
the CUDA allocator's peak on GPU, and on CPU the process's peak resident set size, reset per sample through
/proc/self/clear_refs (Linux); where that reset is unavailable the value is the process-lifetime peak
and `memory_kind` says so. The largest tensor attention control materialised (maps a controller reads, contexts and
values it hands a layer) is recorded too: it is what grows with resolution.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from invbench.attention import LARGEST_CONTROLLED
from invbench.runtime import release_freed_memory

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


class CostMeter:
    def __init__(self, unet: torch.nn.Module, device: torch.device):
        self.device = device
        self.values: dict[str, float] = {}
        self._evaluations = 0
        self._calls = 0
        self._backward_evaluations = 0
        self._rss_reset = False
        self._hooks = [
            unet.register_forward_pre_hook(self._count, with_kwargs=True),
            unet.register_forward_hook(self._count_backward_later, with_kwargs=True),
        ]

    def _count(self, module, args, kwargs) -> None:
        # the latents: the first argument of a UNet (`sample`) or a transformer (`hidden_states`)
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        self._evaluations += sample.shape[0]
        self._calls += 1

    def _count_backward_later(self, module, args, kwargs, output) -> None:
        """Count this forward's latents as backward evaluations when a gradient flows back through it: from its
        output (a loss on the prediction: NTI, SPDInv), or, where none reaches the output, into its input from inside
        (a loss on attention maps, as pix2pix-zero's guidance: a backward through part of the network, counted as
        one)."""
        if not torch.is_grad_enabled():
            return
        if isinstance(output, torch.Tensor):
            prediction = output
        else:
            prediction = output.sample if hasattr(output, "sample") else output[0]
        sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
        latents = sample.shape[0]
        through_output = []

        def from_output(gradient: torch.Tensor) -> None:
            through_output.append(True)
            self._backward_evaluations += latents

        def into_input(gradient: torch.Tensor) -> None:
            if not through_output:  # the output's gradient comes first when there is one: counted there
                self._backward_evaluations += latents

        if prediction.requires_grad:
            prediction.register_hook(from_output)
        if sample.requires_grad:
            sample.register_hook(into_input)

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def start_sample(self) -> None:
        """Forget the previous sample: zero the values and reset the memory peak and the largest controlled tensor."""
        self.values = {}
        LARGEST_CONTROLLED.reset()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            release_freed_memory()  # memory a kept heap still holds would count as this sample's
            self._rss_reset = _reset_peak_rss()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase (e.g. 'inversion', 'edit') and count its UNet work; values land in `self.values`."""
        evaluations, calls, backward = self._evaluations, self._calls, self._backward_evaluations
        self._synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._synchronize()
            self.values[f"{name}_seconds"] = time.perf_counter() - start
            self.values[f"{name}_unet_evals"] = self._evaluations - evaluations
            self.values[f"{name}_unet_calls"] = self._calls - calls
            self.values[f"{name}_unet_backward_evals"] = self._backward_evaluations - backward

    def largest_controlled_mb(self) -> float:
        """The largest tensor attention control materialised or held since `start_sample` (invbench/attention.py)."""
        return LARGEST_CONTROLLED.bytes / 2**20

    def peak_memory(self) -> tuple[float, str]:
        """(megabytes, what was measured) since `start_sample`."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20, "cuda_max_allocated"
        peak_kb = _peak_rss_kb()
        if peak_kb is not None and self._rss_reset:
            return peak_kb / 1024, "cpu_peak_rss_per_sample"
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_peak_rss_process"

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # "5" resets the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


def _peak_rss_kb() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
