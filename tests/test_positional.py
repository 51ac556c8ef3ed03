"""Positional encodings checked against references, never against themselves.

* Sinusoidal: the PyTorch tutorial formula (which scGPT's ``PositionalEncoding`` uses), transcribed
  below as the spec, and an independent float64 numpy evaluation of Vaswani et al.
* Rotary: Hugging Face ``transformers`` - ``ROPE_INIT_FUNCTIONS`` / ``compute_default_rope_parameters``
  for frequencies and attention factor, ``LlamaRotaryEmbedding`` + Llama's ``apply_rotary_pos_emb``
  for the half-split rotation, GPT-J's ``apply_rotary_pos_emb`` for the interleaved one. Those tests
  skip when transformers (>= 5, whose ``rope_parameters`` API they use) is not installed.
* Properties that hold for any correct RoPE: norm preservation, relative positions, cache offsets.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch

from biozoo.components.ports import Port, Ports
from biozoo.nn.positional import (
    ROPE_SCALING_TYPES,
    LearnedPositionalEncoding,
    NoPositionalEncoding,
    RotaryPositionalEncoding,
    SinusoidalPositionalEncoding,
)
from biozoo.plugins.declarations import ComponentKind

# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def tutorial_table(max_len: int, d_model: int) -> torch.Tensor:
    """The PyTorch "Language Modeling with nn.Transformer" tutorial table (as in scGPT), as the spec."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def numpy_sinusoid(positions: np.ndarray, d_model: int, base: float = 10000.0) -> np.ndarray:
    """PE(p, 2i) = sin(p / base^(2i/d)), PE(p, 2i+1) = cos(p / base^(2i/d)), in float64."""
    out = np.zeros((*positions.shape, d_model), dtype=np.float64)
    for j in range(d_model):
        angle = positions.astype(np.float64) / base ** (2 * (j // 2) / d_model)
        out[..., j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return out


def numpy_rope_half(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """Unscaled RoPE in float64, pairing dim i with i + d/2 (GPT-NeoX / Llama layout). x: [..., S, d]."""
    d = x.shape[-1]
    inv_freq = 1.0 / base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    angle = positions.astype(np.float64)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


@pytest.fixture(scope="module")
def hf() -> Any:
    """Hugging Face transformers, the rotary reference (tests using it skip when it is absent)."""
    return pytest.importorskip("transformers", minversion="5.0", exc_type=ImportError)


def hf_config(hf: Any, head_dim: int, max_positions: int, rope_parameters: dict[str, Any]) -> Any:
    return hf.LlamaConfig(
        hidden_size=2 * head_dim,
        num_attention_heads=2,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        rope_parameters=dict(rope_parameters),
    )


def hf_inv_freq(hf: Any, config: Any, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope_type = config.rope_parameters["rope_type"]
    if rope_type == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len)


def hf_rotate(hf: Any, config: Any, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, S, d]`` exactly as a transformers Llama layer does (fresh rotary module per call)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    position_ids = positions.expand(x.shape[0], -1) if positions.dim() == 1 else positions
    cos, sin = LlamaRotaryEmbedding(config)(x, position_ids)
    rotated, _ = apply_rotary_pos_emb(x, x, cos, sin)
    return rotated


def gptj_rotate(
    hf: Any, x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor, attention_factor: float
) -> torch.Tensor:
    """Rotate ``x [B, H, S, d]`` with GPT-J's interleaved ``apply_rotary_pos_emb`` (which wants [B, S, H, d])."""
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb

    angle = positions.expand(x.shape[0], -1)[..., None].float() * inv_freq
    sin, cos = angle.sin() * attention_factor, angle.cos() * attention_factor
    return apply_rotary_pos_emb(x.transpose(1, 2), sin, cos).transpose(1, 2)


# (id, our scaling, transformers rope_parameters, transformers max_position_embeddings, sequence length)
ROPE_CASES = [
    ("default", None, {"rope_type": "default", "rope_theta": 10000.0}, 128, 200),
    ("default-theta5e5", None, {"rope_type": "default", "rope_theta": 500000.0}, 128, 200),
    ("linear-2", {"type": "linear", "factor": 2.0}, {"rope_type": "linear", "factor": 2.0}, 128, 200),
    ("linear-8", {"type": "linear", "factor": 8}, {"rope_type": "linear", "factor": 8.0}, 128, 200),
    (
        "dynamic-within",
        {"type": "dynamic", "factor": 2.0, "original_max_len": 64},
        {"rope_type": "dynamic", "factor": 2.0},
        64,
        48,
    ),
    (
        "dynamic-beyond",
        {"type": "dynamic", "factor": 2.0, "original_max_len": 64},
        {"rope_type": "dynamic", "factor": 2.0},
        64,
        200,
    ),
    (
        "dynamic-beyond-f4",
        {"type": "dynamic", "factor": 4.0, "original_max_len": 64},
        {"rope_type": "dynamic", "factor": 4.0},
        64,
        150,
    ),
    (
        "yarn-4",
        {"type": "yarn", "factor": 4.0, "original_max_len": 64},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
        256,
        200,
    ),
    (  # a Llama-sized original context, so both correction dims (beta_fast and beta_slow) fall inside the head
        "yarn-4-orig4096",
        {"type": "yarn", "factor": 4.0, "original_max_len": 4096},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
        16384,
        200,
    ),
    (
        "yarn-32-orig4096-theta1e6",
        {"type": "yarn", "factor": 32.0, "original_max_len": 4096},
        {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096, "rope_theta": 1e6},
        131072,
        200,
    ),
    (
        "yarn-16-betas",
        {"type": "yarn", "factor": 16.0, "original_max_len": 128, "beta_fast": 16, "beta_slow": 2},
        {
            "rope_type": "yarn",
            "factor": 16.0,
            "original_max_position_embeddings": 128,
            "beta_fast": 16.0,
            "beta_slow": 2.0,
        },
        2048,
        300,
    ),
    (
        "yarn-attention-factor",
        {"type": "yarn", "factor": 8.0, "original_max_len": 64, "attention_factor": 1.5},
        {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64, "attention_factor": 1.5},
        512,
        100,
    ),
    (
        "yarn-no-truncate",
        {"type": "yarn", "factor": 4.0, "original_max_len": 64, "truncate": False},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "truncate": False},
        256,
        100,
    ),
]
ROPE_IDS = [case[0] for case in ROPE_CASES]


def _rope_case(hf: Any, case: tuple, head_dim: int, interleaved: bool = False) -> tuple[Any, Any, int]:
    _, scaling, rope_parameters, max_positions, seq_len = case
    params = {"rope_theta": 10000.0, **rope_parameters}
    ours = RotaryPositionalEncoding(
        head_dim, max_len=max_positions, base=params["rope_theta"], scaling=scaling, interleaved=interleaved
    )
    return ours, hf_config(hf, head_dim, max_positions, params), seq_len


# ---------------------------------------------------------------------------------------------
# Sinusoidal
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d_model", [8, 64, 512])
def test_sinusoidal_is_bit_identical_to_the_tutorial_table(d_model: int) -> None:
    pe = SinusoidalPositionalEncoding(d_model, max_len=300)
    x = torch.randn(2, 300, d_model)
    expected = x + tutorial_table(300, d_model)
    assert torch.equal(pe(x), expected)
    assert torch.equal(pe(torch.zeros(1, 17, d_model))[0], tutorial_table(300, d_model)[:17])


@pytest.mark.parametrize("d_model", [6, 7, 128])
def test_sinusoidal_matches_numpy_float64(d_model: int) -> None:
    pe = SinusoidalPositionalEncoding(d_model, max_len=5000)
    out = pe(torch.zeros(1, 5000, d_model, dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(out, numpy_sinusoid(np.arange(5000), d_model), rtol=0, atol=1e-9)
    short = pe(torch.zeros(1, 64, d_model))[0].numpy()  # float32 path, small angles
    np.testing.assert_allclose(short, numpy_sinusoid(np.arange(64), d_model), rtol=0, atol=1e-5)


def test_sinusoidal_custom_base_matches_numpy() -> None:
    pe = SinusoidalPositionalEncoding(16, max_len=100, base=500.0)
    out = pe(torch.zeros(1, 100, 16, dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(out, numpy_sinusoid(np.arange(100), 16, base=500.0), rtol=0, atol=1e-12)


def test_sinusoidal_explicit_positions() -> None:
    pe = SinusoidalPositionalEncoding(32, max_len=64)
    table = tutorial_table(64, 32)
    x = torch.randn(2, 5, 32)
    per_batch = torch.tensor([[0, 1, 2, 3, 4], [10, 20, 30, 40, 63]])
    assert torch.equal(pe(x, per_batch), x + table[per_batch])
    shared = torch.tensor([5, 4, 3, 2, 1])
    assert torch.equal(pe(x, shared), x + table[shared])
    # Out-of-order calls must not be served a stale, shorter table.
    assert torch.equal(pe(torch.zeros(1, 64, 32))[0], table)


def test_sinusoidal_keeps_dtype_and_supports_autograd_after_inference_mode() -> None:
    pe = SinusoidalPositionalEncoding(16, max_len=32)
    with torch.inference_mode():
        pe(torch.zeros(1, 8, 16))
    x = torch.randn(1, 8, 16, requires_grad=True)
    (pe(x) * torch.randn(1, 8, 16)).sum().backward()
    assert x.grad is not None
    out = pe(torch.zeros(1, 8, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), tutorial_table(32, 16)[:8][None], rtol=0, atol=1e-2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda pe: pe(torch.zeros(1, 65, 8)), "exceeds max_len=64"),
        (lambda pe: pe(torch.zeros(1, 3, 8), torch.tensor([0, 1, 64])), "out of range"),
        (lambda pe: pe(torch.zeros(1, 3, 8), torch.tensor([0, -1, 2])), ">= 0"),
        (lambda pe: pe(torch.zeros(1, 3, 8), torch.tensor([0.0, 1.0, 2.0])), "integer"),
        (lambda pe: pe(torch.zeros(1, 3, 8), [0, 1, 2]), "integer tensor"),
        (lambda pe: pe(torch.zeros(1, 3, 8), torch.arange(4)), r"shape \(4,\)"),
        (lambda pe: pe(torch.zeros(2, 3, 8), torch.zeros(3, 3, dtype=torch.long)), r"\[2, 3\]"),
        (lambda pe: pe(torch.zeros(3, 8)), r"\[B, T, 8\]"),
        (lambda pe: pe(torch.zeros(1, 3, 9)), r"\[B, T, 8\]"),
    ],
)
def test_sinusoidal_bad_inputs(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(SinusoidalPositionalEncoding(8, max_len=64))


@pytest.mark.parametrize("kwargs", [{"d_model": 0}, {"d_model": 8, "max_len": 0}, {"d_model": 8, "base": -1.0}])
def test_sinusoidal_bad_config(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SinusoidalPositionalEncoding(**kwargs)


# ---------------------------------------------------------------------------------------------
# Learned and none
# ---------------------------------------------------------------------------------------------


def test_learned_adds_embedding_rows() -> None:
    pe = LearnedPositionalEncoding(8, max_len=10)
    x = torch.randn(2, 4, 8)
    torch.testing.assert_close(pe(x), x + pe.embedding.weight[:4])
    positions = torch.tensor([[9, 8, 7, 6], [0, 0, 1, 1]])
    torch.testing.assert_close(pe(x, positions), x + pe.embedding.weight[positions])
    assert list(pe.state_dict()) == ["embedding.weight"]
    assert pe(x.to(torch.bfloat16)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="exceeds max_len=10"):
        pe(torch.zeros(1, 11, 8))
    with pytest.raises(ValueError, match="out of range"):
        pe(torch.zeros(1, 2, 8), torch.tensor([3, 10]))


def test_learned_under_meta_then_loaded_on_cpu() -> None:
    with torch.device("meta"):
        pe = LearnedPositionalEncoding(8, max_len=10)
    assert pe.embedding.weight.is_meta
    pe = pe.to_empty(device="cpu")
    weight = torch.randn(10, 8)
    pe.load_state_dict({"embedding.weight": weight})
    torch.testing.assert_close(pe(torch.zeros(1, 3, 8))[0], weight[:3])


def test_no_positional_encoding_is_identity() -> None:
    pe = NoPositionalEncoding(16)
    x = torch.randn(2, 3, 16)
    assert pe(x) is x
    assert pe(x, torch.arange(3)) is x
    assert pe.state_dict() == {}


# ---------------------------------------------------------------------------------------------
# Component contract
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "mode"),
    [
        (NoPositionalEncoding(), "none"),
        (SinusoidalPositionalEncoding(8), "additive"),
        (LearnedPositionalEncoding(8, 4), "additive"),
        (RotaryPositionalEncoding(8), "rotary"),
    ],
)
def test_kind_and_mode(module: Any, mode: str) -> None:
    assert module.kind is ComponentKind.POSITIONAL_ENCODING
    assert module.mode == mode == type(module).mode


def test_ports() -> None:
    hidden = Port("hidden", "hidden", ("B", "T", 32))
    for module in (NoPositionalEncoding(32), SinusoidalPositionalEncoding(32), LearnedPositionalEncoding(32, 8)):
        assert module.ports() == Ports(inputs=(hidden,), outputs=(hidden,))
    assert NoPositionalEncoding().ports().inputs[0].shape == ("B", "T", "D")  # width unknown: symbolic
    assert RotaryPositionalEncoding(16).ports() == Ports()


def test_tables_never_enter_state_dict() -> None:
    sinusoidal = SinusoidalPositionalEncoding(16, max_len=32)
    rotary = RotaryPositionalEncoding(16, scaling={"type": "yarn", "factor": 4.0})
    assert sinusoidal.state_dict() == {} and rotary.state_dict() == {}
    sinusoidal(torch.zeros(1, 8, 16))
    rotary.rotate(torch.zeros(1, 2, 8, 16), torch.zeros(1, 1, 8, 16))
    assert sinusoidal.state_dict() == {} and rotary.state_dict() == {}
    assert list(sinusoidal.buffers()) == [] and list(rotary.buffers()) == []
    sinusoidal.load_state_dict({}, strict=True)
    rotary.load_state_dict({}, strict=True)


def test_meta_construction_then_cpu_use() -> None:
    scaling = {"type": "yarn", "factor": 4.0, "original_max_len": 32}
    with torch.device("meta"):
        sinusoidal = SinusoidalPositionalEncoding(16, max_len=64)
        rotary = RotaryPositionalEncoding(16, max_len=128, scaling=scaling)
    x = torch.randn(2, 40, 16)
    assert torch.equal(sinusoidal(x), x + tutorial_table(64, 16)[:40])
    q, k = torch.randn(2, 4, 40, 16), torch.randn(2, 2, 40, 16)
    got = rotary.rotate(q, k)
    want = RotaryPositionalEncoding(16, max_len=128, scaling=scaling).rotate(q, k)
    assert all(t.device.type == "cpu" for t in got)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_module_to_and_deepcopy_still_work() -> None:
    rotary = RotaryPositionalEncoding(16)
    q = torch.randn(1, 1, 4, 16, dtype=torch.float64)
    before = rotary.rotate(q, q)[0]
    moved = copy.deepcopy(rotary).to(torch.float64).to("cpu")
    assert torch.equal(moved.rotate(q, q)[0], before)


# ---------------------------------------------------------------------------------------------
# Rotary against transformers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ROPE_CASES, ids=ROPE_IDS)
@pytest.mark.parametrize("head_dim", [16, 64, 128])
def test_rope_frequencies_and_attention_factor_match_transformers(hf: Any, case: tuple, head_dim: int) -> None:
    ours, config, seq_len = _rope_case(hf, case, head_dim)
    want_inv_freq, want_factor = hf_inv_freq(hf, config, seq_len=seq_len)
    torch.testing.assert_close(ours.inverse_frequencies(seq_len), want_inv_freq, rtol=1e-6, atol=0)
    assert ours.attention_factor == pytest.approx(want_factor, rel=1e-12)


@pytest.mark.parametrize("case", ROPE_CASES, ids=ROPE_IDS)
def test_rope_rotation_matches_transformers_llama(hf: Any, case: tuple) -> None:
    ours, config, seq_len = _rope_case(hf, case, head_dim=32)
    torch.manual_seed(0)
    q, k = torch.randn(2, 4, seq_len, 32), torch.randn(2, 2, seq_len, 32)  # GQA: fewer key heads
    got_q, got_k = ours.rotate(q, k)
    positions = torch.arange(seq_len)
    # float32 angles reach ~seq_len radians, so an ulp of frequency moves values by ~seq_len * 6e-8.
    torch.testing.assert_close(got_q, hf_rotate(hf, config, q, positions), rtol=0, atol=5e-5)
    torch.testing.assert_close(got_k, hf_rotate(hf, config, k, positions), rtol=0, atol=5e-5)


@pytest.mark.parametrize("case", ROPE_CASES, ids=ROPE_IDS)
def test_rope_interleaved_matches_transformers_gptj(hf: Any, case: tuple) -> None:
    ours, config, seq_len = _rope_case(hf, case, head_dim=32, interleaved=True)
    inv_freq, attention_factor = hf_inv_freq(hf, config, seq_len=seq_len)
    torch.manual_seed(1)
    q, k = torch.randn(2, 3, seq_len, 32), torch.randn(2, 3, seq_len, 32)
    got_q, got_k = ours.rotate(q, k)
    positions = torch.arange(seq_len)[None]
    torch.testing.assert_close(got_q, gptj_rotate(hf, q, positions, inv_freq, attention_factor), rtol=0, atol=5e-5)
    torch.testing.assert_close(got_k, gptj_rotate(hf, k, positions, inv_freq, attention_factor), rtol=0, atol=5e-5)


def test_rope_interleaved_default_matches_gptj_own_table(hf: Any) -> None:
    from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb, create_sinusoidal_positions

    seq_len, head_dim = 100, 64
    sin, cos = torch.chunk(create_sinusoidal_positions(seq_len, head_dim)[None], 2, dim=-1)
    q = torch.randn(2, 4, seq_len, head_dim)
    want = apply_rotary_pos_emb(q.transpose(1, 2), sin, cos).transpose(1, 2)
    got, _ = RotaryPositionalEncoding(head_dim, interleaved=True).rotate(q, q)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)


def test_rope_explicit_and_cached_positions_match_transformers(hf: Any) -> None:
    config = hf_config(hf, 32, 128, {"rope_type": "default", "rope_theta": 10000.0})
    ours = RotaryPositionalEncoding(32, max_len=128)
    q = torch.randn(2, 4, 6, 32)
    positions = torch.tensor([[0, 0, 1, 2, 3, 4], [7, 8, 9, 10, 11, 12]])  # e.g. left padding, packed docs
    got, _ = ours.rotate(q, q, positions=positions)
    torch.testing.assert_close(got, hf_rotate(hf, config, q, positions), rtol=0, atol=1e-5)
    # One decoding step: one new query/key at position 37, rotated before the key joins the cache.
    step = torch.randn(2, 4, 1, 32)
    got, _ = ours.rotate(step, step, offset=37)
    torch.testing.assert_close(got, hf_rotate(hf, config, step, torch.tensor([37])), rtol=0, atol=1e-5)


def test_ntk_matches_published_formula_and_transformers_dynamic(hf: Any) -> None:
    """transformers has no static NTK-aware type; its dynamic NTK base, base * (f*s/L - (f-1))^(d/(d-2)),
    equals the NTK-aware base * f^(d/(d-2)) exactly when s = L * (2 - 1/f), so compare there. Also check
    against the published formula (bloc97, "NTK-aware scaled RoPE") evaluated in float64 numpy."""
    head_dim, original, factor = 32, 64, 4.0
    ours = RotaryPositionalEncoding(head_dim, max_len=original, scaling={"type": "ntk", "factor": factor})
    ntk_base = 10000.0 * factor ** (head_dim / (head_dim - 2))
    published = 1.0 / ntk_base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    np.testing.assert_allclose(ours.inverse_frequencies().double().numpy(), published, rtol=1e-6)

    coincide = int(original * (2 - 1 / factor))  # 112
    config = hf_config(hf, head_dim, original, {"rope_type": "dynamic", "factor": factor, "rope_theta": 10000.0})
    want, _ = hf_inv_freq(hf, config, seq_len=coincide)
    torch.testing.assert_close(ours.inverse_frequencies(), want, rtol=1e-6, atol=0)
    q = torch.randn(1, 2, coincide, head_dim)
    got, _ = ours.rotate(q, q)
    torch.testing.assert_close(got, hf_rotate(hf, config, q, torch.arange(coincide)), rtol=0, atol=5e-5)


# ---------------------------------------------------------------------------------------------
# Rotary properties (no reference library needed)
# ---------------------------------------------------------------------------------------------

SCALINGS = [
    None,
    {"type": "linear", "factor": 4.0},
    {"type": "ntk", "factor": 4.0},
    {"type": "dynamic", "factor": 2.0, "original_max_len": 16},
    {"type": "yarn", "factor": 8.0, "original_max_len": 16},
]
SCALING_IDS = ["none", "linear", "ntk", "dynamic", "yarn"]


def test_rope_float64_matches_numpy_at_long_positions() -> None:
    positions = np.array([0, 1, 2, 1000, 4095, 65535])
    x = np.random.default_rng(0).standard_normal((2, 3, len(positions), 64))
    got, _ = RotaryPositionalEncoding(64, base=500000.0).rotate(
        torch.from_numpy(x), torch.from_numpy(x), positions=torch.from_numpy(positions)
    )
    np.testing.assert_allclose(got.numpy(), numpy_rope_half(x, positions, 500000.0), rtol=0, atol=1e-9)


@pytest.mark.parametrize("scaling", SCALINGS, ids=SCALING_IDS)
@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_preserves_norms_up_to_attention_factor(scaling: dict | None, interleaved: bool) -> None:
    rope = RotaryPositionalEncoding(32, max_len=16, scaling=scaling, interleaved=interleaved)
    q, k = torch.randn(2, 4, 50, 32, dtype=torch.float64), torch.randn(2, 1, 70, 32, dtype=torch.float64)
    rq, rk = rope.rotate(q, k)
    scale = rope.attention_factor
    assert (scale == 1.0) == (scaling is None or scaling["type"] != "yarn")
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1) * scale, rtol=1e-12, atol=0)
    torch.testing.assert_close(rk.norm(dim=-1), k.norm(dim=-1) * scale, rtol=1e-12, atol=0)


@pytest.mark.parametrize("scaling", [s for s in SCALINGS if s is None or s["type"] != "dynamic"])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_scores_depend_only_on_relative_position(scaling: dict | None, interleaved: bool) -> None:
    rope = RotaryPositionalEncoding(32, max_len=16, scaling=scaling, interleaved=interleaved)
    u, v = torch.randn(32, dtype=torch.float64), torch.randn(32, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        q = u.expand(1, 1, 1, 32)
        k = v.expand(1, 1, 1, 32)
        rq, rk = rope.rotate(q, k, positions=torch.tensor([m]), k_positions=torch.tensor([n]))
        return float((rq * rk).sum())

    for m, n in [(3, 1), (10, 25), (0, 7)]:
        for shift in (1, 100, 5000):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), rel=1e-9, abs=1e-9)
    assert score(5, 0) != pytest.approx(score(0, 5), rel=1e-6)  # but it does depend on the sign and size


def test_rope_interleaved_is_half_split_on_permuted_dims() -> None:
    d = 16
    perm = torch.cat((torch.arange(0, d, 2), torch.arange(1, d, 2)))  # pairs (2i, 2i+1) -> (i, i + d/2)
    x = torch.randn(2, 3, 20, d, dtype=torch.float64)
    half, _ = RotaryPositionalEncoding(d).rotate(x[..., perm], x[..., perm])
    interleaved, _ = RotaryPositionalEncoding(d, interleaved=True).rotate(x, x)
    torch.testing.assert_close(interleaved, half[..., torch.argsort(perm)], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scaling", [s for s in SCALINGS if s is None or s["type"] != "dynamic"])
def test_rope_incremental_decoding_equals_full_sequence(scaling: dict | None) -> None:
    rope = RotaryPositionalEncoding(16, max_len=8, scaling=scaling)
    q, k = torch.randn(1, 2, 30, 16), torch.randn(1, 1, 30, 16)
    full_q, full_k = rope.rotate(q, k)
    for start in (0, 7, 8, 29):  # positions inside and beyond the first cache
        step_q, step_k = rope.rotate(q[:, :, start : start + 1], k[:, :, start : start + 1], offset=start)
        torch.testing.assert_close(step_q, full_q[:, :, start : start + 1], rtol=0, atol=1e-6)
        torch.testing.assert_close(step_k, full_k[:, :, start : start + 1], rtol=0, atol=1e-6)


def test_rope_default_positions_are_per_tensor_and_explicit_ones_cover_full_history() -> None:
    rope = RotaryPositionalEncoding(16)
    q, k = torch.randn(1, 2, 3, 16), torch.randn(1, 2, 10, 16)
    got_q, got_k = rope.rotate(q, k, offset=4)
    want_q, want_k = rope.rotate(q, k, positions=torch.arange(4, 7), k_positions=torch.arange(4, 14))
    assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k)
    # k holds the whole un-rotated history, q the last 3 tokens: align q to the end explicitly.
    full_q, full_k = rope.rotate(torch.cat((torch.randn(1, 2, 7, 16), q), dim=2), k)
    tail_q, tail_k = rope.rotate(q, k, positions=torch.arange(7, 10), k_positions=torch.arange(10))
    assert torch.equal(tail_q, full_q[:, :, 7:]) and torch.equal(tail_k, full_k)


def test_rope_dynamic_uses_one_base_for_q_and_k_from_the_longest_position() -> None:
    scaling = {"type": "dynamic", "factor": 2.0, "original_max_len": 16}
    rope = RotaryPositionalEncoding(16, max_len=16, scaling=scaling)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 40, 16, dtype=torch.float64)
    got_q, got_k = rope.rotate(q, k, positions=torch.tensor([39]), k_positions=torch.arange(40))
    # Same as rotating the full 40-long sequence: the base is set by s = 40 for both tensors.
    full_q, full_k = rope.rotate(torch.cat((torch.zeros(1, 1, 39, 16, dtype=torch.float64), q), 2), k)
    torch.testing.assert_close(got_q, full_q[:, :, -1:], rtol=0, atol=1e-12)
    torch.testing.assert_close(got_k, full_k, rtol=0, atol=1e-12)
    # Within the original context the base is unscaled.
    torch.testing.assert_close(rope.inverse_frequencies(16), RotaryPositionalEncoding(16).inverse_frequencies())
    assert not torch.allclose(rope.inverse_frequencies(17), RotaryPositionalEncoding(16).inverse_frequencies())


