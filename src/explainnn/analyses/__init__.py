"""Dataset-level analyses of what a trained network learned.

Each analysis computes and returns its result (a dataclass); the pipeline steps
(:mod:`explainnn.pipeline`) write the files and print the lines. Modules: ``views``
(filters, activation maps, activation maximisation), ``embeddings`` (hidden
representations projected to 2-D), the text analyses ``word_importance`` (word
statistics over a text dataset), ``word_order`` (permutation importance) and
``attention`` (attention vs gradients), run together by ``text``; ``clustering``
(clusters of explanation vectors and their agreement across seeds); and
``common``, the seeded sample choice and batched attribution they share.
"""
