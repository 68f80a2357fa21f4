"""What a model is made of inside: dependency groups, residual blocks, attention heads, the layer tree and its MACs."""
