"""resolve_device: the devices ``experiment.device`` may name, and the refusals that say why."""

from __future__ import annotations

import pytest
import torch

from esper.workloads.factory import resolve_device


def test_cpu_is_the_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_is_cuda_when_available_else_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(ValueError, match=rf"experiment\.device='{name}' but .* no CUDA device"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_index_past_the_last_device_is_refused() -> None:
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    name = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=rf"experiment\.device='{name}' .* CUDA device\(s\)"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "nonsense", ""])
def test_a_name_torch_does_not_know_is_refused_with_the_valid_ones(name: str) -> None:
    with pytest.raises(ValueError, match=r"experiment\.device=.*use cpu, cuda, cuda:N or auto"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["meta", "xla", "mps"])
def test_a_torch_device_that_is_not_cpu_or_cuda_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"experiment\.device='{name}': only cpu, cuda"):
        resolve_device(name)
