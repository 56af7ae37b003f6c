"""Cost measurement: UNet evaluation counting, phase timing, per-sample peak memory."""

import sys

import numpy as np
import pytest
import torch

from invbench.runtime import keep_freed_memory
from metrics import CostMeter


class CountMe(torch.nn.Module):
    def forward(self, sample, timestep, encoder_hidden_states=None):
        return sample * 2


def test_counts_latents_and_calls_per_phase():
    module = CountMe()
    meter = CostMeter(module, torch.device("cpu"))
    meter.start_sample()
    with meter.phase("a"):
        module(torch.zeros(3, 4, 2, 2), 1)
        module(sample=torch.zeros(2, 4, 2, 2), timestep=1)
    with meter.phase("b"):
        pass
    meter.close()
    module(torch.zeros(5, 4, 2, 2), 1)  # after close: not counted
    assert meter.values["a_unet_evals"] == 5 and meter.values["a_unet_calls"] == 2
    assert meter.values["b_unet_evals"] == 0 and meter.values["a_seconds"] >= 0


def test_counts_backward_passes_through_the_unet_only_where_a_gradient_flows():
    module = CountMe()
    meter = CostMeter(module, torch.device("cpu"))
    meter.start_sample()
    embedding = torch.zeros(1, requires_grad=True)
    with meter.phase("optimise"):
        for _ in range(3):  # three optimisation iterations of a batch of 2: forward and backward each
            loss = (module(torch.ones(2, 4, 2, 2) + embedding, 1) ** 2).sum()
            loss.backward()
        module(torch.ones(2, 4, 2, 2) + embedding, 1)  # a forward with a graph but no backward
        with torch.no_grad():
            module(torch.ones(5, 4, 2, 2), 1)  # a plain forward
    meter.close()
    assert meter.values["optimise_unet_evals"] == 3 * 2 + 2 + 5
    assert meter.values["optimise_unet_backward_evals"] == 3 * 2


class InnerLoss(torch.nn.Module):
    """A network whose loss is taken inside it (as pix2pix-zero's guidance on cross-attention maps), never on its
    output."""

    def forward(self, sample, timestep, encoder_hidden_states=None):
        self.inner = sample * 3
        return self.inner.detach() * 2


def test_counts_a_backward_from_a_loss_inside_the_network_once():
    """pix2pix-zero's guidance takes the gradient of a loss on attention maps with respect to the latents: no gradient
    reaches the output, yet it is a backward pass through the network (the real-size rehearsal showed 0 here)."""
    module = InnerLoss()
    meter = CostMeter(module, torch.device("cpu"))
    meter.start_sample()
    with meter.phase("edit"):
        for _ in range(2):
            latents = torch.ones(3, 4, 2, 2, requires_grad=True)
            module(latents, 1)
            torch.autograd.grad((module.inner**2).sum(), latents)
        module(torch.ones(3, 4, 2, 2, requires_grad=True), 1)  # a graph, no gradient taken
    meter.close()
    assert meter.values["edit_unet_backward_evals"] == 2 * 3
    # a gradient through the output that also reaches the input is one backward, not two
    module = CountMe()
    meter = CostMeter(module, torch.device("cpu"))
    meter.start_sample()
    with meter.phase("optimise"):
        latents = torch.ones(2, 4, 2, 2, requires_grad=True)
        (module(latents, 1) ** 2).sum().backward()
    meter.close()
    assert meter.values["optimise_unet_backward_evals"] == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-sample peak RSS needs /proc/self/clear_refs")
def test_peak_memory_is_reset_per_sample():
    """As in a job, freed memory is kept for reuse (`keep_freed_memory`): the meter gives it back first."""
    keep_freed_memory()
    meter = CostMeter(CountMe(), torch.device("cpu"))
    meter.start_sample()
    block = np.ones(400 * 2**20 // 8)  # 400 MiB, touched
    first, kind = meter.peak_memory()
    del block
    meter.start_sample()
    second, _ = meter.peak_memory()
    meter.close()
    assert kind == "cpu_peak_rss_per_sample"
    assert first - second > 300
