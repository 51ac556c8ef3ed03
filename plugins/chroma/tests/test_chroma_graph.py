"""The feature graph and graph network against the reference (generate-chroma 1.0.0) on random weights.

The golden files come from ``scripts/make_chroma_graph_golden.py`` (see golden/PROVENANCE.md): public-like
encoder configurations, chain layouts with gaps (C < 0), several chains and padding. Run this file as a script
to print the parity table that docs/chroma.md quotes:

    .venv/bin/python plugins/chroma/tests/test_chroma_graph.py
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch

from biozoo.nn.checks import ConfigError
from biozoo_chroma.graph import (
    GraphNN,
    ProteinFeatureGraph,
    ProteinGraph,
    convert_reference_state_dict,
    edge_mask_causal,
    permute_graph_embeddings,
    reference_key,
    split_encoder_kwargs,
)
from biozoo_chroma.graph.feature_graph import parse_feature
from biozoo_chroma.graph.features import EDGE_FEATURES, NODE_FEATURES

GOLDEN = Path(__file__).parent / "golden"
ENCODERS = ["backbone", "design"]
SEEDS = {"backbone": 20260110, "design": 20260120}  # the golden script's seed per encoder (SEED + 10 i)
TOL = 1e-5  # fp32 max |difference|, features of magnitude up to ~25


@cache
def golden(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of ``chroma_graph_{name}.safetensors``."""
    st = pytest.importorskip("safetensors")
    path = GOLDEN / f"chroma_graph_{name}.safetensors"
    with st.safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())  # noqa: SIM118 (not a dict)


def reference_state(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("ref."): v for k, v in d.items() if k.startswith("ref.")}


def sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def encoder(name: str) -> tuple[ProteinFeatureGraph, GraphNN]:
    """Our feature graph and GNN, built from the golden init_kwargs and loaded strictly with its weights."""
    d, meta = golden(name)
    fg_kwargs, gnn_kwargs = split_encoder_kwargs(json.loads(meta["init_kwargs"]))
    fg, gnn = ProteinFeatureGraph(**fg_kwargs).eval(), GraphNN(**gnn_kwargs).eval()
    state = convert_reference_state_dict(reference_state(d))
    fg.load_state_dict(sub_state(state, "feature_graph."), strict=True)
    gnn.load_state_dict(sub_state(state, "gnn."), strict=True)
    return fg, gnn


def worst(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.detach().float() - b.detach().float()).abs().max())


# Each check returns {what: worst |difference|}; edge indices count mismatching entries (must be 0).


def check_graphs() -> dict[str, float]:
    """Graph-only cases: kNN under every option, and random graphs (deterministic, injected noise, seeded)."""
    d, meta = golden("features")
    X, C = d["graphs.X"], d["graphs.C"]
    out = {}
    for name, options in json.loads(meta["graph_options"]).items():
        builder = ProteinGraph(**options)
        want_idx, want_mask = d[f"graphs.{name}.edge_idx"].long(), d[f"graphs.{name}.mask_ij"]
        runs = {"": {}}
        if f"graphs.{name}.noise" in d:
            runs = {" (injected noise)": {"noise": d[f"graphs.{name}.noise"]}, " (global seed)": {}}
        for label, kwargs in runs.items():
            torch.manual_seed(20260110)  # the script's SEED: a seeded draw must match too
            edge_idx, mask_ij = builder(X, C, **kwargs)
            out[f"edge_idx {name}{label}"] = float((edge_idx != want_idx).sum())
            out[f"mask_ij {name}{label}"] = worst(mask_ij, want_mask)
    return out


