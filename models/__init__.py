"""Networks and weights: architecture builders, loaders for the released file formats, the weights registry."""
