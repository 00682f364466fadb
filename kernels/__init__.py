"""Nearest-codebook search kernels (installed as ``lqae_tokenizer.kernels``).

``reference`` is the plain-PyTorch exact search (CPU path and test oracle). Triton kernels, when
present, are imported lazily by the dispatcher so that importing this package never imports triton.
"""
