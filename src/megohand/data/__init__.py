"""megohand.data: the unified store (``store``), frame packs (``video``), training windows (``windows``),
normalisation (``normalize``), statistics (``stats``), store checks (``validate``) and the dataset converters."""

DEFAULT_COPY_SIZES = (224, 128)
"""Short sides [px] of the training-size copies ``convert``, ``synth``, ``label`` and ``add-copies`` write by default:
the input sizes of the paper (224) and compact (128) presets (docs/data_format.md, "Training-size copies")."""
