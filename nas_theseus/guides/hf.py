"""``hf:<...>`` guides: causal language models of the GPT-2 family from Hugging Face transformers.

* ``hf:gpt2`` builds ``GPT2LMHeadModel(GPT2Config(**options))`` from the study's config table (``n_embd``,
  ``n_layer``, ``n_head``…); ``vocab_size`` defaults to the data's (256 for bytes) and ``n_positions`` to the
  context length. Untied input/output embeddings (``tie_word_embeddings = false`` by default here) keep
  every weight file a plain set of tensors.
* ``hf:<local directory>`` loads a saved model (``from_pretrained(dir, local_files_only=True)``) with
  ``weights = "pretrained"``, or only its config with ``"train"`` / ``"random"``.

The model is wrapped as a plain chain that the engine can cut: ``embed`` (token + position embedding,
dropout) -> ``parts.i`` (``group`` consecutive ``transformer.h`` blocks each, default 1) -> ``head``
(final LayerNorm, LM head): tokens (B, T) in, logits (B, T, V) out, activations (B, T, D). At load the chain
is checked against the model's own logits (max |Δ| ≤ 1e-5) and for causality (perturbing tokens after t
leaves the logits up to t unchanged). Attention runs through SDPA, which is causal when called per block.

For incremental decoding (:mod:`nas_theseus.stepping`) the chain, its embedding (a position counter) and
transformers' ``GPT2Block`` (a key/value cache; :class:`GPT2Step`) register their steps here, as do
transformers' per-position ``Conv1D`` and activation classes (by name: this module never imports
transformers at import time).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..data import TaskData
from ..errors import UserError, did_you_mean
from ..stepping import Chain, PerPosition, Stepper, Wrapper, attend_cached, empty_cache, name, register_stepper
from ..training import FitConfig
from .builtin import fit_config
from .guide import Guide
from .weights import cached_training, check_weights, describe_weights, load_weights_file

DEFAULT_FIT = FitConfig(max_epochs=30, patience=5, lr=1e-3, weight_decay=0.01, monitor="loss")
REPRODUCE_TOL = 1e-5


class _Embed(nn.Module):
    """GPT-2's input: token embedding + learned position embedding, then dropout."""

    def __init__(self, wte: nn.Embedding, wpe: nn.Embedding, drop: nn.Module):
        super().__init__()
        self.wte, self.wpe, self.drop = wte, wpe, drop

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.drop(self.wte(ids) + self.wpe(pos)[None])

    def init_state(self, batch: int, device, dtype) -> int:
        """The position of the next token."""
        return 0

    def step(self, ids, position: int):
        if position >= self.wpe.num_embeddings:
            raise UserError(f"the hf guide's embedding has {self.wpe.num_embeddings} positions; cannot decode "
                            f"token {position + 1}")
        pos = torch.full((1,), position, dtype=torch.long, device=ids.device)
        return self.drop(self.wte(ids) + self.wpe(pos)[None]), position + 1


class _Block(nn.Module):
    """A transformers block that returns only its hidden states (blocks return tuples in some versions)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        out = self.block(x)
        return out[0] if isinstance(out, tuple) else out


@register_stepper(_Block)
class _BlockStep(Wrapper):
    """The wrapped block's step."""

    child = "block"


class CausalLMChain(nn.Module):
    """embed -> parts -> head over a GPT-2-family ``*LMHeadModel`` (sharing its modules)."""

    def __init__(self, lm: nn.Module, group: int = 1):
        super().__init__()
        t = getattr(lm, "transformer", None)
        needed = ("wte", "wpe", "drop", "h", "ln_f")
        if t is None or not all(hasattr(t, a) for a in needed) or not hasattr(lm, "lm_head"):
            raise UserError(f"hf guide: {type(lm).__name__} is not a GPT-2-family LM (transformer.wte/wpe/h/ln_f, "
                            f"lm_head)")
        blocks = [_Block(b) for b in t.h]
        if group < 1 or len(blocks) % group:
            raise UserError(f"hf guide: group={group} must divide the {len(blocks)} transformer blocks")
        self.embed = _Embed(t.wte, t.wpe, t.drop)
        self.parts = nn.ModuleList(nn.Sequential(*blocks[i:i + group]) for i in range(0, len(blocks), group))
        self.head = nn.Sequential(t.ln_f, lm.lm_head)

    def forward(self, ids):
        h = self.embed(ids)
        for part in self.parts:
            h = part(h)
        return self.head(h)


