"""Session stores: the records, the fold that restores them, and the stores that keep them."""
