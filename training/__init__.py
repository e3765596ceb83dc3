"""emomon.training: datasets, the embedding cache, training, evaluation and `emomon train`
(docs/architecture.md)."""
