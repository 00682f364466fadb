"""Nearest-codebook search kernels (installed as ``lqae_tokenizer.kernels``).

``reference`` is the plain-PyTorch exact search (CPU path and test oracle). Triton kernels, when
present, are imported lazily by the dispatcher so that importing this package never imports triton.

This folder sits at the top of the repository, so from the repository root Python can also find it as
a top-level package ``kernels``: a name that belongs to Hugging Face's ``kernels``, which transformers
(5.25 and later) imports when it starts. Imported under that name, this file steps aside: it loads the
``kernels`` found anywhere else on the path in its place, or, when there is none, leaves an empty
namespace-like module (no ``__file__``, nothing of ours, version "0": what transformers reports as
not installed). ``import kernels`` never exposes
this package's code (docs/architecture.md).
"""

if __name__ == "kernels":
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os
    import sys as _sys

    _repository = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _elsewhere = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _repository]
    _spec = _machinery.PathFinder.find_spec("kernels", _elsewhere)
    if _spec is None or _spec.loader is None:
        import types as _types

        _empty = _types.ModuleType("kernels")
        _empty.__path__ = []
        # transformers reads the version of a package without metadata from the module: "0" is below any
        # version it accepts, so it reports kernels as unavailable (5.0 fails on a module without one).
        _empty.__version__ = "0"
        _sys.modules["kernels"] = _empty  # the import statement returns what sys.modules holds after this file
    else:
        _real = _util.module_from_spec(_spec)
        _sys.modules["kernels"] = _real
        _spec.loader.exec_module(_real)