def check_encoder_graph(name: str) -> dict[str, float]:
    d, _ = golden(name)
    fg, _ = encoder(name)
    X, C, builder = d["X"], d["C"], fg.graph_builder
    out = {}
    if "graph.seeded.noise" in d:
        edge_idx, _ = builder(X, C, noise=d["graph.seeded.noise"])
        out["edge_idx injected noise"] = float((edge_idx != d["graph.seeded.edge_idx"]).sum())
        torch.manual_seed(SEEDS[name] + 1)
        edge_idx, _ = builder(X, C)
        out["edge_idx global seed"] = float((edge_idx != d["graph.seeded.edge_idx"]).sum())
        builder.deterministic = True
    edge_idx, mask_ij = builder(X, C)
    out[f"edge_idx {builder.criterion}{' deterministic' if builder.deterministic else ''}"] = float(
        (edge_idx != d["graph.edge_idx"]).sum()
    )
    out["mask_ij"] = worst(mask_ij, d["graph.mask_ij"])
    return out


def check_feature_layers() -> dict[str, float]:
    """Every feature layer's raw output, and its constant buffers as built here (seeded Fourier matrices)."""
    d, meta = golden("features")
    out = {}
    for name, (kind, spec) in json.loads(meta["raw_features"]).items():
        layer = parse_feature(spec, NODE_FEATURES if kind == "node" else EDGE_FEATURES, "features")
        built = layer.state_dict()
        for key, value in sub_state(d, f"raw.{name}.state.").items():
            if key in built:  # the reference's FrameBuilder tables are not modules here (see keys.py)
                out[f"{name} buffer {key}"] = worst(built[key], value)
        with torch.no_grad():
            out[name] = worst(layer(d["X"], d["edge_idx"], d["C"]), d[f"raw.{name}"])
    return out


def check_feature_graph(name: str) -> dict[str, float]:
    d, _ = golden(name)
    fg, _ = encoder(name)
    with torch.no_grad():
        node_h, edge_h, _, mask_i, _ = fg(d["X"], d["C"], d["graph.edge_idx"], d["graph.mask_ij"])
        fg.graph_builder.deterministic = True
        built = fg(d["X"], d["C"])  # building the graph itself gives the same features
    with torch.enable_grad():  # the unfused path that training (autograd) takes
        _, edge_h_grad, *_ = fg(d["X"], d["C"], d["graph.edge_idx"], d["graph.mask_ij"])
    return {
        "node_h": worst(node_h, d["features.node_h"]),
        "edge_h": worst(edge_h, d["features.edge_h"]),
        "edge_h (autograd path)": worst(edge_h_grad.detach(), d["features.edge_h"]),
        "mask_i": worst(mask_i, d["features.mask_i"]),
        "edge_h (own graph)": worst(built[1], d["features.edge_h"]),
    }


def check_gnn(name: str) -> dict[str, float]:
    d, _ = golden(name)
    _, gnn = encoder(name)
    inputs = (d["features.node_h"], d["features.edge_h"], d["graph.edge_idx"], d["features.mask_i"])
    causal = edge_mask_causal(d["graph.edge_idx"], d["graph.mask_ij"])
    with torch.no_grad():
        node_h, edge_h = gnn(*inputs, d["graph.mask_ij"])
        node_c, edge_c = gnn(*inputs, causal)
        node_cache, edge_cache = gnn.init_steps(d["features.node_h"], d["features.edge_h"])
        for t in range(node_h.shape[1]):
            gnn.step(t, node_cache, edge_cache, d["graph.edge_idx"], d["features.mask_i"], causal)
    return {
        "node_h": worst(node_h, d["gnn.node_h"]),
        "edge_h": worst(edge_h, d["gnn.edge_h"]),
        "causal mask": worst(causal, d["gnn_causal.mask_ij"]),
        "causal node_h": worst(node_c, d["gnn_causal.node_h"]),
        "causal edge_h": worst(edge_c, d["gnn_causal.edge_h"]),
        "step vs our parallel, node_h": worst(node_cache[-1], node_c),
        "step vs our parallel, edge_h": worst(edge_cache[-1], edge_c),
        "step vs reference parallel, node_h": worst(node_cache[-1], d["gnn_causal.node_h"]),
        "step vs reference parallel, edge_h": worst(edge_cache[-1], d["gnn_causal.edge_h"]),
    }