def test_rope_dtypes_and_autograd_after_inference_mode() -> None:
    rope = RotaryPositionalEncoding(16, scaling={"type": "yarn", "factor": 4.0, "original_max_len": 8})
    with torch.inference_mode():
        rope.rotate(torch.randn(1, 1, 4, 16), torch.randn(1, 1, 4, 16))
    q = torch.randn(1, 2, 4, 16, requires_grad=True)
    rq, _ = rope.rotate(q, q.detach())
    rq.sum().backward()
    assert q.grad is not None
    half_q, half_k = rope.rotate(q.detach().bfloat16(), q.detach().half())
    assert half_q.dtype == torch.bfloat16 and half_k.dtype == torch.float16
    torch.testing.assert_close(half_q.float(), rq.detach(), rtol=2e-2, atol=2e-2)


def test_rope_forward_points_to_rotate() -> None:
    with pytest.raises(RuntimeError, match=r"rotate\(q, k"):
        RotaryPositionalEncoding(16)(torch.zeros(1, 4, 16))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_dim": 15}, "even"),
        ({"head_dim": 0}, "positive"),
        ({"head_dim": 16, "max_len": -1}, "positive"),
        ({"head_dim": 16, "base": 1.0}, "base"),
        ({"head_dim": 16, "scaling": {"type": "longrope", "factor": 2.0}}, "valid types are default, linear, ntk"),
        ({"head_dim": 16, "scaling": {"type": "linear"}}, "factor"),
        ({"head_dim": 16, "scaling": {"type": "linear", "factor": 0}}, "factor"),
        ({"head_dim": 16, "scaling": {"type": "yarn", "factor": 2.0, "beta-fast": 8}}, "unknown keys"),
        ({"head_dim": 16, "scaling": {"type": "linear", "factor": 2.0, "original_max_len": 8}}, "unknown keys"),
        ({"head_dim": 16, "scaling": {"type": "dynamic", "factor": 2.0, "original_max_len": 0}}, "original_max_len"),
        ({"head_dim": 2, "scaling": {"type": "ntk", "factor": 2.0}}, "head_dim > 2"),
    ],
)
def test_rope_bad_config(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RotaryPositionalEncoding(**kwargs)


def test_rope_accepts_hugging_face_spellings() -> None:
    hf_style = RotaryPositionalEncoding(
        16, scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}
    )
    ours = RotaryPositionalEncoding(16, scaling={"type": "yarn", "factor": 4.0, "original_max_len": 32})
    assert torch.equal(hf_style.inverse_frequencies(), ours.inverse_frequencies())
    assert set(ROPE_SCALING_TYPES) == {"default", "linear", "ntk", "dynamic", "yarn"}


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((torch.zeros(1, 2, 4, 8), torch.zeros(1, 2, 4, 16)), {}, r"q must be .*\[B, H, S, 16\]"),
        ((torch.zeros(2, 4, 16), torch.zeros(1, 2, 4, 16)), {}, "q must be"),
        ((torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 16, dtype=torch.long)), {}, "k must be a floating"),
        ((torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 16)), {"offset": -1}, "non-negative"),
        ((torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 16)), {"positions": torch.arange(5)}, r"\[4\]"),
        ((torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 16)), {"positions": torch.arange(4.0)}, "integer"),
        ((torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 16)), {"positions": torch.arange(-1, 3)}, ">= 0"),
        ((torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 6, 16)), {"positions": torch.arange(4)}, "k_positions"),
        ((torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 16)), {"k_positions": torch.arange(4)}, "positions for q"),
        (
            (torch.zeros(1, 2, 4, 16), torch.zeros(1, 2, 4, 16)),
            {"positions": torch.arange(4), "offset": 2},
            "not both",
        ),
    ],
)
def test_rope_bad_inputs(args: tuple, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RotaryPositionalEncoding(16).rotate(*args, **kwargs)
