"""Dataset-level analyses of what a trained network learned.

Modules: ``views`` (filters, activation maps, activation maximisation),
``embeddings`` (hidden representations projected to 2-D), ``text_importance``
(token importance over a text dataset) and ``clustering`` (clusters of
explanation vectors and their agreement across seeds).
"""
