"""Speed options for training and evaluation: channels_last, torch.compile, bf16 autocast.

Each keeps the model's numbers (tests/test_models.py checks the loss and the gradients
against fp32 eager; bf16 within looser bounds). The trainer and bench/bench_models.py use
the same two calls:

    model = apply_speed_options(build_model(...), channels_last=True, compile=True)
    with autocast_context(device, bf16=True):
        logits, value = model(obs)          # float32 outputs even under bf16
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from typing import ContextManager

import torch
import torch.nn as nn


@dataclass(frozen=True)
class SpeedOptions:
    channels_last: bool = False
    """NHWC memory format for conv weights and activations"""
    compile: bool = False
    """torch.compile the forward (in place: state_dict keys and attributes unchanged)"""
    bf16: bool = False
    """bf16 autocast for forward and loss (parameters, optimizer and outputs stay fp32)"""

    @classmethod
    def parse(cls, text: str) -> SpeedOptions:
        """'eager' (none) or names joined by '+', e.g. 'channels_last+compile+bf16'."""
        names = {f.name for f in fields(cls)}
        chosen = set() if text == "eager" else set(text.split("+"))
        if not chosen <= names:
            raise ValueError(f"speed options {text!r}: expected 'eager' or '+'-joined names of {sorted(names)}")
        return cls(**{name: True for name in chosen})

    @property
    def label(self) -> str:
        return "+".join(f.name for f in fields(self) if getattr(self, f.name)) or "eager"


def apply_speed_options(model: nn.Module, *, channels_last: bool = False, compile: bool = False,
                        compile_mode: str | None = None) -> nn.Module:
    """The same model object, converted and/or compiled; call after .to(device).

    All models share ActorCritic.forward, and dynamo recompiles one code object for at
    most 8 models per process, then silently runs eager: a process that compiles many
    models one after another (a benchmark, an evaluation loop) calls torch._dynamo.reset()
    before each.
    """
    if channels_last:
        # Weights in NHWC make the convs produce NHWC activations from the NCHW frames.
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile(mode=compile_mode)
    return model


def autocast_context(device: torch.device | str, bf16: bool) -> ContextManager:
    """bf16 autocast on `device` when asked, else a no-op context."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
