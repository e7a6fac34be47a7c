"""``megohand <verb>``: one module per verb, each a dataclass config with a ``run()`` method."""