def check_low_precision(name: str, dtype: torch.dtype) -> dict[str, float]:
    """Relative worst difference (max |diff| / max |fp32|) of the whole encoder in ``dtype`` against fp32.

    With X itself in ``dtype`` the fp32 run gets the same rounded coordinates (bf16 rounds 30 Å to 0.125 Å,
    which moves distance features by itself); the difference is then the model's arithmetic alone.
    """
    d, _ = golden(name)
    fg, gnn = encoder(name)
    edge_idx, mask_ij, C = d["graph.edge_idx"], d["graph.mask_ij"], d["C"]

    def run(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        node_h, edge_h, _, mask_i, mask = fg(X, C, edge_idx, mask_ij)
        assert node_h.dtype == edge_h.dtype == mask_i.dtype == mask.dtype == next(gnn.parameters()).dtype
        return gnn(node_h, edge_h, edge_idx, mask_i, mask)

    X_low = d["X"].to(dtype)
    with torch.no_grad():
        refs = (run(d["X"]), run(X_low.float()))
        fg, gnn = fg.to(dtype), gnn.to(dtype)
        constants = [v for k, v in fg.state_dict().items() if k.endswith(("B", "rbf_centers")) or "_means_" in k]
        assert constants and all(v.dtype == torch.float32 for v in constants)
        lows = (run(d["X"]), run(X_low))
    out = {}
    for label, low, ref in zip(("", ", X in low precision"), lows, refs, strict=True):
        for part, a, b in (("node_h", low[0], ref[0]), ("edge_h", low[1], ref[1])):
            assert a.dtype == dtype and bool(torch.isfinite(a).all())
            out[f"{part}{label}"] = worst(a, b) / float(b.abs().max())
    return out


# Measured worst: bf16 0.0082, fp16 0.0011 (docs/chroma.md); bf16 Fourier frequencies alone gave 0.13.
LOW_PRECISION_TOL = {torch.bfloat16: 0.02, torch.float16: 0.003}


def test_graph_builders_equal_the_reference() -> None:
    bad = {k: v for k, v in check_graphs().items() if v != 0}
    assert not bad


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_graph_equals_the_reference(name: str) -> None:
    """random_log: deterministic flag, injected uniforms and a seeded global RNG all give the reference's graph."""
    bad = {k: v for k, v in check_encoder_graph(name).items() if v != 0}
    assert not bad


def test_feature_layers_equal_the_reference() -> None:
    bad = {k: v for k, v in check_feature_layers().items() if v > TOL}
    assert not bad


@pytest.mark.parametrize("name", ENCODERS)
def test_feature_graph_equals_the_reference(name: str) -> None:
    bad = {k: v for k, v in check_feature_graph(name).items() if v > TOL}
    assert not bad


@pytest.mark.parametrize("name", ENCODERS)
def test_gnn_and_its_step_mode_equal_the_reference(name: str) -> None:
    bad = {k: v for k, v in check_gnn(name).items() if v > TOL}
    assert not bad


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name", ENCODERS)
def test_low_precision_runs_finite_and_close_to_fp32(name: str, dtype: torch.dtype) -> None:
    bad = {k: v for k, v in check_low_precision(name, dtype).items() if v > LOW_PRECISION_TOL[dtype]}
    assert not bad


@pytest.mark.parametrize("name", ENCODERS)
def test_reference_state_dict_maps_one_to_one(name: str) -> None:
    """Every reference key maps to one of ours and every one of ours is covered (strict loads in encoder())."""
    d, _ = golden(name)
    fg, gnn = encoder(name)
    ref = reference_state(d)
    mapped = {reference_key(k) for k in ref} - {None}
    ours = {f"feature_graph.{k}" for k in fg.state_dict()} | {f"gnn.{k}" for k in gnn.state_dict()}
    assert mapped == ours
    assert any(k.endswith("node_norm_layer.weights") for k in ref)  # the rename is exercised


def test_a_dropped_constant_must_hold_its_value() -> None:
    d, _ = golden("features")
    state = sub_state(d, "raw.random_fourier_2mer.state.")
    assert "frame_builder._t_atom" in state and "frame_builder._R_atom" in state
    assert set(convert_reference_state_dict(state)) == {"vector_f.B", "distance_f.B"}
    state["frame_builder._t_atom"] = state["frame_builder._t_atom"] + 1
    with pytest.raises(ValueError, match="_t_atom"):
        convert_reference_state_dict(state)


def test_a_given_edge_idx_gets_its_mask_from_the_chain_map() -> None:
    d, _ = golden("design")
    fg, _ = encoder("design")
    with torch.no_grad():
        with_mask = fg(d["X"], d["C"], d["graph.edge_idx"], d["graph.mask_ij"])
        without = fg(d["X"], d["C"], d["graph.edge_idx"])
    assert torch.equal(without[4], with_mask[4])
    assert torch.equal(without[1], with_mask[1])


def test_sequential_callbacks_and_permutation_round_trip() -> None:
    d, _ = golden("backbone")
    _, gnn = encoder("backbone")
    edge_idx, mask_i, mask_ij = d["graph.edge_idx"], d["features.mask_i"], d["graph.mask_ij"]
    perm = torch.stack([torch.randperm(edge_idx.shape[1], generator=torch.Generator().manual_seed(b)) for b in (0, 1)])
    graph = permute_graph_embeddings(d["features.node_h"], d["features.edge_h"], edge_idx, mask_i, mask_ij, perm)
    back = permute_graph_embeddings(*graph, torch.argsort(perm, -1))
    for a, b in zip(back, (d["features.node_h"], d["features.edge_h"], edge_idx, mask_i, mask_ij), strict=True):
        assert torch.equal(a, b)
    node_p, edge_p, idx_p, mask_i_p, mask_ij_p = graph
    causal = edge_mask_causal(idx_p, mask_ij_p)
    seen = []
    tensors = {"node_h": node_p, "edge_h": edge_p, "edge_idx": idx_p, "mask_i": mask_i_p, "mask_ij": causal}
    with torch.no_grad():
        tensors = gnn.sequential(tensors, post_step_function=lambda t, s: seen.append(t) or s)
        node_c, edge_c = gnn(node_p, edge_p, idx_p, mask_i_p, causal)
    assert seen == list(range(edge_idx.shape[1]))
    assert worst(tensors["node_h_cache"][-1], node_c) < TOL
    assert worst(tensors["edge_h_cache"][-1], edge_c) < TOL


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"edge_features": ["distances_6mer"]}, "edge_features"),
        ({"edge_features": [["distances_2mer", {"nonsense": 1}]]}, "edge_features"),
        ({"edge_features": [["distances_2mer"]]}, "edge_features"),
        ({"edge_features": [["random_fourier_2mer", {"dim_embedding": 7}]]}, "dim_embedding"),
        ({"edge_features": []}, "node_features"),
        ({"graph_kwargs": {"criterion": "random_cubic"}}, "criterion"),
        ({"graph_kwargs": {"num_hops": 2}}, "graph_kwargs"),
        ({"graph_kwargs": {"criterion": "random_log", "random_min_local": 40}}, "random_min_local"),
        ({"dim_nodes": 0}, "dim_nodes"),
    ],
)
def test_feature_graph_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ProteinFeatureGraph(**kwargs)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"norm": "instance"}, "norm"), ({"mlp_activation": "gelu"}, "mlp_activation"), ({"dropout": 2}, "dropout")],
)
def test_gnn_config_errors_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        GraphNN(**{"num_layers": 1, "dim_nodes": 8, "dim_edges": 8, **kwargs})
    assert err.value.field == field


