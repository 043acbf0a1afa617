"""Transformers' KV cache, reused: a prompt that several rows continue runs once (RM training's shared prompts,
generation's shared prefix), and its keys and values are repeated for the rows."""

from __future__ import annotations

import copy as copy_module
import inspect
from typing import Any

import torch
from torch import nn


def cache_argument(model: nn.Module) -> str | None:
    """The name under which a transformer takes its KV cache: `cache` (transformers 5.24 on), before that
    `past_key_values`; None for one that takes none."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def cache_rows(cache: Any, index: torch.Tensor, copy: bool) -> Any:
    """A cache whose row n holds `cache`'s row index[n] (each layer's keys and values are indexed: autograd
    follows). With `copy`, `cache` itself is left as it was for the next group (its layers are copied, not
    their tensors); without, it is indexed in place."""
    if copy:
        layers = [copy_module.copy(layer) for layer in cache.layers]
        cache = copy_module.copy(cache)
        cache.layers = layers
    if not hasattr(cache, "layers"):  # a cache of another shape: its own selection
        cache.batch_select_indices(index)
        return cache
    # index_select, not transformers' batch_select_indices (keys[index]): indexing's backward sums a prompt's
    # rows in a thread-dependent order on CPU (index_put_ with accumulate), index_select's in a fixed one, so
    # two runs of the same RM training give the same weights
    for layer in cache.layers:
        if layer.get_seq_length() > 0:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
    return cache