@register_stepper(CausalLMChain)
def _lm_chain_step(module: CausalLMChain, path: str, build) -> Chain:
    parts = ((f"parts.{i}", p) for i, p in enumerate(module.parts))
    return Chain(module, path, build, [("embed", module.embed), *parts, ("head", module.head)])


def _gpt2_scale(block: nn.Module, path: str) -> float:
    """The attention scale of a transformers GPT2Block run per block (no mask), or a UserError where the
    decoder would not reproduce its forward.

    Under ``sdpa`` (the implementation hf guides use) transformers 5.x passes ``attn.scaling`` to
    ``F.scaled_dot_product_attention``: 1/sqrt(head_dim) if ``scale_attn_weights`` (else 1), divided by
    layer_idx + 1 if ``scale_attn_by_inverse_layer_idx``; ``reorder_and_upcast_attn`` applies only to ``eager``.
    Called without a mask, ``eager`` attention is not causal, so only ``sdpa`` is accepted; versions without
    ``attn.scaling`` only with the default scale (their sdpa path ignored the scale options).
    """
    attn = block.attn
    where = f"no incremental step for {name(path)} ({type(block).__name__})"
    impl = getattr(getattr(attn, "config", None), "_attn_implementation", None)
    if impl != "sdpa":
        raise UserError(f"{where}: attention implementation {impl!r} is not reproduced; load it with "
                        f"attn_implementation='sdpa'")
    scale = attn.head_dim ** -0.5 if attn.scale_attn_weights else 1.0
    if attn.scale_attn_by_inverse_layer_idx:
        scale /= float(attn.layer_idx + 1)
    own = getattr(attn, "scaling", None)
    default = attn.scale_attn_weights and not attn.scale_attn_by_inverse_layer_idx
    if (own is None and not default) or (own is not None and abs(own - scale) > 1e-12 * scale):
        raise UserError(f"{where}: attention scale {own} of this transformers version is not the expected "
                        f"{scale:g} (scale_attn_weights={attn.scale_attn_weights}, scale_attn_by_inverse_layer_idx="
                        f"{attn.scale_attn_by_inverse_layer_idx})")
    return scale


