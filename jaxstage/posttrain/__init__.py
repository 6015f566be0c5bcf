"""Post-training (SPEC §5): adversarial relativistic-contrastive (ARC) losses and helpers."""
