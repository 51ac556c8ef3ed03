"""The kernels this plugin offers, as data: no torch and no kernel code is imported here.

Priorities decide only among kernels whose declared capabilities fit a call
(``auto``). ``sdpa`` (10) covers every call except returning weights, so on
CPU these mostly matter when a kernel is named; the ordering still records
the preference. Numbers and reasons: docs/attention-capabilities.md and
bench/attention_kernels.py.
"""

from __future__ import annotations

from biozoo.plugins import ProcessorDecl, hookimpl

K = "biozoo_attention.kernels"


@hookimpl
def biozoo_attention_processors() -> list[ProcessorDecl]:
    return [
        ProcessorDecl(
            "varlen",
            f"{K}.varlen:VarlenProcessor",
            "padding-free: SDPA per sequence on only the valid keys (key-padding masks); exact",
            priority=8,
            auto=True,  # passes check_kernel in this plugin's tests
        ),
        ProcessorDecl(
            "varlen-self",
            f"{K}.varlen:VarlenSelfProcessor",
            "varlen that also skips padded query rows of self-attention (zeros there); named use only",
            priority=-50,
        ),
        ProcessorDecl(
            "sliced",
            f"{K}.sliced:SlicedProcessor",
            "exact softmax attention in query slices: peak memory O(slice x Skv), not O(Sq x Skv)",
            priority=5,
            auto=True,  # passes check_kernel in this plugin's tests
        ),
        ProcessorDecl(
            "flex",
            f"{K}.flex:FlexProcessor",
            "torch flex_attention (score_mod/block_mask); eager unless BIOZOO_FLEX_COMPILE=1",
            priority=-5,
            auto=True,  # passes check_kernel in this plugin's tests
        ),
        ProcessorDecl(
            "flash",
            f"{K}.flash:FlashProcessor",
            "flash-attn 2 (CUDA, fp16/bf16; key padding via varlen); unverified here, so below sdpa",
            priority=9,
        ),
        ProcessorDecl(
            "xformers",
            f"{K}.xformers:XformersProcessor",
            "xformers memory_efficient_attention (CUDA); unverified here, so below sdpa",
            priority=7,
        ),
        ProcessorDecl(
            "linear",
            f"{K}.linear:LinearProcessor",
            "linear attention, elu(x)+1 features (fast_transformers 'linear'); approximate: never auto",
            priority=-100,
        ),
    ]
