"""CUDA engines: the model in bf16/fp16, channels_last, BatchNorm folded, replayed from CUDA graphs, optionally
compiled by TorchInductor first.

At small batches a ResNet on a GPU waits on the CPU launching its ~60-160 kernels one by one; a CUDA graph
launches the whole pass at once. At large batches the convolutions dominate, and TorchInductor fuses what
cuDNN leaves between them (bias, ReLU, the residual add) into fewer passes over memory. Both need fixed shapes,
so a batch is padded up to the next of a few sizes (:data:`BUCKETS`): one graph, and at most one compiled
variant, per size, never one per request. Rows are independent in eval mode, so the padding changes no answer.
"""

from __future__ import annotations

import os
import threading

import torch
from torch import Tensor, nn

from ..hardware import DTYPES
from ..model import ResNet

from .base import EngineError
from .torch_engine import WithFeatures, prepare_for_inference

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # batch sizes a pass is padded up to; larger batches are split
CUDA_ENGINES = ("cuda graphs", "cuda compiled")
COMPILE_MODE = "default"  # TorchInductor's; "max-autotune-no-cudagraphs" also tries Triton convolutions (minutes)


def cuda_candidates(precisions: tuple[str, ...]) -> list[tuple[str, str]]:
    """The CUDA engines the chooser tries beside plain torch, for a GPU computing ``precisions`` fast (fastest first):
    CUDA graphs in each half precision, and the compiled model (in the fastest one only: compiling costs tens
    of seconds, and bf16 and fp16 run at the same tensor-core rate). ``RESNET_HUB_CUDA_COMPILE=0`` leaves it out."""
    half = [p for p in precisions if p in ("bf16", "fp16")]
    compiled = half[:1] if os.environ.get("RESNET_HUB_CUDA_COMPILE", "1") != "0" else []
    return [("cuda graphs", p) for p in half] + [("cuda compiled", p) for p in compiled]


def bucket(n: int) -> int:
    """The batch size a pass of ``n`` images (1 to the largest bucket) is padded up to."""
    return next(b for b in BUCKETS if b >= n)


class CudaEngine:
    """bf16/fp16 channels_last BN-folded model (``compile``: TorchInductor's) replayed from a CUDA graph per bucket.

    ``graphs=False`` runs the same padded passes without graphs: that is how the CPU tests run this code.
    """

    def __init__(self, model: ResNet, device: torch.device, precision: str, *, compile: bool = False,
                 graphs: bool | None = None, mode: str = COMPILE_MODE):
        graphs = device.type == "cuda" if graphs is None else graphs
        if graphs and device.type != "cuda":
            raise EngineError("CUDA graphs need a CUDA GPU")
        if precision not in ("bf16", "fp16"):
            raise EngineError(f"the CUDA engines run bf16 or fp16, not {precision}")
        self.device, self.precision, self.compiled, self.graphs = device, precision, compile, graphs
        self.engine = "cuda compiled" if compile else "cuda graphs"
        self.input_dtype = DTYPES[precision]
        module: nn.Module = WithFeatures(prepare_for_inference(model, device, precision))
        self.module = _compile(module, mode) if compile else module
        self._graphs: dict[tuple[int, ...], _Graph] = {}
        self._lock = threading.Lock()  # the Predictor serialises passes already; a graph's buffers are shared state

    @property
    def name(self) -> str:
        return f"{self.engine} {self.precision}"

    def __call__(self, x: Tensor, features: bool = True) -> tuple[Tensor, Tensor | None]:
        x = x.to(self.device, self.input_dtype, non_blocking=True)
        logits, feats = [], []
        with self._lock, torch.inference_mode(), _cudnn_tuned():
            for chunk in x.split(BUCKETS[-1]):
                # .float() copies out of the graph's buffers before the next replay (the next chunk's) overwrites them
                out, out_features = self._pass(chunk)
                logits.append(out.float())
                feats.append(out_features.float() if features else None)
        if len(logits) == 1:
            return logits[0], feats[0]
        return torch.cat(logits), torch.cat(feats) if features else None

    def _pass(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = len(x)
        size = bucket(n)
        if size != n:
            x = torch.cat([x, x.new_zeros((size - n, *x.shape[1:]))])
        x = x.contiguous(memory_format=torch.channels_last)
        if self.graphs:
            graph = self._graphs.get(tuple(x.shape))
            if graph is None:
                try:
                    graph = self._graphs[tuple(x.shape)] = _Graph(self.module, x)
                except Exception as e:  # noqa: BLE001 - compiling or capturing failed: the chooser refuses this engine
                    raise EngineError(f"{self.name} could not run a batch of {size}: {type(e).__name__}: {e}") from e
            logits, feats = graph.replay(x)
        else:
            logits, feats = self.module(x)
        return logits[:n], feats[:n]


class _Graph:
    """One pass of ``module`` at one input shape, captured as a CUDA graph over static input and output buffers."""

    def __init__(self, module: nn.Module, example: Tensor):
        self.input = example.clone()
        side = torch.cuda.Stream(example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):  # warm-up outside the capture: cuDNN picks its algorithms, Inductor compiles
            for _ in range(2):
                module(self.input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: other threads may use the GPU meanwhile (a fine-tune beside the app's inference)
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.output = module(self.input)

    def replay(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.input.copy_(x)
        self.graph.replay()
        return self.output


def _cudnn_tuned():
    # Fixed shapes (the buckets): cuDNN's benchmark mode times its algorithms once per shape and keeps the fastest.
    return torch.backends.cudnn.flags(enabled=True, benchmark=True)


def _compile(module: nn.Module, mode: str) -> nn.Module:
    import torch._dynamo.config as dynamo_config

    # The default limit (8) is below the bucket count: past it, a new batch size would silently run eager.
    for limit in ("recompile_limit", "cache_size_limit"):  # renamed in torch 2.6; both names still work in 2.11
        if hasattr(dynamo_config, limit):
            setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), 2 * len(BUCKETS)))
    # dynamic=None: the first bucket compiles static, a second one once with a symbolic batch for all the rest.
    return torch.compile(module, mode=None if mode == "default" else mode)
