"""Example third-party trainer for trl_causal: SFT with per-example loss weights."""
