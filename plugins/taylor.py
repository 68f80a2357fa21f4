"""``taylor``: first-order Taylor importance |Σ g·w| per channel (Molchanov et al. 2019)."""

from __future__ import annotations

from secateur.core.api import API_VERSION, MethodInfo, ParamSpec, hookimpl, taylor_scores


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="taylor",
            title="First-order Taylor",
            description="Estimates how much the loss changes when a channel is removed: |Σ g·w| over the "
            "channel's weights, with gradients of the cross-entropy summed over labelled calibration "
            "batches, averaged over the group.",
            granularity="channel",
            needs=("calibration-data", "labels", "gradients"),
            params=(ParamSpec("batches", "int", 8, "calibration batches to sum gradients over", min=1, max=10000),),
            score=lambda context, params: taylor_scores(context, params["batches"]),
        )
    ]
