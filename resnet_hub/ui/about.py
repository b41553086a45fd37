"""The About tab: what a residual block is, and why ResNet-18 and ResNet-50 have the layers they have."""

from __future__ import annotations

import gradio as gr

from ..model import build, stage_table, weighted_layers


def about_markdown() -> str:
    parts = [
        "### What a residual block is\n"
        "A residual block computes `y = relu(F(x) + x)`: its convolutions `F` learn only the *change* to "
        "their input, and the identity shortcut `+ x` lets signal and gradients pass straight through, "
        "which is what lets 50 or 152 layers train (He et al., 2015, arXiv:1512.03385). ResNet-18 and -34 use "
        "a *basic* block (two 3x3 convolutions); ResNet-50 and deeper a *bottleneck* (1x1 reduce, 3x3, 1x1 expand)."
    ]
    for arch in ("resnet18", "resnet50"):
        model = build(arch)
        n = weighted_layers(model)
        blocks = sum(len(getattr(model, s)) for s in ("layer1", "layer2", "layer3", "layer4"))
        per_block = 2 if model.config.block == "basic" else 3
        rows = stage_table(model)
        table = "| stage | output (C, H, W) at 224 px | residual blocks | weighted layers | parameters |\n|---|---|---|---|---|\n"
        table += "\n".join(f"| {r['stage']} | {r['output (C, H, W)']} | {r['residual blocks']} | {r['weighted layers']} | "
                           f"{r['parameters']:,} |" for r in rows)
        parts.append(
            f"### Why {arch.replace('resnet', 'ResNet-')} has {n} layers\n"
            f"1 stem convolution + {blocks} blocks x {per_block} convolutions + 1 fully connected layer "
            f"= **{n}** weighted layers (the 1x1 projection shortcuts are not counted). "
            f"{sum(r['parameters'] for r in rows):,} parameters in all with ImageNet's 1000-class head (a 10-class "
            f"digit model's head is smaller: Compare counts the models it runs).\n\n{table}"
        )
    return "\n\n".join(parts)



def build_about_tab() -> None:
    with gr.Tab("About", id="about"):
        gr.Markdown(about_markdown())
