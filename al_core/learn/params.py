"""Estimator parameters as scikit-learn states them (the contract of ``sklearn.base.BaseEstimator``).

An estimator's parameters are the arguments of its ``__init__``, found by inspecting its
signature; the constructor stores each one, unchanged, under its own name and does nothing
else (no validation, no fitted state): its body is ``self._store_params(locals())``.
:meth:`Params.get_params`, :meth:`Params.set_params` and ``repr`` follow from that.
Validation and fitted state (attributes ending in ``_``) happen at call time (``fit``,
``select``).

``sklearn.base.BaseEstimator`` itself is not inherited: importing it costs about 0.8-0.9 s
on the build machine on top of torch (measured with ``python -X importtime``), paid by every
command that imports the probe or a strategy. ``sklearn.base.clone`` still works on these
estimators (it needs only ``get_params`` and the constructor).
"""

from __future__ import annotations

import inspect

__all__ = ["Params"]


class Params:
    """get_params / set_params / repr from the signature of ``__init__``."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The parameter names of ``__init__``, in signature order."""
        if cls.__init__ is object.__init__:
            return []
        names = []
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.name == "self" or p.kind == p.VAR_KEYWORD:
                continue
            if p.kind == p.VAR_POSITIONAL:
                raise TypeError(f"{cls.__name__}.__init__ must not take *args: its parameters are found by name")
            names.append(p.name)
        return names

    def _store_params(self, values: dict) -> None:
        """Store every parameter of ``__init__``, unchanged, under its own name: the whole of a constructor,
        called as ``self._store_params(locals())``."""
        for name in self._get_param_names():
            setattr(self, name, values[name])

    def get_params(self, deep: bool = True) -> dict:
        """Every constructor parameter and its value (``deep``: nested estimators' too, as ``a__b``)."""
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        """Set constructor parameters by name (validated at the next call, as at construction)."""
        valid = self._get_param_names()
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}; valid parameters: {', '.join(valid)}"
                )
            if sub:
                getattr(self, name).set_params(**{sub: value})
            else:
                setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        """``Class(param=value, ...)``: the required parameters and those that differ from their defaults
        (scikit-learn's ``print_changed_only``)."""
        sig = inspect.signature(type(self).__init__).parameters
        shown = []
        for name in self._get_param_names():
            value, default = getattr(self, name), sig[name].default
            if default is inspect.Parameter.empty or not _same(value, default):
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _same(value, default) -> bool:
    if value is default:
        return True
    try:
        return type(value) is type(default) and bool(value == default)
    except (TypeError, ValueError):  # arrays and the like: shown
        return False
