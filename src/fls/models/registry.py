"""The model registry: every `conf/model/<name>.yaml` name (SPEC.md §1) and how to build it."""

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
    """listed in the paper's Table 2 (starred in SPEC.md §1)"""

    def build(self, num_actions: int) -> ActorCritic:
        return ActorCritic(self.name, self.encoder(), num_actions)


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("nature_cnn", "Nature CNN", "baseline", NatureCNN, True),
    ModelSpec("daqn", "DAQN", "daqn", DAQN, True),
    ModelSpec("rs_ppo", "RS-PPO", "rs_ppo", lambda: RSPPO(pad_input=True), True),
    ModelSpec("rs_ppo_nopad", "RS-PPO w/o padding", "rs_ppo", lambda: RSPPO(pad_input=False), False),
    ModelSpec("sparse_fls", "Sparse FLS", "sparse_fls", SparseFLS, True),
    ModelSpec("sparse_fls_pool", "Sparse FLS + sum-pooling", "sparse_fls",
              lambda: SparseFLS(pool=True), True),
    ModelSpec("sparse_fls_norm", "Sparse FLS + norm", "sparse_fls",
              lambda: SparseFLS(normalize=True), False),
    ModelSpec("sparse_fls_1x1", "Sparse FLS w/ 1x1 convs", "sparse_fls",
              lambda: SparseFLS(kernel_size=1), False),
    ModelSpec("sparse_fls_sp2", "Sparse FLS w/ SoftPlus2", "sparse_fls",
              lambda: SparseFLS(softplus2=True), False),
    ModelSpec("sparse_fls_norelu", "Sparse FLS w/o final ReLU", "sparse_fls",
              lambda: SparseFLS(relu_last=False), False),
    ModelSpec("sparse_fls_norelu_pool", "Sparse FLS w/o final ReLU + sum-pooling", "sparse_fls",
              lambda: SparseFLS(pool=True, relu_last=False), False),
    ModelSpec("sparse_fls_first_conv", "Sparse + FLS after first conv layer", "sparse_fls",
              lambda: SparseFLSInsideBlock(each_conv=False), True),
    ModelSpec("sparse_fls_each_conv", "Sparse + FLS after each conv layer", "sparse_fls",
              lambda: SparseFLSInsideBlock(each_conv=True), True),
    ModelSpec("dense_fls", "Dense FLS + sum-pooling", "dense_fls", DenseFLS, True),
    ModelSpec("dense_fls_norelu", "Dense FLS w/o final ReLU + sum-pooling", "dense_fls",
              lambda: DenseFLS(relu_last=False), False),
)}


def build_model(name: str, num_actions: int) -> ActorCritic:
    """A freshly initialised model of the registry (Baselines' initialisation)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; accepted names: {', '.join(MODELS)}")
    if num_actions < 1:
        raise ValueError(f"num_actions must be >= 1, got {num_actions}")
    return MODELS[name].build(int(num_actions))
