"""megohand.data: the unified store (``store``), frame packs (``video``), training windows (``windows``),
normalisation (``normalize``), statistics (``stats``), store checks (``validate``) and the dataset converters."""
