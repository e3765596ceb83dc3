"""emomon.model: encoders, regressors, bundles and the engines that run them (docs/architecture.md).
Nothing is imported here, so `emomon.model.specs` stays free of torch."""
