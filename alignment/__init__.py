"""AligNet-style alignment engine: backbones, cached features, the human-aligned teacher, metrics.

Public API (stable names; import from the submodules, nothing heavy is imported here):
- ``alignment.conventions``: triplet convention (odd one out LAST, pairs ``[s01, s02, s12]``),
  ``pair_similarities``, ``triplet_probabilities``, ``correct_choices`` (ties count wrong).
- ``alignment.backbones.create_backbone(name, weights=None, *, cache_dir=None, allow_download=False)``.
- ``alignment.features.extract_features(backbone, image_paths, *, cache_dir, ...) -> float32 [n, D]``
  and ``extract_activations(..., stage=k)`` for the student's cached trunk activations.
- ``alignment.teacher.fit_teacher(features, triplets, *, choice_probs=None, config=TeacherConfig(),
  val=None) -> Teacher`` with ``transform``, ``temperature``, ``save``/``load``.
- ``alignment.triplet_metrics.evaluate_triplets(embeddings, triplets, ...) -> EvalReport`` with ``.table()``.

This package imports no other project code but common/ (no db/, study/, app/) and never imports streamlit.
"""

DEFAULT_BACKBONE = "timm:tf_efficientnet_lite0"  # the backbone used wherever none is named (light to import)
