"""The model registry: every `conf/model/<name>.yaml` name (docs/protocol.md#names), how to build
it, and how tables and figures name and draw it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fls.models.actor_critic import ActorCritic, Encoder
from fls.models.daqn import DAQN
from fls.models.fls import DenseFLS, SparseFLS, SparseFLSInsideBlock
from fls.models.nature_cnn import NatureCNN
from fls.models.rs_ppo import RSPPO


@dataclass(frozen=True)
class ModelSpec:
    name: str
    """config name: conf/model/<name>.yaml, run directories, table rows"""
    paper_name: str
    """the paper's row name (Tables 2-4)"""
    family: str
    """baseline | daqn | rs_ppo | sparse_fls | dense_fls (plot colours, saliency geometry)"""
    encoder: Callable[[], Encoder]
    """builds the part that differs between rows; the head is shared"""
    in_table2: bool
    """listed in the paper's Table 2"""
    colour: str
    """plot colour. The paper's colours did not survive its text extraction, so this palette
    is ours: one hue per family (baseline grey, DAQN green, RS-PPO purple, Sparse FLS reds
    and oranges, Dense FLS blues), a shade per model inside it"""
    ablates: bool = False
    """a "w/o ..." ablation: drawn dashed, so it pairs with the model it ablates (Figure 7)"""

    def build(self, num_actions: int) -> ActorCritic:
        return ActorCritic(self.name, self.encoder(), num_actions)


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("nature_cnn", "Nature CNN", "baseline", NatureCNN, True, "#4d4d4d"),
    ModelSpec("daqn", "DAQN", "daqn", DAQN, True, "#2ca02c"),
    ModelSpec("rs_ppo", "RS-PPO", "rs_ppo", lambda: RSPPO(pad_input=True), True, "#8e44ad"),
    ModelSpec("rs_ppo_nopad", "RS-PPO w/o padding", "rs_ppo", lambda: RSPPO(pad_input=False), False, "#c39bd3", ablates=True),
    ModelSpec("sparse_fls", "Sparse FLS", "sparse_fls", SparseFLS, True, "#d62728"),
    ModelSpec("sparse_fls_pool", "Sparse FLS + sum-pooling", "sparse_fls",
              lambda: SparseFLS(pool=True), True, "#ff7f0e"),
    ModelSpec("sparse_fls_norm", "Sparse FLS + norm", "sparse_fls",
              lambda: SparseFLS(normalize=True), False, "#8c564b"),
    ModelSpec("sparse_fls_1x1", "Sparse FLS w/ 1x1 convs", "sparse_fls",
              lambda: SparseFLS(kernel_size=1), False, "#e377c2"),
    ModelSpec("sparse_fls_sp2", "Sparse FLS w/ SoftPlus2", "sparse_fls",
              lambda: SparseFLS(softplus2=True), False, "#bcbd22"),
    ModelSpec("sparse_fls_norelu", "Sparse FLS w/o final ReLU", "sparse_fls",
              lambda: SparseFLS(relu_last=False), False, "#f08080", ablates=True),
    ModelSpec("sparse_fls_norelu_pool", "Sparse FLS w/o final ReLU + sum-pooling", "sparse_fls",
              lambda: SparseFLS(pool=True, relu_last=False), False, "#fdae6b", ablates=True),
    ModelSpec("sparse_fls_first_conv", "Sparse + FLS after first conv layer", "sparse_fls",
              lambda: SparseFLSInsideBlock(each_conv=False), True, "#7f0000"),
    ModelSpec("sparse_fls_each_conv", "Sparse + FLS after each conv layer", "sparse_fls",
              lambda: SparseFLSInsideBlock(each_conv=True), True, "#d95f0e"),
    ModelSpec("dense_fls", "Dense FLS + sum-pooling", "dense_fls", DenseFLS, True, "#1f77b4"),
    ModelSpec("dense_fls_norelu", "Dense FLS w/o final ReLU + sum-pooling", "dense_fls",
              lambda: DenseFLS(relu_last=False), False, "#6baed6", ablates=True),
)}


def build_model(name: str, num_actions: int) -> ActorCritic:
    """A freshly initialised model of the registry (Baselines' initialisation)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; accepted names: {', '.join(MODELS)}")
    if num_actions < 1:
        raise ValueError(f"num_actions must be >= 1, got {num_actions}")
    return MODELS[name].build(int(num_actions))
