"""The paper's models (docs/protocol.md#names), built by name from one registry.

    model = build_model("sparse_fls", num_actions=4)
    logits, value = model(obs)                      # obs: uint8 N x 4 x 84 x 84
    logits, value, attention = model(obs, return_attention=True)
    maps = model.saliency_from_attention(attention) # N x 84 x 84, or model.saliency(obs)
"""

from fls.models.actor_critic import ActorCritic, Attention, Encoder, count_parameters
from fls.models.layers import SoftPlus2, layer_init
from fls.models.registry import MODELS, ModelSpec, build_model
from fls.models.saliency import (
    DENSE_84X84,
    FIRST_CONV_20X20,
    SPARSE_7X7,
    NoAttentionError,
    SaliencyGeometry,
    compose_each_conv,
    render_saliency,
)
from fls.models.speed import SpeedOptions, apply_speed_options, autocast_context

__all__ = [
    "MODELS", "ModelSpec", "build_model", "count_parameters",
    "ActorCritic", "Attention", "Encoder",
    "SoftPlus2", "layer_init",
    "SaliencyGeometry", "SPARSE_7X7", "FIRST_CONV_20X20", "DENSE_84X84",
    "NoAttentionError", "render_saliency", "compose_each_conv",
    "SpeedOptions", "apply_speed_options", "autocast_context",
]
