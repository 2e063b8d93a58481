"""PyInstaller runtime hook: let ``import torchvision`` work when its C++ ops cannot load.

The CPU bundle pairs a CPU torch with the PyPI torchvision wheel when no ``+cpu`` torchvision is
at hand; that wheel's ``_C`` extension links CUDA libraries the bundle leaves out, so it does not
load.  torchvision then still imports ``_meta_registrations`` and ``_autograd_registrations``,
which register Python implementations for ``torchvision::nms`` & co. and raise "operator ...
does not exist".  This hook answers those two imports with empty modules, *only* when
``torchvision.extension._has_ops()`` is False, i.e. exactly when the registrations would fail.
Models and transforms (all PathViewer uses) are pure Python and work; the detection ops
(``torchvision.ops.nms``...) raise torchvision's own "Couldn't load custom C++ ops" error.
With a matching CPU torchvision the hook does nothing.
"""

import importlib.abc
import importlib.machinery
import sys

_SKIPPABLE = ("torchvision._meta_registrations", "torchvision._autograd_registrations")


class _EmptyModuleLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # default module object

    def exec_module(self, module):
        module.__doc__ = "Skipped: torchvision's C++ ops are not available in this build."


class _SkipRegistrationsWithoutOps(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _SKIPPABLE:
            return None
        extension = sys.modules.get("torchvision.extension")
        if extension is None or extension._has_ops():
            return None  # normal import
        return importlib.machinery.ModuleSpec(fullname, _EmptyModuleLoader())


sys.meta_path.insert(0, _SkipRegistrationsWithoutOps())