def test_components_are_registered_with_typed_ports() -> None:
    from biozoo.assembly import build_component
    from biozoo.errors import AssemblyError
    from biozoo.manifest.schema import ComponentRef
    from biozoo.plugins.declarations import ComponentKind
    from biozoo.registry import get_registry

    registry = get_registry()
    fg_cls = registry.component_class("chroma.feature_graph", ComponentKind.ENCODER)
    gnn_cls = registry.component_class("chroma.graph_nn", ComponentKind.ENCODER)
    assert fg_cls is ProteinFeatureGraph and gnn_cls is GraphNN
    fg = build_component(
        registry,
        ComponentRef(name="chroma.feature_graph", config={"dim_nodes": 24, "dim_edges": 16, "num_neighbors": 8}),
        ComponentKind.ENCODER,
        "components.feature_graph",
    )
    gnn = GraphNN(num_layers=1, dim_nodes=24, dim_edges=16)
    produced = {p.meaning: p for p in fg.ports().outputs}
    for port in gnn.ports().inputs:  # the GNN consumes exactly what the feature graph produces, sizes included
        assert produced[port.meaning].shape == port.shape
    with pytest.raises(AssemblyError, match="edge_features"):
        build_component(
            registry,
            ComponentRef(name="chroma.feature_graph", config={"edge_features": ["distances_6mer"]}),
            ComponentKind.ENCODER,
            "components.feature_graph",
        )


