"""Neutral weights made or converted by the harness: initial weights, ImageNet checkpoints read without torch."""
