"""Explaining a model's decisions: LRP relevance through captum, on a canonised copy of the model."""
