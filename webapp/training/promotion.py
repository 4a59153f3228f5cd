"""The promotion rule, as a pure function of both models' metrics and ``settings.PROMOTION_RULE``.

Metrics are the dicts of ``ml.finetune.evaluate_cases`` / ``phantom_benchmark`` (``cpm``,
``dice_ge_6mm``, ...), measured on the same cases for champion and challenger:
``{"heldout": {...} or None, "phantom": {...}}``.

1. primary: ``rule["primary"]`` on the held-out reviewed cases must beat the champion's by more than
   ``min_gain``; while they hold fewer than ``min_heldout_lesions`` lesions (default 1) it is judged on
   the phantom benchmark instead: on one or two lesions the CPM can only be 0, 0.5 or 1, and a better
   model would be refused (or a worse one promoted) by chance;
2. forgetting guard: the phantom-benchmark CPM may fall by at most ``max_cpm_drop``;
3. with ``require_dice_not_worse``: Dice of lesions >= 6 mm must not fall, on the set of step 1.
A missing or non-finite value fails the check that needs it.
"""
from __future__ import annotations

import math

EPS = 1e-9


def _value(metrics: dict | None, key: str):
    v = (metrics or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def primary_set(champion: dict, challenger: dict, min_lesions: int = 1) -> str:
    """"heldout" when both were measured on held-out cases with at least ``min_lesions`` lesions, else "phantom"."""
    held = [m.get("heldout") for m in (champion, challenger)]
    return "heldout" if all(h and (h.get("n_lesions") or 0) >= max(1, min_lesions) for h in held) else "phantom"


def decide(champion: dict, challenger: dict, rule: dict) -> tuple[bool, str]:
    """(promote?, one sentence per check that says what was compared)."""
    primary = rule.get("primary", "cpm")
    min_gain = float(rule.get("min_gain", 0.0))
    min_lesions = int(rule.get("min_heldout_lesions", 1))
    where = primary_set(champion, challenger, min_lesions)
    reasons, ok = [], True
    held = (challenger.get("heldout") or {}).get("n_lesions") or 0
    if where == "phantom" and held:
        reasons.append(f"held-out reviewed cases hold {held} lesion(s), fewer than {min_lesions}: judged on the phantom benchmark")

    old, new = _value(champion.get(where), primary), _value(challenger.get(where), primary)
    if old is None or new is None:
        ok = False
        reasons.append(f"{primary} on the {where} set is missing (champion {old}, challenger {new})")
    elif new - old > min_gain + EPS:
        reasons.append(f"{primary} on the {where} set {old:.3f} -> {new:.3f} (gain {new - old:+.3f} > {min_gain:g})")
    else:
        ok = False
        reasons.append(f"{primary} on the {where} set {old:.3f} -> {new:.3f}: gain {new - old:+.3f} not above {min_gain:g}")

    max_drop = rule.get("max_cpm_drop")
    if max_drop is not None:
        old_p, new_p = _value(champion.get("phantom"), "cpm"), _value(challenger.get("phantom"), "cpm")
        if old_p is None or new_p is None:
            ok = False
            reasons.append("phantom-benchmark CPM is missing")
        elif old_p - new_p > float(max_drop) + EPS:
            ok = False
            reasons.append(f"phantom-benchmark CPM fell {old_p:.3f} -> {new_p:.3f} (more than {float(max_drop):g})")
        else:
            reasons.append(f"phantom-benchmark CPM {old_p:.3f} -> {new_p:.3f} (may fall by {float(max_drop):g})")

    if rule.get("require_dice_not_worse"):
        old_d, new_d = _value(champion.get(where), "dice_ge_6mm"), _value(challenger.get(where), "dice_ge_6mm")
        if old_d is None and new_d is None:
            reasons.append(f"no Dice on the {where} set (no lesion >= 6 mm with a mask)")
        elif new_d is None or (old_d is not None and new_d < old_d - EPS):
            ok = False
            reasons.append(f"Dice >= 6 mm on the {where} set fell: {old_d} -> {new_d}")
        elif old_d is None:
            reasons.append(f"Dice >= 6 mm on the {where} set: none -> {new_d:.3f}")
        else:
            reasons.append(f"Dice >= 6 mm on the {where} set {old_d:.3f} -> {new_d:.3f}")
    return ok, "; ".join(reasons)
