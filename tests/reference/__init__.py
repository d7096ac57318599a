"""Independent NumPy reference implementations the tests compare the library with.

One module per loss family of the package: ``elementwise`` (the loss terms of
the elementwise losses), ``softmax`` (SoftmaxCrossEntropyLoss, KLDivLoss on
logits), ``ctc`` (CTCLoss), ``pairwise`` (TripletLoss, CosineEmbeddingLoss)
and ``sdml`` (SDMLLoss). They are written from the documented semantics alone
and share no code with ``numba_losses``.
"""
