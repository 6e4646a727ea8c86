"""Prunable scope, MaskSet, pruning criteria, the exact distributed threshold and ZeRO-aware enforcement."""
