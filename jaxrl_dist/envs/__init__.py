"""Environment adapters. ``gymnax_env``: on-device batched gymnax environments."""
