"""emomon's offline training: datasets, embedding cache, training loop, evaluation."""
