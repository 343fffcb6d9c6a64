"""Input attributions: the standard methods and the causal ones under one interface.

``attribute(model, inputs, target, method, graph=None, **options)`` returns float32
numpy attributions: the shape of ``inputs`` for images ``(N, C, H, W)``,
sequences ``(N, T, F)`` and tabular rows ``(N, F)`` (``available_methods("tabular")``;
one group per feature), one score per token ``(N, L)`` for int64
token ids. The same method name picks the implementation that suits the inputs'
modality (:func:`modality_of`). Inputs the model cannot read, and targets out of
range, are one-line errors before any work (:func:`explainnn.inputs.check_inputs`).
Built in (captum underneath):

========================  =====================  ===================================
method                    modalities             notes
========================  =====================  ===================================
integrated_gradients      image, sequence,       zero baseline; tokens: layer IG on
                          tokens                 the embedding from all-<pad>
saliency, smoothgrad      image, sequence,       abs gradient; tokens: L2 norm per
                          tokens                 token; smoothgrad noise 0.15 x range
gradient_x_input          image, sequence, tok.
gradient_shap             image, sequence, tok.  zero + 4 seeded noisy baselines
lime, kernel_shap         image, sequence, tok.  patches (or SLIC) / time steps /
                                                 tokens; ridge surrogate for LIME
occlusion                 image, sequence, tok.  4x4 stride 2 on 32x32; 1 step; 1 token
feature_permutation       image, sequence, tok.  permutes across the batch (N >= 2)
deeplift, guided_backprop image                  feed-forward models (lenet)
leave_one_out,            tokens                 token replaced by <pad> / removed
likelihood_importance                            and moved (see text.py)
attention                 image, sequence, tok.  models with pooling="attention"
causal                    image, sequence, tok.  base method (IG) on the model with
                                                 non-causal units held (causal.py)
causal_paths              image                  research per-node maps of a layer
circuit_ig,               image, sequence, tok.  IG / occlusion counting only what flows
circuit_occlusion                                through a circuit (through_circuit.py)
edge_circuit_ig,          image, sequence,       IG / occlusion of the model whose edges
edge_circuit_occlusion    tabular                outside an edge circuit carry their
                                                 baseline values (through_edges.py)
lrp                       image, sequence, tok.  recurrent models; Arras et al. 2017 (lrp.py)
sensitivity               image, sequence, tok.  squared gradient (sensitivity analysis)
========================  =====================  ===================================

Token ids work with any model that reads them through an ``nn.Embedding``: the
gradient methods and ``causal`` attribute the embedding's output (a forward hook,
found by :func:`token_model`) and sum per token.

Add methods with ``@register_method(name, needs_graph=..., modalities=...)``; the
causal methods receive ``graph=`` (an :class:`explainnn.causal.CausalGraph`).
:func:`explain_func` adapts any method to Quantus; :class:`EmbeddingSpaceModel`
lets Quantus explain token models in embedding space and
:class:`ChannelFirstSequenceModel` one-feature sequences as ``(N, F, T)`` signals.
"""

from explainnn.attributions import (  # noqa: F401  (register the methods)
    baselines,
    causal,
    lrp,
    text,
    through_circuit,  # noqa: F401  (after the baselines it wraps)
    through_edges,
)
from explainnn.attributions.causal import causal_path_maps, restriction
from explainnn.attributions.masks import feature_mask, image_mask, occlusion_window
from explainnn.attributions.plots import (
    plot_attribution_grid,
    plot_causal_maps,
    plot_sequence_attributions,
    plot_text_attributions,
    text_html,
)
from explainnn.attributions.quantus_adapter import ChannelFirstSequenceModel, explain_func
from explainnn.attributions.registry import (
    METHODS,
    MODALITIES,
    MethodInfo,
    attribute,
    available_methods,
    method_info,
    modality_of,
    register_method,
)
from explainnn.attributions.text import EmbeddingSpaceModel
from explainnn.attributions.tokens import TokenModel, token_model

__all__ = [
    "METHODS",
    "MODALITIES",
    "causal_path_maps",
    "plot_causal_maps",
    "restriction",
    "ChannelFirstSequenceModel",
    "EmbeddingSpaceModel",
    "MethodInfo",
    "attribute",
    "available_methods",
    "explain_func",
    "feature_mask",
    "image_mask",
    "method_info",
    "modality_of",
    "occlusion_window",
    "plot_attribution_grid",
    "plot_sequence_attributions",
    "plot_text_attributions",
    "register_method",
    "text_html",
    "TokenModel",
    "token_model",
]
