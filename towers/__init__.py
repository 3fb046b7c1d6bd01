"""Towers: query tower (user encoder) and item tower, trained with TF/TFRS."""
