"""explainnn: interventional, causal explanations of neural networks."""

__version__ = "0.1.0"
