"""One module per experiment: its nested config dataclasses (``dsm_jax.config`` field
metadata instead of name prefixes and ignore lists) and its named presets."""
