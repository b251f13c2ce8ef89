"""Activation patching: exact (many patched runs batched into one forward) and attribution patching.

`exact_patch(model, source, target, metric, hook="resid_pre")` patches every (layer, position[, head]) cell
of a hook from the source (clean) run into the target (corrupt) run and returns a `PatchResult`;
`attribution_patch` estimates the same grid from one backward. Metrics live in `interp.patching.metrics`.
"""

from interp.patching.engine import HOOK_KINDS, tl_hook_name
from interp.patching.metrics import Metric, answer_prob, kl_div, logit_diff
from interp.patching.pairs import patch_pairs
from interp.patching.patch import (
           attribution_agreement,
           attribution_patch,
           exact_patch,
           run_with_patch,
           spearman,
)
from interp.patching.result import PatchResult

__all__ = [
           "HOOK_KINDS",
           "Metric",
           "PatchResult",
           "answer_prob",
           "attribution_agreement",
           "attribution_patch",
           "exact_patch",
           "kl_div",
           "logit_diff",
           "patch_pairs",
           "run_with_patch",
           "spearman",
           "tl_hook_name",
]