@register_stepper("transformers.models.gpt2.modeling_gpt2.GPT2Block")
class GPT2Step(Stepper):
    """transformers ``GPT2Block``: x + c_proj(attn(c_attn(ln_1 x))), then x + mlp(ln_2 x), with a key/value cache.

    Built from the block's submodules, not transformers' cache API; dropout is off (eval). See :func:`_gpt2_scale`
    for the configurations accepted."""

    def __init__(self, module: nn.Module, path: str, build):
        super().__init__(module, path, build)
        self.scale = _gpt2_scale(module, path)

    def init(self, batch, device, dtype):
        attn = self.module.attn
        return empty_cache(batch, attn.num_heads, attn.head_dim, device, dtype)

    def step(self, x, state):
        block, attn = self.module, self.module.attn
        b = x.shape[0]
        q, k, v = (t.view(b, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
                   for t in attn.c_attn(block.ln_1(x)).split(attn.split_size, dim=2))
        y, state = attend_cached(q, k, v, state, self.scale)
        x = x + attn.resid_dropout(attn.c_proj(y))
        return x + block.mlp(block.ln_2(x)), state


register_stepper("transformers.pytorch_utils.Conv1D", "transformers.activations.*")(PerPosition)


def _build(name: str, weights: str, options: dict):
    from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    local = Path(name).expanduser()
    if local.is_dir():
        if weights == "pretrained":
            return AutoModelForCausalLM.from_pretrained(local, local_files_only=True, attn_implementation="sdpa",
                                                        **options)
        config = AutoConfig.from_pretrained(local, local_files_only=True, **options)
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    if name != "gpt2":
        raise UserError(f"hf guide {name!r}: give 'hf:gpt2' with a config table, or 'hf:<local directory>' of a "
                        f"saved GPT-2-family model")
    if weights == "pretrained":
        raise UserError("hf:gpt2 builds a model from the study's config table; for downloaded weights save the "
                        "model to a local directory and use hf:<directory>")
    known = set(GPT2Config().to_dict())
    for key in options:
        if key not in known:  # GPT2Config would silently keep a mistyped key as an attribute
            raise UserError(f"bad hf:gpt2 config option {key!r}{did_you_mean(key, known)}")
    config = GPT2Config(**{"tie_word_embeddings": False, "bos_token_id": None, "eos_token_id": None, **options})
    return GPT2LMHeadModel(config)


def hf_guide(name: str, data: TaskData, *, weights: str = "train", seed: int = 0, fit=None,
             progress: bool = True, device: str = "auto", parts=None, stem=None, head=None, group: int = 1,
             artifacts=None, **options) -> Guide:
    if parts is not None or stem is not None or head is not None:
        raise UserError("hf guides are cut into groups of transformer blocks: use guide.options.group, not "
                        "parts / stem / head")
    if data.train.dtype.is_floating_point or len(data.sample_shape) != 1:
        raise UserError(f"hf guides read token sequences (B, T); data {data.name!r} gives {data.sample_shape}")
    check_weights(weights)
    if name == "gpt2":  # the data decide the vocabulary and the context unless the study says otherwise
        options = {"vocab_size": data.num_classes, "n_positions": data.sample_shape[0], **options}
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = _build(name, weights, options)
    lm.config.use_cache = False
    chain = CausalLMChain(lm, group)
    source = {"kind": "hf", "name": name, "options": options, "group": group, **describe_weights(weights),
              "seed": seed}
    if Path(name).expanduser().is_dir():
        # a saved model enters identities and keys by its architecture, not by the folder it lies in; the
        # architecture also rebuilds it without the folder
        source.update(name=f"dir:{Path(name).name}", directory=str(Path(name).expanduser().resolve()),
                      config=_architecture(lm.config))
    if weights == "train":
        source["cache_name"] = f"hf-{Path(name).name}"
        source["cache_key"] = cached_training(chain, name=source["cache_name"], data=data, seed=seed,
                                              key_info={"hf": source["name"], "config": source.get("config"),
                                                        "options": options, "group": group},
                                              fit=fit_config(DEFAULT_FIT, fit), device=device, progress=progress,
                                              artifacts=artifacts)
    elif weights not in ("random", "pretrained"):
        load_weights_file(chain, weights)
    lm.eval()
    probe = data.train.head(8)[0]
    _check_against_model(chain, lm, probe)
    paths = [f"parts.{i}" for i in range(len(chain.parts))]
    return Guide.from_module(chain, paths, sample_shape=data.sample_shape, stem="embed", head="head",
                             source=source, input_dtype=probe.dtype, check_input=probe,
                             tokens=True, causal=True)


@torch.no_grad()
def _check_against_model(chain: CausalLMChain, lm: nn.Module, ids: torch.Tensor) -> None:
    chain.eval()
    delta = (chain(ids) - lm(ids).logits).abs().max().item()
    if not delta <= REPRODUCE_TOL:
        raise UserError(f"hf guide: the block chain does not reproduce the model's logits (max |Δ| = {delta:.3g})")
    t = ids.shape[1] // 2
    changed = ids.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % lm.config.vocab_size
    if not torch.allclose(chain(changed)[:, :t + 1], chain(ids)[:, :t + 1], atol=1e-5):
        raise UserError("hf guide: the model's block chain is not causal (logits up to t depend on later tokens)")


def _architecture(config) -> dict:
    """A transformers config as JSON data, without what says where or with which version it was saved."""
    return {k: v for k, v in sorted(config.to_dict().items())
            if not k.startswith("_") and k not in ("transformers_version", "name_or_path")}


def rebuild_hf(source: dict) -> nn.Module:
    """The chain of an hf guide source with fresh weights (for rebuilding exports)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "config" in source:  # a saved model's architecture, recorded at load: no folder needed
            from transformers import AutoConfig, AutoModelForCausalLM

            arch = dict(source["config"])
            config = AutoConfig.for_model(arch.pop("model_type"), **arch)
            lm = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
        else:
            lm = _build(source["name"], "random", source.get("options", {}))
    return CausalLMChain(lm, source.get("group", 1))
