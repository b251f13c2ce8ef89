"""Steering: vectors read from a model, interventions on its activations, directions from paired texts.

    from interp.steering import Add, SteeringVector, steer
    with steer(model, [Add(vec, scale=4.0, where="generated")]):
        model.generate(prompts)
"""

from interp.steering.engine import SteeringError, generate_steered, hook_site, steer
from interp.steering.interventions import (
           Add,
           Clamp,
           Intervention,
           Positions,
           ProjectOut,
           Subtract,
)
from interp.steering.vector import SteeringVector

__all__ = [
           "Add",
           "Clamp",
           "Intervention",
           "Positions",
           "ProjectOut",
           "SteeringError",
           "SteeringVector",
           "Subtract",
           "generate_steered",
           "hook_site",
           "steer",
]
