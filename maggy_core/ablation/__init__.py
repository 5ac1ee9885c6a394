"""Ablation studies: which parts of the model and the data earn their keep."""
