"""``bn-scale``: the BatchNorm scaling factor |γ| of a channel (Liu et al. 2017, network slimming)."""

from __future__ import annotations

from secateur.core.api import API_VERSION, MethodInfo, batchnorm_scale_scores, hookimpl


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="bn-scale",
            title="BatchNorm scale",
            description="Ranks channels by |γ| of their BatchNorm layers, averaged over the group. Groups "
            "without BatchNorm (linear layers, transformers) are not scored and so are kept whole.",
            granularity="channel",
            score=lambda context, params: batchnorm_scale_scores(context),
        )
    ]
