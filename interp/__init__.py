"""interp: what reasoning post-training changes inside a language model, and how that differs from scale."""

from interp.models import Model, load, load_pair

__all__ = ["Model", "load", "load_pair"]