@pytest.mark.parametrize("edge_update", [True, False])
def test_gradient_checkpointing_gives_the_plain_forward(edge_update: bool) -> None:
    """Checkpointed layers (training) compute the same thing; without edge updates edges pass through."""
    torch.manual_seed(0)
    plain = GraphNN(2, 8, 6, edge_update=edge_update, scale=3)
    ckpt = GraphNN(2, 8, 6, edge_update=edge_update, scale=3, checkpoint_gradients=True)
    ckpt.load_state_dict(plain.state_dict())
    node_h, edge_h = torch.randn(1, 5, 8, requires_grad=True), torch.randn(1, 5, 3, 6)
    edge_idx, mask_i, mask_ij = torch.randint(0, 5, (1, 5, 3)), torch.ones(1, 5), torch.ones(1, 5, 3)
    a, b = plain(node_h, edge_h, edge_idx, mask_i, mask_ij), ckpt(node_h, edge_h, edge_idx, mask_i, mask_ij)
    assert worst(a[0], b[0]) == 0 and worst(a[1], b[1]) == 0
    if not edge_update:
        assert torch.equal(b[1], edge_h)
    b[0].sum().backward()
    assert node_h.grad is not None


def parity_table() -> list[tuple[str, str, float]]:
    """(rung, check, worst difference) for every comparison, as docs/chroma.md reports them."""
    rows = [("2 graph", k, v) for k, v in check_graphs().items()]
    for name in ENCODERS:
        rows += [(f"2 graph ({name})", k, v) for k, v in check_encoder_graph(name).items()]
    rows += [("2 features", k, v) for k, v in check_feature_layers().items()]
    for name in ENCODERS:
        rows += [(f"2 feature graph ({name})", k, v) for k, v in check_feature_graph(name).items()]
        rows += [(f"3 gnn ({name})", k, v) for k, v in check_gnn(name).items()]
        for dtype in LOW_PRECISION_TOL:
            rows += [(f"{dtype} vs fp32 ({name}), relative", k, v) for k, v in check_low_precision(name, dtype).items()]
        notes = json.loads(golden(name)[1]["notes"])
        rows += [(f"3 reference's own step ({name})", k, v) for k, v in notes.items()]
    return rows


if __name__ == "__main__":
    for rung, check, value in parity_table():
        print(f"{rung:45s} {check:50s} {value:.3g}")
