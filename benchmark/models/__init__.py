"""Backbones and projection heads of the pretraining engine.

``build_backbone(model_cfg)`` returns a :class:`Backbone` (pooled features, per-block outputs,
``feature_dim``, ``block_names``); ``build_head(model_cfg, feature_dim)`` the projection head;
``load_weights(path, model_cfg)`` a published checkpoint (:data:`WEIGHT_FORMATS`) as that backbone.
"""
from benchmark.models import resnets, timm_backbone  # noqa: F401  (registers the builders)
from benchmark.models.backbone import Backbone  # noqa: F401
from benchmark.models.external_weights import LoadedWeights, file_sha256, load_weights  # noqa: F401
from benchmark.models.heads import build_head, embed_dim_of  # noqa: F401
from benchmark.models.init import INITS, initialise  # noqa: F401
from benchmark.models.registry import available_backbones, build_backbone, register_backbone  # noqa: F401
from benchmark.models.weight_formats import WEIGHT_FORMATS, WeightsError, detect_format  # noqa: F401
