"""Dataset currency, checks, LabelMe conversion, splitting, synthetic data."""
