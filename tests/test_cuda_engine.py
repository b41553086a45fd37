"""The CUDA engines (CUDA graphs, compiled + CUDA graphs): their padding on the CPU, the real thing on a GPU."""

from __future__ import annotations

import pytest
import torch

import resnet_hub
from resnet_hub import engines
from resnet_hub.engines import BUCKETS, CudaEngine, EngineError, cuda_candidates
from resnet_hub.engines.cuda_engine import bucket
from resnet_hub.metadata import Preprocessing
from resnet_hub.predict import Predictor, default_check_images

from .conftest import ARCHS, needs_gpu, randomize_batchnorm

CPU = torch.device("cpu")


def tiny_model(arch: str = "resnet18", size: int = 32) -> resnet_hub.HubResNet:
    torch.manual_seed(0)
    model = resnet_hub.create(arch, num_classes=10, preprocessing=Preprocessing(input_size=size, crop_pct=1.0))
    return randomize_batchnorm(model, 0).eval()


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float().cpu() - ref.float().cpu()).norm() / ref.float().cpu().norm()).item()


# --- on the CPU: the candidates, the buckets, the padding --------------------------------------------------


def test_a_gpu_with_bf16_gets_graphs_in_both_half_precisions_and_one_compiled_candidate():
    assert cuda_candidates(("bf16", "fp16", "fp32")) == [("cuda graphs", "bf16"), ("cuda graphs", "fp16"),
                                                          ("cuda compiled", "bf16")]
    assert cuda_candidates(("fp16", "fp32")) == [("cuda graphs", "fp16"), ("cuda compiled", "fp16")]
    assert cuda_candidates(("fp32",)) == []


def test_the_compiled_candidate_can_be_left_out(monkeypatch):
    monkeypatch.setenv("RESNET_HUB_CUDA_COMPILE", "0")
    assert cuda_candidates(("bf16", "fp16", "fp32")) == [("cuda graphs", "bf16"), ("cuda graphs", "fp16")]


def test_a_batch_is_padded_to_the_next_bucket():
    assert [bucket(n) for n in (1, 3, 8, 9, 200, 256)] == [1, 4, 8, 16, 256, 256]
    assert BUCKETS[-1] == 256


def test_the_cuda_engines_are_refused_on_a_cpu_with_a_reason():
    with pytest.raises(EngineError, match="CUDA GPU"):
        engines.build(tiny_model(), CPU, "cuda graphs", "bf16", calibration=None, cache_dir=None, weights_key="")
    with pytest.raises(EngineError, match="CUDA graphs need a CUDA GPU"):
        CudaEngine(tiny_model(), CPU, "bf16", graphs=True)
    with pytest.raises(EngineError, match="bf16 or fp16"):
        CudaEngine(tiny_model(), CPU, "fp32", graphs=False)


@pytest.mark.parametrize("n", [1, 5, 300, 520])
def test_padded_and_split_passes_give_each_image_its_own_answer(n):
    """300 images: a pass of 256 and one of 44 padded to 64; 520: two of 256 and one of 8; every row as the fp32
    model gives it, in order."""
    model = tiny_model(size=16)
    engine = CudaEngine(model, CPU, "bf16", graphs=False)
    x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(n))
    logits, features = engine(x)
    with torch.inference_mode():
        ref = model(x)
    assert logits.shape == (n, 10) and logits.dtype == torch.float32
    assert features.shape[0] == n
    assert relative_error(logits, ref) < 0.05
    assert (logits.argmax(1) == ref.argmax(1)).float().mean() > 0.9


class SameBuffers(torch.nn.Module):
    """Returns its outputs in the same buffers every call of a shape, as a replayed CUDA graph does."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.buffers = inner, {}

    def forward(self, x):
        out = self.inner(x)
        kept = self.buffers.setdefault(x.shape, tuple(t.clone() for t in out))
        for buffer, t in zip(kept, out):
            buffer.copy_(t)
        return kept


def test_a_batch_split_into_passes_of_one_shape_keeps_each_passs_answer():
    """520 images: two passes of 256 through the same buffers; the first's rows are copied out before the second."""
    model = tiny_model(size=16)
    engine = CudaEngine(model, CPU, "bf16", graphs=False)
    engine.module = SameBuffers(engine.module)
    x = torch.randn(520, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    logits = engine(x)[0]
    with torch.inference_mode():
        ref = model(x)
    assert relative_error(logits[:256], ref[:256]) < 0.05 and relative_error(logits[256:512], ref[256:512]) < 0.05


def test_logits_alone_skip_the_feature_copy():
    logits, features = CudaEngine(tiny_model(size=16), CPU, "bf16", graphs=False)(torch.randn(3, 3, 16, 16), False)
    assert logits.shape == (3, 10) and features is None


# --- on a GPU ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", ["cuda graphs fp16", "cuda graphs bf16", "cuda compiled fp16"])
def test_on_cuda_each_cuda_engine_agrees_with_fp32_at_every_batch_size(name):
    engine_name, precision = name.rsplit(" ", 1)
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = tiny_model("resnet50", size=64).cuda()
    built = engines.build(model, torch.device("cuda"), engine_name, precision, calibration=None, cache_dir=None,
                          weights_key="")
    for n in (1, 3, 16, 300, 520):  # 300: the graphs of 256 and 64; 520: the graph of 256 twice, then that of 8
        x = torch.randn(n, 3, 64, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(n))
        with torch.inference_mode():
            ref = model(x)
        logits, features = built(x)
        assert logits.shape == (n, 10) and features.shape[0] == n
        assert relative_error(logits, ref) < 0.05, n
    first = built(x)[0].clone()
    built(torch.randn(7, 3, 64, 64, device="cuda"))  # another replay must not overwrite what was handed out
    torch.testing.assert_close(built(x)[0], first)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("arch", ARCHS)
def test_on_cuda_the_predictor_checks_the_cuda_engines_and_serves_one_that_passed(arch, tmp_path):
    model = tiny_model(arch, size=64)
    predictor = Predictor(model, "cuda", cache_dir=tmp_path)
    names = {c.name for c in predictor.engine_choice.candidates}
    assert {"cuda graphs fp16", "torch fp32"} <= names
    chosen = next(c for c in predictor.engine_choice.candidates if c.name == predictor.engine_choice.chosen)
    assert chosen.passed
    x, _ = default_check_images(model, 8)
    with torch.inference_mode():
        ref = model.cuda()(x.cuda())
    assert relative_error(predictor.logits(x), ref) < 0.05
