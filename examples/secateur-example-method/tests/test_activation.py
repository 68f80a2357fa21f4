"""The example method passes Secateur's conformance kit and scores what it claims to."""

import torch

from secateur.core.api import Workspace, check_method, installed_method, load_data, load_model, parse_model_spec


def test_conforms_to_secateur() -> None:
    report = check_method("activation", {"batches": 2}, model="demo-vgg")
    assert report.params_after < report.params_before


def test_a_channel_that_never_fires_scores_zero() -> None:
    loaded = load_model(parse_model_spec("demo-vgg"))
    with torch.no_grad():  # channel 3 of the first conv outputs exactly zero after its BatchNorm
        loaded.model.features[1].weight[3] = 0
        loaded.model.features[1].bias[3] = 0
    workspace = Workspace(loaded.model, loaded.input_shape, load_data("demo"))
    scores = workspace.score(installed_method("activation"), {"batches": 1}).scores
    first = scores.groups["features.0"]
    assert first[3] < 0.5 * first.median()
