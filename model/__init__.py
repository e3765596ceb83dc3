"""emomon's model: speech encoders, the paper's regressors, model bundles and the Predictor.

Submodules import torch and transformers lazily or on import, never this package itself,
so that `import emomon.model.audio` or `emomon.model.specs` stays cheap for the command line.
"""
