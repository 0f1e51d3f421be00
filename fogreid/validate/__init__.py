"""Is an exported artifact as accurate as the PyTorch model? Figures, a verdict, a report."""
